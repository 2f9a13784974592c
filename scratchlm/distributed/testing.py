"""A minimal training step over the real Transformer, single-process and distributed, to prove the layouts equal.

Used by tests/test_distributed*.py; runnable by hand too:

    python -m scratchlm.distributed.testing --world 2 --parallel fsdp=2      # prints both loss trajectories

The reference is one process training on the global batch; each layout trains on the same global batch cut
the way the layout wants (dp/fsdp ranks take row slices; tp/pp ranks of a group take the same rows).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from .config import ParallelConfig

MODEL = dict(preset="llama-tiny", dropout=0.0)
BATCH, SEQ = 8, 32  # global rows and sequence length of every step


@dataclass
class Job:
    """One scenario for a worker group to run; results go to out_dir/<name>.json (and .pt)."""

    name: str
    parallel: dict = field(default_factory=dict)  # ParallelConfig fields
    steps: int = 10
    accum: int = 1  # gradient-accumulation micro-steps per optimizer step (DDP/FSDP no_sync path)
    model: dict = field(default_factory=dict)  # ModelConfig overrides on top of llama-tiny
    save_dcp: str | None = None  # after training, save a DCP checkpoint here (model + optimizer)
    load_dcp: str | None = None  # before training, load this DCP checkpoint (model + optimizer)
    start: int = 0  # first data step (a resumed run continues where the checkpoint stopped)
    probe: bool = False  # after training, write the logits of probe_batch() to <name>.pt
    memory: bool = False  # write this rank's parameter + optimizer bytes


def model_config(overrides: dict | None = None):
    from scratchlm.model import ModelConfig

    return ModelConfig.from_preset(MODEL["preset"], dropout=MODEL["dropout"], **(overrides or {}))


def build_model(overrides: dict | None = None):
    from scratchlm.model import Transformer

    torch.manual_seed(0)
    return Transformer(model_config(overrides))


def batches(steps: int, vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(steps, BATCH, SEQ) inputs and targets: a learnable rule (next = 5 * cur + 3 mod V) with 10% noise.
    Step s depends only on s (its own seed), so any prefix of the steps is the same data."""
    xs, ys = [], []
    for s in range(steps):
        g = torch.Generator().manual_seed(1234 + s)
        tok = torch.empty(BATCH, SEQ + 1, dtype=torch.long)
        tok[:, 0] = torch.randint(0, vocab, (BATCH,), generator=g)
        for t in range(SEQ):
            tok[:, t + 1] = (5 * tok[:, t] + 3) % vocab
        noise = torch.rand(tok.shape, generator=g) < 0.1
        tok[noise] = torch.randint(0, vocab, (int(noise.sum()),), generator=g)
        xs.append(tok[:, :-1])
        ys.append(tok[:, 1:])
    return torch.stack(xs), torch.stack(ys)


def probe_batch(vocab: int) -> torch.Tensor:
    return torch.randint(0, vocab, (2, SEQ), generator=torch.Generator().manual_seed(99))


def make_optimizer(params):
    # foreach=False: one kernel per tensor, so DTensors on different meshes (FSDP x TP) never share a kernel.
    return torch.optim.AdamW(params, lr=3e-3, betas=(0.9, 0.95), weight_decay=0.1, foreach=False)


