"""GRPO, group-relative policy optimisation (Shao et al. 2024, DeepSeekMath): RL without a value model.

For each prompt, sample a group of G replies with the current policy (the inference engine, KV cache) and
score them (a verifiable reward or a reward model). Each reply's advantage is its reward relative to its group:

    A_i = (r_i - mean(r_group)) / (std(r_group) + eps)          (Dr. GRPO: without the division)

Every token of reply i gets A_i, and the PPO clipped objective keeps one update from moving too far from the
policy that sampled the replies (pi_old), with an optional KL penalty towards the reference model:

    ratio = pi(token) / pi_old(token)
    loss  = -mean_tokens[ min(ratio A, clip(ratio, 1 - eps, 1 + eps) A) ] + kl_coef * mean_tokens[ KL ]
    KL    = exp(ref - logp) - (ref - logp) - 1          (the k3 estimator: unbiased, always >= 0)

The mean is over all reply tokens of the batch (token-level, as DAPO recommends), so long replies are not
down-weighted per token. A group whose replies all get the same reward has zero advantage: it teaches nothing,
which is why rewards must sometimes differ inside a group (sample at temperature 1, G >= 8).
"""

from __future__ import annotations

import copy
import logging
import random
from contextlib import nullcontext
from pathlib import Path

import torch

from .lora import adapters_disabled
from .loop import PostTrainer, chat_replies, prompt_fits
from .rewards import VERIFIERS, load_task_splits
from .tokenize import IGNORE, example_from_ids, pad_batch

log = logging.getLogger("scratchlm")


def group_advantages(rewards: torch.Tensor, group_size: int, scale: bool = True, eps: float = 1e-4) -> torch.Tensor:
    """(N * G,) rewards, consecutive groups of G -> (N * G,) group-normalised advantages."""
    r = rewards.view(-1, group_size)  # (N, G)
    adv = r - r.mean(dim=1, keepdim=True)
    if scale:
        adv = adv / (r.std(dim=1, keepdim=True) + eps)
    return adv.flatten()


