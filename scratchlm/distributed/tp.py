"""Tensor parallelism (Megatron-LM, Shoeybi et al. 2019) with DTensor's `parallelize_module`.

Each block's two matmul pairs are split so that only one all-reduce per pair is needed:

    attention:  wq, wk, wv  column-wise (each rank computes n_heads/tp query heads, n_kv_heads/tp KV heads)
                wo          row-wise    (each rank multiplies its heads' slice; partial sums all-reduced)
    MLP:        w_gate, w_up column-wise (each rank owns ffn_hidden/tp hidden units)
                w_down       row-wise
    tok_emb     row-wise on the vocabulary (each rank looks up its rows; others contribute 0; all-reduce)
    head        the (tied or untied) output matrix sharded on the vocabulary: each rank computes vocab/tp
                logits, gathered at the end

GQA: heads are split contiguously, so rank r owns query heads [r*H/tp, (r+1)*H/tp) and KV heads
[r*KV/tp, (r+1)*KV/tp); query head h uses KV head h // (H/KV), which lands on the same rank exactly when
tp divides KV. The model reads its head counts from `attn.n_heads` / `attn.n_kv_heads`, which we set to the
local counts here: the model code itself knows nothing about parallelism.

Sequence parallel (Korthikanti et al. 2022) optionally also splits the norms and the residual stream along
the sequence between the TP regions: each all-reduce becomes a reduce-scatter + all-gather pair (same bytes)
and the norm activations shrink by tp.
"""

from __future__ import annotations

import torch.nn as nn
from torch.distributed.tensor import DTensor, Replicate, Shard, distribute_tensor
from torch.distributed.tensor.parallel import (ColwiseParallel, PrepareModuleInput, RowwiseParallel,
                                               SequenceParallel, parallelize_module)


def apply_tp(model: nn.Module, tp_mesh, sequence_parallel: bool = False) -> nn.Module:
    """Shard a scratchlm Transformer (or a pipeline stage of one) over `tp_mesh`, in place."""
    tp = tp_mesh.size()
    sp = sequence_parallel
    # Between blocks the residual stream is replicated (plain tensors), or with SP a sequence shard.
    resid = Shard(1) if sp else Replicate()

    if sp and hasattr(model, "seq_shards"):  # a pipeline stage: its input arrives sequence-sharded
        model.seq_shards = tp
    if getattr(model, "tok_emb", None) is not None:
        parallelize_module(model.tok_emb, tp_mesh,
                           RowwiseParallel(input_layouts=Replicate(), output_layouts=resid))
    for block in model.layers.values() if isinstance(model.layers, nn.ModuleDict) else model.layers:
        attn, mlp = block.attn, block.mlp
        plan = {
            "attn": PrepareModuleInput(input_layouts=(resid, None, None, None, None, None),
                                       desired_input_layouts=(Replicate(), None, None, None, None, None)),
            "attn.wq": ColwiseParallel(),
            "attn.wk": ColwiseParallel(),
            "attn.wv": ColwiseParallel(),
            "attn.wo": RowwiseParallel(output_layouts=resid),
            "mlp": PrepareModuleInput(input_layouts=(resid,), desired_input_layouts=(Replicate(),)),
            "mlp.w_up": ColwiseParallel(),
            "mlp.w_down": RowwiseParallel(output_layouts=resid),
        }
        if mlp.swiglu:
            plan["mlp.w_gate"] = ColwiseParallel()
        if sp:
            plan["attn_norm"] = SequenceParallel()
            plan["mlp_norm"] = SequenceParallel()
        if attn.qk_norm:
            # q_norm/k_norm act on this rank's heads only: treat dim 1 (heads) as the "sequence" so their
            # weights become replicated DTensors whose gradients are summed over the tp ranks.
            plan["attn.q_norm"] = SequenceParallel(sequence_dim=1, use_local_output=True)
            plan["attn.k_norm"] = SequenceParallel(sequence_dim=1, use_local_output=True)
        parallelize_module(block, tp_mesh, plan)
        attn.n_heads, attn.n_kv_heads = attn.n_heads // tp, attn.n_kv_heads // tp  # local head counts

    if getattr(model, "norm", None) is not None:
        if sp:
            parallelize_module(model.norm, tp_mesh, SequenceParallel())
        # The head's input must be a replicated DTensor so that multiplying by the vocab-sharded weight gives
        # vocab-sharded logits without moving the weight.
        model.norm.register_forward_hook(_replicated_output(tp_mesh))
        if getattr(model, "lm_head", None) is not None:
            # The model calls F.linear(h, lm_head.weight) itself, so only the weight needs distributing.
            model.lm_head.weight = nn.Parameter(distribute_tensor(model.lm_head.weight.detach(), tp_mesh, [Shard(0)]))
        model.register_forward_hook(_gather_logits)
    return model


def _replicated_output(mesh):
    def hook(module, args, out):
        if isinstance(out, DTensor):
            return out.redistribute(mesh, [Replicate()])
        return DTensor.from_local(out, mesh, [Replicate()], run_check=False)
    return hook


def _gather_logits(module, args, out):
    # (B, T, vocab) sharded on vocab -> full logits on every rank (a plain tensor: the loss code stays as is).
    if isinstance(out, DTensor):
        return out.redistribute(out.device_mesh, [Replicate()]).to_local()
    return out

