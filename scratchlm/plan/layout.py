"""Parallel layouts: memory per GPU for one layout, and a search for the cheapest layout that fits.

A layout splits the GPUs as dp x fsdp x tp x pp (see scratchlm/distributed): dp replicas, fsdp shards, tp
tensor-parallel pieces of every layer, pp pipeline stages of consecutive layers. The data-parallel group is
dp x fsdp ranks; ZeRO stage 3 over the fsdp ranks is FSDP (HSDP when dp > 1 too); ZeRO 1/2 with fsdp = 1 shards
states over the dp ranks, DeepSpeed style.

The search ranks fitting layouts by a rough relative step time, a rule of thumb and not a simulator:
full activation checkpointing recomputes the forward (8 instead of 6 FLOPs per parameter-token, x 4/3); a
pipeline idles for a bubble of (pp - 1) / m of the step with m micro-batches (Narayanan et al. 2021, 1F1B and
GPipe alike); tensor parallelism adds activation all-reduces inside every layer (+5% per doubling, inside a node
only); FSDP re-gathers weights twice per step (+2%, mostly overlapped). Prefer the plan with the smallest number.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from scratchlm.plan.memory import (GIB, activation_bytes_per_layer, get_precision, head_activation_bytes,
                                   model_state_bytes)


@dataclass(frozen=True)
class Layout:
    """How the GPUs and the batch are split. Product dp * fsdp * tp * pp = number of GPUs."""

    dp: int = 1  # replicated data-parallel degree (DDP, or the replicate dim of HSDP)
    fsdp: int = 1  # sharded data-parallel degree (FSDP / ZeRO-3 shards)
    tp: int = 1  # tensor-parallel degree (split every matmul; keep inside one node's NVLink)
    pp: int = 1  # pipeline stages
    zero: int = 0  # ZeRO stage over the sharding group (fsdp if > 1, else dp); 3 with fsdp > 1
    micro_batch: int = 1  # sequences per GPU per forward
    seq_len: int = 2048  # tokens per sequence
    checkpointing: str = "none"  # "none", "selective" (attention core) or "full" (every layer)
    sequence_parallel: bool = False  # split norms/dropouts along the sequence over the tp ranks
    pp_schedule: str = "1f1b"  # "1f1b" (pp micro-batches in flight) or "gpipe" (all of them)

    @property
    def world(self) -> int:
        return self.dp * self.fsdp * self.tp * self.pp

    @property
    def data_parallel(self) -> int:
        return self.dp * self.fsdp

    @property
    def shard(self) -> int:
        """Ranks the ZeRO stage shards states over."""
        if self.zero == 0:
            return 1
        return self.fsdp if self.fsdp > 1 else self.dp

    def describe(self) -> str:
        degrees = (("dp", self.dp), ("fsdp", self.fsdp), ("tp", self.tp), ("pp", self.pp))
        parts = [f"{k}={v}" for k, v in degrees if v > 1]
        if self.zero and not (self.zero == 3 and self.fsdp > 1):
            parts.append(f"zero{self.zero}")
        if self.sequence_parallel and self.tp > 1:
            parts.append("sp")
        parts.append(f"mb={self.micro_batch}")
        if self.checkpointing != "none":
            parts.append(f"ckpt={self.checkpointing}")
        return " ".join(parts) if len(parts) > 1 or self.world > 1 else "single GPU " + " ".join(parts)


def check_layout(layout: Layout, shape, n_gpus: int) -> None:
    """Raise ValueError naming the problem when a layout cannot run this model on these GPUs."""
    if min(layout.dp, layout.fsdp, layout.tp, layout.pp, layout.micro_batch, layout.seq_len) < 1:
        raise ValueError("--dp/--fsdp/--tp/--pp/--micro-batch/--seq-len must all be >= 1")
    if layout.world != n_gpus:
        raise ValueError(f"dp*fsdp*tp*pp = {layout.dp}*{layout.fsdp}*{layout.tp}*{layout.pp} = {layout.world} "
                         f"but --gpus is {n_gpus}; make the degrees multiply to the GPU count")
    if shape.n_heads % layout.tp or shape.n_kv_heads % layout.tp:
        raise ValueError(f"--tp {layout.tp} must divide n_heads={shape.n_heads} and n_kv_heads={shape.n_kv_heads}")
    if layout.pp > shape.n_layers:
        raise ValueError(f"--pp {layout.pp} exceeds the {shape.n_layers} layers; use at most one stage per layer")
    if layout.zero not in (0, 1, 2, 3):
        raise ValueError(f"--zero must be 0-3, got {layout.zero}")
    if layout.fsdp > 1 and layout.zero == 0:
        raise ValueError("--fsdp > 1 shards states: use --zero 3 (FSDP full shard) or 2/1, or --dp instead")
    if layout.checkpointing not in ("none", "selective", "full"):
        raise ValueError(f"--checkpointing must be none, selective or full, got {layout.checkpointing!r}")
    if layout.pp_schedule not in ("1f1b", "gpipe"):
        raise ValueError(f"--pp-schedule must be 1f1b or gpipe, got {layout.pp_schedule!r}")


def grad_accum_steps(layout: Layout, batch_tokens: float) -> int:
    """Micro-steps per optimizer step so that dp ranks x micro-batches x seq_len ~= the global batch."""
    per_step = layout.data_parallel * layout.micro_batch * layout.seq_len
    return max(1, round(batch_tokens / per_step))


def memory_per_gpu(shape, layout: Layout, precision: str = "bf16-mixed", optimizer: str = "adamw",
                   attention: str = "flash", batch_tokens: float = 2**19) -> dict:
    """Bytes per GPU on the most loaded pipeline stage, term by term, plus what it was computed from."""
    prec = get_precision(precision)
    t, pp = layout.tp, layout.pp
    layers_per_stage = math.ceil(shape.n_layers / pp)
    # The first stage holds the embedding, the last the head (a tied head needs its own copy when pp > 1).
    head = shape.head_params if not (shape.tie_embeddings and pp > 1) else shape.vocab_size * shape.d_model
    emb = shape.embedding_params
    if pp == 1:
        stage_params = {"only": shape.n_params}
    else:
        stage_params = {"first": layers_per_stage * shape.layer_params + emb,
                        "last": layers_per_stage * shape.layer_params + head}
    micro_batches = grad_accum_steps(layout, batch_tokens)
    in_flight = min(pp, micro_batches) if layout.pp_schedule == "1f1b" else micro_batches
    r = prec.residual_bytes or prec.act_bytes
    act = activation_bytes_per_layer(shape, layout.micro_batch, layout.seq_len, prec.act_bytes, attention,
                                     layout.checkpointing, t, layout.sequence_parallel, r)
    head_act = sum(head_activation_bytes(shape, layout.micro_batch, layout.seq_len, prec.act_bytes, t,
                                         layout.sequence_parallel, r).values())
    stages = {}
    for name, params in stage_params.items():
        params_rank = params / t  # TP splits every matrix (embedding and head vocabulary-parallel)
        st = model_state_bytes(params_rank, prec, optimizer, layout.zero, layout.shard)
        # 1F1B: stage i of p keeps (p - i) micro-batches of activations; the first stage the most (p).
        held = in_flight if name in ("first", "only") else 1
        terms = dict(st)
        terms["activations"] = act["stored"] * layers_per_stage * held
        if name in ("last", "only"):
            terms["activations"] += head_act
        autocast_copies = prec.weight_copy_bytes and layout.zero < 3
        if autocast_copies:
            # autocast casts each matmul weight once per forward and autograd keeps the copy for backward (not
            # inside checkpointed layers: those are recast during recomputation); the head's weight too
            kept = 0 if layout.checkpointing == "full" else layers_per_stage
            copies = kept * shape.layer_params + (shape.vocab_size * shape.d_model if name in ("last", "only") else 0)
            terms["weight copies"] = prec.weight_copy_bytes * copies / t
        if act["peak_extra"]:
            # what a recomputed layer (or attention core) holds again while its backward runs
            recast = autocast_copies and layout.checkpointing == "full"
            terms["recompute buffer"] = act["peak_extra"] + (prec.weight_copy_bytes * shape.layer_params / t
                                                             if recast else 0)
        if layout.zero == 3 and layout.shard > 1:
            # FSDP gathers a whole layer (and prefetches the next) in the compute dtype, and holds a layer's
            # unsharded gradient until its reduce-scatter
            gather = 2 if prec.compute in ("bf16", "fp16", "fp8") else prec.param_bytes
            terms["fsdp buffers"] = (2 * gather + prec.grad_bytes) * shape.layer_params / t
        terms["total"] = sum(terms.values())
        stages[name] = terms
    worst = max(stages, key=lambda k: stages[k]["total"])
    return {
        "stage": worst,
        "bytes": stages[worst],
        "layers_per_stage": layers_per_stage,
        "micro_batches": micro_batches,
        "in_flight": in_flight,
        "bubble": (pp - 1) / (micro_batches + pp - 1) if pp > 1 else 0.0,
    }


def usable_bytes(hw, reserve_gib: float = 1.0, fragmentation: float = 0.05) -> float:
    """Memory the training process can fill: minus the CUDA context/NCCL buffers and allocator slack."""
    return hw.memory_bytes * (1 - fragmentation) - reserve_gib * GIB


def relative_step_time(layout: Layout, bubble: float, attention: str = "flash") -> float:
    """The heuristic cost of a layout versus plain data parallelism (1.0); see the module docstring."""
    cost = 1.0
    if layout.checkpointing == "full":
        cost *= 4 / 3
    elif layout.checkpointing == "selective" and attention != "flash":
        cost *= 1.03
    if layout.tp > 1:
        cost *= 1 + 0.05 * math.log2(layout.tp)
    if layout.zero == 3 and layout.shard > 1:
        cost *= 1.02
    return cost / (1 - bubble)


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def candidate_layouts(shape, n_gpus: int, micro_batch: int, seq_len: int, gpus_per_node: int = 8,
                      attention: str = "flash", pp_schedule: str = "1f1b") -> list[Layout]:
    """Every sensible layout: tp within a node dividing the heads, pp up to the layer count, any ZeRO stage."""
    out = []
    ckpts = ["none", "full"] if attention == "flash" else ["none", "selective", "full"]
    for tp in _divisors(n_gpus):
        if tp > gpus_per_node or shape.n_heads % tp or shape.n_kv_heads % tp:
            continue
        for pp in _divisors(n_gpus // tp):
            if pp > shape.n_layers:
                continue
            data = n_gpus // (tp * pp)
            shardings = [(data, 1, z) for z in (0, 1, 2)] if data > 1 else [(1, 1, 0)]
            if data > 1:  # FSDP over all data ranks, or HSDP: shard inside a node, replicate across
                shardings += [(data // f, f, 3) for f in _divisors(data)
                              if f > 1 and (f == data or f * tp <= gpus_per_node)]
            for dp, fsdp, zero in shardings:
                for ck in ckpts:
                    for sp in ([False, True] if tp > 1 else [False]):
                        out.append(Layout(dp=dp, fsdp=fsdp, tp=tp, pp=pp, zero=zero, micro_batch=micro_batch,
                                          seq_len=seq_len, checkpointing=ck, sequence_parallel=sp,
                                          pp_schedule=pp_schedule))
    return out


@dataclass
class Evaluated:
    layout: Layout
    memory: dict
    capacity: float
    cost: float

    @property
    def fits(self) -> bool:
        return self.memory["bytes"]["total"] <= self.capacity

    def to_dict(self) -> dict:
        d = asdict(self.layout)
        d["description"] = self.layout.describe()
        return {
            "layout": d, "fits": self.fits, "relative_step_time": round(self.cost, 4),
            "memory_per_gpu": {k.replace(" ", "_"): v for k, v in self.memory["bytes"].items()},
            "usable_bytes": self.capacity, "worst_stage": self.memory["stage"],
            "grad_accum_steps": self.memory["micro_batches"], "pipeline_bubble": self.memory["bubble"],
        }


def evaluate(shape, layout: Layout, hw, precision: str = "bf16-mixed", optimizer: str = "adamw",
             attention: str = "flash", batch_tokens: float = 2**19, reserve_gib: float = 1.0) -> Evaluated:
    mem = memory_per_gpu(shape, layout, precision, optimizer, attention, batch_tokens)
    return Evaluated(layout, mem, usable_bytes(hw, reserve_gib), relative_step_time(layout, mem["bubble"], attention))


def search(shape, hw, n_gpus: int, micro_batch: int = 1, seq_len: int = 2048, precision: str = "bf16-mixed",
           optimizer: str = "adamw", attention: str = "flash", batch_tokens: float = 2**19,
           gpus_per_node: int = 8, reserve_gib: float = 1.0, pp_schedule: str = "1f1b") -> list[Evaluated]:
    """All candidate layouts evaluated, the fitting ones first, cheapest (then least memory) first."""
    cands = candidate_layouts(shape, n_gpus, micro_batch, seq_len, gpus_per_node, attention, pp_schedule)
    evals = [evaluate(shape, c, hw, precision, optimizer, attention, batch_tokens, reserve_gib) for c in cands]
    evals.sort(key=lambda e: (not e.fits, round(e.cost, 6), e.memory["bytes"]["total"]))
    return evals


def why_nothing_fits(shape, hw, n_gpus: int, best: Evaluated, precision: str, optimizer: str,
                     reserve_gib: float = 1.0) -> str:
    """A one-line reason and a fix, for the layout that came closest."""
    cap = usable_bytes(hw, reserve_gib)
    states_all = sum(model_state_bytes(shape.n_params, precision, optimizer).values())
    min_gpus = math.ceil(states_all / cap) if cap > 0 else float("inf")
    gib = lambda x: f"{x / GIB:.1f} GiB"  # noqa: E731
    b = best.memory["bytes"]
    states = b["params"] + b["grads"] + b["optimizer"]
    if states > cap or min_gpus > n_gpus:
        return (f"weights+gradients+optimizer states alone need {gib(states_all)} in total, more than "
                f"{n_gpus} x {gib(cap)} usable on {hw.name}; use at least {min_gpus} GPUs (with FSDP/ZeRO-3), "
                f"a larger GPU, or a smaller model")
    return (f"the closest layout ({best.layout.describe()}) needs {gib(b['total'])} per GPU of {gib(cap)} usable, "
            f"activations {gib(b['activations'])}; lower --micro-batch or --seq-len, or add GPUs")
