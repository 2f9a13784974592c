"""TinyWorld's built-in tasks: arithmetic, world facts and questions about a story, with checkable answers.

    tasks = load_tinyworld_tasks("val", n=200)
    result = evaluate_tinyworld(engine, tasks, chat=True)   # {"accuracy": ..., "by_kind": {...}, ...}

The tasks come from scratchlm.data.tinyworld.distinct_tasks (deterministic for a split and seed; the val split
uses only held-out stories, sums and questions, so a model cannot have memorised them; no prompt comes twice, so
n tasks are n measurements), and a reply is graded by the same check_answer that gives RL its reward. That makes this the eval that moves first on a tiny model:
the demo reports it, and RL can watch it rise.

A chat model gets the task as a user turn (the Alpaca layout used in SFT: instruction, then the story); a base
model gets "story\\n\\nQuestion: ...\\nAnswer:" and its first line is taken as the reply.
"""

from __future__ import annotations

import math
from collections import defaultdict

from .results import proportion_fields
from .scoring import generate_in_batches


def load_tinyworld_tasks(split: str = "val", n: int = 200, seed: int = 0) -> list[dict]:
    """n different tasks (no prompt twice) of a split, the same ones for the same seed."""
    from scratchlm.data.tinyworld import distinct_tasks

    if split not in ("train", "val"):
        raise ValueError(f"TinyWorld split must be train or val, got {split!r}")
    return distinct_tasks(split, n, seed)


def task_prompt(tokenizer, task: dict, chat: bool) -> list[int]:
    if chat:
        from scratchlm.inference.chat_template import encode_chat
        from scratchlm.inference.chat_template import alpaca_prompt

        return encode_chat(tokenizer, alpaca_prompt(task))
    text = (task["input"].strip() + "\n\n" if task.get("input", "").strip() else "")
    text += f"Question: {task['instruction'].strip()}\nAnswer:"
    bos = getattr(tokenizer, "bos_id", None)
    return ([bos] if bos is not None else []) + tokenizer.encode(text)


def evaluate_tinyworld(engine, tasks: list[dict], chat: bool = False, max_new_tokens: int = 48,
                       batch_size: int = 32, progress: bool = False, n_examples: int = 3) -> dict:
    """Accuracy (overall and per kind) of greedy replies, graded by TinyWorld's check_answer."""
    from scratchlm.data.tinyworld import check_answer
    from scratchlm.inference.chat_template import chat_stop_token_ids
    from scratchlm.inference.sampling import SamplingParams

    if not tasks:
        raise ValueError("no TinyWorld tasks to evaluate (is --limit 0?)")
    tok = engine.tokenizer
    if chat:
        params = SamplingParams(max_new_tokens=max_new_tokens, temperature=0, stop_token_ids=chat_stop_token_ids(tok))
    else:
        params = SamplingParams(max_new_tokens=max_new_tokens, temperature=0, stop=["\n"])
    room = engine.max_seq_len - 1
    prompts = []
    for t in tasks:
        ids = task_prompt(tok, t, chat)
        prompts.append(ids if len(ids) < room else ids[:1] + ids[-(room // 2):])  # a long story: keep its end
    replies = generate_in_batches(engine, prompts, params, batch_size, progress, desc="tinyworld")
    right: dict[str, int] = defaultdict(int)
    total: dict[str, int] = defaultdict(int)
    examples, per_task = [], []
    for t, reply in zip(tasks, replies):
        ok = check_answer(reply, t["answer"], t["question"])
        per_task.append(int(ok))
        right[t["kind"]] += ok
        total[t["kind"]] += 1
        if len(examples) < n_examples:
            examples.append({"question": t["instruction"], "reply": reply.strip(), "answer": t["answer"], "correct": ok})
    n, correct = len(tasks), sum(right.values())
    acc = correct / n
    return {"task": "tinyworld", "n": n, "correct": correct, **proportion_fields("accuracy", correct, n),
            "accuracy_stderr": math.sqrt(acc * (1 - acc) / max(1, n - 1)),
            "by_kind": {k: {"n": total[k], "correct": right[k], **proportion_fields("accuracy", right[k], total[k])}
                        for k in sorted(total)},
            "mode": "chat" if chat else "base", "examples": examples,
            "per_task": per_task}  # 1/0 per task, in order: two models on the same tasks compare paired (stats.py)
