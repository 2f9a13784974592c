"""What SFT, DPO, reward modelling and GRPO share: one small trainer with a stage-specific step.

    class SFT(PostTrainer):
        def train_step(self) -> dict:   # forward + backward over one optimizer step's data; returns metrics
        def evaluate(self) -> dict:     # held-out metrics
        def score(self, ev) -> float:   # lower is better: picks the best checkpoint

PostTrainer does the rest, the same way for every stage (and the same way as pretraining, whose pieces it uses:
scratchlm.train's optimizer, schedule, atomic checkpoints and metrics logger):
- the run folder: config.toml, tokenizer/ (the base's, saved with the chat template for HF export),
  checkpoints/, metrics.jsonl, logs/, plots/, DONE;
- the model: the base run's best checkpoint, optionally wrapped with LoRA adapters;
- budgets (train.max_steps / max_time), warmup + decay, gradient clipping, non-finite step skipping;
- checkpoints whose model.safetensors always holds plain (LoRA-merged) weights, so generate/chat/serve and
  the next stage load them like any run, and exact resume from state.pt.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import time
from pathlib import Path

import torch

from scratchlm.config import save_config
from scratchlm.runs import checkpoint_dir, is_done, list_checkpoints, mark_done, prepare_run_dir, write_manifest
from scratchlm.train.checkpoint import (clean_partial, load_checkpoint, load_train_state, mark_best, read_best,
                                        resume_checkpoint, rng_state, save_checkpoint, set_rng_state)
from scratchlm.device import release_host_memory, resolve_device, train_dtype
from scratchlm.train.metrics import MetricsLogger, plot_loss
from scratchlm.train.optim import param_groups, set_lr
from scratchlm.train.schedule import lr_multiplier
from scratchlm.train.optim import make_adamw
from scratchlm.train.stopping import (Interrupted, StopOnSignal, TrainingStopped, nonfinite_weights_error,
                                      weights_finite)
from scratchlm.train.wrap import UNHONOURED_POSTTRAIN, apply_runtime, compiled, prepare_model, refuse_unhonoured

from .lora import apply_lora, lora_state_dict, merged_state_dict

SHARDED = "optim_dcp"  # under FSDP: each rank's shard of the weights and AdamW state, inside the checkpoint

log = logging.getLogger("scratchlm")


def load_base(run_or_ckpt: str | Path, device: str = "cpu"):
    """(Transformer in float32 on `device`, its checkpoint folder) from a run or checkpoint folder."""
    from scratchlm.train.checkpoint import load_model

    if not str(run_or_ckpt):
        raise ValueError("no base model: pass --base RUN (a pretraining or earlier post-training run)")
    model, meta = load_model(run_or_ckpt, device=device)
    return model.float(), Path(meta["checkpoint"])


def masked_nll(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Sum of -log p(target) over positions whose target is not IGNORE (-100). logits (B, T, V), y (B, T)."""
    return torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), y.flatten(), ignore_index=-100,
                                             reduction="sum")


