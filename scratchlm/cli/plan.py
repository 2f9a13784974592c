"""`scratchlm plan`: FLOPs, tokens, time, cost, memory per GPU and a parallel layout, before you train."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from scratchlm.cli.common import add_renamed

EXAMPLES = """\
examples:
  # what does a 7B model on 1T tokens cost on 8 H100s with FSDP?
  scratchlm plan --params 7e9 --tokens 1e12 --gpu H100 --gpus 8 --fsdp 8 --mfu 0.4 --cost-per-gpu-hour 2.5

  # the same as JSON (schema scratchlm.plan/v1, documented in docs/plan.md)
  scratchlm plan --params 7e9 --tokens 1e12 --gpu H100 --gpus 8 --fsdp 8 --mfu 0.4 --json

  # a preset: compute-optimal tokens (20/param), memory, and the layout that fits one RTX 4090
  scratchlm plan --preset gpt2-124m --gpu RTX4090

  # the model of a run folder (its latest checkpoint), trained for 2 days on 1 A100
  scratchlm plan --run runs/pretrain --gpu A100-80GB --days 2

  # inverse: the compute-optimal model for 8 H100s and one week (Hoffmann et al.'s fit instead of 20/param)
  scratchlm plan --gpus 8 --gpu H100 --days 7 [--fit hoffmann]

  # does a 70B model fit on 64 H100s with tp=8 pp=2? (and if not, why)
  scratchlm plan --params 70e9 --tokens 2e12 --gpus 64 --gpu H100 --tp 8 --pp 2 --fsdp 4 --seq-len 4096

  # settings from a file (keys named as the flags: gpus = 8, cost_per_gpu_hour = 2.5), flags and --set over it
  scratchlm plan --config pod.toml --params 7e9 --set gpus=16

  scratchlm plan --list-gpus        # the hardware catalog (extend it with --hardware my_gpus.toml)
"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "plan", help="compute, memory and cost arithmetic before you train",
        description="Training FLOPs (6ND + attention), compute-optimal size and tokens (Chinchilla), wall-clock "
                    "time and cost at a given MFU, memory per GPU (weights, gradients, optimizer states under "
                    "ZeRO/FSDP/TP/PP, activations after Korthikanti et al. 2022), a parallel layout that fits, and "
                    "the inference KV cache.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    m = p.add_argument_group("model (one of; none = inverse mode from a budget)")
    m.add_argument("--params", type=float, default=None,
                   help="parameter count N, e.g. 7e9 (a Llama-style shape is assumed)")
    add_renamed(m, "--preset", "--model", default=None, metavar="NAME",
                help="a model preset, e.g. gpt2-124m, llama-1b")
    m.add_argument("--run", default=None, metavar="DIR", help="a run folder: plan for its checkpoint's model")
    m.add_argument("--kv-heads", type=int, default=None, help="KV heads for --params (default: n_heads, MHA)")
    w = p.add_argument_group("work: tokens or a budget (none: compute-optimal tokens for the model)")
    w.add_argument("--tokens", type=float, default=None, help="training tokens D, e.g. 1e12")
    w.add_argument("--flops", type=float, default=None, help="compute budget in FLOPs")
    w.add_argument("--days", type=float, default=None, help="wall-clock budget on --gpus x --gpu at --mfu")
    w.add_argument("--budget-usd", type=float, default=None, help="money budget (needs --cost-per-gpu-hour)")
    w.add_argument("--fit", default="chinchilla", choices=["chinchilla", "hoffmann", "besiroglu"],
                   help="compute-optimal rule: 20 tokens/param (default), or a parametric L(N, D) fit")
    w.add_argument("--tokens-per-param", type=float, default=20.0, help="for --fit chinchilla (default 20)")
    h = p.add_argument_group("hardware")
    h.add_argument("--gpu", default="H100", help="device from the catalog (default H100; see --list-gpus)")
    h.add_argument("--gpus", type=int, default=1, help="number of GPUs (default 1)")
    h.add_argument("--gpus-per-node", type=int, default=8, help="tensor parallelism stays within a node (default 8)")
    h.add_argument("--hardware", default=None, metavar="TOML", help="extra/overridden devices (see docs/plan.md)")
    h.add_argument("--mfu", type=float, default=0.4, help="expected model FLOPs utilisation (default 0.4)")
    h.add_argument("--cost-per-gpu-hour", type=float, default=None, metavar="USD", help="price, for the cost line")
    h.add_argument("--list-gpus", action="store_true", help="print the hardware catalog and exit")
    t = p.add_argument_group("training setup")
    t.add_argument("--precision", default="bf16-mixed",
                   choices=["bf16-mixed", "amp", "bf16", "fp8", "tf32", "fp32"],
                   help="bf16-mixed: bf16 weights, fp32 master+Adam (16 B/param); amp: torch.autocast with fp32 "
                        "weights (16 B/param); bf16: pure (8 B/param); default bf16-mixed")
    t.add_argument("--optimizer", default="adamw", choices=["adamw", "adam", "lion", "sgd", "none"])
    t.add_argument("--seq-len", type=int, default=None,
                   help="tokens per sequence (default: model max, 4096 for --params)")
    t.add_argument("--micro-batch", type=int, default=1, help="sequences per GPU per forward (default 1)")
    t.add_argument("--batch-tokens", type=float, default=2**19, help="global batch in tokens (default 524288)")
    t.add_argument("--attention", default="flash", choices=["flash", "eager"],
                   help="flash: SDPA kernels, no s x s matrix (default); eager: materialised scores")
    lay = p.add_argument_group("parallel layout (give any to evaluate it; the search recommends one anyway)")
    lay.add_argument("--dp", type=int, default=None, help="replicated data-parallel degree")
    lay.add_argument("--fsdp", type=int, default=None, help="sharded data-parallel degree (ZeRO-3)")
    lay.add_argument("--tp", type=int, default=None, help="tensor-parallel degree")
    lay.add_argument("--pp", type=int, default=None, help="pipeline stages")
    lay.add_argument("--zero", type=int, default=None, choices=[0, 1, 2, 3], help="ZeRO stage (3 with --fsdp)")
    lay.add_argument("--checkpointing", default=None, choices=["none", "selective", "full"],
                     help="activation recomputation")
    lay.add_argument("--sequence-parallel", action="store_true", help="with --tp: split norms along the sequence")
    lay.add_argument("--pp-schedule", default="1f1b", choices=["1f1b", "gpipe"])
    lay.add_argument("--reserve-gib", type=float, default=1.0,
                     help="per-GPU memory kept for CUDA context/NCCL (default 1 GiB; plus 5%% fragmentation)")
    i = p.add_argument_group("inference")
    i.add_argument("--infer-batch", type=int, default=1, help="sequences in the KV cache (default 1)")
    i.add_argument("--context", type=int, default=None, help="KV-cache context (default: --seq-len)")
    i.add_argument("--kv-bytes", type=int, default=2, choices=[1, 2, 4], help="bytes per cached value (default 2)")
    c = p.add_argument_group("settings")
    c.add_argument("--config", type=Path, default=None,
                   help="TOML file of these settings, keys named as the flags with underscores (gpus = 8)")
    c.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting, e.g. --set gpus=8 (repeatable)")
    p.add_argument("--json", action="store_true", help="print the plan as JSON (stable schema) instead of a table")
    p.add_argument("-v", "--verbose", action="count", default=0, help="tracebacks on errors")
    # every setting is also a config key (plan/config.py): defaults <- --config <- these flags <- --set, so the flags
    # default to None ("not given") and the defaults live in one place, the dataclass (not imported here: building
    # the parser would import the whole planner on every command's start)
    p.set_defaults(func=handler, **{a.dest: None for a in p._actions if a.dest not in NOT_SETTINGS})


