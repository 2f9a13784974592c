"""Start torch.distributed from torchrun's environment and lay the ranks out on a DeviceMesh.

    torchrun --nproc_per_node 4 -m scratchlm pretrain ...   sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT
    ctx = setup(ParallelConfig(fsdp=2, tp=2))               process group + mesh ("pp", "dp", "fsdp", "tp")
    model = ctx.wrap(model)                                 TP, then FSDP/DDP (or a pipeline stage; see parallelize)

Without torchrun (no WORLD_SIZE in the environment) `setup` returns a one-process context whose `wrap` returns
the model unchanged, so the same training code runs on a laptop.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from .config import ParallelConfig

MESH_DIMS = ("pp", "dp", "fsdp", "tp")  # outermost (slowest links) to innermost (fastest)


def env_world() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun's environment variables; (0, 1, 0) without torchrun."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


@dataclass
class DistContext:
    """Everything the training loop needs to know about its place in the world."""

    cfg: ParallelConfig
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    degrees: dict = field(default_factory=lambda: {"pp": 1, "dp": 1, "fsdp": 1, "tp": 1})
    mesh: object = None  # DeviceMesh over MESH_DIMS, None in a single process
    data_group: object = None  # ProcessGroup of the ranks that see different batches (dp x fsdp)

    # ------------------------------------------------------------------ where am I
    @property
    def is_main(self) -> bool:
        """Rank 0: the only one that writes logs, metrics and files."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def coord(self, dim: str) -> int:
        """This rank's index along one mesh axis ("pp", "dp", "fsdp", "tp")."""
        return 0 if self.mesh is None else self.mesh.get_local_rank(dim)

    @property
    def dp_size(self) -> int:
        """How many different batches are processed per step (dp * fsdp): the loader's world size."""
        return self.degrees["dp"] * self.degrees["fsdp"]

    @property
    def dp_rank(self) -> int:
        """Which of those batches this rank reads: the loader's rank. Same for all tp / pp ranks of a group."""
        return self.coord("dp") * self.degrees["fsdp"] + self.coord("fsdp")

    @property
    def pp_rank(self) -> int:
        return self.coord("pp")

    # ------------------------------------------------------------------ model
    def wrap(self, model, **kwargs):
        """Apply this layout to a plain Transformer: see parallelize.parallelize. Returns the model, or with
        pp > 1 a Pipeline (its .module is this rank's stage, its .step(x, y) runs the schedule)."""
        if not self.distributed:
            return model
        from .parallelize import parallelize

        return parallelize(model, self, **kwargs)

    # ------------------------------------------------------------------ collectives for the loop
    def all_reduce_mean(self, t: torch.Tensor) -> torch.Tensor:
        """Mean of a metric (e.g. the loss) over the data-parallel ranks, in place; a no-op in one process."""
        if self.data_group is not None and self.dp_size > 1:
            dist.all_reduce(t, op=dist.ReduceOp.SUM, group=self.data_group)
            t /= self.dp_size
        return t

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def no_sync(self, model):
        """Context for gradient-accumulation micro-steps that must not all-reduce (DDP) / reduce-scatter (FSDP)
        yet: use it on every micro-step but the last of an optimizer step."""
        if hasattr(model, "no_sync"):  # DDP
            return model.no_sync()
        if hasattr(model, "set_requires_gradient_sync"):  # FSDP2 root
            return _fsdp_no_sync(model)
        return contextlib.nullcontext()

    def destroy(self) -> None:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


@contextlib.contextmanager
def _fsdp_no_sync(model):
    model.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)


def setup(cfg: ParallelConfig | None = None, model_cfg=None, timeout_s: float = 600.0) -> DistContext:
    """Join the process group torchrun described and build the DeviceMesh; check the layout first.

    All checks (degrees vs world size, heads vs tp, ...) run before any process group exists, so a bad config
    fails in every rank with the same one-line ValueError instead of hanging in a collective."""
    cfg = cfg or ParallelConfig()
    rank, world, local_rank = env_world()
    degrees = cfg.degrees(world)
    if model_cfg is not None:
        cfg.check_model(model_cfg)
    backend = cfg.backend
    if backend == "auto":
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        if not torch.cuda.is_available():
            raise ValueError("parallel.backend = nccl needs CUDA GPUs; use backend = gloo (or auto) on CPU")
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if cfg.cpu_offload and device.type == "cpu":
        raise ValueError("parallel.cpu_offload moves FSDP state from the GPU to the CPU; it needs CUDA GPUs "
                         "(turn it off on CPU-only runs)")
    ctx = DistContext(cfg=cfg, rank=rank, world_size=world, local_rank=local_rank, device=device, degrees=degrees)
    if world == 1:
        return ctx
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s),
                                device_id=device if device.type == "cuda" else None)
    from torch.distributed.device_mesh import init_device_mesh

    ctx.mesh = init_device_mesh(device.type, tuple(degrees[d] for d in MESH_DIMS), mesh_dim_names=MESH_DIMS)
    # One group for "average over the batches": flatten the two data axes into one.
    ctx.data_group = ctx.mesh["dp", "fsdp"]._flatten("data").get_group()
    return ctx