class PostTrainer:
    """A fine-tuning run of `stage` ("sft", "dpo", "reward", "rl") from cfg.base into run_dir."""

    stage = "posttrain"

    def __init__(self, cfg, run_dir: str | Path, resume: bool = False, overwrite: bool = False):
        from scratchlm.inference.chat_template import CHAT_TEMPLATE
        from scratchlm.inference.loading import load_tokenizer_for

        self.cfg, self.tc = cfg, cfg.train
        run_dir = Path(run_dir)
        # Under torchrun (stages with a [parallel] section, SFT): check the layout before anything is written
        # and join the process group. None: one process, the plain loop (distributed.py).
        self.ctx = None
        if getattr(cfg, "parallel", None) is not None:
            from .distributed import start_posttrain

            self.ctx = start_posttrain(cfg.parallel, self.tc.device)
        elif int(os.environ.get("WORLD_SIZE", "1")) > 1:  # N copies of a one-process stage would race on run_dir
            raise ValueError(f"scratchlm {self.stage} runs in one process (only sft, dpo and rl spread over "
                             "torchrun's processes); launch it without torchrun")
        self.is_main = self.ctx is None or self.ctx.is_main
        self.dp_size = 1 if self.ctx is None else self.ctx.dp_size
        self.check_layout()
        # [train] settings this stage has no use for are errors, not silent no-ops (train/wrap.py)
        from .config import stage_train_defaults

        refuse_unhonoured(self.tc, stage_train_defaults(type(cfg)), self.unhonoured(), f"scratchlm {self.stage}")
        if not resume and not overwrite and not is_done(run_dir) and list_checkpoints(run_dir):
            raise FileExistsError(f"{run_dir} holds an unfinished run; pass --resume to continue it or --overwrite "
                                  "to start over")
        if resume and is_done(run_dir) and not overwrite and self.is_main:  # one rank: the others would race it
            (run_dir / "DONE").unlink(missing_ok=True)
        if not (self.tc.max_steps or self.tc.max_time or self.tc.max_tokens):
            raise ValueError("no budget: set train.max_steps or train.max_time (e.g. --set train.max_steps=200)")
        self.run_dir = Path(run_dir)
        if self.is_main:
            reads = [getattr(cfg, k, "") for k in ("base", "data", "val_data", "reward_model")]
            prepare_run_dir(run_dir, overwrite=overwrite, resume=resume, kind=self.stage, inputs=reads)
            clean_partial(self.run_dir)
            save_config(cfg, self.run_dir / "config.toml")
        self._barrier()

        self.device = str(self.ctx.device) if self.ctx is not None else resolve_device(self.tc.device)
        self.device_type = self.device.split(":")[0]
        apply_runtime(self.tc)  # threads, deterministic algorithms: as in pretraining
        self.dtype = train_dtype(self.tc.dtype, self.device)
        if self.dtype == torch.float16:
            raise ValueError("train.dtype float16 is not supported in post-training; use bfloat16 or float32")
        torch.manual_seed(self.tc.seed)

        # the base's tokenizer, re-saved with the chat template it is trained in, so the HF export renders chats
        # like training did: ours, or an imported model's own (which then stays as it was)
        from scratchlm.inference.hf_chat import has_hf_template

        self.tokenizer = load_tokenizer_for(cfg.base)
        if self.is_main:
            own = has_hf_template(self.tokenizer)
            self.tokenizer.save(self.run_dir / "tokenizer", chat_template=None if own else CHAT_TEMPLATE)
        self.pad_id = self.tokenizer.pad_id if self.tokenizer.pad_id is not None else 0

        self.model, self.base_ckpt = load_base(cfg.base, self.device)
        self.model_config = self.model.config.to_dict()
        self.lora = getattr(cfg, "lora", None)
        if self.lora is not None and self.lora.rank > 0:
            wrapped = apply_lora(self.model, self.lora)
            log.info("LoRA rank %d on %d modules", self.lora.rank, len(wrapped))
        else:
            self.lora = None
        prepare_model(self.model, self.tc)  # activation checkpointing: on the blocks, before any wrapper
        self.build()  # stage-specific: data, extra modules (reward head), reference model
        # DDP / FSDP2 around the model; FSDP makes its parameters sharded DTensors in place, so this comes before
        # the optimizer is built. self.model stays the bare model (for state dicts and rank 0's evaluation).
        from .distributed import PackedForward, wrap_data_parallel

        self.wrapped = None
        if self.ctx is not None:
            self.wrapped = wrap_data_parallel(self.model, self.ctx)
        # what a training step calls: (x, y, positions, doc_ids) -> logits, compiled when train.compile is on
        self.train_forward = compiled(self.wrapped if self.wrapped is not None else PackedForward(self.model),
                                      self.tc)
        self.params = [p for p in self.trainable_module().parameters() if p.requires_grad]
        self.optimizer = self.build_optimizer()

        self.step, self.elapsed, self.bad_steps, self.bad_in_a_row = 0, 0.0, 0, 0
        self.tokens = 0  # tokens fed to the model in training (prompt + reply), for plots
        self.best = math.inf
        self.last_eval: dict = {}
        self.resumed_from = None
        self.saved_step = -1  # the step of the last checkpoint this process wrote
        if resume:
            self._resume()
        self.metrics = MetricsLogger(self.run_dir, tensorboard=self.tc.tensorboard) if self.is_main else _NoMetrics()
        if resume:
            self.metrics.truncate_after(self.step)

    # ------------------------------------------------------------------ hooks for the stages
    def check_layout(self) -> None:
        """Raise ValueError if the stage cannot run on this many data-parallel ranks (before anything is written)."""

    def unhonoured(self) -> dict[str, str]:
        """[train] settings this stage cannot honour (name -> why): setting one is an error."""
        return UNHONOURED_POSTTRAIN

    def build(self) -> None:
        """Load data and anything else the stage needs (called once the model exists)."""

    def trainable_module(self) -> torch.nn.Module:
        return self.model

    def train_step(self) -> dict:
        raise NotImplementedError

    def evaluate(self) -> dict:
        return {}

    def score(self, ev: dict) -> float:
        """Lower is better; used to mark the best checkpoint."""
        return ev.get("val_loss", math.inf)

    def extra_state(self) -> dict:
        return {}

    def plot(self) -> None:
        """The run's plots/ (rank 0, at the end of fit)."""
        plot_loss(self.run_dir)

    def load_extra_state(self, state: dict) -> None:
        pass

    def weights_to_save(self) -> dict:
        if self.wrapped is not None:  # every rank gathers (FSDP shards); rank 0 writes
            from .distributed import full_state_dict, merge_lora_dict

            sd = full_state_dict(self.model)
            return merge_lora_dict(sd, self.lora.alpha / self.lora.rank) if self.lora else sd
        return merged_state_dict(self.model) if self.lora else self.model.state_dict()

    # ------------------------------------------------------------------ several processes (distributed.py)
    def _barrier(self) -> None:
        if self.ctx is not None:
            self.ctx.barrier()

    def forward(self, batch) -> torch.Tensor:
        """Logits (B, T, V) of a Batch in a training step: through the DDP / FSDP wrapper when there is one (its
        hooks sync) and torch.compile when train.compile is on."""
        return self.train_forward(batch.x, batch.y, batch.positions, batch.doc_ids)

    def sync_context(self, last: bool):
        """No gradient communication on accumulation micro-steps but the last (DDP no_sync / FSDP)."""
        if self.wrapped is None or last:
            return contextlib.nullcontext()
        return self.ctx.no_sync(self.wrapped)

    def evaluate_everywhere(self) -> dict:
        """evaluate() in one process; distributed: rank 0 evaluates a plain copy of the model (FSDP: gathered from
        the shards by every rank; DDP: its own replica) and every rank gets its numbers."""
        if self.wrapped is None:
            return self.evaluate()
        copy = None
        if self.ctx.degrees["fsdp"] > 1:
            sd = self.weights_to_save()  # collective
            if self.is_main:
                from scratchlm.model import ModelConfig, Transformer

                copy = Transformer(ModelConfig.from_dict(self.model_config))
                copy.load_state_dict(sd, strict=False)  # strict off: non-persistent buffers (RoPE) are rebuilt
                copy.to(self.device)
        ev = None
        if self.is_main:
            model = self.model
            try:
                if copy is not None:
                    self.model = copy
                ev = self.evaluate()
            finally:
                self.model = model
        from .distributed import broadcast

        return broadcast(self.ctx, ev)

    # ------------------------------------------------------------------ machinery
    def autocast(self):
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def build_optimizer(self):
        tc = self.tc
        module = self.trainable_module()
        groups = [g for g in param_groups(module, tc.weight_decay, tc.decay_embeddings) if g["params"]]
        for g in groups:
            g.pop("names", None)
            g["params"] = [p for p in g["params"] if p.requires_grad]
        groups = [g for g in groups if g["params"]]
        opt = make_adamw(groups, tc.lr, (tc.beta1, tc.beta2), tc.eps, tc.fused_optimizer, self.device_type)
        for g in opt.param_groups:
            g["peak_lr"] = tc.lr
        return opt

    def progress(self) -> float:
        tc, p = self.tc, 0.0
        if tc.max_steps:
            p = max(p, self.step / tc.max_steps)
        if tc.max_time:
            p = max(p, self.elapsed / tc.max_time)
        if tc.max_tokens:
            p = max(p, self.tokens / tc.max_tokens)
        return p

    def stop_reason(self) -> str | None:
        if self.tc.max_steps and self.step >= self.tc.max_steps:
            return "max_steps"
        if self.tc.max_time and self.elapsed >= self.tc.max_time:
            return "max_time"
        if self.tc.max_tokens and self.tokens >= self.tc.max_tokens:
            return "max_tokens"
        return None

    def train_state(self) -> dict:
        state = {"step": self.step, "tokens": self.tokens, "elapsed": self.elapsed, "bad_steps": self.bad_steps, "best": self.best,
                 "rng": rng_state(), "stage": self.extra_state()}
        if self.ctx is None or self.ctx.degrees["fsdp"] == 1:  # FSDP: rank 0 holds a shard of it only
            state["optimizer"] = self.optimizer.state_dict()
        if self.lora:
            state["lora"] = lora_state_dict(self.model) if self.wrapped is None else \
                {k: v for k, v in self.weights_to_save_raw().items() if ".lora_" in k}
        return state

    def _last_checkpoint(self) -> Path | None:
        ckpts = list_checkpoints(self.run_dir)
        return ckpts[-1] if ckpts else None

    def save(self, meta: dict | None = None) -> Path:
        # non-finite weights never replace the last good checkpoint (collective: every rank checks its shards)
        if not weights_finite(self.params, self.ctx is not None, self.device):
            raise nonfinite_weights_error(self.step, self._last_checkpoint())
        self.saved_step = self.step
        meta = {"stage": self.stage, "base": str(self.cfg.base), "elapsed": round(self.elapsed, 2),
                **self.last_eval, **(meta or {})}
        weights, state = self.weights_to_save(), self.train_state()  # collective under FSDP: every rank
        ckpt = None
        if self.is_main:
            ckpt = save_checkpoint(self.run_dir, self.step, weights, self.model_config, state, meta=meta,
                                   keep_last=self.tc.keep_last)
        self._barrier()
        # Before the first step (GRPO checkpoints its base) there is no AdamW state to save, and DCP would make
        # one by taking a step with zero gradients: Adam's step count would start at 1 and every later update
        # would shrink (bias correction; 0.73x at the first step). Such a checkpoint holds no optimizer shards, so
        # an FSDP --resume does not take it (a run killed before its first step starts over with --overwrite).
        if self.sharded_optimizer and self.optimizer.state:
            # Each rank holds a shard of the AdamW state: every rank writes its own into the checkpoint (DCP,
            # written under a temporary name and renamed when complete). Until then the checkpoint is not
            # resumable, and --resume takes the previous one.
            from scratchlm.distributed.checkpoint import save_dcp

            save_dcp(checkpoint_dir(self.run_dir, self.step) / SHARDED, self.wrapped, self.optimizer)
            if self.is_main:  # listed in the manifest only now that every shard is written
                write_manifest(checkpoint_dir(self.run_dir, self.step), [SHARDED])
            self._barrier()
        return ckpt

    @property
    def sharded_optimizer(self) -> bool:
        return self.ctx is not None and self.ctx.degrees["fsdp"] > 1

    def weights_to_save_raw(self) -> dict:
        from .distributed import full_state_dict

        return full_state_dict(self.model)

    def _resume(self) -> None:
        # The newest checkpoint whose files match their manifest; under FSDP it must also hold the optimizer
        # shards, complete (a kill can fall between the checkpoint and its shards: the manifest lists them only
        # once they are all written). Rank 0 decides, so every rank loads the same one.
        need = ("state.pt", SHARDED) if self.sharded_optimizer else ("state.pt",)

        picked = None
        if self.is_main:
            try:
                picked = ("ok", resume_checkpoint(self.run_dir, require=need))
            except ValueError as e:
                picked = ("error", str(e))
                if self.sharded_optimizer:
                    picked = ("error", f"no checkpoint in {self.run_dir} has the sharded optimizer state an FSDP "
                                       f"resume needs ({e}); resume with the layout it was written with, or start "
                                       "a new run from it with --base")
        if self.ctx is not None:
            from .distributed import broadcast

            picked = broadcast(self.ctx, picked)
        if picked[0] == "error":
            raise ValueError(picked[1])
        ckpt = picked[1]
        if ckpt is None:
            return
        if self.sharded_optimizer:
            from scratchlm.distributed.checkpoint import load_dcp

            state = load_train_state(ckpt, verify=False)
            load_dcp(ckpt / SHARDED, self.wrapped, self.optimizer)  # weights (LoRA unmerged) + AdamW, resharded
        else:
            if self.lora:  # the checkpoint's weights are merged: keep the base, load the adapters
                state = load_train_state(ckpt, map_location=self.device, verify=False)
                self.model.load_state_dict(state["lora"], strict=False)
            else:
                state = load_checkpoint(ckpt, self.model, map_location=self.device, verify=False)
            if "optimizer" not in state:
                raise ValueError(f"{ckpt} was written by an FSDP run: its optimizer state is sharded; resume with "
                                 f"parallel.fsdp > 1, or start a new run from it with --base {ckpt}")
            self.optimizer.load_state_dict(state["optimizer"])
        self.step, self.elapsed, self.bad_steps, self.best = (state["step"], state["elapsed"], state["bad_steps"],
                                                              state["best"])
        self.tokens = state.get("tokens", 0)
        self.load_extra_state(state["stage"])
        set_rng_state(state["rng"])
        self.resumed_from = ckpt.name
        log.info("resumed %s from %s (step %d)", self.stage, ckpt, self.step)

    def optimizer_step(self) -> tuple[float, float]:
        """Clip, step (unless the gradient is not finite), zero; returns (grad_norm, lr)."""
        tc = self.tc
        warm = lr_multiplier(self.step, self.progress(), schedule=tc.schedule, warmup_steps=tc.warmup_steps,
                             min_ratio=tc.min_lr_ratio, decay_fraction=tc.decay_fraction)
        lr = set_lr(self.optimizer, warm)
        clip = tc.grad_clip if tc.grad_clip > 0 else math.inf
        if self.wrapped is not None:  # the norm over every shard: all ranks take the same decision below
            from scratchlm.distributed import clip_grad_norm_

            norm = clip_grad_norm_(self.params, clip, self.ctx).item()
        else:
            norm = torch.nn.utils.clip_grad_norm_(self.params, clip).item()
        if math.isfinite(norm):
            self.optimizer.step()
            self.bad_in_a_row = 0
        else:
            self.bad_steps += 1
            self.bad_in_a_row += 1
            log.warning("step %d: non-finite gradient, step skipped (%d in a row)", self.step, self.bad_in_a_row)
            if not weights_finite(self.params, self.ctx is not None, self.device):  # no step can recover them
                raise nonfinite_weights_error(self.step, self._last_checkpoint())
            if self.bad_in_a_row >= tc.max_bad_steps:
                last = self._last_checkpoint()
                where = f"the last good checkpoint is {last}" if last else "no checkpoint was written"
                raise TrainingStopped(f"{self.bad_in_a_row} non-finite steps in a row at step {self.step}: the run "
                                      f"diverged; {where}. Lower train.lr or raise train.warmup_steps, then --resume")
        self.optimizer.zero_grad(set_to_none=True)
        return norm, lr

    def _eval(self, final: bool = False) -> dict:
        ev = self.evaluate_everywhere()
        self.last_eval_full = ev
        self.last_eval = {k: v for k, v in ev.items() if isinstance(v, (int, float))}
        self.metrics.log({"step": self.step, "tokens": self.tokens, "elapsed": round(self.elapsed, 2),
                          **self.last_eval})
        return ev

    def fit(self) -> dict:
        from tqdm import tqdm

        tc = self.tc
        n_train = sum(p.numel() for p in self.params)
        log.info("%s: %s trainable parameters of %s", self.stage, f"{n_train:,}",
                 f"{sum(p.numel() for p in self.trainable_module().parameters()):,}")
        bar = tqdm(total=1000, initial=round(min(1.0, self.progress()) * 1000), desc=self.stage, unit="‰",
                   bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}] {postfix}",
                   dynamic_ncols=True, disable=not tc.progress)
        stopped_by = self.stop_reason()
        # Ctrl-C / SIGTERM (scratchlm/train/stopping.py): the step under way finishes, is checkpointed, and the
        # run exits
        release_host_memory()  # what building the stage left (tokenizing, DPO's reference pass) goes back first
        last_trim = time.perf_counter()
        with StopOnSignal() as stop:
            while stopped_by is None:
                t0 = time.perf_counter()
                if t0 - last_trim > 10:  # rows of varying length fragment the heap (device.release_host_memory)
                    release_host_memory()
                    last_trim = t0
                self.model.train()
                row = self.train_step()
                self.tokens += row.pop("n_tokens", 0)
                norm, lr = self.optimizer_step()
                self.step += 1
                self.elapsed += time.perf_counter() - t0
                if self.ctx is not None:  # rank 0's clock on every rank: all stop at the same step
                    from .distributed import broadcast

                    self.elapsed = broadcast(self.ctx, self.elapsed)
                t1 = time.perf_counter()
                if self.step % tc.log_every == 0 or self.step == 1:
                    self.metrics.log({"step": self.step, "tokens": self.tokens, **row, "lr": lr, "grad_norm": norm,
                                      "elapsed": round(self.elapsed, 2)})
                    main = next(iter(row.items()), None)
                    if main is not None:
                        bar.set_postfix_str(f"step {self.step} {main[0]} {main[1]:.4f}", refresh=False)
                stopped_by = self.stop_reason()
                if tc.eval_every and self.step % tc.eval_every == 0 and stopped_by is None:
                    ev = self._eval()
                    s = self.score(ev)
                    if s < self.best:
                        self.best = s
                        ckpt = self.save()
                        if self.is_main:
                            mark_best(self.run_dir, ckpt, s)
                elif tc.ckpt_every and self.step % tc.ckpt_every == 0 and stopped_by is None:
                    self.save()
                self.elapsed += time.perf_counter() - t1
                bar.n = round(min(1.0, self.progress()) * 1000)
                bar.refresh()
                signum = stop.requested(self.ctx is not None, self.device)
                if signum:
                    bar.close()
                    self._stop_on_signal(signum)
        bar.close()
        final = self._eval(final=True)
        ckpt = self.save({"final": True})
        # strictly better, as in the loop: on a tie the earlier checkpoint stays (RL's held-out accuracy ties often;
        # a run that only matches its base hands on the base)
        if self.is_main and (self.score(final) < self.best or read_best(self.run_dir) is None):
            self.best = min(self.best, self.score(final))
            mark_best(self.run_dir, ckpt, self.best)
        self.metrics.close()
        if self.is_main:
            self.plot()
        summary = {"run_dir": str(self.run_dir), "stage": self.stage, "base": str(self.cfg.base),
                   "stopped_by": stopped_by, "steps": self.step, "elapsed": round(self.elapsed, 2),
                   "trainable_params": n_train, "bad_steps": self.bad_steps, "checkpoint": str(ckpt),
                   "best_checkpoint": (read_best(self.run_dir) or {}).get("checkpoint") if self.is_main else None,
                   "resumed_from": self.resumed_from, **{f"final_{k}": v for k, v in self.last_eval.items()}}
        return summary

    def _stop_on_signal(self, signum: int) -> None:
        """Save the step just done (unless it was saved already) and raise Interrupted."""
        if self.saved_step != self.step:
            self.save({"interrupted": True})
        ckpt = self._last_checkpoint() if self.is_main else None
        self.metrics.close()
        if self.ctx is not None:
            self.ctx.destroy()
        raise Interrupted(signum, self.step, ckpt)

    def finish(self, summary: dict) -> dict:
        if self.is_main:
            mark_done(self.run_dir, summary)
        if self.ctx is not None:
            self._barrier()
            self.ctx.destroy()
        return summary


