"""Direct preference optimisation (Rafailov et al. 2023): learn from "reply A is better than reply B".

With the policy pi, a frozen reference pi_ref (the model before DPO) and log-ratios of whole replies

    h = [log pi(chosen) - log pi_ref(chosen)] - [log pi(rejected) - log pi_ref(rejected)]

the losses are
    sigmoid (DPO):          -log sigmoid(beta h)                          = ln 2 while pi == pi_ref
    conservative (cDPO):    -(1 - eps) log sigmoid(beta h) - eps log sigmoid(-beta h)   (eps = label_smoothing)
    IPO (Azar et al. 2023): (h - 1 / (2 beta))^2

beta * log(pi / pi_ref) is the "implicit reward" of a reply; the metrics (TRL's names) are rewards/chosen,
rewards/rejected, rewards/margins and rewards/accuracies (share of pairs whose chosen reward is higher).
The reference is a frozen copy of the base, or (default) its log-probs computed once before training.
"""

from __future__ import annotations

import copy
import logging
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F

from .lora import adapters_disabled
from .loop import PostTrainer, load_preference_split, next_epoch_position, shuffled
from .tokenize import IGNORE, make_reply_example, pad_batch

log = logging.getLogger("scratchlm")


def sequence_logps(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Sum of log p(target) over each row's scored tokens: logits (B, T, V), y (B, T) -> (B,)."""
    lp = torch.log_softmax(logits.float(), dim=-1)  # (B, T, V)
    mask = y != IGNORE
    tok = lp.gather(-1, y.clamp_min(0).unsqueeze(-1)).squeeze(-1)  # (B, T)
    return (tok * mask).sum(-1)


def dpo_loss(pc: torch.Tensor, pr: torch.Tensor, rc: torch.Tensor, rr: torch.Tensor, beta: float = 0.1,
             loss_type: str = "sigmoid", label_smoothing: float = 0.0):
    """Per-pair losses and implicit rewards from policy (pc, pr) and reference (rc, rr) log-probs, all (B,).

    Returns (losses, chosen_rewards, rejected_rewards)."""
    h = (pc - rc) - (pr - rr)
    if loss_type == "sigmoid":
        losses = -(1 - label_smoothing) * F.logsigmoid(beta * h) - label_smoothing * F.logsigmoid(-beta * h)
    elif loss_type == "ipo":
        losses = (h - 1 / (2 * beta)) ** 2
    else:
        raise ValueError(f"unknown dpo.loss {loss_type!r}; use sigmoid or ipo")
    return losses, beta * (pc - rc).detach(), beta * (pr - rr).detach()


class DPOTrainer(PostTrainer):
    stage = "dpo"

    def check_layout(self) -> None:
        n, k = self.dp_size, self.cfg.dpo.grad_accum
        if k % n:
            raise ValueError(f"dpo.grad_accum = {k} is not a multiple of the {n} data-parallel ranks; set it to a "
                             f"multiple of {n} (it counts the micro-batches of a step over all ranks)")

    def build(self) -> None:
        cfg, tc = self.cfg, self.tc
        if not cfg.data:
            raise ValueError("no preference data: pass --data FILE (Alpaca-with-preference or ShareGPT preference)")
        train, val = load_preference_split(cfg.data, cfg.val_data, cfg.val_fraction, tc.seed)
        self.train_pairs = self._tokenize(train)
        self.val_pairs = self._tokenize(val)[: cfg.max_val]
        if not self.train_pairs:
            raise ValueError(f"{cfg.data}: no pair fits in train.seq_len ({tc.seq_len}) tokens")
        log.info("dpo: %d train / %d held-out pairs", len(self.train_pairs), len(self.val_pairs))
        self.ref_model = None
        if cfg.dpo.reference == "model" and not self.lora:
            self.ref_model = copy.deepcopy(self.model).eval().requires_grad_(False)
        self.ref_train = self.ref_val = None
        if cfg.dpo.reference == "precompute":
            self.ref_train = self.pair_logps(self.train_pairs, reference=True)
        self.ref_val = self.pair_logps(self.val_pairs, reference=True)  # once: held-out metrics are for fixed pairs
        self.epoch, self.cursor, self.order = 0, 0, None

    def _tokenize(self, prefs) -> list[tuple]:
        out, L = [], self.tc.seq_len
        for p in prefs:
            c = make_reply_example(self.tokenizer, p.prompt, p.chosen, L)
            r = make_reply_example(self.tokenizer, p.prompt, p.rejected, L)
            if c is not None and r is not None:
                out.append((c, r))
        return out

    # ------------------------------------------------------------------ log-probs
    def _ref_context(self):
        return adapters_disabled(self.model) if self.lora else nullcontext(self.ref_model or self.model)

    def logps(self, pairs: list[tuple], reference: bool = False,
              collective: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(chosen, rejected) summed log-probs (B,) of a list of pairs, chosen and rejected in one forward.

        collective: a training step under torchrun, where every rank calls it in step: the policy (and a LoRA
        model's reference, adapters off) run through the DDP / FSDP wrapper, whose hooks gather and sync."""
        batch = pad_batch([c for c, _ in pairs] + [r for _, r in pairs], self.pad_id, self.tc.seq_len)
        batch = batch.to(self.device)
        through_wrapper = collective  # a training step: the wrapper (torchrun) and torch.compile, when on
        if reference:
            with torch.no_grad(), self._ref_context() as m, self.autocast():
                if self.ref_model is not None:  # a frozen plain copy: no collective needed
                    logits = self.ref_model(batch.x)
                else:  # the policy itself with its LoRA adapters off
                    logits = self.forward(batch) if through_wrapper else m(batch.x)
        else:
            with self.autocast():
                logits = self.forward(batch) if through_wrapper else self.model(batch.x)  # (2B, T, V)
        lp = sequence_logps(logits, batch.y)
        return lp[: len(pairs)], lp[len(pairs):]

    @torch.no_grad()
    def pair_logps(self, pairs: list[tuple], reference: bool = False) -> torch.Tensor:
        """(N, 2) log-probs of every pair, in micro-batches."""
        was = self.model.training
        self.model.eval()
        out = []
        mb = self.tc.micro_batch_size * 2
        for i in range(0, len(pairs), mb):
            c, r = self.logps(pairs[i:i + mb], reference)
            out.append(torch.stack([c, r], dim=1).cpu())
        self.model.train(was)
        return torch.cat(out) if out else torch.zeros(0, 2)

    # ------------------------------------------------------------------ training
    def extra_state(self) -> dict:
        return {"epoch": self.epoch, "cursor": self.cursor}

    def load_extra_state(self, state: dict) -> None:
        self.epoch, self.cursor, self.order = state["epoch"], state["cursor"], None

    def next_indices(self) -> list[int]:
        mb = self.tc.micro_batch_size
        self.order, self.cursor, self.epoch = next_epoch_position(
            self.order, self.cursor, self.epoch, lambda e: shuffled(len(self.train_pairs), self.tc.seed + e))
        idx = self.order[self.cursor:self.cursor + mb]
        self.cursor += mb
        return idx

    def train_step(self) -> dict:
        d = self.cfg.dpo
        n_acc, n = d.grad_accum, self.dp_size
        # grad_accum micro-batches make the step over all ranks; data-parallel rank r runs r, r+N, ... of them
        # (every rank draws the same order of pairs, so together they run exactly one process's step).
        steps = [self.next_indices() for _ in range(n_acc)]
        mine = steps[self.ctx.dp_rank::n] if n > 1 else steps
        sums = {"loss": 0.0, "rewards/chosen": 0.0, "rewards/rejected": 0.0, "rewards/accuracies": 0.0}
        n_tokens = 0
        for i, idx in enumerate(mine):
            pairs = [self.train_pairs[j] for j in idx]
            with self.sync_context(last=i == len(mine) - 1):
                pc, pr = self.logps(pairs, collective=True)
                if self.ref_train is not None:
                    ref = self.ref_train[idx].to(self.device)
                    rc, rr = ref[:, 0], ref[:, 1]
                else:
                    rc, rr = self.logps(pairs, reference=True, collective=True)
                losses, cr, rr_ = dpo_loss(pc, pr, rc, rr, d.beta, d.loss, d.label_smoothing)
                loss = losses.mean() / n_acc
                # DDP / FSDP average the ranks' gradients; the step's loss is their sum, hence * n
                (loss * n if n > 1 else loss).backward()
            sums["loss"] += loss.item()
            sums["rewards/chosen"] += cr.mean().item() / n_acc
            sums["rewards/rejected"] += rr_.mean().item() / n_acc
            sums["rewards/accuracies"] += (cr > rr_).float().mean().item() / n_acc
            n_tokens += sum(len(c) + len(r) for c, r in pairs)
        if n > 1:  # every rank summed its share of the micro-batches: the step's numbers are the sums
            from .distributed import all_reduce_sum

            sums = {k: all_reduce_sum(self.ctx, v) for k, v in sums.items()}
            n_tokens = int(all_reduce_sum(self.ctx, n_tokens))
        sums["rewards/margins"] = sums["rewards/chosen"] - sums["rewards/rejected"]
        return {**sums, "epoch": self.epoch, "n_tokens": n_tokens}

    def evaluate(self) -> dict:
        d = self.cfg.dpo
        if not self.val_pairs:
            return {}
        pol = self.pair_logps(self.val_pairs)
        losses, cr, rr = dpo_loss(pol[:, 0], pol[:, 1], self.ref_val[:, 0], self.ref_val[:, 1], d.beta, d.loss,
                                  d.label_smoothing)
        return {"val_loss": losses.mean().item(), "val_rewards/chosen": cr.mean().item(),
                "val_rewards/rejected": rr.mean().item(), "val_rewards/margins": (cr - rr).mean().item(),
                "val_rewards/accuracies": (cr > rr).float().mean().item(),
                # the model's own preference: does it find the chosen reply more likely than the rejected one?
                "val_pref_acc": (pol[:, 0] > pol[:, 1]).float().mean().item()}


def run_dpo(cfg, run_dir: str | Path, resume: bool = False, overwrite: bool = False, verbose: bool = True) -> dict:
    """DPO from cfg.base on cfg.data into run_dir; returns a summary with held-out preference accuracy
    before (the base model's own preference) and after."""
    t = DPOTrainer(cfg, run_dir, resume=resume, overwrite=overwrite)
    ref = t.ref_val
    before = float((ref[:, 0] > ref[:, 1]).float().mean()) if len(ref) else None
    d = cfg.dpo  # at the start pi == pi_ref: the loss is ln 2 (sigmoid) or 1/(2 beta)^2 (IPO)
    loss0 = dpo_loss(torch.zeros(1), torch.zeros(1), torch.zeros(1), torch.zeros(1), d.beta, d.loss,
                     d.label_smoothing)[0].item()
    summary = t.fit()
    after = t.last_eval.get("val_pref_acc")
    summary.update({"pref_acc_before": before, "val_loss_before": loss0, "pref_acc_after": after,
                    "val_loss_after": t.last_eval.get("val_loss"),
                    "val_margin_after": t.last_eval.get("val_rewards/margins")})
    if verbose and before is not None and t.is_main:
        print(f"DPO effect (held-out, {len(t.val_pairs)} pairs): the model prefers the chosen reply in "
              f"{before:.0%} -> {after:.0%} of pairs; DPO loss {loss0:.3f} -> "
              f"{summary['val_loss_after']:.3f}, implicit reward accuracy "
              f"{t.last_eval.get('val_rewards/accuracies', 0):.0%}, margin {summary['val_margin_after']:.3f}")
    return t.finish(summary)
