"""How close decoding runs to the hardware: MFU and MBU of one decode step.

A decode step feeds one token per sequence. Its arithmetic is small (2 FLOPs per weight per token, plus attention
over the cache) but it reads every weight and the whole KV cache from memory once, so at small batch it is bound
by memory bandwidth, not FLOP/s. Two utilisations say how far from each roof a measured speed is:

- MFU (model FLOPs utilisation, PaLM appendix B, forward only): achieved FLOP/s over peak FLOP/s, with
  FLOPs per token = 2 * N_matmul + 4 * n_layers * n_heads * head_dim * context (Q K^T and A V over `context`
  keys; model/accounting.py: flops_per_token(training=False)).
- MBU (model bandwidth utilisation, Databricks' "LLM inference performance engineering", 2023): achieved bytes/s
  over peak bandwidth, with bytes per step = the matmul weights (read once per step, shared by the batch) + the
  K and V of every layer, sequence and cached position (read once per step per sequence).

    r = decode_roofline(cfg, batch=1, context=512, dtype="bf16", tokens_per_s=180.0, hardware=lookup("H100"))
    r["mfu"], r["mbu"], r["bound_tokens_per_s"]   # MBU near 1 means the step is as fast as memory allows

Tokens/s counts every sequence's tokens (batch x steps/s). `context` is the number of keys a step attends to;
for a run from a prompt of P tokens to P + n, its mean is P + n/2. The embedding lookup reads only B rows and
norms are elementwise, so neither is counted; the output head is (tied or not: it is read either way).
"""

from __future__ import annotations

from scratchlm.model.accounting import flops_per_token, matmul_params
from scratchlm.model.config import ModelConfig
from scratchlm.plan.hardware import CATALOG, Hardware
from scratchlm.plan.memory import kv_cache_bytes

# bytes per element and the tensor-core rate (Hardware.peak_flops key) of the dtype the model decodes in
DTYPES = {"bf16": (2, "bf16"), "fp16": (2, "fp16"), "fp32": (4, "fp32")}


def decode_step_bytes(cfg: ModelConfig, batch: int, context: int, dtype: str = "bf16") -> dict[str, float]:
    """Bytes one decode step reads: {'weights', 'kv_cache', 'total'} (the cache in the same dtype as the weights,
    as our engine stores it)."""
    elem = _dtype(dtype)[0]
    weights = float(matmul_params(cfg) * elem)
    kv = kv_cache_bytes(cfg.n_layers, cfg.n_kv_heads, cfg.head_dim, batch, context, elem)
    return {"weights": weights, "kv_cache": kv, "total": weights + kv}


def decode_roofline(cfg: ModelConfig, batch: int, context: int, dtype: str, tokens_per_s: float,
                    hardware: Hardware | None) -> dict[str, float | None]:
    """MFU and MBU of decoding at `tokens_per_s` (all sequences together); see the module docstring.

    Returns flops_per_token, bytes_per_step, achieved flops_per_s and bytes_per_s, and, when the hardware is
    known (None: the peaks are unknown, e.g. an unlisted CPU), mfu, mbu and bound_tokens_per_s, the speed the
    tighter of the two roofs allows at this batch and context."""
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    if not 1 <= context <= cfg.max_seq_len:
        raise ValueError(f"context must be in [1, {cfg.max_seq_len}] (the model's max_seq_len), got {context}")
    if not tokens_per_s > 0:
        raise ValueError(f"tokens_per_s must be > 0, got {tokens_per_s}; measure a decode run first")
    flops = flops_per_token(cfg, seq_len=context, training=False)
    step_bytes = decode_step_bytes(cfg, batch, context, dtype)["total"]
    steps_per_s = tokens_per_s / batch
    out: dict[str, float | None] = {
        "flops_per_token": flops, "bytes_per_step": step_bytes,
        "flops_per_s": flops * tokens_per_s, "bytes_per_s": step_bytes * steps_per_s,
        "mfu": None, "mbu": None, "bound_tokens_per_s": None,
    }
    if hardware is not None:
        peak_flops = hardware.peak_flops(_dtype(dtype)[1])
        peak_bytes = hardware.bandwidth_gbs * 1e9  # datasheets give GB/s in powers of ten
        out["mfu"] = out["flops_per_s"] / peak_flops
        out["mbu"] = out["bytes_per_s"] / peak_bytes
        # one step takes at least the longer of (its bytes at peak bandwidth) and (its FLOPs at peak FLOP/s)
        step_s = max(step_bytes / peak_bytes, batch * flops / peak_flops)
        out["bound_tokens_per_s"] = batch / step_s
    return out


def hardware_for_device(device_name: str) -> Hardware | None:
    """The catalog entry for a torch.cuda.get_device_name() string, or None when the peaks are not known.

    Only exact variants are matched: an H100 PCIe (756 TFLOP/s bf16, 2.0 TB/s) or NVL is not the SXM part the
    catalog's 'H100' describes, so those give None rather than a wrong peak."""
    name = device_name.upper()
    if any(v in name for v in ("PCIE", "NVL")):
        return None
    words = name.replace("-", " ").split()  # "NVIDIA H100 80GB HBM3", "NVIDIA GeForce RTX 4090"
    for key, entry in (("H200", "H200"), ("H100", "H100"), ("B200", "B200"), ("L4", "L4"), ("4090", "RTX4090")):
        if key in words:
            return CATALOG[entry]
    if "A100" in name:
        return CATALOG["A100-40GB" if "40GB" in name else "A100-80GB"]
    return None


def _dtype(dtype: str) -> tuple[int, str]:
    if dtype not in DTYPES:
        raise ValueError(f"unknown decode dtype {dtype!r}; use one of {', '.join(DTYPES)}")
    return DTYPES[dtype]
