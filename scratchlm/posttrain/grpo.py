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

Each rollout batch serves updates_per_batch x minibatches optimizer steps (PPO's epochs and minibatches): the
first step is on-policy (ratio 1, nothing to clip), the later ones start from a policy that has moved, which is
what the clip is for. Logged per step: reward (mean) and reward_std (within groups), reward_zero_std (the share
of groups that teach nothing), clip_frac, kl (to the reference); every train.eval_every steps: greedy held-out
accuracy with its n. The best checkpoint by that accuracy, the base (step 0) included, is what the run hands on.
"""

from __future__ import annotations

import copy
import json
import logging
from contextlib import nullcontext
from pathlib import Path

import torch

from scratchlm.runs import read_jsonl
from scratchlm.stats import format_proportion
from scratchlm.train.checkpoint import mark_best, read_best
from scratchlm.train.metrics import plot_rl
from scratchlm.train.wrap import UNHONOURED_GRPO, UNHONOURED_POSTTRAIN

from .lora import adapters_disabled
from .loop import PostTrainer, chat_replies, next_epoch_position, prompt_fits, shuffled
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


def token_logps(logits: torch.Tensor, y: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log p(y_t) at every position: logits (B, T, V), y (B, T) -> (B, T) (0 where y is IGNORE).

    `temperature` is the rollouts' sampling temperature: the replies were drawn from softmax(logits / T), so that is
    the policy whose probabilities the ratio, the KL and the gradient are about (as in TRL). Greedy decoding is
    the same at every T, so training the tempered policy still moves the greedy answers."""
    lp = torch.log_softmax(logits.float() / temperature, dim=-1).gather(-1, y.clamp_min(0).unsqueeze(-1)).squeeze(-1)
    return lp * (y != IGNORE)


def grpo_loss(logp: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor, mask: torch.Tensor,
              clip_eps: float = 0.2, ref_logp: torch.Tensor | None = None, kl_coef: float = 0.0,
              n_tokens: float | None = None):
    """Clipped surrogate + KL penalty. logp/old_logp/ref_logp/mask: (B, T); adv: (B,). Returns (loss, stats).

    Sums over reply tokens divided by n_tokens: this batch's reply tokens by default; under torchrun, those of
    the step on every rank, so that the ranks' shares add up to the one-process mean."""
    mask = mask.float()
    n = mask.sum().clamp_min(1) if n_tokens is None else max(float(n_tokens), 1.0)
    ratio = torch.exp(logp - old_logp)  # (B, T)
    a = adv[:, None]
    unclipped = ratio * a
    clipped = ratio.clamp(1 - clip_eps, 1 + clip_eps) * a
    objective = torch.minimum(unclipped, clipped)
    per_token = -objective
    stats = {"clip_frac": float(((clipped < unclipped).float() * mask).sum() / n)}
    if ref_logp is not None:
        d = ref_logp - logp
        kl = torch.exp(d) - d - 1  # (B, T)
        stats["kl"] = float((kl.detach() * mask).sum() / n)
        if kl_coef > 0:
            per_token = per_token + kl_coef * kl
    return (per_token * mask).sum() / n, stats


class GRPOTrainer(PostTrainer):
    stage = "rl"

    def check_layout(self) -> None:  # before anything is written (every rank raises the same error)
        g, n = self.cfg.grpo, self.dp_size
        if g.prompts_per_step % (g.minibatches * n):
            what = f"grpo.minibatches = {g.minibatches}" + (f" x {n} data-parallel ranks" if n > 1 else "")
            raise ValueError(f"grpo.prompts_per_step = {g.prompts_per_step} is not a multiple of {what}; make it "
                             "one (each minibatch takes whole groups" + (", the same number on every rank)" if n > 1
                                                                          else ")"))

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
        self.use_ref = g.kl_coef > 0 or g.track_kl
        self.ref_model = None
        if self.use_ref and not self.lora:
            self.ref_model = copy.deepcopy(self.model).eval().requires_grad_(False)
        self.epoch, self.cursor, self.order = 0, 0, None
        self.buffer, self.queue = None, []  # the current rollout batch, and the row slices of its steps still to do

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
            self.order, self.cursor, self.epoch = next_epoch_position(
                self.order, self.cursor, self.epoch, lambda e: shuffled(len(self.train_tasks), self.tc.seed + e))
            out.append(self.train_tasks[self.order[self.cursor]])
            self.cursor += 1
        return out

    def my_prompts(self) -> list[int]:
        """Indices (into the step's P prompts) that this rank rolls out, in the order of its minibatches.

        Minibatch m of one process is prompts [m P/M, (m+1) P/M); under N ranks each takes an equal part of every
        minibatch, so minibatch m over all ranks is the same prompts as in one process."""
        g, n = self.cfg.grpo, self.dp_size
        r = 0 if self.ctx is None else self.ctx.dp_rank
        per_mb, per_rank = g.prompts_per_step // g.minibatches, g.prompts_per_step // g.minibatches // n
        return [m * per_mb + r * per_rank + i for m in range(g.minibatches) for i in range(per_rank)]

    def unhonoured(self) -> dict[str, str]:
        return {**UNHONOURED_POSTTRAIN, **UNHONOURED_GRPO}

    def policy_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, T, V) of the policy being trained: through the DDP / FSDP wrapper when there is one, and
        torch.compile when train.compile is on (PostTrainer.train_forward)."""
        return self.train_forward(x, x)  # (x, y, ...): unpacked rows, y unused

    @property
    def logp_temperature(self) -> float:
        """The temperature the replies were sampled at (1 for greedy rollouts, which have no tempered policy)."""
        t = self.cfg.grpo.temperature
        return t if t > 0 else 1.0

    def rollout_model(self) -> torch.nn.Module:
        """The model that samples: the policy itself, or under FSDP a full copy gathered from the shards (the
        engine runs the model's parts with a KV cache, which sharded parameters cannot)."""
        if self.ctx is None or self.ctx.degrees["fsdp"] == 1:
            return self.model
        from scratchlm.model import ModelConfig, Transformer

        from .distributed import full_state_dict, merge_lora_dict

        sd = full_state_dict(self.model)  # collective
        if self.lora:
            sd = merge_lora_dict(sd, self.lora.alpha / self.lora.rank)
        if getattr(self, "_sampler", None) is None:
            self._sampler = Transformer(ModelConfig.from_dict(self.model_config)).to(self.device).eval()
        self._sampler.load_state_dict(sd, strict=False)  # strict off: RoPE buffers are rebuilt, not saved
        return self._sampler

    def rollout(self) -> dict:
        """Sample G replies for each of this rank's prompts, score them, and freeze pi_old / reference log-probs.

        Reply i of prompt p is sampled with seed base + p G + i, whichever rank holds it, so N ranks draw the
        replies one process draws."""
        g = self.cfg.grpo
        step_tasks = self.next_tasks()  # the step's P prompts, the same on every rank
        mine = self.my_prompts()
        tasks = [step_tasks[p] for p in mine for _ in range(g.group_size)]  # (P/N * G,) grouped
        base = self.tc.seed * 100003 + self.step * 997
        seeds = [base + p * g.group_size + i for p in mine for i in range(g.group_size)]
        replies = chat_replies(self.rollout_model(), self.tokenizer, [t["prompt"] for t in tasks], g.max_new_tokens,
                               temperature=g.temperature, top_k=g.top_k, seeds=seeds, batch_size=len(tasks))
        rewards = self.reward(tasks, replies)
        adv = group_advantages(rewards, g.group_size, scale=g.scale_rewards)
        exs = [example_from_ids(r["prompt_ids"], r["ids"] or [self.pad_id], self.model.config.max_seq_len)
               for r in replies]
        batch = pad_batch(exs, self.pad_id, self.model.config.max_seq_len).to(self.device)
        with torch.no_grad():
            old = None
            if g.updates_per_batch * g.minibatches > 1:  # one step per batch: pi_old == pi, logp.detach()
                with self.autocast():
                    old = token_logps(self.policy_logits(batch.x), batch.y, self.logp_temperature)
            ref = None
            if self.use_ref:
                with self.autocast():
                    if self.ref_model is not None:
                        ref = token_logps(self.ref_model(batch.x), batch.y, self.logp_temperature)
                    else:  # LoRA: the reference is the policy with its adapters off
                        with adapters_disabled(self.model):
                            ref = token_logps(self.policy_logits(batch.x), batch.y, self.logp_temperature)
        # every rank's rewards (for the logged statistics; each rank's groups are whole, so its advantages are
        # already right) and the reply statistics of the whole step
        all_rewards, closed, reply_len = rewards, sum(r["closed"] for r in replies), sum(len(r["ids"]) for r in replies)
        if self.ctx is not None:
            from .distributed import all_gather_rows, all_reduce_sum

            all_rewards = all_gather_rows(self.ctx, rewards)
            closed, reply_len = all_reduce_sum(self.ctx, closed), all_reduce_sum(self.ctx, reply_len)
        n = len(all_rewards)
        return {"batch": batch, "adv": adv.to(self.device), "old": old, "ref": ref, "rewards": all_rewards,
                "correct": all_rewards if self.cfg.task != "reward-model" else None,
                "closed": closed / n, "reply_len": reply_len / n}

    def train_step(self) -> dict:
        g = self.cfg.grpo
        if not self.queue:
            self.buffer = self.rollout()
            local = len(self.my_prompts()) * g.group_size
            n = local // g.minibatches  # this rank's rows per optimizer step: whole groups
            self.queue = [slice(i, i + n) for _ in range(g.updates_per_batch) for i in range(0, local, n)]
        rows = self.queue.pop(0)
        rb = self.buffer
        x, y = rb["batch"].x[rows], rb["batch"].y[rows]
        mask = y != IGNORE
        n_tokens, n_in = int(mask.sum()), int((x != self.pad_id).sum())
        if self.ctx is not None:  # the step's reply tokens on every rank: the one-process normaliser
            from .distributed import all_reduce_sum

            n_tokens, n_in = all_reduce_sum(self.ctx, n_tokens), all_reduce_sum(self.ctx, n_in)
        self.model.train()
        with self.autocast():
            logp = token_logps(self.policy_logits(x), y, self.logp_temperature)  # (b, T)
        old = rb["old"][rows] if rb["old"] is not None else logp.detach()
        ref = rb["ref"][rows] if rb["ref"] is not None else None
        loss, stats = grpo_loss(logp, old, rb["adv"][rows], mask, g.clip_eps, ref, g.kl_coef, n_tokens=n_tokens)
        # DDP / FSDP average gradients over the ranks; each rank's share is already divided by the global count
        (loss * self.dp_size).backward()
        if self.ctx is not None:  # the shares add up to the one-process figures
            from .distributed import all_reduce_sum

            loss = torch.tensor(all_reduce_sum(self.ctx, loss.item()))
            stats = {k: all_reduce_sum(self.ctx, v) for k, v in stats.items()}
        r = rb["rewards"].view(-1, g.group_size)  # (P, G)
        std = r.std(1)
        row = {"reward": r.mean().item(), "reward_std": std.mean().item(),
               "reward_zero_std": (std == 0).float().mean().item(), "loss": loss.item(), **stats,
               "closed": rb["closed"], "reply_len": rb["reply_len"], "epoch": self.epoch, "n_tokens": int(n_in)}
        if rb["correct"] is not None:
            row["accuracy"] = (rb["correct"] > 0.5).float().mean().item()
        return row

    def evaluate(self) -> dict:
        if not self.val_tasks:
            return {}
        replies = chat_replies(self.model, self.tokenizer, [t["prompt"] for t in self.val_tasks],
                               self.cfg.grpo.max_new_tokens, temperature=0.0)
        r = self.reward(self.val_tasks, replies)
        n = len(self.val_tasks)
        ev = {"val_n": n, "val_closed": sum(x["closed"] for x in replies) / n}
        if self.cfg.task == "reward-model":
            ev["val_reward"] = r.mean().item()
            log.info("rl step %d: held-out mean reward-model score %.3f (n=%d)", self.step, ev["val_reward"], n)
        else:
            k = int((r > 0.5).sum())
            ev.update({"val_accuracy": k / n, "val_correct": k})
            log.info("rl step %d: held-out accuracy %s", self.step, format_proportion(k, n))
        ev["samples"] = [{"prompt": t["prompt"][-1]["content"][:160], "reply": x["text"][:160], "answer": t["answer"]}
                         for t, x in zip(self.val_tasks[:3], replies[:3])]
        return ev

    def score(self, ev: dict) -> float:
        return -ev.get("val_accuracy", ev.get("val_reward", 0.0))

    def evaluate_base(self) -> dict:
        """Score the base before the first step and keep it as checkpoint 0, the best so far: a run none of whose
        steps beats the base on held-out tasks hands on the base. On resume: the step-0 row of metrics.jsonl."""
        if self.step > 0:
            return next((r for r in read_jsonl(self.run_dir / "metrics.jsonl") if r.get("step") == 0), {})
        ev = self._eval()
        if ev:
            self.best = self.score(ev)
            ckpt = self.save({"base": True})  # collective under torchrun
            if self.is_main:
                mark_best(self.run_dir, ckpt, self.best)
        return ev

    def best_meta(self) -> dict:
        """meta.json of the checkpoint the run hands on (checkpoints/best.json): its step and held-out scores."""
        best = read_best(self.run_dir)
        if best is None:
            return {}
        return json.loads((self.run_dir / "checkpoints" / best["checkpoint"] / "meta.json").read_text())

    def plot(self) -> None:
        super().plot()
        plot_rl(self.run_dir)


def run_grpo(cfg, run_dir: str | Path, resume: bool = False, overwrite: bool = False, verbose: bool = True) -> dict:
    """GRPO from cfg.base on cfg.task into run_dir. The summary holds the held-out greedy accuracy (or mean
    reward-model score) before (the base), after (the checkpoint the run hands on: the best by that score, the base
    included) and at the final step, with the number of held-out tasks."""
    t = GRPOTrainer(cfg, run_dir, resume=resume, overwrite=overwrite)
    before = t.evaluate_base()
    summary = t.fit()
    if not t.is_main:  # rank 0 reports and writes DONE
        return t.finish(summary)
    final = t.last_eval_full
    best = t.best_meta()
    key = "val_reward" if cfg.task == "reward-model" else "val_accuracy"
    summary.update({f"{key}_before": before.get(key), f"{key}_after": best.get(key), f"{key}_final": final.get(key),
                    "val_n": final.get("val_n"), "best_step": best.get("step"), "samples_after": final.get("samples", [])})
    if key == "val_accuracy":
        summary.update({"val_correct_before": before.get("val_correct"), "val_correct_after": best.get("val_correct")})
    if verbose and before:
        n = final["val_n"]
        if key == "val_reward":
            show = "mean reward-model score {:.3f}".format
        else:
            show = lambda a: "task accuracy (greedy) " + format_proportion(round(a * n), n)  # noqa: E731
        print(f"GRPO effect (held-out, {n} {cfg.task} tasks): {show(before[key])} -> {show(best[key])}")
        kept = "the base (no step beat it)" if best.get("step") == 0 else f"step {best.get('step')}"
        print(f"   handed on: {kept}; final step {t.step}: {show(final[key])}")
        for s in summary["samples_after"]:
            print(f"   user: {s['prompt'][:100]!r}\n   assistant: {s['reply'][:120]!r}  (answer {s['answer']})")
    return t.finish(summary)