def token_logps(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """log p(y_t) at every position: logits (B, T, V), y (B, T) -> (B, T) (0 where y is IGNORE)."""
    lp = torch.log_softmax(logits.float(), dim=-1).gather(-1, y.clamp_min(0).unsqueeze(-1)).squeeze(-1)
    return lp * (y != IGNORE)


def grpo_loss(logp: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor, mask: torch.Tensor,
              clip_eps: float = 0.2, ref_logp: torch.Tensor | None = None, kl_coef: float = 0.0):
    """Clipped surrogate + KL penalty. logp/old_logp/ref_logp/mask: (B, T); adv: (B,). Returns (loss, stats)."""
    mask = mask.float()
    n = mask.sum().clamp_min(1)
    ratio = torch.exp(logp - old_logp)  # (B, T)
    a = adv[:, None]
    unclipped = ratio * a
    clipped = ratio.clamp(1 - clip_eps, 1 + clip_eps) * a
    objective = torch.minimum(unclipped, clipped)
    per_token = -objective
    stats = {"clip_frac": float(((clipped < unclipped).float() * mask).sum() / n)}
    if ref_logp is not None and kl_coef > 0:
        d = ref_logp - logp
        kl = torch.exp(d) - d - 1  # (B, T)
        per_token = per_token + kl_coef * kl
        stats["kl"] = float((kl.detach() * mask).sum() / n)
    return (per_token * mask).sum() / n, stats


class GRPOTrainer(PostTrainer):
    stage = "rl"

    def build(self) -> None:
        cfg, g = self.cfg, self.cfg.grpo
        if cfg.task == "reward-model":
            if not cfg.reward_model:
                raise ValueError("task reward-model needs --set reward_model=RUN (a `scratchlm reward` run)")
            if not cfg.data:
                raise ValueError("task reward-model needs --data FILE with the prompts (instruction/question)")
            from .reward import load_reward_model

            self.rm, _ = load_reward_model(cfg.reward_model, self.device)
        train, val = load_task_splits(cfg.task, cfg.data, cfg.val_data, self.tc.seed, n_val=g.eval_tasks)
        fits = lambda t: prompt_fits(self.tokenizer, t["prompt"], self.model.config.max_seq_len, 8)  # noqa: E731
        self.train_tasks = [t for t in train if fits(t)]
        self.val_tasks = [t for t in val if fits(t)][: g.eval_tasks]
        if not self.train_tasks:
            raise ValueError("no task prompt fits in the model's context")
        log.info("rl: %d train / %d held-out tasks (%s)", len(self.train_tasks), len(self.val_tasks), cfg.task)
        self.ref_model = None
        if g.kl_coef > 0 and not self.lora:
            self.ref_model = copy.deepcopy(self.model).eval().requires_grad_(False)
        self.epoch, self.cursor, self.order = 0, 0, None
        self.buffer, self.buffer_left = None, 0

    def reward(self, tasks: list[dict], replies: list[dict]) -> torch.Tensor:
        if self.cfg.task == "reward-model":
            from .reward import batch_ids

            ids, lengths = batch_ids([r["prompt_ids"] + r["ids"] for r in replies], self.pad_id, self.device)
            with torch.no_grad(), self.autocast():
                return self.rm(ids, lengths).float().cpu()
        fn = VERIFIERS[self.cfg.task]
        return torch.tensor([fn(t, r["text"]) for t, r in zip(tasks, replies)])

    def extra_state(self) -> dict:
        return {"epoch": self.epoch, "cursor": self.cursor}

    def load_extra_state(self, state: dict) -> None:
        self.epoch, self.cursor, self.order = state["epoch"], state["cursor"], None

    def next_tasks(self) -> list[dict]:
        n = self.cfg.grpo.prompts_per_step
        out = []
        while len(out) < n:
            if self.order is None or self.cursor >= len(self.order):
                if self.order is not None:
                    self.epoch, self.cursor = self.epoch + 1, 0
                self.order = list(range(len(self.train_tasks)))
                random.Random(self.tc.seed + self.epoch).shuffle(self.order)
            out.append(self.train_tasks[self.order[self.cursor]])
            self.cursor += 1
        return out

    def rollout(self) -> dict:
        """Sample G replies for each of P prompts, score them, and freeze pi_old / reference log-probs."""
        g = self.cfg.grpo
        tasks = [t for t in self.next_tasks() for _ in range(g.group_size)]  # (P * G,) grouped
        replies = chat_replies(self.model, self.tokenizer, [t["prompt"] for t in tasks], g.max_new_tokens,
                               temperature=g.temperature, top_k=g.top_k, seed=self.tc.seed * 100003 + self.step * 997,
                               batch_size=len(tasks))
        rewards = self.reward(tasks, replies)
        adv = group_advantages(rewards, g.group_size, scale=g.scale_rewards)
        exs = [example_from_ids(r["prompt_ids"], r["ids"] or [self.pad_id], self.model.config.max_seq_len)
               for r in replies]
        batch = pad_batch(exs, self.pad_id).to(self.device)
        with torch.no_grad():
            old = None
            if g.updates_per_batch > 1:  # with one update, pi_old == pi: its log-probs are logp.detach()
                with self.autocast():
                    old = token_logps(self.model(batch.x), batch.y)
            ref = None
            if g.kl_coef > 0:
                ctx = adapters_disabled(self.model) if self.lora else nullcontext()
                with ctx, self.autocast():
                    ref = token_logps((self.ref_model or self.model)(batch.x), batch.y)
        correct = rewards if self.cfg.task != "reward-model" else None
        return {"batch": batch, "adv": adv.to(self.device), "old": old, "ref": ref, "rewards": rewards,
                "correct": correct, "closed": sum(r["closed"] for r in replies) / len(replies),
                "reply_len": sum(len(r["ids"]) for r in replies) / len(replies)}

    def train_step(self) -> dict:
        g = self.cfg.grpo
        if self.buffer_left == 0:
            self.buffer, self.buffer_left = self.rollout(), g.updates_per_batch
        self.buffer_left -= 1
        rb = self.buffer
        batch = rb["batch"]
        self.model.train()
        with self.autocast():
            logp = token_logps(self.model(batch.x), batch.y)  # (B, T)
        old = rb["old"] if rb["old"] is not None else logp.detach()
        loss, stats = grpo_loss(logp, old, rb["adv"], batch.y != IGNORE, g.clip_eps, rb["ref"], g.kl_coef)
        loss.backward()
        r = rb["rewards"]
        row = {"loss": loss.item(), "reward": r.mean().item(), "reward_std": r.view(-1, g.group_size).std(1).mean().item(),
               **stats, "closed": rb["closed"], "reply_len": rb["reply_len"], "epoch": self.epoch,
               "n_tokens": int((batch.x != self.pad_id).sum())}
        if rb["correct"] is not None:
            row["accuracy"] = (rb["correct"] > 0.5).float().mean().item()
        return row

    def evaluate(self) -> dict:
        if not self.val_tasks:
            return {}
        replies = chat_replies(self.model, self.tokenizer, [t["prompt"] for t in self.val_tasks],
                               self.cfg.grpo.max_new_tokens, temperature=0.0)
        r = self.reward(self.val_tasks, replies)
        key = "val_reward" if self.cfg.task == "reward-model" else "val_accuracy"
        return {key: r.mean().item(), "val_closed": sum(x["closed"] for x in replies) / len(replies),
                "samples": [{"prompt": t["prompt"][-1]["content"][:160], "reply": x["text"][:160],
                             "answer": t["answer"]} for t, x in zip(self.val_tasks[:3], replies[:3])]}

    def score(self, ev: dict) -> float:
        return -ev.get("val_accuracy", ev.get("val_reward", 0.0))


def run_grpo(cfg, run_dir: str | Path, resume: bool = False, overwrite: bool = False, verbose: bool = True) -> dict:
    """GRPO from cfg.base on cfg.task into run_dir; returns held-out task accuracy (greedy) before and after."""
    t = GRPOTrainer(cfg, run_dir, resume=resume, overwrite=overwrite)
    before = t.evaluate()
    summary = t.fit()
    after = t.last_eval_full
    key = "val_reward" if cfg.task == "reward-model" else "val_accuracy"
    summary.update({f"{key}_before": before.get(key), f"{key}_after": after.get(key),
                    "samples_after": after.get("samples", [])})
    if verbose and before:
        what = "mean reward-model score" if key == "val_reward" else "task accuracy (greedy)"
        fmt = "{:.3f}" if key == "val_reward" else "{:.0%}"
        print(f"GRPO effect (held-out, {len(t.val_tasks)} {cfg.task} tasks): {what} "
              f"{fmt.format(before[key])} -> {fmt.format(after[key])}")
        for s in summary["samples_after"]:
            print(f"   user: {s['prompt'][:100]!r}\n   assistant: {s['reply'][:120]!r}  (answer {s['answer']})")
    return t.finish(summary)
