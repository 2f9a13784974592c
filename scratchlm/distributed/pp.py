"""Pipeline parallelism with torch.distributed.pipelining (GPipe, Huang et al. 2019; 1F1B, Narayanan et al. 2021).

The layers are split into `pp` consecutive stages, one per rank of the pp axis; the batch is cut into m
micro-batches that flow through the stages, activations sent forward and their gradients back:

    GPipe:  F1 F2 .. Fm  B1 B2 .. Bm          holds all m micro-batches' activations
    1F1B:   F1 .. Fpp  then alternate B, F    holds at most pp; same bubble (pp-1)/(m+pp-1) of the step

The first stage embeds, the last applies the final norm and the head and computes the loss. With tied
embeddings the first and last stage each hold a copy of tok_emb.weight; after the backward their gradients
are summed (as a single tensor's would be), so both copies take the same update and stay equal (Megatron-LM's
"embedding group").
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe

from scratchlm.model.transformer import run_blocks


def split_layers(n_layers: int, pp: int) -> list[tuple[int, int]]:
    """[start, end) layer ranges of the pp stages, as even as possible (earlier stages get the extra layer)."""
    base, extra = divmod(n_layers, pp)
    bounds, start = [], 0
    for s in range(pp):
        end = start + base + (1 if s < extra else 0)
        bounds.append((start, end))
        start = end
    return bounds


class Stage(nn.Module):
    """Layers [start, end) of a Transformer, plus the embedding (first stage) or the norm and head (last stage).

    Submodules keep the names they have in the full model (`layers.5.attn.wq`, `tok_emb`, `norm`), so the
    state dicts of all stages together are exactly the full model's: checkpoints move between layouts."""

    def __init__(self, model: nn.Module, start: int, end: int, first: bool, last: bool):
        super().__init__()
        cfg = self.config = model.config
        self.first, self.last = first, last
        self.layers = nn.ModuleDict({str(i): model.layers[i] for i in range(start, end)})
        self.start = start
        # activation checkpointing as the full model has it (train.activation_checkpointing, set before wrapping)
        self.checkpoint_every = getattr(model, "checkpoint_every", 0)
        tied = model.lm_head is None
        # tok_emb: embedding on the first stage; on the last one (tied weights) the head's matrix.
        self.tok_emb = model.tok_emb if first or (last and tied) else None
        self.pos_emb = model.pos_emb if first else None
        self.emb_dropout = model.emb_dropout
        self.norm = model.norm if last else None
        self.lm_head = model.lm_head if last else None
        # Under sequence parallelism (set by apply_tp) a later stage receives 1/seq_shards of the sequence; RoPE
        # needs the whole length, which the attention sees after its all-gather.
        self.seq_shards = 1
        if cfg.pos_emb == "rope":
            self.register_buffer("rope_cos", model.rope_cos, persistent=False)  # (max_seq_len, hd/2)
            self.register_buffer("rope_sin", model.rope_sin, persistent=False)
        else:
            self.rope_cos = self.rope_sin = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """First stage: idx (B, T) -> (B, T, d); middle: (B, T, d) -> (B, T, d); last: -> logits (B, T, vocab)."""
        T = x.shape[1] if self.first else x.shape[1] * self.seq_shards  # the full sequence length
        if self.first:
            x = self.tok_emb(x)  # (B, T, d), or (B, T / seq_shards, d) under sequence parallelism
            if self.pos_emb is not None:
                x = x + self.pos_emb.weight[:T]
            x = self.emb_dropout(x)
        cos = sin = None
        if self.rope_cos is not None:
            cos, sin = self.rope_cos[:T].to(x.dtype), self.rope_sin[:T].to(x.dtype)  # (T, hd/2)
        x = run_blocks(self.layers.values(), x, cos, sin, every=self.checkpoint_every if self.training else 0,
                       first=self.start)
        if self.last:
            h = self.norm(x)
            weight = self.tok_emb.weight if self.lm_head is None else self.lm_head.weight
            x = F.linear(h, weight)  # (B, T, padded_vocab)
            if self.config.padded_vocab_size != self.config.vocab_size:
                x = x[..., : self.config.vocab_size]
        return x


def build_stage(model: nn.Module, pp_rank: int, pp: int) -> Stage:
    """This rank's stage of a (full, plain) Transformer. The rest of the model is dropped with `model`."""
    start, end = split_layers(model.config.n_layers, pp)[pp_rank]
    return Stage(model, start, end, first=pp_rank == 0, last=pp_rank == pp - 1)


