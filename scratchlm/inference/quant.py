"""Weight-only quantization: int8 per channel (4x smaller linear weights than float32) and int4 per group (~7x).

Decoding one token at a time reads every weight once per token, so at batch 1 it is limited by memory
bandwidth, not arithmetic: halving the bytes read roughly halves the time of the big matmuls (gpt-fast's
observation). Weight-only means activations stay in bf16/float32 and only the stored weights are small.

int8, symmetric, per output channel (one scale per row of W):

    scale_j = max_i |W[j, i]| / 127,    W_q[j, i] = round(W[j, i] / scale_j)  in [-127, 127]
    y = x @ W^T  ~=  (x @ W_q^T) * scale

The rounding error per weight is at most scale_j / 2, i.e. 0.4% of the row's largest weight. The matmul uses
torch's fused int8-weight kernel (`torch._weight_int8pack_mm`, the kernel torchao uses on CPU) when it is
available, else dequantizes on the fly.

int4, asymmetric, per group of `group_size` consecutive inputs of a row (gpt-fast's scheme): each group keeps its
own minimum and step, so one outlier spoils only its 64 neighbours, not the whole row:

    step = (max - min) / 15,    W_q = round((W - min) / step)  in [0, 15],    W ~= min + W_q * step

Asymmetric rather than symmetric because 4 bits leave only 16 levels: a symmetric grid (-7..7 times max|W|/7)
spends them on [-max|W|, max|W|] even when a group is lopsided, and wastes one; min/max fits the group's real
range, for one more bf16 per group (0.25 bit per weight at group 64). Two 4-bit values share a byte.

The int4 matmul has two paths over the same codes, steps and minimums, chosen once per model and logged:
- "fused" (CPU, bf16 activations): torch's `_weight_int4pack_mm_for_cpu` reads the packed codes directly, with
  the codes re-packed into its own layout and our (step, min) rewritten as its (scale, zero) for
  W = (q - 8) * scale + zero, i.e. zero = min + 8 * step. Measured ~40x faster than unpacking at 1408x512.
- "unpack" (any device or dtype): unpack and dequantize with plain torch ops, exactly
  F.linear(x, dequantize_int4(...)); the reference the fused path is tested against.
The quality cost of either scheme is measured, not assumed: benchmarks/inference_vs_hf.py reports the KL
divergence to the unquantized model and how often greedy tokens agree.
"""

from __future__ import annotations

import logging
import types
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

INT4_GROUP_SIZES = (32, 64, 128, 256)
INT4_KERNELS = ("auto", "fused", "unpack")

log = logging.getLogger("scratchlm")


def quantize_weight(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(out, in) float weight -> (int8 weight (out, in), float32 scales (out,))."""
    w = w.detach().float()
    scales = (w.abs().amax(dim=1) / 127.0).clamp_min(1e-12)
    q = torch.round(w / scales[:, None]).clamp(-127, 127).to(torch.int8)
    return q, scales


class Int8Linear(nn.Module):
    """A drop-in for nn.Linear holding an int8 weight and per-row scales."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None):
        super().__init__()
        q, scales = quantize_weight(weight)
        self.register_buffer("weight", q)  # (out, in) int8
        self.register_buffer("scales", scales)  # (out,)
        self.register_buffer("bias", None if bias is None else bias.detach().clone())
        self.out_features, self.in_features = q.shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, self.in_features)  # (N, in)
        scales = self.scales.to(x.dtype)
        if x.device.type == "cpu" and x.dtype in (torch.bfloat16, torch.float16) and hasattr(torch, "_weight_int8pack_mm"):
            y = torch._weight_int8pack_mm(x2.contiguous(), self.weight, scales)  # fused: no float copy of W
        else:
            y = F.linear(x2, self.weight.to(x.dtype)) * scales
        y = y.reshape(*shape[:-1], self.out_features)
        return y if self.bias is None else y + self.bias.to(y.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 per-channel"


def check_group_size(group_size: int) -> None:
    if group_size not in INT4_GROUP_SIZES:
        raise ValueError(f"int4 group size must be one of {', '.join(map(str, INT4_GROUP_SIZES))}, got {group_size}")


def quantize_weight_int4(w: torch.Tensor, group_size: int = 64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(out, in) float weight -> (packed uint8 (out, in/2), steps (out, G) bf16, minimums (out, G) bf16),
    with G = in / group_size groups per row."""
    check_group_size(group_size)
    out_f, in_f = w.shape
    g = w.detach().float().reshape(out_f, in_f // group_size, group_size)  # (out, G, gs)
    lo, hi = g.amin(-1), g.amax(-1)  # (out, G)
    # round step and minimum to bf16 *before* choosing the codes, so the codes fit the values dequantization uses
    steps = ((hi - lo) / 15).clamp_min(1e-8).to(torch.bfloat16)
    mins = lo.to(torch.bfloat16)
    q = torch.round((g - mins.float()[..., None]) / steps.float()[..., None]).clamp(0, 15).to(torch.uint8)
    return pack_int4(q.reshape(out_f, in_f)), steps, mins


def pack_int4(q: torch.Tensor) -> torch.Tensor:
    """(out, in) uint8 codes in 0..15 -> (out, in/2) uint8: input 2k in the low nibble, 2k+1 in the high one."""
    return q[:, 0::2] | (q[:, 1::2] << 4)


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """(out, in/2) uint8 -> (out, in) uint8 codes in 0..15."""
    return torch.stack((packed & 15, packed >> 4), dim=-1).reshape(packed.shape[0], -1)  # (out, in/2, 2) -> (out, in)


def dequantize_int4(packed: torch.Tensor, steps: torch.Tensor, mins: torch.Tensor) -> torch.Tensor:
    """The float32 (out, in) weight that the int4 codes stand for."""
    q = unpack_int4(packed)
    out_f, n_groups = steps.shape
    g = q.reshape(out_f, n_groups, -1).float()  # (out, G, gs)
    return (g * steps.float()[..., None] + mins.float()[..., None]).reshape(out_f, -1)


def fused_int4_available(device: torch.device | str) -> bool:
    """Whether torch's fused int4 CPU matmul can run on `device` (it is CPU-only; CUDA's has another layout)."""
    return torch.device(device).type == "cpu" and hasattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu")


def pack_int4_for_cpu_kernel(packed: torch.Tensor, steps: torch.Tensor,
                             mins: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Our int4 storage -> (codes in the kernel's packing (N, in/2) uint8, scales_and_zeros (G, N, 2) bf16) for
    torch.ops.aten._weight_int4pack_mm_for_cpu, with N = out rounded up to 16 (the kernel's tile; padded rows
    have zero scale and zero, so they compute 0 and are sliced off)."""
    out_f = packed.shape[0]
    pad = -out_f % 16
    codes = F.pad(unpack_int4(packed), (0, 0, 0, pad)).to(torch.int32)  # (N, in), 0..15
    kernel_packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, 1)  # (N, in/2) uint8, its own order
    # the kernel dequantizes (q - 8) * scale + zero; ours is q * step + min: the same line if zero = min + 8 * step.
    # zero is rounded to bf16 here (the kernel reads scales in the activation dtype): |error| <= 2^-9 |zero|.
    zeros = mins.float() + 8 * steps.float()
    sz = torch.stack((steps.float(), zeros), dim=-1)  # (out, G, 2)
    sz = F.pad(sz, (0, 0, 0, 0, 0, pad)).transpose(0, 1).contiguous().to(torch.bfloat16)  # (G, N, 2)
    return kernel_packed, sz


