"""The pretraining loop: `pretrain(cfg, run_dir)` trains a Transformer on token shards and returns a summary.

One optimizer step:

    for each of grad_accum micro-batches:      # the global batch, in tokens, is fixed by the config
        with autocast(bf16/fp16):  loss = cross_entropy(model(x), y) / grad_accum
        loss.backward()                         # gradients add up over micro-batches
    norm = clip_grad_norm_(params, 1.0)         # logged before clipping: spikes show up here first
    if loss or norm is not finite: skip the step, count it (stop after max_bad_steps in a row)
    lr = peak * schedule(step, progress); optimizer.step(); zero_grad()

Around it: budgets (steps, tokens, wall-clock), periodic evaluation (val loss, bits per byte) and samples,
metrics (jsonl, TensorBoard, PNG), atomic checkpoints, and exact resume from the latest one.

Under torchrun the same loop runs in every process, laid out by the [parallel] section (DDP, FSDP2, TP; see
docs/distributed.md): each data-parallel rank reads its slice of the global batch, gradients are averaged by
the wrapper, the loss is averaged over ranks, only rank 0 writes, and checkpoints are sharded (parallel.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import resource
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from scratchlm.config import save_config
from scratchlm.device import resolve_device, train_dtype
from scratchlm.runs import is_done, list_checkpoints, mark_done, prepare_run_dir

from .checkpoint import (clean_partial, load_checkpoint, mark_best, read_best, resume_checkpoint, rng_state,
                         save_checkpoint, set_rng_state)
from .config import PretrainConfig, batch_geometry, check_fit, config_dict
from .data import prepare_data, token_byte_lengths
from .loader import build_loader, eval_windows
from .metrics import MetricsLogger, device_peak_tflops, mfu, plot_loss
from .optim import build_optimizer, set_lr
from .parallel import (bare_module, collective_forward, is_sharded_checkpoint, load_sharded_checkpoint, lockstep,
                       on_main, save_sharded_checkpoint, start)
from .schedule import lr_multiplier
from .stopping import Interrupted, StopOnSignal, TrainingStopped, nonfinite_weights_error, weights_finite
from .wrap import apply_runtime, compiled, prepare_model

log = logging.getLogger("scratchlm")


def _memory_gb(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated(device) / 1e9
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # Linux: KiB -> GB


class Trainer:
    """Holds the model, optimizer, data and counters of one run. `fit()` trains until a budget is spent."""

    def __init__(self, cfg: PretrainConfig, run_dir: str | Path, resume: bool = False, overwrite: bool = False):
        tc = cfg.train
        # Under torchrun: check the [parallel] layout (before anything is written) and join the process group.
        self.ctx = start(cfg)
        self.rank, self.world_size, self.is_main = self.ctx.rank, self.ctx.world_size, self.ctx.is_main
        self.run_dir = run_dir = Path(run_dir)

        def prepare_folder():
            if not resume and not overwrite and not is_done(run_dir) and list_checkpoints(run_dir):
                raise FileExistsError(f"{run_dir} holds an unfinished run; pass --resume to continue it or "
                                      "--overwrite to start over")
            if resume and is_done(run_dir) and not overwrite:
                (run_dir / "DONE").unlink()  # resuming a finished run extends it (e.g. with a larger max_steps)
            tok = cfg.data.tokenizer if cfg.data.tokenizer not in ("auto", "char", "bpe") else None
            reads = [x for x in (cfg.data.shards, tok, cfg.data.train_text, cfg.data.val_text) if x]
            prepare_run_dir(run_dir, overwrite=overwrite, resume=resume, kind="pretrain", inputs=reads)
            clean_partial(run_dir)
            return prepare_data(cfg.data, run_dir, progress=tc.progress)

        # ---- run folder, data and tokenizer (built into the run folder the first time, by rank 0)
        self.data = on_main(self.ctx, prepare_folder)
        if not self.is_main:
            self.data = prepare_data(cfg.data, run_dir, progress=False, verify=False)  # rank 0 built and checked it
        vocab = self.data.tokenizer.vocab_size
        if cfg.data.vocab_from_tokenizer and cfg.model.vocab_size != vocab:
            cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, vocab_size=vocab))
        check_fit(cfg, vocab, self.ctx.dp_size)
        cfg.parallel.check_model(cfg.model)  # again: the tokenizer may have changed the vocabulary
        self.cfg, self.tc = cfg, tc
        if self.is_main:
            save_config(cfg, self.run_dir / "config.toml")

        # ---- numerics
        self.device = str(self.ctx.device) if self.ctx.distributed else resolve_device(tc.device)
        self.device_type = self.device.split(":")[0]
        apply_runtime(tc)  # threads, deterministic algorithms (train/wrap.py: the same for post-training)
        self.dtype = train_dtype(tc.dtype, self.device)
        if self.device_type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True  # fp32 matmuls on tensor cores (TF32) where they remain
            torch.backends.cudnn.allow_tf32 = True
        self.autocast = (torch.autocast(self.device_type, dtype=self.dtype) if self.dtype != torch.float32
                         else contextlib.nullcontext())
        self.scaler = torch.amp.GradScaler(self.device_type) if self.dtype == torch.float16 else None

        # ---- batch geometry: dp * fsdp ranks each take rows of the global batch; tp / pp ranks share theirs
        self.global_batch_tokens, self.grad_accum = batch_geometry(tc, self.ctx.dp_size)
        rows = tc.micro_batch_size * self.grad_accum  # this rank's rows per optimizer step

        # ---- model and optimizer
        from scratchlm.model import Transformer

        torch.manual_seed(tc.seed)  # the same initial weights on every rank (FSDP and TP shard them as they are)
        self.model = Transformer(cfg.model).to(self.device)
        prepare_model(self.model, tc)  # activation checkpointing, on the bare model before any wrapper
        # DDP wrapper, or FSDP / TP applied in place; the identity in one process
        self.wrapped = self.ctx.wrap(self.model, batch_rows=rows) if self.ctx.degrees["pp"] > 1 else \
            self.ctx.wrap(self.model)
        self.module = bare_module(self.wrapped)  # what the optimizer steps (self.model unless pipelined)
        self.pipeline = self.wrapped if self.ctx.degrees["pp"] > 1 else None  # this rank's stage + schedule
        self.optimizer = build_optimizer(self.module, tc, self.device_type)
        # Sequence parallelism needs sequences that split evenly over the tp ranks: logits() pads to this multiple,
        # and samples keep a context window that stays a multiple after padding.
        self.seq_multiple = self.ctx.degrees["tp"] if cfg.parallel.sequence_parallel else 1
        self.sample_window = cfg.model.max_seq_len // self.seq_multiple * self.seq_multiple
        if self.ctx.degrees["tp"] > 1:  # DTensors on different meshes cannot share one fused / foreach kernel
            for g in self.optimizer.param_groups:
                g["fused"], g["foreach"] = None, False
        self.forward = compiled(self.wrapped, tc)
        self.params = [p for p in self.module.parameters() if p.requires_grad]
        if self.ctx.dp_size > 1:  # different dropout masks on the data-parallel ranks, as one process's rows get
            torch.manual_seed(tc.seed + self.ctx.dp_rank)

        # ---- data loader (this rank's rows of every global batch)
        # (a MixtureLoader when data.mix names several shard folders)
        self.loader = build_loader(self.data, tc.seq_len, rows=rows, mode=cfg.data.packing, seed=tc.seed,
                                   rank=self.ctx.dp_rank, world_size=self.ctx.dp_size)
        self.token_bytes = torch.from_numpy(token_byte_lengths(self.data.tokenizer))
        self.flops_per_token = self.model.flops_per_token(tc.seq_len)
        amp_name = str(self.dtype).replace("torch.", "")
        self.peak_tflops = device_peak_tflops(self.device, amp_name, tc.peak_tflops) if self.is_main else 0.0

        # ---- counters (all restored on resume)
        self.step = 0  # optimizer steps done
        self.tokens = 0  # training tokens consumed (global)
        self.elapsed = 0.0  # seconds spent in the loop, over all sessions of this run
        self.bad_steps = 0  # total skipped non-finite steps
        self.bad_in_a_row = 0
        self.warmup_end_progress = None  # budget fraction spent when warmup ended (anchors the decay)
        self.best_val = math.inf
        self.last_eval: dict = {}
        self.eval_seconds_per_token = None  # measured, to reserve time for the final evaluation
        self.resumed_from = None
        self.saved_step = -1  # the step of the last checkpoint this process wrote
        if resume:
            self._resume()
        self.metrics = MetricsLogger(self.run_dir, tensorboard=tc.tensorboard and self.is_main) if self.is_main else None
        if self.metrics is not None and resume:
            self.metrics.truncate_after(self.step)

    # ------------------------------------------------------------------ state
    def train_state(self) -> dict:
        return {
            "step": self.step, "tokens": self.tokens, "elapsed": self.elapsed, "bad_steps": self.bad_steps,
            "bad_in_a_row": self.bad_in_a_row, "warmup_end_progress": self.warmup_end_progress,
            "best_val": self.best_val, "eval_seconds_per_token": self.eval_seconds_per_token,
            "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict() if self.scaler else None,
            "loader": self.loader.state_dict(), "rng": rng_state(), "config": config_dict(self.cfg),
        }

    def _resume(self) -> None:
        # the newest checkpoint whose files match their manifest (a damaged one is skipped, with a warning);
        # rank 0 decides, so every rank loads the same one
        ckpt = on_main(self.ctx, lambda: resume_checkpoint(self.run_dir))
        if self.ctx.distributed:
            box = [ckpt]
            torch.distributed.broadcast_object_list(box, src=0)
            ckpt = box[0]
        if ckpt is None:
            log.info("resume: no checkpoint in %s yet, starting from step 0", self.run_dir)
            return
        if is_sharded_checkpoint(ckpt):  # written by a distributed run: loads into any layout, one process too
            state, mine = load_sharded_checkpoint(self.ctx, ckpt, self.wrapped, self.optimizer)
            # Random windows do not depend on the rank (rank 0's position is everyone's); "docs" needs its own.
            mine = mine or {"loader": state["ranks"][0]["loader"], "rng": None}
            state = {**state, **mine}
        elif self.ctx.distributed:
            raise ValueError(f"{ckpt} was written by a single-process run; resume it in one process (without "
                             "torchrun), or start this distributed run in a new --out")
        else:
            state = load_checkpoint(ckpt, self.model, map_location=self.device, verify=False)  # verified above
            self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.loader.load_state_dict(state["loader"])
        for key in ("step", "tokens", "elapsed", "bad_steps", "bad_in_a_row", "warmup_end_progress", "best_val",
                    "eval_seconds_per_token"):
            setattr(self, key, state[key])
        if state["rng"] is not None:  # None: a rank the checkpoint did not have (only dropout masks differ)
            set_rng_state(state["rng"])
        self.resumed_from = ckpt.name
        log.info("resumed from %s (step %d, %s tokens)", ckpt, self.step, f"{self.tokens:,}")

    def _last_checkpoint(self) -> Path | None:
        ckpts = list_checkpoints(self.run_dir)
        return ckpts[-1] if ckpts else None

    def save(self, meta: dict | None = None) -> Path | None:
        """Write a checkpoint of the current step; returns its folder on rank 0 (None on the other ranks).
        Non-finite weights are never saved (they would replace the last good checkpoint): TrainingStopped."""
        if not weights_finite(self.params, self.ctx.distributed, self.device):
            raise nonfinite_weights_error(self.step, self._last_checkpoint())
        self.saved_step = self.step
        meta = {"tokens": self.tokens, "elapsed": round(self.elapsed, 3), **self.last_eval, **(meta or {})}
        if self.ctx.distributed:  # collective: every rank writes its shards, rank 0 the rest
            state = self.train_state()
            del state["optimizer"]  # in the shards
            mine = {"loader": state.pop("loader"), "rng": state.pop("rng")}
            return save_sharded_checkpoint(self.ctx, self.run_dir, self.step, self.wrapped, self.optimizer,
                                           self.cfg.model, state, mine, meta, self.tc.keep_last)
        if not self.is_main:
            return None
        return save_checkpoint(self.run_dir, self.step, self.model, self.cfg.model.to_dict(), self.train_state(),
                               meta=meta, keep_last=self.tc.keep_last)

    # ------------------------------------------------------------------ budgets and schedule
    def _time_budget(self) -> float:
        """Seconds left for training steps: max_time minus what the final evaluation will need."""
        tc = self.tc
        n_val = len(self.data.val_tokens)
        per_token = self.eval_seconds_per_token
        if per_token is None:  # not measured yet: forward-only is ~1/3 of a training step per token
            per_token = (self.elapsed / max(1, self.tokens)) / 3 if self.tokens else 0.0
        reserve = 1.15 * n_val * per_token + 0.5  # + a checkpoint save
        return max(1e-3, tc.max_time - reserve)

    def progress(self) -> float:
        """Fraction of the run's budget spent: the largest over the budgets that are set."""
        tc, p = self.tc, 0.0
        if tc.max_steps:
            p = max(p, self.step / tc.max_steps)
        if tc.max_tokens:
            p = max(p, self.tokens / tc.max_tokens)
        if tc.max_time:
            p = max(p, self.elapsed / self._time_budget())
        return p

    def lr_multiplier(self) -> float:
        tc = self.tc
        if self.step >= tc.warmup_steps and self.warmup_end_progress is None:
            self.warmup_end_progress = self.progress() if tc.warmup_steps else 0.0
        p0 = self.warmup_end_progress or 0.0
        decay_progress = (self.progress() - p0) / max(1e-9, 1.0 - p0)
        return lr_multiplier(self.step, decay_progress, schedule=tc.schedule, warmup_steps=tc.warmup_steps,
                             min_ratio=tc.min_lr_ratio, decay_fraction=tc.decay_fraction)

    def _sync_clock(self) -> None:
        """With a time budget, every rank uses rank 0's clock: they must agree on the learning rate and on the
        step they stop at (a rank that stops alone leaves the others waiting in a collective forever)."""
        if not (self.ctx.distributed and self.tc.max_time):
            return
        t = torch.tensor([self.elapsed, self.eval_seconds_per_token or -1.0], dtype=torch.float64,
                         device=self.device)
        torch.distributed.broadcast(t, src=0)
        self.elapsed = t[0].item()
        self.eval_seconds_per_token = t[1].item() if t[1] >= 0 else None

    def stop_reason(self) -> str | None:
        tc = self.tc
        if tc.max_steps and self.step >= tc.max_steps:
            return "max_steps"
        if tc.max_tokens and self.tokens >= tc.max_tokens:
            return "max_tokens"
        if tc.max_time and self.elapsed >= self._time_budget():
            return "max_time"
        return None

    # ------------------------------------------------------------------ one step
    def _optimizers(self) -> list:
        return getattr(self.optimizer, "optimizers", [self.optimizer])  # CombinedOptimizer (Muon) or one

    def accumulate_gradients(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Forward and backward over the global batch in micro-batches; returns the mean loss (a 0-d tensor).

        Each micro-batch loss is divided by the number of micro-batches, so the summed gradient is the gradient
        of the mean loss over the whole batch: 4 micro-batches of 1 row give the gradient of 1 batch of 4."""
        self.model.train()
        if self.pipeline is not None:  # the schedule cuts the rows into micro-batches, stage to stage
            with self.autocast:
                return self.pipeline.step(x, y)  # the global batch's mean loss, on every rank
        loss_sum = torch.zeros((), device=self.device)
        mb = self.tc.micro_batch_size
        if self.device_type == "cuda":  # page-locked host memory: the copies overlap with compute
            x, y = x.pin_memory(), y.pin_memory()
        for i in range(self.grad_accum):
            xm = x[i * mb : (i + 1) * mb].to(self.device, non_blocking=True)  # (mb, T)
            ym = y[i * mb : (i + 1) * mb].to(self.device, non_blocking=True)
            # DDP / FSDP: average gradients over the ranks only once, after the last micro-batch
            sync = i == self.grad_accum - 1
            with contextlib.nullcontext() if sync else self.ctx.no_sync(self.wrapped):
                with self.autocast:
                    logits = self.forward(xm)  # (mb, T, vocab)
                    loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), ym.reshape(-1)) / self.grad_accum
                (self.scaler.scale(loss) if self.scaler else loss).backward()  # backward outside autocast
            loss_sum += loss.detach()
        return loss_sum

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float, float]:
        """One optimizer step on the global batch (x, y); returns (loss, grad_norm, lr). Skips non-finite steps."""
        lr = set_lr(self.optimizer, self.lr_multiplier())
        loss_sum = self.ctx.all_reduce_mean(self.accumulate_gradients(x, y))  # every rank: the global batch's loss
        if self.scaler is not None:
            for opt in self._optimizers():
                self.scaler.unscale_(opt)
        clip = self.tc.grad_clip if self.tc.grad_clip > 0 else math.inf
        if self.ctx.distributed:  # the norm over all shards and ranks: every rank takes the same decision below
            from scratchlm.distributed import clip_grad_norm_

            norm = clip_grad_norm_(self.params, clip, self.ctx)
        else:
            norm = torch.nn.utils.clip_grad_norm_(self.params, clip)
        loss_v, norm_v = torch.stack([loss_sum, norm.to(loss_sum)]).tolist()  # one sync per step
        if not math.isfinite(loss_v) or (not math.isfinite(norm_v) and self.scaler is None):
            self.optimizer.zero_grad(set_to_none=True)
            self.bad_steps += 1
            self.bad_in_a_row += 1
            log.warning("step %d: non-finite %s, step skipped (%d in a row)", self.step,
                        "loss" if not math.isfinite(loss_v) else "gradient", self.bad_in_a_row)
            if not weights_finite(self.params, self.ctx.distributed, self.device):  # no step can recover them
                raise nonfinite_weights_error(self.step, self._last_checkpoint())
            if self.bad_in_a_row >= self.tc.max_bad_steps:
                last = list_checkpoints(self.run_dir)
                where = f"the last good checkpoint is {last[-1]}" if last else "no checkpoint was written"
                raise TrainingStopped(
                    f"{self.bad_in_a_row} non-finite steps in a row at step {self.step}: the run diverged; {where}. "
                    "Lower train.lr, raise train.warmup_steps, or use --set model.qk_norm=true, then --resume")
        else:
            self.bad_in_a_row = 0
            if self.scaler is not None:  # fp16: the scaler skips steps whose gradients overflowed
                for opt in self._optimizers():
                    self.scaler.step(opt)
                self.scaler.update()
            else:
                self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.tokens += self.global_batch_tokens
        return loss_v, norm_v, lr

    # ------------------------------------------------------------------ evaluation and samples
    @torch.no_grad()
    def evaluate(self, max_tokens: int = 0) -> dict:
        """Val loss (nats/token, all targets) and bits per byte (text targets only) on the val split."""
        t0 = time.perf_counter()
        self.model.eval()
        nll_sum, n_tok, text_nll, n_bytes = 0.0, 0, 0.0, 0
        rows = self.tc.micro_batch_size * 2  # no activations kept for backward: twice the rows fit
        ctx = self.ctx  # windows are split over the data-parallel ranks; tp / pp ranks of a group share theirs
        windows = eval_windows(self.data.val_tokens, self.tc.seq_len, rows, max_tokens, ctx.dp_rank, ctx.dp_size)
        for x, y, real in lockstep(windows, ctx):
            x, y = x.to(self.device), y.to(self.device)
            with self.autocast:
                logits = self.logits(x)
            if not real or logits is None:  # a dummy forward (in step with FSDP / TP), or not the last stage
                continue
            nll = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), y.reshape(-1), reduction="none")
            nbytes = self.token_bytes.to(self.device)[y.reshape(-1)]
            nll_sum += nll.sum().item()
            n_tok += nll.numel()
            text_nll += (nll * (nbytes > 0)).sum().item()
            n_bytes += int(nbytes.sum().item())
        self.model.train()
        if ctx.distributed:  # each data-parallel rank scored its share of the windows: add them up
            sums = torch.tensor([nll_sum, n_tok, text_nll, n_bytes], dtype=torch.float64, device=self.device)
            if self.pipeline is not None:  # only the last stage scored: every stage gets its sums
                torch.distributed.all_reduce(sums, group=self.pipeline.group)
            if ctx.dp_size > 1:
                torch.distributed.all_reduce(sums, group=ctx.data_group)
            nll_sum, n_tok, text_nll, n_bytes = sums[0].item(), int(sums[1].item()), sums[2].item(), int(sums[3].item())
        seconds = time.perf_counter() - t0
        if n_tok:
            self.eval_seconds_per_token = seconds / n_tok
        out = {"val_loss": nll_sum / max(1, n_tok), "val_tokens": n_tok}
        if n_bytes:
            out["val_bpb"] = text_nll / math.log(2) / n_bytes
            out["val_bytes"] = n_bytes
        return out

    def logits(self, idx: torch.Tensor, last_only: bool = False) -> torch.Tensor | None:
        """The current model's logits (B, T or 1, vocab); None on pipeline stages other than the last (every
        stage must call it: activations flow stage to stage)."""
        T = idx.shape[1]
        pad = (-T) % self.seq_multiple
        if pad:  # sequence parallelism splits positions evenly over the tp ranks; causal: padding on the right
            idx = F.pad(idx, (0, pad))  # leaves positions < T untouched
        if self.pipeline is None and not pad:
            return self.model(idx, last_only=last_only)
        out = self.model(idx) if self.pipeline is None else self.pipeline.forward_logits(idx)
        if out is None:
            return None
        return out[:, T - 1 : T] if last_only else out[:, :T]

    @torch.no_grad()
    def sample(self, n_tokens: int, temperature: float = 0.8, top_k: int = 50) -> str:
        """A text sample from the current model, with its own generator (training RNG streams are untouched)."""
        tok = self.data.tokenizer
        prompt = self.tc.sample_prompt
        ids = ([tok.bos_id] if tok.bos_id is not None else []) + (tok.encode(prompt) if prompt else [])
        if not ids:
            ids = [0]
        gen = torch.Generator(device=self.device).manual_seed(self.tc.seed + self.step)
        idx = torch.tensor([ids], device=self.device)
        self.model.eval()
        for _ in range(n_tokens):
            with self.autocast:
                logits = self.logits(idx[:, -self.sample_window :], last_only=True)
            nxt = torch.zeros(1, 1, dtype=torch.long, device=self.device)
            if logits is not None:
                logits = logits[:, -1].float() / temperature
                v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
                logits[logits < v[:, [-1]]] = -math.inf
                nxt = torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=gen)
            if self.pipeline is not None:  # the last stage drew the token: the other stages need it too
                torch.distributed.broadcast(nxt, src=self.pipeline.last_rank, group=self.pipeline.group)
            idx = torch.cat([idx, nxt], dim=1)
        self.model.train()
        return prompt + tok.decode(idx[0, len(ids):].tolist())

    def _eval_and_track(self, final: bool = False) -> dict:
        result = self.evaluate(0 if final else self.tc.eval_tokens)
        self.last_eval = {k: result[k] for k in ("val_loss", "val_bpb") if k in result}
        row = {"step": self.step, "tokens": self.tokens, "elapsed": round(self.elapsed, 2), **result}
        if self.metrics:
            self.metrics.log(row)
        return result

    # ------------------------------------------------------------------ the loop
    def fit(self) -> dict:
        tc = self.tc
        n_params = self.model.num_params()
        if self.is_main:
            log.info("model: %s parameters (%s non-embedding), %s | %s, %s, batch %s tokens (%d x %d x %d accum)",
                     f"{n_params:,}", f"{self.model.num_params(non_embedding=True):,}", self.cfg.model.family,
                     self.device, str(self.dtype).replace("torch.", ""), f"{self.global_batch_tokens:,}",
                     tc.micro_batch_size, tc.seq_len, self.grad_accum)
        bar = self._progress_bar()
        stopped_by = self.stop_reason()
        window_t0, window_tokens = time.perf_counter(), 0
        loss_v = norm_v = math.nan
        # Ctrl-C / SIGTERM (stopping.py): the step under way finishes, is checkpointed, and the run exits
        with StopOnSignal() as stop:
            while stopped_by is None:
                self._sync_clock()
                t0 = time.perf_counter()
                x, y = self.loader.next_batch()
                loss_v, norm_v, lr = self.train_step(x, y)
                if self.device_type == "cuda" and self.step % tc.log_every == 0:
                    torch.cuda.synchronize()
                self.elapsed += time.perf_counter() - t0
                window_tokens += self.global_batch_tokens
                events_t0 = time.perf_counter()
                if self.step % tc.log_every == 0 or self.step == 1:
                    dt = time.perf_counter() - window_t0
                    tps = window_tokens / max(dt, 1e-9)
                    row = {"step": self.step, "tokens": self.tokens, "loss": loss_v, "lr": lr, "grad_norm": norm_v,
                           "tokens_per_sec": round(tps, 1), "mfu": mfu(self.flops_per_token, tps, self.peak_tflops),
                           "mem_gb": round(_memory_gb(self.device), 3), "elapsed": round(self.elapsed, 2),
                           "bad_steps": self.bad_steps, **self.loader.metrics()}  # mix/NAME: share so far
                    if self.metrics:
                        self.metrics.log(row)
                    if bar is not None:
                        bar.set_postfix_str(f"step {self.step} loss {loss_v:.4f} {tps:,.0f} tok/s", refresh=False)
                    window_t0, window_tokens = time.perf_counter(), 0
                self._sync_clock()
                stopped_by = self.stop_reason()
                new_best = False
                if tc.eval_every and self.step % tc.eval_every == 0 and stopped_by is None:
                    result = self._eval_and_track()
                    if bar is not None:
                        bar.write(f"step {self.step}: val loss {result['val_loss']:.4f}"
                                  + (f", {result['val_bpb']:.4f} bits/byte" if "val_bpb" in result else ""))
                    new_best = result["val_loss"] < self.best_val
                    self.best_val = min(self.best_val, result["val_loss"])
                if tc.sample_every and tc.sample_tokens and self.step % tc.sample_every == 0 and self._samples_here():
                    self._log_sample(bar)
                if stopped_by is None and (new_best or (tc.ckpt_every and self.step % tc.ckpt_every == 0)):
                    ckpt = self.save()
                    if new_best and ckpt is not None:
                        mark_best(self.run_dir, ckpt, self.best_val)
                now = time.perf_counter()
                self.elapsed += now - events_t0
                # evaluation time is not training throughput: the window skips what came after its start (a window
                # reset by this step's log line began after events_t0, so only the time since then is skipped; the
                # whole of it pushed the window past the next step, logging ~1e10 tokens/s)
                window_t0 += now - max(events_t0, window_t0)
                if bar is not None:
                    bar.n = round(min(1.0, self.progress()) * 1000)
                    bar.refresh()
                signum = stop.requested(self.ctx.distributed, self.device)
                if signum:
                    self._stop_on_signal(signum, bar)
        # ---- final evaluation and checkpoint
        t0 = time.perf_counter()
        final = self._eval_and_track(final=True)
        self.elapsed += time.perf_counter() - t0
        if bar is not None:
            bar.close()
        ckpt = self.save({"final": True})
        if final["val_loss"] <= self.best_val and ckpt is not None:
            self.best_val = final["val_loss"]
            mark_best(self.run_dir, ckpt, self.best_val)
        text = self._log_sample(None) if tc.sample_tokens and self._samples_here() else None
        summary = {
            "run_dir": str(self.run_dir), "stopped_by": stopped_by, "steps": self.step, "tokens": self.tokens,
            "elapsed": round(self.elapsed, 2), "params": n_params, "final_loss": loss_v,
            "val_loss": final["val_loss"], "val_bpb": final.get("val_bpb"), "best_val_loss": self.best_val,
            "bad_steps": self.bad_steps, "checkpoint": str(ckpt) if ckpt else None,
            "best_checkpoint": (read_best(self.run_dir) or {}).get("checkpoint"), "resumed_from": self.resumed_from,
            "tokens_per_sec": round(self.tokens / max(self.elapsed, 1e-9), 1), "sample": text,
        }
        if self.is_main:
            self.metrics.close()
            plot_loss(self.run_dir)
            mark_done(self.run_dir, summary)
        return summary

    def _stop_on_signal(self, signum: int, bar) -> None:
        """Save the step just done (unless it was saved already) and raise Interrupted."""
        if bar is not None:
            bar.close()
        if self.saved_step != self.step:
            self.save({"interrupted": True})
        ckpt = self._last_checkpoint() if self.is_main else None
        if self.metrics:
            self.metrics.close()
        raise Interrupted(signum, self.step, ckpt)

    def _samples_here(self) -> bool:
        """Rank 0 samples; with FSDP / TP every rank must run the same forwards (only rank 0 writes)."""
        return self.is_main or collective_forward(self.ctx)

    def _log_sample(self, bar) -> str:
        text = self.sample(self.tc.sample_tokens)
        if not self.is_main:
            return text
        (bar.write if bar is not None else log.info)(f"--- sample at step {self.step} ---\n{text}\n---")
        with open(self.run_dir / "logs" / "samples.txt", "a", encoding="utf-8") as f:
            f.write(f"=== step {self.step}\n{text}\n")
        if self.metrics:
            self.metrics.text("sample", text, self.step)
        return text

    def _progress_bar(self):
        if not (self.tc.progress and self.is_main):
            return None
        from tqdm import tqdm

        # The bar counts thousandths of the budget (steps, tokens or time, whichever runs out first): one bar
        # and one ETA whatever the budget is.
        return tqdm(total=1000, initial=round(min(1.0, self.progress()) * 1000), desc="pretrain", unit="‰",
                    bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}] {postfix}",
                    dynamic_ncols=True)


def pretrain(cfg: PretrainConfig, run_dir: str | Path, resume: bool = False, overwrite: bool = False) -> dict:
    """Train a model as `cfg` says, writing the run folder `run_dir`; returns the summary also stored in DONE.

    resume=True continues from the latest checkpoint in run_dir (exactly: same data order, same RNG).
    """
    trainer = Trainer(cfg, run_dir, resume=resume, overwrite=overwrite)
    try:
        return trainer.fit()
    finally:
        if trainer.ctx.distributed:
            trainer.ctx.destroy()