def lm_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of one micro-batch: (B, T, V), (B, T) -> scalar."""
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1))


class Pipeline:
    """One rank's share of a pipeline: `module` (its stage, maybe wrapped by TP/FSDP/DDP, for the optimizer and
    checkpoints) and `step(x, y)`, which runs forward + backward of the whole batch in micro-batches."""

    def __init__(self, module: nn.Module, stage: Stage, ctx, n_microbatches: int, schedule: str = "1f1b",
                 loss_fn=lm_loss):
        self.module, self.ctx = module, ctx
        pp = ctx.degrees["pp"]
        self.pp_rank, self.pp = ctx.pp_rank, pp
        self.is_first, self.is_last = self.pp_rank == 0, self.pp_rank == pp - 1
        self.group = ctx.mesh["pp"].get_group()
        self.last_rank = dist.get_global_rank(self.group, pp - 1)  # the rank that knows the loss
        self.stage = PipelineStage(module, self.pp_rank, pp, ctx.device, group=self.group)
        cls = {"gpipe": ScheduleGPipe, "1f1b": Schedule1F1B}[schedule]
        # scale_grads: the gradients of the m micro-batch mean losses are divided by m -> the batch mean's.
        self.schedule = cls(self.stage, n_microbatches=n_microbatches, loss_fn=loss_fn, scale_grads=True)
        self.n_microbatches = n_microbatches
        # Tied embeddings: one group per pair (first stage, last stage) with the same other coordinates.
        self.tied = stage.config.tie_embeddings and pp > 1
        self.tied_group = None
        if self.tied:
            grid = ctx.mesh.mesh  # (pp, dp, fsdp, tp) global ranks
            pairs = [[int(a), int(b)] for a, b in zip(grid[0].flatten(), grid[-1].flatten())]
            self.tied_group, _ = dist.new_subgroups_by_enumeration(pairs)
            if self.is_last:
                stage.tok_emb.weight._pp_tied_copy = True  # counted once in the gradient norm
        self.tied_param = stage.tok_emb.weight if self.tied and (self.is_first or self.is_last) else None

    def step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Forward + backward over this rank's batch (x, y: (B, T)); returns the global batch's mean loss (0-d),
        the same on every rank."""
        losses: list[torch.Tensor] = []
        x, y = x.to(self.ctx.device), y.to(self.ctx.device)
        if self.is_first and self.is_last:
            self.schedule.step(x, target=y, losses=losses)
        elif self.is_first:
            self.schedule.step(x)
        elif self.is_last:
            self.schedule.step(target=y, losses=losses)
        else:
            self.schedule.step()
        loss = (torch.stack([l.detach().float() for l in losses]).mean() if self.is_last
                else torch.zeros((), device=self.ctx.device))
        dist.broadcast(loss, src=self.last_rank, group=self.group)
        self.ctx.all_reduce_mean(loss)  # and over the data-parallel replicas
        if self.tied_param is not None:
            self._sum_tied_grads()
        return loss

    def _sum_tied_grads(self) -> None:
        p = self.tied_param
        g = p.grad
        if hasattr(g, "to_local"):
            # With TP the two copies' gradients can come back in different layouts (the embedding's is sharded on
            # the vocabulary like the weight, the head's matmul may leave it replicated or partial): bring both to
            # the weight's own layout so that the two ranks add up equal-shaped shards.
            if tuple(g.placements) != tuple(p.placements):
                g = p.grad = g.redistribute(p.device_mesh, p.placements)
            g = g.to_local()
        dist.all_reduce(g, group=self.tied_group)

    @torch.no_grad()
    def forward_logits(self, x: torch.Tensor) -> torch.Tensor | None:
        """Inference through the pipeline without the schedule (evaluation): full-batch logits on the last
        stage, None elsewhere. Every stage must call it."""
        self.module.eval()
        h = x.to(self.ctx.device)
        if not self.is_first:
            shape_src = torch.empty(3, dtype=torch.long)
            dist.recv(shape_src, src=dist.get_global_rank(self.group, self.pp_rank - 1), group=self.group)
            h = torch.empty(*shape_src.tolist(), device=self.ctx.device)
            dist.recv(h, src=dist.get_global_rank(self.group, self.pp_rank - 1), group=self.group)
        out = self.module(h)
        self.module.train()
        if self.is_last:
            return out
        dst = dist.get_global_rank(self.group, self.pp_rank + 1)
        dist.send(torch.tensor(out.shape, dtype=torch.long), dst=dst, group=self.group)
        dist.send(out.contiguous(), dst=dst, group=self.group)
        return None
