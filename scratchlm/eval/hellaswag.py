"""HellaSwag (Zellers et al. 2019): pick the right ending of an everyday scene, out of four.

    items = load_hellaswag("../shared/data/hellaswag/hellaswag_val_full.txt", limit=500)
    result = evaluate_hellaswag(model, tokenizer, items)   # {"acc": ..., "acc_norm": ..., "n": 500, ...}

Each ending is scored by its log-likelihood after the context (scoring.py). Two accuracies, as in
lm-evaluation-harness:

- acc: the ending with the largest summed log-probability. Longer endings have more tokens to pay for, so this
  favours short endings.
- acc_norm: the largest log-probability per character of the ending, which removes most of that bias. It is
  the number usually quoted (GPT-2 124M: about 0.29-0.31; random guessing: 0.25).

Two file layouts are read: the original JSONL of rowanz/hellaswag (`hellaswag_val.jsonl`, with the harness's
preprocessing: "[title]" markup removed, "activity_label: ctx_a Ctx_b"), and the 6-line text layout of llama.cpp
(context, label, four endings), which holds the same strings already preprocessed.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

from .results import proportion_fields
from .scoring import score_continuations, split_context_continuation


@dataclass
class Item:
    context: str  # "activity_label: ctx"
    endings: list[str]  # four candidate endings, without a leading space
    label: int  # index of the true ending


def preprocess(text: str) -> str:
    """lm-evaluation-harness's cleaning of WikiHow markup: "[title]" starts a sentence, other [tags] go."""
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def _from_json(rec: dict, where: str) -> Item:
    try:
        ctx = rec["ctx_a"] + " " + rec["ctx_b"].capitalize()
        return Item(preprocess(rec["activity_label"] + ": " + ctx), [preprocess(e) for e in rec["endings"]],
                    int(rec["label"]))
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{where}: not a HellaSwag record ({e!r}); expected ctx_a, ctx_b, activity_label, "
                         "endings and label") from None


def load_hellaswag(path: str | Path, limit: int | None = None) -> list[Item]:
    """Items from the original JSONL or the 6-line text layout (detected from the first character)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"HellaSwag file not found: {path}; pass --data FILE "
                                "(e.g. ../shared/data/hellaswag/hellaswag_val_full.txt)")
    text = path.read_text(encoding="utf-8")
    items: list[Item] = []
    if text.lstrip().startswith("{"):
        for i, line in enumerate(text.splitlines()):
            if line.strip():
                items.append(_from_json(json.loads(line), f"{path}:{i + 1}"))
            if limit and len(items) >= limit:
                break
    else:
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        if len(lines) % 6:
            raise ValueError(f"{path}: {len(lines)} lines is not a multiple of 6; the text layout is context, "
                             "label, then four endings per item")
        for i in range(0, len(lines), 6):
            label = lines[i + 1].strip()
            if label not in ("0", "1", "2", "3"):
                raise ValueError(f"{path}:{i + 2}: label {label!r} is not 0-3; is this the 6-line HellaSwag layout?")
            items.append(Item(lines[i], lines[i + 2 : i + 6], int(label)))
            if limit and len(items) >= limit:
                break
    if not items:
        raise ValueError(f"{path} holds no HellaSwag items")
    return items


def evaluate_hellaswag(model, tokenizer, items: list[Item], batch_size: int = 32, progress: bool = False) -> dict:
    """acc and acc_norm (with 95% Wilson intervals and binomial standard errors) of `model` on `items`; all endings
    scored in batches."""
    requests = []
    for it in items:
        for ending in it.endings:
            requests.append(split_context_continuation(tokenizer, it.context, " " + ending))
    scores = score_continuations(model, requests, batch_size=batch_size, progress=progress, desc="hellaswag")
    correct = correct_norm = 0
    k = 0
    for it in items:
        lls = [scores[k + j][0] for j in range(len(it.endings))]
        k += len(it.endings)
        # acc_norm divides by the ending's length in characters (not tokens): comparable across tokenizers
        norm = [ll / max(1, len(e)) for ll, e in zip(lls, it.endings)]
        correct += int(max(range(len(lls)), key=lls.__getitem__) == it.label)
        correct_norm += int(max(range(len(norm)), key=norm.__getitem__) == it.label)
    n = len(items)
    acc, acc_norm = correct / n, correct_norm / n
    return {"task": "hellaswag", "n": n, **proportion_fields("acc", correct, n),
            **proportion_fields("acc_norm", correct_norm, n),
            "acc_stderr": math.sqrt(acc * (1 - acc) / max(1, n - 1)),
            "acc_norm_stderr": math.sqrt(acc_norm * (1 - acc_norm) / max(1, n - 1)), "chance": 0.25}