def train_reference(steps: int, overrides: dict | None = None, model=None, opt=None, start: int = 0,
                    clip: float = 1.0) -> dict:
    """Single-process training on the global batch: {"loss": [...], "norm": [...]} per step."""
    from .parallelize import clip_grad_norm_

    model = model or build_model(overrides)
    opt = opt or make_optimizer(model.parameters())
    xs, ys = batches(start + steps, model.config.vocab_size)
    out = {"loss": [], "norm": []}
    for s in range(start, start + steps):
        loss = F.cross_entropy(model(xs[s]).flatten(0, 1), ys[s].flatten())
        loss.backward()
        norm = clip_grad_norm_(list(model.parameters()), clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        out["loss"].append(loss.item())
        out["norm"].append(norm.item())
    return out


def local_bytes(model, opt) -> int:
    """Bytes this rank stores for parameters and optimizer state (the local shards of DTensors)."""
    def nbytes(t):
        t = t.to_local() if hasattr(t, "to_local") else t
        return t.numel() * t.element_size()
    total = sum(nbytes(p) for p in model.parameters())
    for st in opt.state.values():
        total += sum(nbytes(v) for v in st.values() if torch.is_tensor(v) and v.ndim > 0)
    return total


def run_job(ctx, job: Job, out_dir: Path) -> None:
    """Train job.steps steps under ctx's layout (ctx.cfg already set to job.parallel) and write results."""
    from .checkpoint import load_dcp, save_dcp
    from .parallelize import clip_grad_norm_, trainable
    from .pp import Pipeline

    model = build_model(job.model)
    vocab = model.config.vocab_size
    rows = BATCH // ctx.dp_size  # this rank's rows of the global batch
    wrapped = ctx.wrap(model, batch_rows=rows) if ctx.degrees["pp"] > 1 else ctx.wrap(model)
    module = trainable(wrapped)
    params = list(module.parameters())
    opt = make_optimizer(params)
    start = job.start
    if job.load_dcp:
        load_dcp(job.load_dcp, wrapped, opt)
    xs, ys = batches(max(1, start + job.steps), vocab)
    lo, hi = ctx.dp_rank * rows, (ctx.dp_rank + 1) * rows
    result = {"loss": [], "norm": []}
    for s in range(start, start + job.steps):
        x, y = xs[s, lo:hi], ys[s, lo:hi]
        if isinstance(wrapped, Pipeline):
            loss = wrapped.step(x, y)
        else:
            loss = torch.zeros(())
            mb = rows // job.accum
            for i in range(job.accum):
                last = i == job.accum - 1
                with (ctx.no_sync(wrapped) if not last else contextlib.nullcontext()):
                    logits = wrapped(x[i * mb:(i + 1) * mb].to(ctx.device))
                    l = F.cross_entropy(logits.flatten(0, 1), y[i * mb:(i + 1) * mb].flatten().to(ctx.device))
                    (l / job.accum).backward()
                loss += l.detach().cpu() / job.accum
            loss = ctx.all_reduce_mean(loss)
        norm = clip_grad_norm_(params, 1.0, ctx)
        opt.step()
        opt.zero_grad(set_to_none=True)
        result["loss"].append(float(loss))
        result["norm"].append(float(norm))
    if job.memory:
        result["bytes"] = local_bytes(module, opt)
    if job.save_dcp:
        save_dcp(job.save_dcp, wrapped, opt)
    if job.probe:
        probe = probe_batch(vocab)
        if isinstance(wrapped, Pipeline):
            logits = wrapped.forward_logits(probe)
        else:
            module.eval()
            with torch.no_grad():
                logits = wrapped(probe.to(ctx.device))
        if logits is not None and ctx.coord("dp") == 0 and ctx.coord("fsdp") == 0 and ctx.coord("tp") == 0:
            torch.save(logits.detach().cpu(), out_dir / f"{job.name}.pt")
    if ctx.is_main:
        (out_dir / f"{job.name}.json").write_text(json.dumps(result))


def worker(rank: int, world: int, port: int, jobs: list[dict], out_dir: str) -> None:
    """Entry point of one spawned process: fake torchrun's environment, then run every job in turn."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)  # several ranks share a few cores
    from .mesh import setup

    ctx = None
    try:
        for spec in jobs:
            job = Job(**spec)
            if rank == 0:
                print(f"[scratchlm.distributed.testing] job {job.name}", flush=True)
            ctx = setup(ParallelConfig(**job.parallel), model_config(job.model))
            run_job(ctx, job, Path(out_dir))
            ctx.barrier()
    finally:
        if ctx is not None:
            ctx.destroy()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(world: int, jobs: list[Job], out_dir: str | Path) -> dict:
    """Run `jobs` on `world` processes (gloo, CPU); returns {job name: result dict} read from out_dir."""
    import dataclasses

    import torch.multiprocessing as mp

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    specs = [dataclasses.asdict(j) for j in jobs]
    mp.spawn(worker, args=(world, free_port(), specs, str(out_dir)), nprocs=world, join=True)
    return {j.name: json.loads((out_dir / f"{j.name}.json").read_text()) for j in jobs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world", type=int, default=2)
    ap.add_argument("--parallel", nargs="*", default=[], help="ParallelConfig fields, e.g. fsdp=2 tp=2")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--out", default="/tmp/scratchlm_dist")
    args = ap.parse_args()
    par = {}
    for kv in args.parallel:
        k, v = kv.split("=")
        par[k] = v if k in ("pp_schedule", "param_dtype", "reduce_dtype", "backend") else (
            v == "true" if v in ("true", "false") else int(v))
    res = spawn(args.world, [Job("run", par, args.steps)], args.out)["run"]
    ref = train_reference(args.steps)
    for s, (a, b) in enumerate(zip(ref["loss"], res["loss"])):
        print(f"step {s}: single {a:.6f}  distributed {b:.6f}  diff {abs(a - b):.2e}")


if __name__ == "__main__":
    main()
