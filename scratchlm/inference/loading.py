"""Load a trained model and its tokenizer from a run folder (or one checkpoint folder) for inference.

    model, cfg = load_model("runs/pretrain")                 # best (else latest) checkpoint of the run
    model, cfg = load_model("runs/pretrain/checkpoints/step_0001000", dtype="bfloat16")
    tok = load_tokenizer_for("runs/pretrain")                # runs/pretrain/tokenizer/
    engine = load_engine("runs/sft", device="cpu")           # both, wrapped in an Engine
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from scratchlm.device import inference_dtype, resolve_device
from scratchlm.runs import load_model_state, load_state_into, resolve_checkpoint

def load_model(run_or_ckpt: str | Path, device: str = "auto", dtype: str | torch.dtype = "auto"):
    """(model in eval mode on `device` in `dtype`, ModelConfig) from a run folder or a checkpoint folder."""
    from scratchlm.model import ModelConfig, Transformer

    device = resolve_device(device)
    ckpt = resolve_checkpoint(run_or_ckpt)
    cfg_dict, state = load_model_state(ckpt)
    cfg = ModelConfig.from_dict(cfg_dict)
    with torch.device("meta"):
        model = Transformer(cfg)
    model.to_empty(device=device)
    model.init_weights()  # fills the non-persistent buffers (RoPE tables); weights are overwritten next
    load_state_into(model, state)
    model.to(dtype=inference_dtype(dtype, device))
    # RoPE tables stay float32: positions are angles, and bf16 angles drift from the training-time values
    for name in ("rope_cos", "rope_sin"):
        if hasattr(model, name):
            setattr(model, name, getattr(model, name).float())
    return model.eval().requires_grad_(False), cfg


def tokenizer_dir_for(run_or_ckpt: str | Path) -> Path:
    """The tokenizer/ folder of a run; for a checkpoint folder, that of the run holding it."""
    p = Path(run_or_ckpt)
    for name in ("scratchlm_tokenizer.json", "tokenizer.json"):  # ours first; else Hugging Face's (import hf)
        for candidate in (p / "tokenizer", p.parent.parent / "tokenizer", p):
            if (candidate / name).is_file():
                return candidate
    raise FileNotFoundError(f"no tokenizer found for {p} (looked for {p / 'tokenizer'}); "
                            "copy the tokenizer folder of the run that trained this model into it")


def load_tokenizer_for(run_or_ckpt: str | Path) -> Any:
    from scratchlm.tokenizer import load_tokenizer

    return load_tokenizer(tokenizer_dir_for(run_or_ckpt))


def load_engine(run_or_ckpt: str | Path, device: str = "auto", dtype: str | torch.dtype = "auto",
                quantize: str | None = None, group_size: int | None = None):
    """An Engine for a run: model + tokenizer, optionally with weight-only quantization: quantize="int8" (per
    channel) or "int4" (per group of `group_size` inputs, default 64)."""
    from .engine import Engine
    from .quant import check_group_size, quantize_int4, quantize_int8

    if quantize not in (None, "none", "int8", "int4"):
        raise ValueError(f"unknown quantization {quantize!r}; use int8, int4 or none")
    if group_size is not None and quantize != "int4":
        raise ValueError(f"a group size ({group_size}) applies to int4 only; drop it or quantize to int4")
    if quantize == "int4":
        check_group_size(64 if group_size is None else group_size)  # before the weights are read
    model, _ = load_model(run_or_ckpt, device, dtype)
    if quantize == "int8":
        quantize_int8(model)
    elif quantize == "int4":
        quantize_int4(model, 64 if group_size is None else group_size)
    return Engine(model, load_tokenizer_for(run_or_ckpt))
