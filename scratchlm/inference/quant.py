"""Weight-only int8 quantization: 4x smaller linear weights than float32, 2x smaller than bf16.

Decoding one token at a time reads every weight once per token, so at batch 1 it is limited by memory
bandwidth, not arithmetic: halving the bytes read roughly halves the time of the big matmuls (gpt-fast's
observation). Weight-only means activations stay in bf16/float32 and only the stored weights are int8.

Scheme: symmetric, per output channel (one scale per row of W):

    scale_j = max_i |W[j, i]| / 127,    W_q[j, i] = round(W[j, i] / scale_j)  in [-127, 127]
    y = x @ W^T  ~=  (x @ W_q^T) * scale

The rounding error per weight is at most scale_j / 2, i.e. 0.4% of the row's largest weight. The matmul uses
torch's fused int8-weight kernel (`torch._weight_int8pack_mm`, the kernel torchao uses on CPU) when it is
available, else dequantizes on the fly. The quality cost is measured, not assumed: benchmarks/inference_quant.py
reports the KL divergence to the unquantized model and how often greedy tokens agree.
"""

from __future__ import annotations

import types

import torch
import torch.nn as nn
import torch.nn.functional as F


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


def quantize_int8(model: nn.Module, dtype: torch.dtype = torch.bfloat16) -> nn.Module:
    """In place: activations in `dtype`, every nn.Linear and the output head as Int8Linear. Returns model.

    bf16 activations by default: the fused CPU kernel wants them, and the weights are already rounded far
    more coarsely than bf16 rounds activations."""
    # The head first: our Transformer computes logits as F.linear(h, head weight), and the head may be tied to
    # the embedding (which stays in `dtype` for the lookup), so this instance gets an int8 head of its own.
    head_weight = model.tok_emb.weight if getattr(model, "lm_head", None) is None else model.lm_head.weight
    model.int8_head = Int8Linear(head_weight)
    model.to(dtype)
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.Linear):
                setattr(module, child_name, Int8Linear(child.weight, child.bias))
    if getattr(model, "lm_head", None) is not None:
        model.lm_head = None  # now unused: int8_head replaces it
    vocab = model.config.vocab_size

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        return self.int8_head(h)[..., :vocab]

    model.logits = types.MethodType(logits, model)
    for name in ("rope_cos", "rope_sin"):  # positions stay exact
        if hasattr(model, name):
            setattr(model, name, getattr(model, name).float())
    return model
