"""GRPO learns: on a task whose answer the base model samples sometimes but never says greedily, the RL stage
(`run_grpo`, the same code as `scratchlm rl`) takes held-out greedy accuracy from below 20% to above 80%.

The task: "Ravi has 5 hats. How many hats does Ravi have?" -> "5". The base is a tiny model (2 layers, 64 wide)
trained in the fixture to read the number, then given a habit: it puts 60% of its probability on "7" and ~30% on
the right number. Greedy, it says 7 (right only on the 1 prompt in 9 whose answer is 7); sampled, a group of 8
replies holds the right number most of the time. That is what RL meets in a real model (pass@8 well above
pass@1), at a size that trains in seconds. Held-out prompts are (name, number, item) combinations that GRPO never
samples. Seeds 0, 1 and 2 all reach 100% in 40 steps (docs/LOG.md).

It fails when the policy gradient's sign is flipped (12% -> 12%), when the advantages are zero (12% -> 12%) or
paired with the wrong replies (12% -> 36%). Advantages divided by the group's std but not centred still pass: that
is REINFORCE without a baseline, a valid if noisier estimator; test_posttrain.py checks the normalisation by hand.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

NAMES = ("Mia", "Leo", "Ava", "Sam", "Zoe", "Max", "Ivy", "Kai", "Lily", "Noah", "Emma", "Jake", "Rosa", "Luke",
         "Ravi", "Ben")
ITEMS = ("apples", "shells", "balls", "stones", "books", "cups", "hats", "kites")
RIGHT, SEVEN = 0.3, 0.6  # the base's probability of the right number and of "7" (the rest: spread)


def question(name: str, n: int, item: str) -> str:
    return f"{name} has {n} {item}. How many {item} does {name} have?"


def split_prompts(seed: int = 0) -> tuple[list[tuple], list[tuple]]:
    combos = [(name, n, item) for name in NAMES for n in range(1, 10) for item in ITEMS]
    random.Random(seed).shuffle(combos)
    return combos[200:], combos[:200]  # train, held-out


def write_tasks(path: Path, combos: list[tuple]) -> None:
    with open(path, "w") as f:
        for c in combos:
            f.write(json.dumps({"instruction": question(*c), "answer": str(c[1])}) + "\n")


def build_base(root: Path, seed: int = 0) -> Path:
    """A run folder (tokenizer with the chat template + a checkpoint) holding the base model with the habit.

    Two phases of supervised training: 180 steps on right replies teach it to read the number (copying appears
    only after ~150 steps), then 60 steps on soft labels (RIGHT, SEVEN, the rest spread) give it the habit. Replies
    sampled with those shares left the right number 3-14% instead of ~30% after as many steps (tried)."""
    from scratchlm.inference.chat_template import CHAT_TEMPLATE, chat_special_ids, encode_chat
    from scratchlm.model import ModelConfig, Transformer
    from scratchlm.posttrain.loop import masked_nll
    from scratchlm.posttrain.tokenize import IGNORE, example_from_ids, pad_batch
    from scratchlm.runs import checkpoint_dir, save_model
    from scratchlm.tokenizer import train_bpe_from_texts

    train_set, _ = split_prompts(seed)
    tok = train_bpe_from_texts([question(*c) for c in train_set], vocab_size=300)
    tok.save(root / "tokenizer", chat_template=CHAT_TEMPLATE)
    im_end = chat_special_ids(tok)[2]
    prompt_ids = {c: encode_chat(tok, [{"role": "user", "content": question(*c)}], add_generation_prompt=True)
                  for c in train_set}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a shared machine's second thread costs more than it gives (docs/LOG.md)
    torch.manual_seed(seed)
    model = Transformer(ModelConfig.from_preset("llama-tiny", vocab_size=tok.vocab_size, max_seq_len=64, n_layers=2))
    digit_ids = torch.tensor([tok.encode(str(n))[0] for n in range(1, 10)])
    rng = random.Random(seed)

    def train(steps: int, lr: float, habit: bool) -> None:
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)  # fresh moments for each phase
        for _ in range(steps):
            rows = [rng.choice(train_set) for _ in range(32)]
            batch = pad_batch([example_from_ids(prompt_ids[c], tok.encode(str(c[1])) + [im_end], 64) for c in rows],
                              tok.pad_id)
            logits = model(batch.x)  # (B, T, V)
            if not habit:
                loss = masked_nll(logits, batch.y) / batch.n_targets
            else:
                # soft labels at the number: the expected gradient of sampled replies, without their noise
                at = (batch.y != IGNORE).int().argmax(1)  # (B,) the position that predicts the number
                logp = torch.log_softmax(logits[torch.arange(len(rows)), at].float(), -1)[:, digit_ids]  # (B, 9)
                target = torch.full((len(rows), 9), (1 - RIGHT - SEVEN) / 9)
                target[torch.arange(len(rows)), torch.tensor([c[1] - 1 for c in rows])] += RIGHT
                target[:, 7 - 1] += SEVEN
                y = batch.y.clone()
                y[torch.arange(len(rows)), at] = IGNORE  # the reply still closes after the number
                loss = -(target * logp).sum(1).mean() + masked_nll(logits, y) / len(rows)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

    train(180, 3e-3, habit=False)  # reads the number: the copy appears after ~150 steps
    train(60, 1e-3, habit=True)    # the habit: 7
    torch.set_num_threads(threads)
    save_model(checkpoint_dir(root, 1), model.eval(), model.config.to_dict())
    return root


def grpo_config(root: Path, overrides: tuple[str, ...] = ()):
    from scratchlm.posttrain import GRPOConfig, load_stage_config

    return load_stage_config(GRPOConfig, None, [
        f"base={root / 'base'}", f"data={root / 'tasks.jsonl'}", "task=tinyworld",
        "grpo.prompts_per_step=4", "grpo.group_size=8", "grpo.max_new_tokens=4", "grpo.eval_tasks=200",
        "train.max_steps=40", "train.lr=1e-3", "grpo.kl_coef=0",
        "train.num_threads=1", "train.device=cpu", "train.progress=false", "train.tensorboard=false", *overrides])


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    """The base built and the tasks written: root/base, root/tasks.jsonl, root/tasks_val.jsonl."""
    root = tmp_path_factory.mktemp("grpo_learns")
    (root / "base").mkdir()
    build_base(root / "base")
    train, val = split_prompts()
    write_tasks(root / "tasks.jsonl", train)
    write_tasks(root / "tasks_val.jsonl", val)  # the *_val twin: GRPO's held-out set
    return root


@pytest.fixture(scope="module")
def rl_run(toy) -> tuple[Path, dict]:
    """GRPO on the training prompts: (run folder, summary)."""
    from scratchlm.posttrain import run_grpo

    summary = run_grpo(grpo_config(toy, ("train.eval_every=10",)), toy / "rl")
    return toy / "rl", summary


def test_grpo_raises_heldout_accuracy_from_below_20_to_above_80_percent(rl_run):
    _, summary = rl_run
    assert summary["val_accuracy_before"] < 0.20, summary
    assert summary["val_accuracy_after"] > 0.80, summary


def test_rl_logs_reward_clip_kl_and_heldout_accuracy_with_its_n(rl_run):
    from scratchlm.runs import read_jsonl

    run, summary = rl_run
    rows = read_jsonl(run / "metrics.jsonl")
    train = [r for r in rows if "reward" in r]
    assert [r["step"] for r in train] == list(range(1, 41))
    for r in train:  # kl is tracked although kl_coef is 0 (grpo.track_kl)
        assert {"reward", "reward_std", "reward_zero_std", "clip_frac", "kl", "accuracy"} <= set(r), r
    val = [r for r in rows if "val_accuracy" in r]
    assert [r["step"] for r in val] == [0, 10, 20, 30, 40]  # the base, every eval_every steps, the end
    assert all(r["val_n"] == 200 and r["val_correct"] == round(r["val_accuracy"] * 200) for r in val)
    assert summary["val_n"] == 200
    assert (run / "plots" / "reward.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rl_hands_on_its_best_checkpoint(rl_run):
    import json

    from scratchlm.runs import read_jsonl, resolve_checkpoint

    run, summary = rl_run
    val = [r for r in read_jsonl(run / "metrics.jsonl") if "val_accuracy" in r]
    best = max(r["val_accuracy"] for r in val)
    ckpt = resolve_checkpoint(run)  # what --base of a later stage, eval and the demo load
    meta = json.loads((ckpt / "meta.json").read_text())
    assert meta["val_accuracy"] == best == summary["val_accuracy_after"]
    assert meta["step"] == summary["best_step"] and meta["step"] in [r["step"] for r in val if r["val_accuracy"] == best]


def test_rl_that_never_beats_the_base_hands_on_the_base(toy, tmp_path):
    # rewarded for 7 when the number is not 7 and for 8 when it is, scored on the right number: no step can gain
    # a prompt (the base already says 7 everywhere, and only 7-prompts are right), some may lose one; a tie keeps
    # the earlier checkpoint
    from safetensors.torch import load_file

    from scratchlm.posttrain import run_grpo
    from scratchlm.runs import checkpoint_dir, resolve_checkpoint

    train, _ = split_prompts()
    with open(tmp_path / "wrong.jsonl", "w") as f:
        f.writelines(json.dumps({"instruction": question(*c), "answer": "8" if c[1] == 7 else "7"}) + "\n"
                     for c in train)
    (tmp_path / "wrong_val.jsonl").write_bytes((toy / "tasks_val.jsonl").read_bytes())
    cfg = grpo_config(toy, (f"data={tmp_path / 'wrong.jsonl'}", "train.max_steps=20", "train.eval_every=5"))
    summary = run_grpo(cfg, tmp_path / "rl")
    assert summary["val_accuracy_final"] <= summary["val_accuracy_before"] == summary["val_accuracy_after"], summary
    assert summary["best_step"] == 0
    handed_on = load_file(resolve_checkpoint(tmp_path / "rl") / "model.safetensors")
    base = load_file(resolve_checkpoint(toy / "base") / "model.safetensors")
    assert handed_on.keys() == base.keys() and all(torch.equal(handed_on[k], base[k]) for k in base)
    final = load_file(checkpoint_dir(tmp_path / "rl", summary["steps"]) / "model.safetensors")
    assert any(not torch.equal(final[k], base[k]) for k in base)  # the policy did move: what it hands on is not it


def test_minibatches_must_split_the_prompts(toy, tmp_path):
    from scratchlm.posttrain.grpo import GRPOTrainer

    cfg = grpo_config(toy, ("grpo.prompts_per_step=6", "grpo.minibatches=4"))
    with pytest.raises(ValueError, match="grpo.prompts_per_step = 6 is not a multiple of grpo.minibatches = 4"):
        GRPOTrainer(cfg, tmp_path / "rl")
    assert not (tmp_path / "rl").exists()  # refused before anything is written


def test_tempered_rollouts_score_the_tempered_policy(toy, tmp_path):
    """Replies sampled at temperature 0.7 come from softmax(logits / 0.7): pi_old, the policy and the reference must
    all be that distribution. Before the first update the three are the same model, so the first step's ratio is
    exactly 1 (nothing clipped) and its KL is 0; scoring any of them at temperature 1 instead breaks both."""
    from scratchlm.posttrain import run_grpo
    from scratchlm.posttrain.grpo import token_logps
    from scratchlm.runs import read_jsonl

    logits, y = torch.randn(2, 5, 11), torch.randint(0, 11, (2, 5))
    want = torch.log_softmax(logits / 0.7, -1).gather(-1, y[..., None])[..., 0]
    assert torch.allclose(token_logps(logits, y, 0.7), want)
    cfg = grpo_config(toy, ("grpo.temperature=0.7", "grpo.minibatches=2", "train.max_steps=2", "grpo.kl_coef=0.04"))
    run_grpo(cfg, tmp_path / "rl")
    first = next(r for r in read_jsonl(tmp_path / "rl" / "metrics.jsonl") if r.get("step") == 1 and "reward" in r)
    assert first["clip_frac"] == 0.0 and abs(first["kl"]) < 1e-6, first
