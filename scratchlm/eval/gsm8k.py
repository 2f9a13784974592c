"""GSM8K (Cobbe et al. 2021): grade-school maths word problems, graded by the final number.

    problems = load_gsm8k("../shared/data/gsm8k/test.jsonl", limit=100)
    result = evaluate_gsm8k(engine, problems, chat=False, shots=5)   # {"exact_match": ..., "n": 100, ...}

The model writes a solution; we take its answer (the number after "####", the dataset's own answer marker,
else the last number in the reply) and compare it with the reference answer as a number, so "$1,000",
"1000.00" and "1000" are equal. A calculator tool is out of scope.

Prompting, as lm-evaluation-harness's `gsm8k` task:
- a base model continues "Question: ...\\nAnswer:" after k solved examples from the training split (the
  first k, for reproducibility), and stops at the next "Question:" or a blank line;
- a chat model gets the same examples as earlier user/assistant turns of a ChatML conversation
  (the harness's --apply_chat_template --fewshot_as_multiturn) and stops at <|im_end|>.
When the examples do not fit the model's context, examples are dropped (the result records how many were used).
"""

from __future__ import annotations

import json
import math
import re
from decimal import Decimal, InvalidOperation
from pathlib import Path

from .results import proportion_fields
from .scoring import generate_in_batches

# a number as people write it: optional sign and dollar sign (either order), thousands commas, decimals
_NUMBER = re.compile(r"(?<![\w.])(-?\$?-?)(\d[\d,]*(?:\.\d+)?)")


def normalize_number(text: str) -> str | None:
    """Canonical form of a number string: "$1,000.50" -> "1000.5", "-3.00" -> "-3", "18." -> "18"."""
    s = text.strip().replace(",", "").replace("$", "").replace(" ", "").rstrip(".")
    try:
        d = Decimal(s)
    except InvalidOperation:
        return None
    if not d.is_finite():
        return None
    if d == d.to_integral_value():
        return str(int(d))
    return format(d.normalize(), "f")


def _numbers(text: str) -> list[str]:
    out = []
    for m in _NUMBER.finditer(text):
        n = normalize_number(("-" if "-" in m.group(1) else "") + m.group(2))
        if n is not None:
            out.append(n)
    return out


def extract_answer(text: str) -> str | None:
    """The answer in a reply: the first number after "####" if there is one, else the last number; normalised."""
    if "####" in text:
        found = _numbers(text.split("####", 1)[1])
        if found:
            return found[0]
    found = _numbers(text)
    return found[-1] if found else None


def gold_answer(answer_field: str) -> str:
    """The reference number of a GSM8K record's "answer" field (solution text ending "#### 18")."""
    if "####" not in answer_field:
        raise ValueError(f"GSM8K answer without '####': {answer_field[-60:]!r}")
    ans = extract_answer(answer_field)
    if ans is None:
        raise ValueError(f"GSM8K answer without a number after '####': {answer_field[-60:]!r}")
    return ans


def load_gsm8k(path: str | Path, limit: int | None = None) -> list[dict]:
    """Records {question, answer (solution text), gold (normalised number)} from GSM8K's JSONL."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"GSM8K file not found: {path}; pass --data FILE (e.g. ../shared/data/gsm8k/test.jsonl)")
    out = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            out.append({"question": rec["question"], "answer": rec["answer"], "gold": gold_answer(rec["answer"])})
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"{path}:{i + 1}: not a GSM8K record ({e!r}); expected JSONL with question and answer")
        if limit and len(out) >= limit:
            break
    if not out:
        raise ValueError(f"{path} holds no GSM8K records")
    return out


def base_prompt(question: str, shots: list[dict]) -> str:
    parts = [f"Question: {s['question']}\nAnswer: {s['answer']}\n\n" for s in shots]
    return "".join(parts) + f"Question: {question}\nAnswer:"


def chat_messages(question: str, shots: list[dict]) -> list[dict]:
    msgs = []
    for s in shots:
        msgs += [{"role": "user", "content": s["question"]}, {"role": "assistant", "content": s["answer"]}]
    return msgs + [{"role": "user", "content": question}]


def build_prompt(tokenizer, question: str, shots: list[dict], chat: bool, room: int) -> tuple[list[int], int]:
    """Prompt ids with as many of `shots` as leave `room` tokens of context free; returns (ids, shots used)."""
    from scratchlm.inference.chat_template import encode_chat

    k = len(shots)
    while True:
        if chat:
            ids = encode_chat(tokenizer, chat_messages(question, shots[:k]))
        else:
            bos = getattr(tokenizer, "bos_id", None)
            ids = ([bos] if bos is not None else []) + tokenizer.encode(base_prompt(question, shots[:k]))
        if len(ids) <= room or k == 0:
            return ids, k
        k -= 1


def evaluate_gsm8k(engine, problems: list[dict], chat: bool = False, shots: list[dict] | None = None,
                   max_new_tokens: int = 256, batch_size: int = 16, progress: bool = False,
                   n_examples: int = 3) -> dict:
    """Exact match of greedy solutions; `engine` is a scratchlm.inference Engine."""
    from scratchlm.inference.chat_template import chat_stop_token_ids
    from scratchlm.inference.sampling import SamplingParams

    shots = shots or []
    tok, ctx = engine.tokenizer, engine.max_seq_len
    if chat:
        params = SamplingParams(max_new_tokens=max_new_tokens, temperature=0,
                                stop_token_ids=chat_stop_token_ids(tok))
    else:
        params = SamplingParams(max_new_tokens=max_new_tokens, temperature=0, stop=["Question:", "\n\n"])
    prompts, used = [], []
    for p in problems:
        ids, k = build_prompt(tok, p["question"], shots, chat, room=max(1, ctx - max_new_tokens))
        if len(ids) >= ctx:  # even the bare question is too long: keep BOS and the question's end
            ids = ids[:1] + ids[-(ctx // 2):]
        prompts.append(ids)
        used.append(k)
    replies = generate_in_batches(engine, prompts, params, batch_size, progress, desc="gsm8k")
    correct, examples = 0, []
    for p, reply in zip(problems, replies):
        pred = extract_answer(reply)
        ok = pred is not None and pred == p["gold"]
        correct += ok
        if len(examples) < n_examples:
            examples.append({"question": p["question"], "reply": reply, "pred": pred, "gold": p["gold"], "correct": ok})
    n = len(problems)
    em = correct / n
    return {"task": "gsm8k", "n": n, "correct": correct, **proportion_fields("exact_match", correct, n),
            "exact_match_stderr": math.sqrt(em * (1 - em) / max(1, n - 1)),
            "mode": "chat" if chat else "base", "shots": len(shots), "shots_used_mean": sum(used) / n,
            "max_new_tokens": max_new_tokens, "examples": examples}