class _NoMetrics:
    """The metrics logger of ranks other than 0: they write nothing."""

    def log(self, row: dict) -> None:
        pass

    def truncate_after(self, step: int) -> None:
        pass

    def close(self) -> None:
        pass


def val_twin(path: str | Path) -> Path | None:
    """TinyWorld's `scratchlm data synth` writes X.jsonl with a held-out X_val.jsonl beside it."""
    p = Path(path)
    twin = p.with_name(p.stem + "_val" + p.suffix)
    return twin if twin.is_file() else None


def load_preference_split(data: str, val_data: str, val_fraction: float, seed: int) -> tuple[list, list]:
    """(train, held-out) preference pairs: val_data, else data's *_val twin, else a seeded share of data."""
    from .formats import load_preferences, split_holdout

    pairs = load_preferences(data)
    val_path = val_data or val_twin(data)
    return (pairs, load_preferences(val_path)) if val_path else split_holdout(pairs, val_fraction, seed)


def next_epoch_position(order, cursor: int, epoch: int, build) -> tuple[list, int, int]:
    """(order, cursor, epoch) to draw the next item from. `build(epoch)` makes an epoch's order (shuffled indices,
    or batches). A resumed run restores epoch and cursor but not the order (None), and may have stopped exactly at
    an epoch's end: rebuild that epoch's order first, then move to the next epoch if it is spent."""
    if order is None:
        order = build(epoch)
    if cursor >= len(order):
        epoch, cursor = epoch + 1, 0
        order = build(epoch)
    return order, cursor, epoch


