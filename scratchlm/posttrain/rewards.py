"""Rewards for RL: a function (task, reply text) -> float in [0, 1] (or a reward model's score).

- tinyworld: TinyWorld's own checker (scratchlm.data.tinyworld.check_answer), given the task's question so that
  names the question mentions do not count against the reply.
- gsm8k: the last number in the reply equals the reference answer (the number after "####"), the usual
  "strict last-number" match; commas and a leading $ are ignored.
- reward-model: the score of a `scratchlm reward` run (unbounded; GRPO normalises within each group anyway).
"""

from __future__ import annotations

import re
from pathlib import Path

from .formats import alpaca_prompt, load_tasks

NUMBER = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?")


def last_number(text: str) -> float | None:
    found = NUMBER.findall(text)
    if not found:
        return None
    try:
        return float(found[-1].replace(",", "").replace("$", ""))
    except ValueError:
        return None


def gsm8k_reward(task: dict, reply: str) -> float:
    got, want = last_number(reply), last_number(task["answer"])
    return float(got is not None and want is not None and abs(got - want) < 1e-6)


def tinyworld_reward(task: dict, reply: str) -> float:
    from scratchlm.data.tinyworld import check_answer

    return float(check_answer(reply, task["answer"], task.get("question", "")))


VERIFIERS = {"tinyworld": tinyworld_reward, "gsm8k": gsm8k_reward}


def shared_data_dir() -> Path:
    """../shared/data beside the repository (where SOURCES.md lists GSM8K and the rest)."""
    return Path(__file__).resolve().parents[2].parent / "shared" / "data"


def load_task_splits(task: str, data: str = "", val_data: str = "", seed: int = 0, n_generated: int = 5000,
                     n_val: int = 200) -> tuple[list[dict], list[dict]]:
    """(train, val) tasks as {"prompt": messages, "answer", "question"} for a task name, or from files."""
    from .loop import val_twin

    if data:
        need = task != "reward-model"
        train = load_tasks(data, need)
        vp = val_data or val_twin(data)
        if vp:
            return train, load_tasks(vp, need)[:n_val]
        k = max(2, len(train) // max(1, min(n_val, len(train) // 5)))
        return [t for i, t in enumerate(train) if i % k], [t for i, t in enumerate(train) if not i % k][:n_val]
    if task == "tinyworld":
        from itertools import islice

        from scratchlm.data.tinyworld import distinct_tasks, iter_tasks

        def conv(r):
            return {"prompt": alpaca_prompt(r), "answer": str(r["answer"]), "question": r.get("question", "")}
        # Held out: distinct val prompts drawn with seed + 1, not the seed `scratchlm eval` and the demo score on,
        # so that picking the best checkpoint on them does not pick the noise of the reported figure. (The val
        # split holds only 49 fact questions and 44 sums, so both sets still share those; the stories differ.)
        return ([conv(r) for r in islice(iter_tasks("train", seed), n_generated)],
                [conv(r) for r in distinct_tasks("val", n_val, seed + 1)])
    if task == "gsm8k":
        root = shared_data_dir() / "gsm8k"
        if not (root / "train.jsonl").is_file():
            raise FileNotFoundError(f"GSM8K not found in {root}; pass --data FILE (JSONL with question and answer)")
        return load_tasks(root / "train.jsonl"), load_tasks(root / val_data if val_data else root / "test.jsonl")[:n_val]
    raise ValueError(f"task {task!r} needs --data FILE (JSONL with instruction/question and answer)")
