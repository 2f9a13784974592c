"""The pretraining loop's distributed side: joining the job, sharded checkpoints, collective evaluation.

Under torchrun every process runs the same Trainer; `start` reads the [parallel] section, checks it against
the world size and the model *before* anything is built, joins the process group and returns the DistContext
(scratchlm/distributed/mesh.py). In a plain single-process run the context is trivial and none of the
functions below change what the loop does.

A distributed run's checkpoint keeps the usual folder, so inference, export and `--resume` find it as always:

    checkpoints/step_0000500/
        dcp/                weights + optimizer state, each rank's own shards (torch.distributed.checkpoint):
                            resumable on any layout and world size, 1 process included
        model.safetensors   the whole model, gathered from dcp/ by rank 0 (what inference and export read)
        config.json         the ModelConfig dict
        state.pt            step, tokens, counters; each rank's loader position and RNG states (sent to rank 0)
        meta.json           step, losses, time

Only rank 0 writes files, except the DCP shard files, which each rank writes for its own shards.
"""

from __future__ import annotations

import dataclasses
import shutil
import warnings
from pathlib import Path

import torch
import torch.distributed as dist

from scratchlm.runs import atomic_write_json, checkpoint_dir, write_manifest

from .checkpoint import load_train_state, prune_checkpoints, publish_checkpoint


def start(cfg):
    """The DistContext of this process for PretrainConfig `cfg` (ValueError, in every rank, for a bad layout)."""
    from scratchlm.distributed.mesh import setup

    pc = cfg.parallel
    # FSDP2 warns when the root returns a view (our logits slice off the padded vocabulary); the loop never
    # modifies logits in place, which is what the warning is about.
    warnings.filterwarnings("ignore", message="FSDP2-wrapped module .* returned a view tensor")
    if cfg.train.device == "cpu" and pc.backend == "auto":
        pc = dataclasses.replace(pc, backend="gloo")  # CPU training on a GPU machine: no NCCL
    return setup(pc, cfg.model)


def collective_forward(ctx) -> bool:
    """True when a forward pass talks to other ranks (FSDP all-gathers, TP all-reduces, pipeline sends), so
    every rank must run the same number of forwards, evaluation and sampling included. DDP's forward does not."""
    d = ctx.degrees
    return ctx.distributed and (d["fsdp"] > 1 or d["tp"] > 1 or d["pp"] > 1)


def bare_module(wrapped) -> torch.nn.Module:
    """The module whose parameters the optimizer steps: the model inside DDP, the stage of a Pipeline, else the
    (possibly FSDP/TP-sharded, in place) model itself."""
    from torch.nn.parallel import DistributedDataParallel

    if isinstance(wrapped, DistributedDataParallel):
        return wrapped.module
    return getattr(wrapped, "module", wrapped) if hasattr(wrapped, "schedule") else wrapped


def on_main(ctx, fn):
    """Run fn() on rank 0 only (it writes files); if it fails, every rank raises the same error, so no rank is
    left waiting in a collective for a rank that has quit."""
    result, error = None, None
    if ctx.is_main:
        try:
            result = fn()
        except Exception as e:  # noqa: BLE001 - re-raised below, on every rank
            error = e
    if ctx.distributed:
        box = [error]
        dist.broadcast_object_list(box, src=0)
        error = box[0]
    if error is not None:
        raise error
    ctx.barrier()
    return result


def gather_to_main(ctx, obj) -> list | None:
    """[obj of rank 0, obj of rank 1, ...] on rank 0, None elsewhere (small picklable objects only)."""
    if not ctx.distributed:
        return [obj]
    out = [None] * ctx.world_size if ctx.is_main else None
    dist.gather_object(obj, out, dst=0)
    return out


def _optimizers(optimizer):
    return getattr(optimizer, "optimizers", optimizer)  # CombinedOptimizer (AdamW + Muon) -> its list


# ---------------------------------------------------------------------------------------------- checkpoints
def save_sharded_checkpoint(ctx, run_dir: Path, step: int, wrapped, optimizer, model_config, train_state: dict,
                            rank_state: dict, meta: dict, keep_last: int) -> Path | None:
    """Write checkpoints/step_XXXXXXX (layout above) atomically; collective: every rank calls it.
    Returns the folder on rank 0, None elsewhere."""
    from scratchlm.distributed.checkpoint import dcp_to_safetensors, save_dcp

    final = checkpoint_dir(run_dir, step)
    tmp = final.parent / f".tmp_{final.name}"
    ranks = gather_to_main(ctx, rank_state)
    if ctx.is_main:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    save_dcp(tmp / "dcp", wrapped, _optimizers(optimizer))  # barriers inside: tmp exists before anyone writes

    def publish():
        try:
            with torch.random.fork_rng(devices=[]):  # building the model draws random init: keep the RNG
                dcp_to_safetensors(tmp / "dcp", tmp, model_config, manifest=False)  # model + config.json
            atomic_write_json(tmp / "meta.json", {"step": step, **meta})
            torch.save({**train_state, "ranks": ranks}, tmp / "state.pt")
            write_manifest(tmp)
            publish_checkpoint(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        prune_checkpoints(run_dir, keep_last)

    on_main(ctx, publish)
    return final if ctx.is_main else None


def is_sharded_checkpoint(ckpt: Path) -> bool:
    return (Path(ckpt) / "dcp" / ".metadata").exists()


def load_sharded_checkpoint(ctx, ckpt: Path, wrapped, optimizer) -> tuple[dict, dict | None]:
    """Load weights and optimizer state from ckpt/dcp into the current layout (any world size); returns
    (the shared train state, this rank's {"loader", "rng"} or None if the checkpoint had fewer ranks)."""
    from scratchlm.distributed.checkpoint import load_dcp

    state = load_train_state(ckpt, verify=False)  # the caller picked a checkpoint that verifies
    load_dcp(Path(ckpt) / "dcp", wrapped, _optimizers(optimizer))
    ranks = state.get("ranks") or []
    return state, (ranks[ctx.rank] if ctx.rank < len(ranks) else None)


# ---------------------------------------------------------------------------------------------- evaluation
def lockstep(batches, ctx):
    """Yield (x, y, real) so that every rank runs the same number of forwards: ranks that run out of
    evaluation windows early run dummy ones (real = False; their results are to be ignored)."""
    if not collective_forward(ctx):
        for x, y in batches:
            yield x, y, True
        return
    batches = list(batches)
    n = torch.tensor([len(batches)], device=ctx.device)
    dist.all_reduce(n, op=dist.ReduceOp.MAX)
    for x, y in batches:
        yield x, y, True
    dummy = torch.zeros(1, 1, dtype=torch.long)
    for _ in range(int(n.item()) - len(batches)):
        yield dummy, dummy, False
