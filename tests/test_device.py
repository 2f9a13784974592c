"""What "auto" means for device and precision, and the one-line errors for devices that are not there."""

from __future__ import annotations

import pytest
import torch

from scratchlm.device import cpu_has_fast_bf16, inference_dtype, resolve_device, train_dtype


def test_auto_device_and_explicit_cpu():
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") in ("cpu", "cuda", "mps")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error")
def test_missing_cuda_is_a_clear_error():
    with pytest.raises(ValueError, match="no CUDA GPU is visible; use cpu or auto"):
        resolve_device("cuda")


def test_train_autocast_vs_inference_weights_on_cpu():
    # training autocasts to bf16 only where bf16 matmuls are fast; inference keeps exact fp32 weights on CPU
    assert train_dtype("auto", "cpu") == (torch.bfloat16 if cpu_has_fast_bf16() else torch.float32)
    assert inference_dtype("auto", "cpu") == torch.float32
    assert train_dtype("float32", "cpu") == torch.float32 and inference_dtype(torch.bfloat16, "cpu") == torch.bfloat16


def test_unknown_dtype_names_the_choices():
    with pytest.raises(ValueError, match="use one of auto, float32, bfloat16, float16"):
        train_dtype("fp8", "cpu")
    with pytest.raises(ValueError, match="use one of auto"):
        inference_dtype("half", "cpu")
