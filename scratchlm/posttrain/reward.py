"""A reward model: our transformer reads prompt + reply, and a linear head turns its last hidden state into a
score. Trained on preference pairs with the Bradley-Terry loss (InstructGPT, Ouyang et al. 2022):

    P(chosen > rejected) = sigmoid(r(chosen) - r(rejected))      loss = -log sigmoid(r_c - r_r)

Only differences of scores matter, so a score's absolute value means nothing. The score is read at the
reply's closing <|im_end|>, the one position that has seen the whole prompt and the whole reply.
Held-out accuracy = share of pairs where r(chosen) > r(rejected). GRPO can use the trained model as its reward
(`scratchlm rl --task reward-model --set reward_model=RUN`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from scratchlm.train.checkpoint import load_train_state
from scratchlm.train.wrap import compiled

from .loop import PostTrainer, load_base, load_preference_split, next_epoch_position, shuffled
from .tokenize import make_reply_example

log = logging.getLogger("scratchlm")


def bradley_terry_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> torch.Tensor:
    """Mean of -log sigmoid(r_c - r_r) over pairs; ln 2 when the model cannot tell them apart."""
    return -F.logsigmoid(r_chosen - r_rejected).mean()


class RewardModel(nn.Module):
    """Transformer body + scalar head. forward(ids (B, T), lengths (B,)) -> scores (B,)."""

    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body
        self.head = nn.Linear(body.config.d_model, 1, bias=False)
        nn.init.normal_(self.head.weight, std=1 / body.config.d_model ** 0.5)
        self.head.to(next(body.parameters()).device)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        h = self.body.hidden_states(ids)  # (B, T, d); right padding is invisible to causal attention
        last = h[torch.arange(ids.size(0), device=ids.device), lengths - 1]  # (B, d): each row's last real token
        return self.head(last.float()).squeeze(-1)  # (B,)


def batch_ids(seqs: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded (B, T) ids and (B,) lengths."""
    T = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), T), pad_id, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
    return ids.to(device), torch.tensor([len(s) for s in seqs], device=device)


def load_reward_model(run: str | Path, device: str = "cpu") -> tuple[RewardModel, object]:
    """(RewardModel in eval mode, tokenizer) from a `scratchlm reward` run."""
    from scratchlm.inference.loading import load_tokenizer_for

    body, ckpt = load_base(run, device)
    rm = RewardModel(body)
    state = load_train_state(ckpt, map_location=device)  # tensors and plain values only: never unpickled
    if "head" not in state.get("stage", {}):
        raise ValueError(f"{run} is not a reward-model run (no score head in {ckpt / 'state.pt'}); "
                         "train one with `scratchlm reward`")
    rm.head.load_state_dict(state["stage"]["head"])
    return rm.eval().requires_grad_(False), load_tokenizer_for(run)


class RewardTrainer(PostTrainer):
    stage = "reward"

    def build(self) -> None:
        cfg, tc = self.cfg, self.tc
        if not cfg.data:
            raise ValueError("no preference data: pass --data FILE (Alpaca-with-preference or ShareGPT preference)")
        train, val = load_preference_split(cfg.data, cfg.val_data, cfg.val_fraction, tc.seed)
        self.train_pairs, self.val_pairs = self._tokenize(train), self._tokenize(val)[: cfg.max_val]
        if not self.train_pairs:
            raise ValueError(f"{cfg.data}: no pair fits in train.seq_len ({tc.seq_len}) tokens")
        self.rm = RewardModel(self.model)
        self.rm_forward = compiled(self.rm, tc)  # train.compile (train/wrap.py), as every stage's training forward
        self.epoch, self.cursor, self.order = 0, 0, None

    def _tokenize(self, prefs) -> list[tuple[list[int], list[int]]]:
        out, L = [], self.tc.seq_len - 1  # + the closing token below = at most seq_len ids
        for p in prefs:
            c = make_reply_example(self.tokenizer, p.prompt, p.chosen, L)
            r = make_reply_example(self.tokenizer, p.prompt, p.rejected, L)
            if c is not None and r is not None:
                out.append((c.x + c.y[-1:], r.x + r.y[-1:]))  # whole sequences, ending at <|im_end|>
        return out

    def trainable_module(self) -> nn.Module:
        return self.rm

    def extra_state(self) -> dict:
        return {"epoch": self.epoch, "cursor": self.cursor, "head": self.rm.head.state_dict()}

    def load_extra_state(self, state: dict) -> None:
        self.epoch, self.cursor, self.order = state["epoch"], state["cursor"], None
        self.rm.head.load_state_dict(state["head"])

    def scores(self, pairs) -> tuple[torch.Tensor, torch.Tensor]:
        ids, lengths = batch_ids([c for c, _ in pairs] + [r for _, r in pairs], self.pad_id, self.device)
        with self.autocast():
            s = self.rm_forward(ids, lengths)
        return s[: len(pairs)], s[len(pairs):]

    def train_step(self) -> dict:
        mb = self.tc.micro_batch_size
        self.order, self.cursor, self.epoch = next_epoch_position(
            self.order, self.cursor, self.epoch, lambda e: shuffled(len(self.train_pairs), self.tc.seed + e))
        pairs = [self.train_pairs[i] for i in self.order[self.cursor:self.cursor + mb]]
        self.cursor += mb
        self.rm.train()
        rc, rr = self.scores(pairs)
        loss = bradley_terry_loss(rc, rr)
        loss.backward()
        return {"loss": loss.item(), "accuracy": (rc > rr).float().mean().item(), "margin": (rc - rr).mean().item(),
                "epoch": self.epoch, "n_tokens": sum(len(c) + len(r) for c, r in pairs)}

    @torch.no_grad()
    def evaluate(self) -> dict:
        if not self.val_pairs:
            return {}
        self.rm.eval()
        rcs, rrs = [], []
        for i in range(0, len(self.val_pairs), self.tc.micro_batch_size * 2):
            rc, rr = self.scores(self.val_pairs[i:i + self.tc.micro_batch_size * 2])
            rcs.append(rc.float())
            rrs.append(rr.float())
        rc, rr = torch.cat(rcs), torch.cat(rrs)
        return {"val_loss": bradley_terry_loss(rc, rr).item(), "val_accuracy": (rc > rr).float().mean().item()}


def run_reward(cfg, run_dir: str | Path, resume: bool = False, overwrite: bool = False, verbose: bool = True) -> dict:
    """Train a reward model from cfg.base on cfg.data into run_dir; returns held-out accuracy before/after."""
    t = RewardTrainer(cfg, run_dir, resume=resume, overwrite=overwrite)
    before = t.evaluate()
    summary = t.fit()
    summary.update({"val_accuracy_before": before.get("val_accuracy"),
                    "val_accuracy_after": t.last_eval.get("val_accuracy")})
    if verbose and before:
        print(f"reward model (held-out, {len(t.val_pairs)} pairs): accuracy {before['val_accuracy']:.0%} -> "
              f"{t.last_eval['val_accuracy']:.0%}, Bradley-Terry loss {before['val_loss']:.3f} -> "
              f"{t.last_eval['val_loss']:.3f}")
    return t.finish(summary)