# the flags that are not PlanConfig keys (tests/test_cli_flags.py checks the rest are exactly its fields)
NOT_SETTINGS = {"help", "list_gpus", "config", "overrides", "json", "verbose"}


def _list_gpus(catalog) -> str:
    rows = [f"{'name':<11} {'bf16 TF':>8} {'fp8 TF':>8} {'fp32 TF':>8} {'memory':>10} {'GB/s':>7}  source"]
    for hw in catalog.values():
        fp8 = f"{hw.fp8_tflops:g}" if hw.fp8_tflops else "-"
        rows.append(f"{hw.name:<11} {hw.bf16_tflops:>8g} {fp8:>8} {hw.fp32_tflops:>8g} {hw.memory_gib:>6g} GiB "
                    f"{hw.bandwidth_gbs:>7g}  {hw.note}")
    return "\n".join(rows) + "\n"


def handler(args: argparse.Namespace) -> int:
    from scratchlm.config import load_config
    from scratchlm.plan.config import PlanConfig
    from scratchlm.plan.hardware import load_catalog, lookup
    from scratchlm.plan.planner import PlanRequest, make_plan
    from scratchlm.plan.report import format_plan

    flags = {f.name: getattr(args, f.name) for f in dataclasses.fields(PlanConfig)}
    cfg = load_config(PlanConfig, args.config, args.overrides, flags={k: v for k, v in flags.items() if v is not None})
    catalog = load_catalog(cfg.hardware)
    if args.list_gpus:
        sys.stdout.write(_list_gpus(catalog))
        return 0
    hw = lookup(cfg.gpu, catalog)
    given = [f"--{k}" for k in ("params", "preset", "run") if getattr(cfg, k) is not None]
    if len(given) > 1:
        raise ValueError(f"give one model, not {' and '.join(given)}")
    shape = None
    if cfg.params is not None:
        from scratchlm.plan.shape import shape_from_params

        shape = shape_from_params(cfg.params, seq_len=cfg.seq_len or 4096, n_kv_heads=cfg.kv_heads)
    elif cfg.preset is not None:
        from scratchlm.plan.shape import shape_for_preset

        shape = shape_for_preset(cfg.preset)
    elif cfg.run is not None:
        from scratchlm.plan.shape import shape_from_run

        shape = shape_from_run(cfg.run)
    req = PlanRequest(
        tokens=cfg.tokens, flops=cfg.flops, days=cfg.days, budget_usd=cfg.budget_usd, n_gpus=cfg.gpus,
        gpus_per_node=cfg.gpus_per_node, mfu=cfg.mfu, cost_per_gpu_hour=cfg.cost_per_gpu_hour,
        precision=cfg.precision, optimizer=cfg.optimizer, attention=cfg.attention, dp=cfg.dp, fsdp=cfg.fsdp,
        tp=cfg.tp, pp=cfg.pp, zero=cfg.zero, micro_batch=cfg.micro_batch, seq_len=cfg.seq_len,
        checkpointing=cfg.checkpointing, sequence_parallel=cfg.sequence_parallel, pp_schedule=cfg.pp_schedule,
        batch_tokens=cfg.batch_tokens, fit=cfg.fit, tokens_per_param=cfg.tokens_per_param,
        infer_batch=cfg.infer_batch, context=cfg.context, kv_bytes=cfg.kv_bytes, reserve_gib=cfg.reserve_gib,
    )
    plan = make_plan(req, shape, hw)
    if args.json:
        sys.stdout.write(json.dumps(plan, indent=2) + "\n")
    else:
        sys.stdout.write(format_plan(plan))
    return 0
