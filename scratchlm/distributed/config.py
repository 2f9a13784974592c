"""ParallelConfig: how one training run is spread over devices. The `[parallel]` section of a train config.

The world (all processes that torchrun started) is laid out as a grid, a DeviceMesh, with one axis per kind
of parallelism, outermost first:

    pp    pipeline stages (layers split into consecutive groups; activations flow stage to stage)
    dp    data-parallel replicas (whole copies of the weights; DDP, or FSDP's replicate axis (HSDP))
    fsdp  data-parallel shards (FSDP2: every rank holds 1/fsdp of weights, gradients and optimizer state)
    tp    tensor parallel (each matmul split across ranks; innermost = fastest links, e.g. one NVLink node)

pp * dp * fsdp * tp must equal the world size. The data axes are dp and fsdp: dp * fsdp different batches are
processed per step; tp and pp ranks of one data-parallel group see the same batch.
"""

from __future__ import annotations

from dataclasses import dataclass

PP_SCHEDULES = ("1f1b", "gpipe")
DTYPES = ("float32", "bfloat16", "float16")


@dataclass
class ParallelConfig:
    """Degrees of each kind of parallelism and their options. Defaults: plain data parallel over every rank."""

    dp: int = -1
    """Data-parallel replicas. -1: whatever the other degrees leave of the world size (world / (fsdp*tp*pp)).
    Alone (fsdp = tp = 1) this is DDP; with fsdp > 1 or tp > 1 it is FSDP's replicate axis (HSDP)."""
    fsdp: int = 1
    """Fully-sharded data parallel degree (FSDP2 `fully_shard`, one unit per block + the root). 1: off."""
    tp: int = 1
    """Tensor-parallel degree. Must divide n_heads, n_kv_heads, ffn_hidden and the padded vocabulary."""
    pp: int = 1
    """Pipeline-parallel stages (the layers are split as evenly as possible). 1: off."""
    pp_schedule: str = "1f1b"
    """"1f1b" (one forward one backward: at most pp micro-batches of activations alive) or "gpipe" (all forwards
    then all backwards: simpler, holds every micro-batch's activations)."""
    pp_microbatches: int = 0
    """Micro-batches per pipeline step. 0: 2 * pp (bubble ~ (pp-1)/(m+pp-1) of the step). Must divide the
    per-rank batch rows."""
    sequence_parallel: bool = False
    """With tp > 1: also split norms and residual adds along the sequence (saves activation memory; RoPE only)."""
    reshard_after_forward: bool = True
    """FSDP: free gathered weights after each block's forward (ZeRO-3; less memory, one more all-gather in the
    backward). False keeps them until the backward (ZeRO-2-like)."""
    param_dtype: str = "float32"
    """FSDP mixed precision: dtype of the gathered weights the forward/backward compute with ("bfloat16" is the
    usual choice on GPUs). The sharded master weights and the optimizer stay in float32."""
    reduce_dtype: str = "float32"
    """FSDP mixed precision: dtype of the gradient reduce-scatter (float32 keeps the sum exact-ish)."""
    cpu_offload: bool = False
    """FSDP: keep sharded weights, gradients and optimizer state in CPU memory (GPU runs; slow, saves memory)."""
    backend: str = "auto"
    """Process-group backend: "auto" (nccl with CUDA, gloo on CPU), "nccl" or "gloo"."""

    def degrees(self, world_size: int) -> dict[str, int]:
        """{"pp", "dp", "fsdp", "tp"} with dp resolved, checked against the world size (ValueError otherwise)."""
        for name in ("fsdp", "tp", "pp"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"parallel.{name} must be an integer >= 1, got {v!r}")
        if self.dp != -1 and (not isinstance(self.dp, int) or self.dp < 1):
            raise ValueError(f"parallel.dp must be an integer >= 1 or -1 (fill the rest), got {self.dp!r}")
        if self.pp_schedule not in PP_SCHEDULES:
            raise ValueError(f"parallel.pp_schedule must be one of {PP_SCHEDULES}, got {self.pp_schedule!r}")
        for name in ("param_dtype", "reduce_dtype"):
            if getattr(self, name) not in DTYPES:
                raise ValueError(f"parallel.{name} must be one of {DTYPES}, got {getattr(self, name)!r}")
        if self.backend not in ("auto", "nccl", "gloo"):
            raise ValueError(f"parallel.backend must be auto, nccl or gloo, got {self.backend!r}")
        rest = self.fsdp * self.tp * self.pp
        dp = self.dp
        if dp == -1:
            if world_size % rest:
                raise ValueError(f"parallel degrees fsdp*tp*pp = {self.fsdp}*{self.tp}*{self.pp} = {rest} do not "
                                 f"divide the world size {world_size}; pick degrees whose product divides it")
            dp = world_size // rest
        if dp * rest != world_size:
            raise ValueError(f"parallel degrees dp*fsdp*tp*pp = {dp}*{self.fsdp}*{self.tp}*{self.pp} = {dp * rest} "
                             f"but the world size is {world_size}; make the product equal the number of processes "
                             "(or set parallel.dp = -1)")
        if self.sequence_parallel and self.tp == 1:
            raise ValueError("parallel.sequence_parallel needs parallel.tp > 1; set tp or turn sequence_parallel off")
        return {"pp": self.pp, "dp": dp, "fsdp": self.fsdp, "tp": self.tp}

    def check_model(self, model_cfg) -> None:
        """Raise ValueError if this layout cannot split `model_cfg` (a scratchlm ModelConfig)."""
        tp, pp = self.tp, self.pp
        if tp > 1:
            for name, n in (("n_heads", model_cfg.n_heads), ("n_kv_heads", model_cfg.n_kv_heads),
                            ("ffn_hidden", model_cfg.ffn_hidden), ("padded vocabulary", model_cfg.padded_vocab_size)):
                if n % tp:
                    raise ValueError(f"model.{name} = {n} is not divisible by parallel.tp = {tp}; "
                                     f"use a tp that divides it (each rank must own whole heads / equal slices)")
            if self.sequence_parallel and model_cfg.pos_emb != "rope":
                raise ValueError("parallel.sequence_parallel needs model.pos_emb = 'rope' (learned position "
                                 "embeddings are added to the full sequence); turn sequence_parallel off")
        if pp > model_cfg.n_layers:
            raise ValueError(f"parallel.pp = {pp} stages but the model has only {model_cfg.n_layers} layers; "
                             "use pp <= model.n_layers")

    def microbatches(self, rows: int) -> int:
        """Pipeline micro-batches for a per-rank batch of `rows` sequences (ValueError if they do not divide)."""
        m = self.pp_microbatches or min(rows, 2 * self.pp)
        if rows % m:
            raise ValueError(f"parallel.pp_microbatches = {m} does not divide the per-rank batch of {rows} rows; "
                             f"set pp_microbatches to a divisor of {rows}")
        return m
