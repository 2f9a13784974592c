"""Pretraining on your own data in one command: a config sized for the data and a budget.

    scratchlm pretrain --data runs/shards --time 10m        # shards from `scratchlm data tokenize`
    scratchlm pretrain --input my_books/ --tokens 50M       # raw text: prepared, tokenized inside the run

`auto_config` measures how fast this machine trains (a few real optimizer steps: tokens/s, and from it FLOP/s),
asks scratchlm.plan.sizing for the compute-optimal model of the budget, measures again at that size (small
models reach a lower share of the peak than large ones), and writes it all into an ordinary PretrainConfig, so
the run folder's config.toml is what was trained and `--resume` needs no flags. `--set` still overrides
anything; `--config` switches the sizing off (its [model] is kept, the budget flags only set the budget).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import torch

from scratchlm.config import apply_overrides, from_dict, merge
from scratchlm.device import resolve_device, train_dtype
from scratchlm.model.config import ModelConfig
from scratchlm.plan.sizing import LADDER, Sizing, count_params, ladder_config, size_for_budget

from .config import PretrainConfig

log = logging.getLogger("scratchlm")

PROBE = LADDER[4]  # d_model 256: the first measurement, before the size is known


def base_recipe(device: str) -> dict:
    """The training settings of an auto-sized run (the model is filled in by auto_config). CPUs get short
    sequences and small batches (a step must take well under a second to fit many in minutes); GPUs longer ones."""
    gpu = device.startswith("cuda")
    return {"train": {"seq_len": 1024 if gpu else 256, "micro_batch_size": 16, "schedule": "cosine",
                      "eval_every": 0, "sample_tokens": 64, "log_every": 10}}


def learning_rate(d_model: int) -> float:
    """3e-3 up to d_model 256, then falling as 1/sqrt(width) (1.7e-3 at 768, 1.1e-3 at 2048): wider layers take
    smaller steps, the direction muP makes exact; at these batch sizes it keeps AdamW stable."""
    return 3e-3 * min(1.0, math.sqrt(256 / d_model))


def measure_tokens_per_second(model_cfg: ModelConfig, seq_len: int, micro_batch: int, device: str,
                              dtype: torch.dtype, steps: int = 2) -> float:
    """Tokens/s of full optimizer steps (forward, backward, AdamW) on random tokens, after one warm-up step."""
    from scratchlm.model import Transformer

    with torch.random.fork_rng(devices=[]):  # the run's own initialisation must not depend on this probe
        model = Transformer(model_cfg).to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        x = torch.randint(0, model_cfg.vocab_size, (micro_batch, seq_len + 1), device=device)
        autocast = torch.autocast(device.split(":")[0], dtype=dtype, enabled=dtype != torch.float32)

        def step():
            with autocast:
                logits = model(x[:, :-1])
                loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), x[:, 1:].flatten())
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return steps * micro_batch * seq_len / (time.perf_counter() - t0)


@dataclass
class AutoSize:
    sizing: Sizing
    tokens_per_sec: float  # measured at the chosen shape (time budgets only)
    data_tokens: int
    batch_tokens: int
    final: ModelConfig | None = None  # the model trained: the planner's, unless --set model.* changed it

    @property
    def expected_steps(self) -> int:
        return max(1, round(self.sizing.tokens / self.batch_tokens))

    def describe(self) -> str:
        s = self.sizing
        m = s.model
        why = {"tokens": "the token budget", "compute": "the time budget (20 tokens per parameter)",
               "data": f"the data: {s.epochs:.1f} passes over {self.data_tokens:,} unique tokens (repeating more "
                       "than ~4 times helps little)"}[s.limited_by]
        lines = [f"model: {s.params / 1e6:.2f}M parameters (Llama-style, d_model {m.d_model}, {m.n_layers} layers, "
                 f"{m.n_heads} heads), sized by {why}",
                 f"tokens: {s.tokens / 1e6:.1f}M ({s.epochs:.2f} epochs of the data), {s.flops:.3g} FLOPs (6ND)",
                 f"steps: about {self.expected_steps:,} of {self.batch_tokens:,} tokens"]
        f = self.final
        if f is not None and (f.d_model, f.n_layers, f.n_heads) != (m.d_model, m.n_layers, m.n_heads):
            lines[0] = (f"model: {count_params(f) / 1e6:.2f}M parameters (d_model {f.d_model}, {f.n_layers} layers, "
                        f"{f.n_heads} heads) as --set; the planner's choice was {s.params / 1e6:.2f}M (d_model "
                        f"{m.d_model}, {m.n_layers} layers, {m.n_heads} heads), sized by {why}")
        if self.tokens_per_sec:
            lines.append(f"speed: {self.tokens_per_sec:,.0f} tokens/s measured at this size on this machine")
        return "\n".join(lines)


def auto_config(data: dict, vocab_size: int, data_tokens: int, seconds: float | None = None,
                tokens: float | None = None, overrides: list[str] | None = None) -> tuple[PretrainConfig, AutoSize]:
    """A PretrainConfig whose model is the compute-optimal one for the budget (exactly one of seconds / tokens),
    with `data` (the [data] section) and `overrides` (--set) applied; returns it with the numbers behind it."""
    if (seconds is None) == (tokens is None):
        raise ValueError("give one budget: --time (e.g. 10m) or --tokens (e.g. 50M)")
    def resolved(device: str, sized: dict | None = None) -> PretrainConfig:  # recipe <- sizing <- data <- --set
        raw = merge(merge(base_recipe(device), sized or {}), {"data": data})
        sets = overrides or []
        if sized is None:  # before sizing only [train] matters; a --set model.* applies to the sized model
            sets = [o for o in sets if not o.strip().startswith(("model.", "preset"))]
        return from_dict(PretrainConfig, apply_overrides(raw, sets, PretrainConfig))

    device = resolve_device(resolved("cpu").train.device)
    tc = resolved(device).train
    seq_len, micro = tc.seq_len, tc.micro_batch_size
    dtype = train_dtype(tc.dtype, device)
    if tc.num_threads:
        torch.set_num_threads(tc.num_threads)
    batch_tokens = tc.global_batch_tokens or micro * seq_len

    tps = 0.0
    if tokens is not None:
        sizing = size_for_budget(vocab_size, seq_len, data_tokens, tokens=tokens)
    else:
        cfg = ladder_config(PROBE, vocab_size, seq_len)
        seen = set()
        while True:  # measure, size, measure at the new size; stop when the size no longer changes
            tps = measure_tokens_per_second(cfg, seq_len, micro, device, dtype)
            flops_per_sec = 6 * count_params(cfg) * tps
            sizing = size_for_budget(vocab_size, seq_len, data_tokens, flops=seconds * flops_per_sec)
            key = (sizing.model.d_model, sizing.model.n_layers)
            if key == (cfg.d_model, cfg.n_layers) or key in seen:
                break
            seen.add((cfg.d_model, cfg.n_layers))
            cfg = sizing.model
        if (sizing.model.d_model, sizing.model.n_layers) != (cfg.d_model, cfg.n_layers):
            tps = measure_tokens_per_second(sizing.model, seq_len, micro, device, dtype)
        n = sizing.params
        sizing.tokens = seconds * tps  # what the time buys at the measured speed of the chosen shape
        sizing.flops, sizing.epochs = 6 * n * sizing.tokens, sizing.tokens / data_tokens

    model = sizing.model
    budget = {"max_time": seconds} if seconds is not None else {"max_tokens": int(tokens)}
    steps = max(1, round(sizing.tokens / batch_tokens))
    sized = {"model": {"vocab_size": vocab_size, "d_model": model.d_model, "n_layers": model.n_layers, "n_heads": model.n_heads,
                       "n_kv_heads": model.n_kv_heads, "max_seq_len": seq_len},
             "train": {"lr": learning_rate(model.d_model), "warmup_steps": min(500, max(10, steps // 50)),
                       "ckpt_every": max(50, steps // 10), **budget}}
    cfg = resolved(device, sized)
    shape = lambda m: (m.d_model, m.n_layers, m.n_heads)  # noqa: E731
    if shape(cfg.model) != shape(model):  # a --set model.* wins over the planner: its learning rate follows too
        if not any(o.strip().startswith("train.lr=") for o in overrides or []):
            sized["train"]["lr"] = learning_rate(cfg.model.d_model)
            cfg = resolved(device, sized)
    return cfg, AutoSize(sizing, tps, data_tokens, batch_tokens, cfg.model)
