"""A plan as a readable table (the JSON form is the plan dict itself; see docs/plan.md for its schema)."""

from __future__ import annotations

GIB = 2**30


def human(x: float | None, unit: str = "") -> str:
    """1.23e9 -> '1.23B'; keeps three significant digits."""
    if x is None:
        return "-"
    for suffix, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{suffix}{unit}"
    return f"{x:.3g}{unit}"


def gib(x: float) -> str:
    return f"{x / GIB:.2f} GiB" if x >= 0.01 * GIB else f"{x / 2**20:.2f} MiB"


def duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _rows(title: str, rows: list[tuple[str, str]]) -> list[str]:
    width = max(len(k) for k, _ in rows)
    return [title] + [f"  {k:<{width}}  {v}" for k, v in rows] + [""]


def _memory_rows(ev: dict) -> list[tuple[str, str]]:
    mem = ev["memory_per_gpu"]
    rows = [(k.replace("_", " "), gib(v)) for k, v in mem.items() if k != "total"]
    rows.append(("total", f"{gib(mem['total'])} of {gib(ev['usable_bytes'])} usable"
                          f" -> {'fits' if ev['fits'] else 'DOES NOT FIT'}"))
    extra = f"grad accumulation {ev['grad_accum_steps']}"
    if ev["layout"]["pp"] > 1:
        extra += f", pipeline bubble {ev['pipeline_bubble']:.0%} ({ev['worst_stage']} stage shown)"
    rows.append(("steps", extra))
    return rows


def format_plan(plan: dict) -> str:
    m, hw, c, t = plan["model"], plan["hardware"], plan["compute"], plan["time"]
    mem, inf = plan["memory"], plan["inference"]
    out: list[str] = []
    if plan["mode"] == "inverse":
        b = plan["budget"]
        if b["source"] == "days":
            src = f"{b['days']:g} days on {hw['n_gpus']} x {hw['name']} at MFU {t['mfu']:.0%}"
        elif b["source"] == "budget_usd":
            src = f"${b['budget_usd']:,.0f} at ${t['cost_per_gpu_hour']:g}/GPU-hour"
        else:
            src = "the given FLOPs" if b["source"] else "the given tokens"
        budget = f"{b['flops']:.3g} FLOPs" if b["flops"] else f"{human(c['tokens'])} tokens"
        out += _rows(f"inverse: the compute-optimal model for {budget} ({src})", [
            ("rule", c["compute_optimal"]["rule"]),
            ("parameters N", human(m["n_params"])),
            ("tokens D", human(c["tokens"])),
        ])
    shape = (f"{m['n_layers']} layers, d_model {m['d_model']}, {m['n_heads']} heads"
             f" ({m['attention']}, {m['n_kv_heads']} KV), ffn {m['ffn_hidden']}, vocab {m['vocab_size']}")
    out += _rows(f"model: {m['name']}", [
        ("parameters", f"{human(m['n_params'])} ({m['n_params']:,})"),
        ("shape", shape + (" [assumed]" if m["derived"] else "")),
    ])
    co = c["compute_optimal"]
    out += _rows("compute", [
        ("tokens", f"{human(c['tokens'])} ({c['tokens_per_param']:.1f} per parameter)"),
        ("FLOPs", f"{c['flops']:.3g} = 6ND {c['flops_6nd']:.3g} + attention {c['flops_attention']:.3g}"),
        ("FLOPs per token", f"{c['flops_per_token']:.3g}"),
        ("compute-optimal", f"for these FLOPs as 6ND: N {human(co['chinchilla']['n_params'])}, "
                            f"D {human(co['chinchilla']['tokens'])} "
                            f"({co['chinchilla']['tokens_per_param']:g} tok/param); "
                            f"Hoffmann fit N {human(co['hoffmann']['n_params'])}, "
                            f"Besiroglu fit N {human(co['besiroglu']['n_params'])}"),
        ("tokens for this model", f"{human(co['tokens_for_this_model'])} ({co['rule']})"),
        ("predicted loss", f"{c['predicted_loss']['loss']:.3f} ({c['predicted_loss']['fit']} fit; MassiveText, "
                           "for comparing plans only)"),
    ])
    cost = f"${t['cost_usd']:,.0f} at ${t['cost_per_gpu_hour']:g}/GPU-hour" if t["cost_usd"] is not None else \
        "- (pass --cost-per-gpu-hour)"
    out += _rows(f"time on {hw['n_gpus']} x {hw['name']} ({hw['precision']}, "
                 f"peak {human(t['peak_flops_per_gpu'])}FLOP/s, MFU {t['mfu']:.0%})", [
        ("wall clock", duration(t["seconds"])),
        ("GPU-hours", f"{t['gpu_hours']:,.0f}" if t["gpu_hours"] >= 10 else f"{t['gpu_hours']:.2f}"),
        ("throughput", f"{human(t['tokens_per_s'])} tokens/s"),
        ("cost", cost),
    ])
    head = (f"memory per GPU (seq {mem['seq_len']}, micro-batch {mem['micro_batch']}, {hw['precision']}, "
            f"{hw['optimizer']})")
    if mem["requested"]:
        out += _rows(f"{head}, requested layout: {mem['requested']['layout']['description']}",
                     _memory_rows(mem["requested"]))
    if mem["recommended"]:
        rec = mem["recommended"]
        same = mem["requested"] and mem["requested"]["layout"] == rec["layout"]
        if not same:
            title = (f"recommended layout: {rec['layout']['description']} "
                     f"(relative step time {rec['relative_step_time']:.2f})")
            out += _rows(title if mem["requested"] else f"{head}, {title}", _memory_rows(rec))
        if mem["alternatives"]:
            alts = [(a["layout"]["description"],
                     f"{gib(a['memory_per_gpu']['total'])}, step time x{a['relative_step_time']:.2f}")
                    for a in mem["alternatives"][:4]]
            out += _rows("other layouts that fit", alts)
    kvi = inf["kv_cache_bytes_if"]
    out += _rows(f"inference (batch {inf['batch']}, context {inf['context']})", [
        ("weights (bf16)", gib(inf["weights_bytes_bf16"])),
        ("KV cache", f"{gib(inf['kv_cache_bytes'])} ({inf['attention']}; "
                     f"{human(inf['kv_bytes_per_token'])}B per token)"),
        ("KV if MHA/GQA/MQA", " / ".join(gib(kvi[k]) for k in ("MHA", "GQA", "MQA"))),
        ("decode bound", f"<= {inf['decode_steps_per_s_upper_bound']:.0f} steps/s on one {hw['name']} "
                         "(memory bandwidth / bytes read per step)"),
    ])
    for w in plan["warnings"]:
        out.append(f"warning: {w}")
    return "\n".join(out).rstrip() + "\n"