def shuffled(n: int, seed: int) -> list[int]:
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return order


def prompt_fits(tokenizer, prompt: list[dict], max_seq_len: int, room: int = 16) -> bool:
    """Does the chat prompt leave at least `room` tokens of context for a reply?"""
    from scratchlm.inference.chat_template import encode_chat

    return len(encode_chat(tokenizer, prompt, add_generation_prompt=True)) + room <= max_seq_len


@torch.no_grad()
def chat_replies(model, tokenizer, prompts: list[list[dict]], max_new_tokens: int = 64, temperature: float = 0.0,
                 top_k: int = 0, seed: int | None = 0, batch_size: int = 32,
                 seeds: list[int] | None = None) -> list[dict]:
    """Generate one assistant reply per chat prompt with the inference engine (KV cache). Prompt i samples with
    its own generator, seeded seeds[i] (else seed + i), so its reply does not depend on the batch it is in.

    Returns dicts {"prompt_ids", "ids" (the reply, ending with <|im_end|> when the model closed its turn),
    "text", "closed" (True if the model ended its turn with <|im_end|>)}."""
    from scratchlm.inference.chat_template import encode_chat, turn_end_id
    from scratchlm.inference.engine import Engine
    from scratchlm.inference.sampling import SamplingParams

    was_training = model.training
    im_end = turn_end_id(tokenizer)  # <|im_end|>, or an imported model's own end-of-turn token
    engine = Engine(model, tokenizer)
    out = []
    for i in range(0, len(prompts), batch_size):
        chunk = [encode_chat(tokenizer, p, add_generation_prompt=True) for p in prompts[i:i + batch_size]]
        room = model.config.max_seq_len - max(len(c) for c in chunk)
        params = [SamplingParams(max_new_tokens=max(1, min(max_new_tokens, room - 1)), temperature=temperature,
                                 top_k=top_k, stop_token_ids=[im_end], ignore_eos=True,
                                 seed=seeds[i + j] if seeds is not None else None if seed is None else seed + i + j)
                  for j in range(len(chunk))]
        for ids, s in zip(chunk, engine.generate(chunk, params)):
            closed = s.finish_reason == "stop"
            out.append({"prompt_ids": ids, "ids": s.token_ids + ([im_end] if closed else []), "text": s.text,
                        "closed": closed})
    model.train(was_training)
    return out