class Int4Linear(nn.Module):
    """A drop-in for nn.Linear holding a group-wise int4 weight, two values per byte.

    kernel="fused" keeps the codes in the layout of torch's fused CPU kernel and takes bf16 activations;
    "unpack" keeps our layout and dequantizes on every call (any device, any dtype); "auto" is fused where
    available (the weight's device is the CPU). Only the chosen path's buffers are kept, so memory stays int4."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None, group_size: int = 64,
                 kernel: str = "auto"):
        super().__init__()
        if kernel not in INT4_KERNELS:
            raise ValueError(f"int4 kernel must be one of {', '.join(INT4_KERNELS)}, got {kernel!r}")
        if kernel == "auto":
            kernel = "fused" if fused_int4_available(weight.device) else "unpack"
        elif kernel == "fused" and not fused_int4_available(weight.device):
            raise ValueError(f"the fused int4 kernel runs on CPU only (this torch: _weight_int4pack_mm_for_cpu), "
                             f"the weight is on {weight.device.type}; use kernel='unpack'")
        packed, steps, mins = quantize_weight_int4(weight, group_size)
        if kernel == "fused":
            packed, scales_zeros = pack_int4_for_cpu_kernel(packed, steps, mins)
            self.register_buffer("weight", packed)  # (N, in/2) uint8, the kernel's packing, N = out padded to 16
            self.register_buffer("scales_zeros", scales_zeros)  # (in/group_size, N, 2) bf16
        else:
            self.register_buffer("weight", packed)  # (out, in/2) uint8
            self.register_buffer("steps", steps)  # (out, in/group_size) bf16
            self.register_buffer("mins", mins)  # (out, in/group_size) bf16
        self.register_buffer("bias", None if bias is None else bias.detach().clone())
        self.out_features, self.in_features = weight.shape
        self.group_size, self.kernel = group_size, kernel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kernel == "fused":
            if x.dtype != torch.bfloat16:
                # it accepts float32 too, but measured ~40x slower than bf16 (a scalar path): refuse, not crawl
                raise ValueError(f"the fused int4 kernel takes bf16 activations, got {x.dtype}; quantize with "
                                 f"dtype=torch.bfloat16, or kernel='unpack' for {x.dtype}")
            shape = x.shape
            x2 = x.reshape(-1, self.in_features).contiguous()  # (M, in)
            y = torch.ops.aten._weight_int4pack_mm_for_cpu(x2, self.weight, self.group_size, self.scales_zeros)
            y = y[:, :self.out_features].reshape(*shape[:-1], self.out_features)  # (M, N) -> (..., out)
        else:
            # the float weight exists only for the duration of this call: memory holds int4, bandwidth pays for it
            y = F.linear(x, dequantize_int4(self.weight, self.steps, self.mins).to(x.dtype))  # (..., out)
        return y if self.bias is None else y + self.bias.to(y.dtype)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"int4 asymmetric, group_size={self.group_size}, kernel={self.kernel}")


class BF16Embedding(nn.Module):
    """The token embedding stored in bf16 and handed on in the activation dtype.

    Not int4: a lookup reads a few rows per token, so the table costs memory, not bandwidth, and int4 rows at
    the very input nearly doubled the KL of an int4 model (measured: 0.0076 vs 0.0041 nats/token at group 64 on
    a trained byte-level model; bf16 rows measure the same as float32). gpt-fast leaves embeddings alone too."""

    def __init__(self, weight: torch.Tensor, dtype: torch.dtype):
        super().__init__()
        self.register_buffer("weight", weight.detach().to(torch.bfloat16))  # (vocab, d)
        self.dtype = dtype

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return F.embedding(idx, self.weight).to(self.dtype)  # (B, T, d)


def _quantize_linears(model: nn.Module, make: Callable[..., nn.Module], dtype: torch.dtype | None) -> nn.Module:
    """In place: every nn.Linear and the output head replaced by make(weight, bias); activations in `dtype`."""
    # The head first: our Transformer computes logits as F.linear(h, head weight), and the head may be tied to
    # the embedding (which stays in `dtype` for the lookup), so this instance gets a quantized head of its own.
    head_weight = model.tok_emb.weight if getattr(model, "lm_head", None) is None else model.lm_head.weight
    model.quant_head = make(head_weight, None)
    if dtype is not None:
        model.to(dtype)
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.Linear):
                setattr(module, child_name, make(child.weight, child.bias))
    if getattr(model, "lm_head", None) is not None:
        model.lm_head = None  # now unused: quant_head replaces it
    vocab = model.config.vocab_size

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        return self.quant_head(h)[..., :vocab]

    model.logits = types.MethodType(logits, model)
    for name in ("rope_cos", "rope_sin"):  # positions stay exact
        if hasattr(model, name):
            setattr(model, name, getattr(model, name).float())
    return model


def quantize_int8(model: nn.Module, dtype: torch.dtype = torch.bfloat16) -> nn.Module:
    """In place: activations in `dtype`, every nn.Linear and the output head as Int8Linear. Returns model.

    bf16 activations by default: the fused CPU kernel wants them, and the weights are already rounded far
    more coarsely than bf16 rounds activations."""
    return _quantize_linears(model, Int8Linear, dtype)


def quantize_int4(model: nn.Module, group_size: int = 64, dtype: torch.dtype | None = None,
                  kernel: str = "auto") -> nn.Module:
    """In place: every nn.Linear and the output head as Int4Linear (groups of `group_size` inputs), the token
    embedding in bf16 (BF16Embedding says why). Returns model.

    kernel="auto" picks the fused CPU kernel when the model is on the CPU and `dtype` is None or bf16, and then
    runs activations in bf16 (all it takes); otherwise "unpack", with activations in the model's dtype unless
    `dtype` is given. The choice is logged once: the two paths round differently (bf16 vs float32 activations)."""
    check_group_size(group_size)
    if kernel not in INT4_KERNELS:
        raise ValueError(f"int4 kernel must be one of {', '.join(INT4_KERNELS)}, got {kernel!r}")
    widths = {name: m.in_features for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    widths["output head"] = model.tok_emb.weight.shape[1]
    for name, width in widths.items():
        if width % group_size:
            fits = [g for g in INT4_GROUP_SIZES if all(w % g == 0 for w in widths.values())]
            hint = f"use group size {max(fits)}" if fits else "this model's widths fit no int4 group size; use int8"
            raise ValueError(f"int4 group size {group_size} does not divide the {width} inputs of {name}; {hint}")
    device = model.tok_emb.weight.device
    if kernel == "auto":
        kernel = "fused" if fused_int4_available(device) and dtype in (None, torch.bfloat16) else "unpack"
    if kernel == "fused":
        if not fused_int4_available(device):
            raise ValueError(f"the fused int4 kernel runs on CPU only, the model is on {device.type}; "
                             f"use kernel='unpack'")
        if dtype not in (None, torch.bfloat16):
            raise ValueError(f"the fused int4 kernel takes bf16 activations, not {dtype}; drop dtype or use "
                             f"kernel='unpack'")
        dtype = torch.bfloat16
    how = "torch._weight_int4pack_mm_for_cpu, bf16 activations" if kernel == "fused" else "dequantize per call"
    _log_once(f"int4 matmul: {kernel} ({how})")
    _quantize_linears(model, lambda w, b: Int4Linear(w, b, group_size, kernel), dtype)
    # in float32 the table would be the biggest tensor of a small model (8192 x 256: 8 MB of 13)
    model.tok_emb = BF16Embedding(model.tok_emb.weight, next(model.parameters()).dtype)  # norms: activation dtype
    return model


_logged: set[str] = set()


def _log_once(message: str) -> None:
    if message not in _logged:
        _logged.add(message)
        log.info(message)
