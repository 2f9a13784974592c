"""Supervised fine-tuning: next-token loss on the assistant's replies of chat-formatted examples.

    loss = sum over target tokens of -log p(token | everything before it)  /  number of target tokens

The denominator counts the target tokens of the whole optimizer step (all grad_accum micro-batches), not of
each micro-batch or each sample: every target token weighs the same however the batch is split or packed
(averaging per micro-batch would over-weight tokens of short micro-batches; see the "gradient accumulation
bug" write-ups of late 2024).

The effect shows in the held-out loss on replies, and in the replies themselves: before SFT a pretrained model
continues the text and rarely closes its turn; after it, it answers and emits <|im_end|> ("in template").
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from .formats import load_sft, split_holdout
from .loop import PostTrainer, chat_replies, masked_nll, next_epoch_position, prompt_fits, val_twin
from .packing import forward_batch
from .tokenize import make_batches, make_example

log = logging.getLogger("scratchlm")


class SFTTrainer(PostTrainer):
    stage = "sft"

    def check_layout(self) -> None:
        n, k = self.dp_size, self.cfg.sft.grad_accum
        if k % n:
            raise ValueError(f"sft.grad_accum = {k} is not a multiple of the {n} data-parallel ranks; set it to a "
                             f"multiple of {n} (it counts the micro-batches of a step over all ranks)")

    def build(self) -> None:
        cfg, tc = self.cfg, self.tc
        if not cfg.data:
            raise ValueError("no SFT data: pass --data FILE (JSON/JSONL, Alpaca or messages form)")
        convs = load_sft(cfg.data)
        val_path = cfg.val_data or val_twin(cfg.data)
        if val_path:
            train, val = convs, load_sft(val_path)
        else:
            train, val = split_holdout(convs, cfg.val_fraction, tc.seed)
        if tc.seq_len > self.model.config.max_seq_len:
            raise ValueError(f"train.seq_len ({tc.seq_len}) exceeds the model's max_seq_len "
                             f"({self.model.config.max_seq_len}); lower it")
        mk = lambda c: make_example(self.tokenizer, c, tc.seq_len, cfg.sft.assistant_only)  # noqa: E731
        self.train_examples = [e for e in map(mk, train) if e is not None]
        self.val_convs = val[: cfg.max_val]
        self.val_examples = [e for e in map(mk, self.val_convs) if e is not None]
        if not self.train_examples:
            raise ValueError(f"{cfg.data}: no example has an assistant reply within train.seq_len tokens")
        self.epoch, self.cursor = 0, 0
        self._batches = None
        log.info("sft: %d train / %d held-out conversations", len(self.train_examples), len(self.val_examples))

    def extra_state(self) -> dict:
        return {"epoch": self.epoch, "cursor": self.cursor}

    def load_extra_state(self, state: dict) -> None:
        self.epoch, self.cursor, self._batches = state["epoch"], state["cursor"], None

    def next_batch(self):
        tc = self.tc
        self._batches, self.cursor, self.epoch = next_epoch_position(
            self._batches, self.cursor, self.epoch,
            lambda e: make_batches(self.train_examples, tc.micro_batch_size, tc.seq_len, self.pad_id,
                                   self.cfg.sft.batching, seed=tc.seed + e))
        b = self._batches[self.cursor]
        self.cursor += 1
        return b

    def train_step(self) -> dict:
        # grad_accum micro-batches make the step over all ranks; data-parallel rank r runs r, r+N, ... of them
        # (every rank builds the same epoch of batches, so together they run exactly one process's step).
        n = self.dp_size
        steps = [self.next_batch() for _ in range(self.cfg.sft.grad_accum)]
        batches = steps[self.ctx.dp_rank::n] if n > 1 else steps
        n_targets = sum(b.n_targets for b in batches)
        n_tokens = sum(int((b.x != self.pad_id).sum()) for b in batches)
        if n > 1:  # the one normaliser: target tokens of the whole step, all ranks and micro-batches
            from .distributed import all_reduce_sum

            n_targets, n_tokens = int(all_reduce_sum(self.ctx, n_targets)), int(all_reduce_sum(self.ctx, n_tokens))
        total = 0.0
        for i, b in enumerate(batches):
            b = b.to(self.device)
            with self.sync_context(last=i == len(batches) - 1):
                with self.autocast():
                    logits = self.forward(b)  # (B, T, V)
                loss = masked_nll(logits, b.y) / n_targets
                # DDP / FSDP average the ranks' gradients; the step's loss is their sum, hence * n
                (loss * n if n > 1 else loss).backward()
            total += loss.item()
        if n > 1:
            from .distributed import all_reduce_sum

            total = all_reduce_sum(self.ctx, total)
        return {"loss": total, "targets": n_targets, "epoch": self.epoch, "n_tokens": n_tokens}

    @torch.no_grad()
    def val_loss(self) -> float:
        self.model.eval()
        nll, n = 0.0, 0
        for b in make_batches(self.val_examples, self.tc.micro_batch_size * 2, self.tc.seq_len, self.pad_id,
                              "pad", shuffle=False):
            b = b.to(self.device)
            with self.autocast():
                logits = forward_batch(self.model, b)
            nll += masked_nll(logits, b.y).item()
            n += b.n_targets
        return nll / max(n, 1)

    def evaluate(self, n_replies: int = 16) -> dict:
        out = {"val_loss": self.val_loss()}
        prompts = [[m for m in c[: max(i for i, m in enumerate(c) if m["role"] == "assistant")]]
                   for c in self.val_convs]
        prompts = [p for p in prompts if prompt_fits(self.tokenizer, p, self.model.config.max_seq_len)][:n_replies]
        if prompts:
            replies = chat_replies(self.model, self.tokenizer, prompts, max_new_tokens=64)
            out["in_template"] = sum(r["closed"] for r in replies) / len(replies)
            out["samples"] = [{"prompt": p[-1]["content"][:200], "reply": r["text"][:200]}
                              for p, r in zip(prompts[:3], replies[:3])]
        return out


def run_sft(cfg, run_dir: str | Path, resume: bool = False, overwrite: bool = False, verbose: bool = True) -> dict:
    """Fine-tune cfg.base on cfg.data into run_dir; returns a summary with held-out loss before and after."""
    t = SFTTrainer(cfg, run_dir, resume=resume, overwrite=overwrite)
    before = t.evaluate_everywhere()
    summary = t.fit()
    after = t.last_eval_full
    summary.update({"val_loss_before": before["val_loss"], "val_loss_after": after["val_loss"],
                    "in_template_before": before.get("in_template"), "in_template_after": after.get("in_template"),
                    "samples_after": after.get("samples", [])})
    if verbose and t.is_main:
        print(f"SFT effect (held-out, {len(t.val_examples)} conversations): loss on replies "
              f"{before['val_loss']:.3f} -> {after['val_loss']:.3f}; replies closed with <|im_end|> "
              f"{before.get('in_template', 0):.0%} -> {after.get('in_template', 0):.0%}")
        for s in summary["samples_after"]:
            print(f"   user: {s['prompt'][:100]!r}\n   assistant: {s['reply'][:160]!r}")
    return t.finish(summary)
