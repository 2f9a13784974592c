"""One plan: from a model (or a budget) and hardware to FLOPs, time, cost, memory per GPU and a layout.

`make_plan(PlanRequest(...), shape)` returns a plain dict, the JSON schema of `scratchlm plan --json`
(documented in docs/plan.md; `schema` names its version and changes only with a new version).

Which question gets answered depends on what is given:
  model + tokens          -> the cost of that run
  model + budget          -> how many tokens the budget buys for that model
  model alone             -> the compute-optimal token count for it (20 tokens/param, or a fit)
  budget alone (inverse)  -> the compute-optimal model and tokens, and what it takes to train them
A budget is --flops, --days (on --gpus x --gpu at --mfu) or --budget-usd (with --cost-per-gpu-hour).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from scratchlm.plan import compute as C
from scratchlm.plan.hardware import Hardware
from scratchlm.plan.layout import Layout, check_layout, evaluate, search, why_nothing_fits
from scratchlm.plan.memory import GIB, get_precision, kv_cache_bytes
from scratchlm.plan.shape import ModelShape, shape_from_params

SCHEMA = "scratchlm.plan/v1"


@dataclass
class PlanRequest:
    """Everything a plan depends on besides the model. Defaults are sensible for a modern GPU run."""

    tokens: float | None = None  # training tokens D; None: from the budget, else compute-optimal
    flops: float | None = None  # a compute budget in FLOPs
    days: float | None = None  # a wall-clock budget on the given GPUs
    budget_usd: float | None = None  # a money budget (needs cost_per_gpu_hour)
    n_gpus: int = 1  # GPUs in the job
    gpus_per_node: int = 8  # tensor parallelism stays inside a node
    mfu: float = 0.4  # model FLOPs utilisation you expect (0.3-0.5 well tuned; lower for small models)
    cost_per_gpu_hour: float | None = None  # $ per GPU-hour, for the cost line
    precision: str = "bf16-mixed"  # see memory.PRECISIONS
    optimizer: str = "adamw"  # adamw/adam (2 states), lion/sgd (1), none
    attention: str = "flash"  # "flash" (SDPA kernels: no s x s matrix) or "eager" (materialised scores)
    # layout: None = not given; the search chooses. Any given degree is fixed and evaluated as asked.
    dp: int | None = None
    fsdp: int | None = None
    tp: int | None = None
    pp: int | None = None
    zero: int | None = None
    micro_batch: int = 1  # sequences per GPU per forward
    seq_len: int | None = None  # None: the model's max_seq_len
    checkpointing: str | None = None  # none/selective/full; None: the search chooses
    sequence_parallel: bool = False
    pp_schedule: str = "1f1b"
    batch_tokens: float = 2**19  # global batch in tokens (GPT-3 125M and nanoGPT used ~0.5M)
    fit: str = "chinchilla"  # compute-optimal rule: chinchilla (tokens_per_param), hoffmann, besiroglu
    tokens_per_param: float = C.CHINCHILLA_TOKENS_PER_PARAM
    infer_batch: int = 1  # sequences decoded at once, for the KV-cache line
    context: int | None = None  # tokens per sequence in the KV cache; None: seq_len
    kv_bytes: int = 2  # bytes per cached number (2: bf16; 1: fp8 cache)
    reserve_gib: float = 1.0  # CUDA context, NCCL and allocator reserve per GPU (plus 5% fragmentation)

    @property
    def layout_given(self) -> bool:
        return any(v is not None for v in (self.dp, self.fsdp, self.tp, self.pp, self.zero, self.checkpointing))

    @property
    def budget_given(self) -> bool:
        return any(v is not None for v in (self.flops, self.days, self.budget_usd))


def resolve_budget(req: PlanRequest, peak: float) -> tuple[float | None, str | None]:
    """The compute budget in FLOPs and where it came from, or (None, None)."""
    given = [k for k in ("flops", "days", "budget_usd") if getattr(req, k) is not None]
    if len(given) > 1:
        raise ValueError(f"give one budget, not {' and '.join('--' + g.replace('_', '-') for g in given)}")
    if not given:
        return None, None
    if req.flops is not None:
        if not req.flops > 0:
            raise ValueError(f"--flops must be positive, got {req.flops}")
        return float(req.flops), "flops"
    if req.days is not None:
        if not req.days > 0:
            raise ValueError(f"--days must be positive, got {req.days}")
        return C.budget_flops(req.n_gpus, peak, req.mfu, req.days), "days"
    if req.cost_per_gpu_hour is None:
        raise ValueError("--budget-usd needs --cost-per-gpu-hour (e.g. 2.5 for a rented H100)")
    gpu_hours = req.budget_usd / req.cost_per_gpu_hour
    return C.flops_per_second(1, peak, req.mfu) * gpu_hours * 3600, "budget_usd"


def _layout_from_request(req: PlanRequest, shape: ModelShape, seq_len: int) -> Layout:
    """Fill the degrees the user left out: the remaining GPUs go to data parallelism."""
    tp, pp = req.tp or 1, req.pp or 1
    if req.n_gpus % (tp * pp):
        raise ValueError(f"--tp {tp} x --pp {pp} must divide --gpus {req.n_gpus}")
    rest = req.n_gpus // (tp * pp)
    dp, fsdp = req.dp, req.fsdp
    if dp is None and fsdp is None:
        dp, fsdp = (rest, 1) if (req.zero or 0) < 3 else (1, rest)
    elif dp is None:
        dp = max(1, rest // fsdp)
    elif fsdp is None:
        fsdp = max(1, rest // dp)
    zero = req.zero if req.zero is not None else (3 if fsdp > 1 else 0)
    layout = Layout(dp=dp, fsdp=fsdp, tp=tp, pp=pp, zero=zero, micro_batch=req.micro_batch, seq_len=seq_len,
                    checkpointing=req.checkpointing or "none", sequence_parallel=req.sequence_parallel,
                    pp_schedule=req.pp_schedule)
    check_layout(layout, shape, req.n_gpus)
    return layout


def make_plan(req: PlanRequest, shape: ModelShape | None, hw: Hardware) -> dict:
    """All the arithmetic for one request, as the JSON-ready dict documented in docs/plan.md."""
    if req.n_gpus < 1:
        raise ValueError(f"--gpus must be >= 1, got {req.n_gpus}")
    for flag, v in (("--micro-batch", req.micro_batch), ("--infer-batch", req.infer_batch),
                    ("--seq-len", req.seq_len or 1), ("--context", req.context or 1),
                    ("--gpus-per-node", req.gpus_per_node)):
        if v < 1:
            raise ValueError(f"{flag} must be >= 1, got {v}")
    if not req.batch_tokens > 0 or not req.tokens_per_param > 0:
        raise ValueError("--batch-tokens and --tokens-per-param must be positive")
    prec = get_precision(req.precision)
    peak = hw.peak_flops(prec.compute)
    budget, budget_source = resolve_budget(req, peak)
    warnings: list[str] = []

    # ---- what to train: model size N and tokens D
    mode = "forward"
    if shape is None:
        if budget is None and req.tokens is None:
            raise ValueError("give a model (--params, --preset or --run), or a budget (--days, --flops or "
                             "--budget-usd) to get the compute-optimal model")
        mode = "inverse"
        if budget is not None:
            if req.tokens is not None:
                raise ValueError("inverse mode takes a budget or --tokens, not both; add --params to fix the model")
            n_opt, d_opt = _optimal_within(budget, req)
        else:  # a token count alone: the model those tokens train compute-optimally
            d_opt = float(req.tokens)
            n_opt = d_opt / req.tokens_per_param if req.fit == "chinchilla" else _params_for_tokens(d_opt, req.fit)
        shape = shape_from_params(n_opt, seq_len=req.seq_len or 4096)
        tokens = d_opt
    else:
        if req.tokens is not None and budget is not None:
            raise ValueError("give --tokens or a budget (--days/--flops/--budget-usd), not both")
        if req.tokens is not None:
            if not req.tokens > 0:
                raise ValueError(f"--tokens must be positive, got {req.tokens}")
            tokens = float(req.tokens)
        elif budget is not None:
            seq = req.seq_len or shape.max_seq_len
            tokens = budget / shape.flops_per_token(seq)
        else:
            tokens = C.optimal_tokens_for_params(shape.n_params, req.fit, req.tokens_per_param)
            warnings.append(f"no --tokens given: using the compute-optimal {tokens:.3g} ({req.fit})")

    seq_len = req.seq_len or shape.max_seq_len
    if seq_len > shape.max_seq_len and shape.pos_emb == "learned":
        raise ValueError(f"--seq-len {seq_len} exceeds the model's {shape.max_seq_len} learned positions")
    N = shape.n_params

    # ---- compute, time, cost
    fpt = shape.flops_per_token(seq_len)
    flops = fpt * tokens
    flops_6nd = 6.0 * N * tokens
    seconds = C.training_seconds(flops, req.n_gpus, peak, req.mfu)
    gpu_hours = seconds * req.n_gpus / 3600
    n_cc, d_cc = C.chinchilla_optimal(flops, req.tokens_per_param)
    fit = C.FITS.get(req.fit, C.HOFFMANN)
    compute = {
        "n_params": N,
        "tokens": tokens,
        "tokens_per_param": tokens / N,
        "flops_per_token": fpt,
        "flops": flops,
        "flops_6nd": flops_6nd,
        "flops_attention": flops - flops_6nd,
        "compute_optimal": {
            "rule": req.fit,
            "chinchilla": {"n_params": n_cc, "tokens": d_cc, "tokens_per_param": req.tokens_per_param},
            "hoffmann": dict(zip(("n_params", "tokens"), C.HOFFMANN.optimal(flops))),
            "besiroglu": dict(zip(("n_params", "tokens"), C.BESIROGLU.optimal(flops))),
            "tokens_for_this_model": C.optimal_tokens_for_params(N, req.fit, req.tokens_per_param),
        },
        "predicted_loss": {"fit": fit.name, "loss": fit.loss(N, tokens), "source": fit.source,
                           "note": "MassiveText loss under the paper's tokenizer; compare plans, do not expect it"},
    }
    time = {
        "mfu": req.mfu,
        "peak_flops_per_gpu": peak,
        "cluster_flops_per_s": C.flops_per_second(req.n_gpus, peak, req.mfu),
        "tokens_per_s": tokens / seconds,
        "seconds": seconds,
        "days": seconds / C.SECONDS_PER_DAY,
        "gpu_hours": gpu_hours,
        "cost_per_gpu_hour": req.cost_per_gpu_hour,
        "cost_usd": gpu_hours * req.cost_per_gpu_hour if req.cost_per_gpu_hour is not None else None,
    }

    # ---- memory and layout
    evals = search(shape, hw, req.n_gpus, req.micro_batch, seq_len, req.precision, req.optimizer, req.attention,
                   req.batch_tokens, req.gpus_per_node, req.reserve_gib, req.pp_schedule)
    recommended = evals[0] if evals and evals[0].fits else None
    requested = None
    if req.layout_given or req.n_gpus == 1:
        layout = _layout_from_request(req, shape, seq_len)
        requested = evaluate(shape, layout, hw, req.precision, req.optimizer, req.attention, req.batch_tokens,
                             req.reserve_gib)
        if not requested.fits:
            warnings.append(f"the requested layout ({layout.describe()}) does not fit: "
                            + why_nothing_fits(shape, hw, req.n_gpus, requested, req.precision, req.optimizer,
                                               req.reserve_gib))
    if recommended is None:
        closest = min(evals, key=lambda e: e.memory["bytes"]["total"]) if evals else requested
        reason = why_nothing_fits(shape, hw, req.n_gpus, closest, req.precision, req.optimizer, req.reserve_gib)
        warnings.append(f"nothing fits on {req.n_gpus} x {hw.name}: {reason}")
    per_step = (recommended or requested or evals[0]).layout
    if req.batch_tokens < per_step.data_parallel * per_step.micro_batch * seq_len:
        warnings.append(f"--batch-tokens {req.batch_tokens:.3g} is smaller than one micro-batch on every "
                        f"data-parallel rank ({per_step.data_parallel} x {per_step.micro_batch} x {seq_len}); "
                        "the real global batch will be larger")
    if shape.derived:
        warnings.append(f"no architecture given: assumed a Llama-style shape ({shape.n_layers} layers, d_model "
                        f"{shape.d_model}); pass --preset or --run for exact activations")

    # ---- inference
    context = req.context or seq_len
    kv = kv_cache_bytes(shape.n_layers, shape.n_kv_heads, shape.head_dim, req.infer_batch, context, req.kv_bytes)
    weights_bf16 = 2.0 * N
    inference = {
        "batch": req.infer_batch,
        "context": context,
        "attention": shape.attention_kind,
        "kv_bytes_per_elem": req.kv_bytes,
        "kv_cache_bytes": kv,
        "kv_bytes_per_token": kv / (req.infer_batch * context),
        "kv_cache_bytes_if": {
            kind: kv_cache_bytes(shape.n_layers, h, shape.head_dim, req.infer_batch, context, req.kv_bytes)
            for kind, h in (("MHA", shape.n_heads), ("GQA", shape.n_kv_heads), ("MQA", 1))
        },
        "weights_bytes_bf16": weights_bf16,
        "fits_one_gpu": weights_bf16 + kv <= hw.memory_bytes - req.reserve_gib * GIB,
        # decoding reads every weight and the whole cache once per step: a bandwidth bound, not a FLOP one
        "decode_steps_per_s_upper_bound": hw.bandwidth_gbs * 1e9 / (weights_bf16 + kv),
    }

    return {
        "schema": SCHEMA,
        "mode": mode,
        "budget": {"flops": budget, "source": budget_source, "days": req.days, "budget_usd": req.budget_usd},
        "model": shape.to_dict(),
        "hardware": {**asdict(hw), "n_gpus": req.n_gpus, "memory_bytes": hw.memory_bytes, "precision": req.precision,
                     "precision_note": prec.note, "optimizer": req.optimizer},
        "compute": compute,
        "time": time,
        "memory": {
            "seq_len": seq_len,
            "micro_batch": req.micro_batch,
            "batch_tokens": req.batch_tokens,
            "attention": req.attention,
            "requested": requested.to_dict() if requested else None,
            "recommended": recommended.to_dict() if recommended else None,
            "alternatives": [e.to_dict() for e in evals[1:6] if e.fits],
        },
        "inference": inference,
        "warnings": warnings,
    }


def _optimal_within(budget: float, req: PlanRequest) -> tuple[float, float]:
    """Compute-optimal (N, D) whose training FLOPs *including attention* equal the budget.

    The scaling laws split C = 6ND; the attention term (12 L T d per token) comes on top, so taking C at face
    value would overrun a wall-clock budget (by ~15% for a 4B model at T = 4096). Shrink the 6ND budget by
    bisection until 6ND + attention = C; the tokens-per-parameter ratio of the rule is kept."""
    seq = req.seq_len or 4096

    def total(scale: float) -> tuple[float, float, float]:
        n, d = C.compute_optimal(budget * scale, req.fit, req.tokens_per_param)
        return shape_from_params(n, seq_len=seq).flops_per_token(seq) * d, n, d

    lo, hi = 0.05, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if total(mid)[0] < budget else (lo, mid)
    _, n, d = total(lo)
    return n, d


def _params_for_tokens(tokens: float, fit: str) -> float:
    # the N whose compute-optimal token count is `tokens`: bisection in log space (D grows with N)
    f = C.FITS[fit]
    lo, hi = 1e3, 1e15
    for _ in range(200):
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if f.tokens_for_params(mid) < tokens else (lo, mid)
    return lo
