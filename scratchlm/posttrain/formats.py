"""Read post-training data into one shape: a list of chat messages (SFT) or (prompt, chosen, rejected) (DPO).

SFT, JSON (a list) or JSONL (one object per line), each record in one of:
    Alpaca:    {"instruction": ..., "input": "" or context, "output": ..., ["system": ...]}
    OpenAI:    {"messages": [{"role": "user", "content": ...}, {"role": "assistant", "content": ...}, ...]}
               with tools: {"tools": [...], "messages": [..., {"role": "assistant", "tool_calls": [...]},
               {"role": "tool", "content": ...}, ...]} (OpenAI's shapes; docs/tools.md)
    ShareGPT:  {"conversations": [{"from": "human", "value": ...}, {"from": "gpt", "value": ...}, ...]}
Preferences:
    Alpaca-with-preference: {"instruction", "input", "chosen", "rejected"}        (LLMs-from-scratch ch07)
    ShareGPT preference:    {"conversations": [...], "chosen": {"from", "value"}, "rejected": {"from", "value"}}
                                                                                   (LLaMA-Factory dpo_en_demo)
    messages preference:    {"messages" or "prompt": [...], "chosen": str | message, "rejected": ...}
Verifiable tasks (RL): {"instruction" or "question", "input", "answer", ...} (TinyWorld tasks.jsonl, GSM8K).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from scratchlm.inference.chat_template import alpaca_prompt, validate_messages, with_tools

log = logging.getLogger("scratchlm")

# ShareGPT speaker names -> OpenAI roles
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "chatgpt": "assistant",
                  "bing": "assistant", "bard": "assistant", "model": "assistant", "system": "system"}


@dataclass
class Preference:
    """One preference pair: the same conversation so far, and two candidate assistant replies."""

    prompt: list[dict]  # messages ending with a user turn
    chosen: str
    rejected: str


def read_records(path: str | Path) -> list[dict]:
    """A JSON list or a JSONL file -> list of dicts, with a clear error naming the bad line."""
    from scratchlm.data.sources import open_binary  # the one reader's opener: .gz / .zst like every command

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path} (make TinyWorld data with `scratchlm data synth`)")
    try:
        with open_binary(str(path)) as f:
            raw = f.read()
    except (OSError, EOFError, ValueError) as e:  # a truncated or damaged archive
        raise ValueError(f"{path} cannot be read ({type(e).__name__}: {e}); check the file") from None
    text = raw.decode("utf-8", errors="replace")  # one bad byte must not lose the file: replaced and counted
    if "\ufffd" in text:
        bad = text.count("\ufffd") - raw.decode("utf-8", errors="ignore").count("\ufffd")
        if bad:
            log.warning("%s: %d invalid UTF-8 byte sequence(s) replaced by U+FFFD", path, bad)
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON ({e}); fix it or write one object per line (JSONL)") from None
    else:
        rows = []
        for i, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{i} is not valid JSON ({e})") from None
    if not rows or not all(isinstance(r, dict) for r in rows):
        raise ValueError(f"{path} holds no records; expected a JSON list of objects or JSONL")
    return rows


def _sharegpt(turns: list, where: str) -> list[dict]:
    out = []
    for j, t in enumerate(turns):
        who = str(t.get("from", t.get("role", ""))).lower()
        if who not in SHAREGPT_ROLES:
            raise ValueError(f"{where}: turn {j} is from {who!r}; expected one of {', '.join(sorted(SHAREGPT_ROLES))}")
        out.append({"role": SHAREGPT_ROLES[who], "content": t.get("value", t.get("content", ""))})
    return out


def to_messages(rec: dict, where: str = "record") -> list[dict]:
    """Any supported SFT record -> OpenAI messages (ending with an assistant turn)."""
    if "messages" in rec and _uses_tools(rec):  # kept whole: tool calls, results and the offered tools
        try:
            msgs = with_tools(validate_messages(rec["messages"]), rec.get("tools"))
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None
    elif "messages" in rec:
        msgs = _sharegpt(rec["messages"], where)
    elif "conversations" in rec:
        msgs = _sharegpt(rec["conversations"], where)
    elif "instruction" in rec and "output" in rec:
        msgs = alpaca_prompt(rec) + [{"role": "assistant", "content": rec["output"]}]
    else:
        raise ValueError(f"{where}: unknown format (keys {sorted(rec)[:6]}); use Alpaca (instruction/input/output), "
                         "OpenAI (messages) or ShareGPT (conversations)")
    if not any(m["role"] == "assistant" for m in msgs):
        raise ValueError(f"{where}: no assistant turn to learn from")
    return msgs


def _uses_tools(rec: dict) -> bool:
    msgs = rec["messages"] if isinstance(rec["messages"], list) else []
    return bool(rec.get("tools")) or any(isinstance(m, dict) and (m.get("tool_calls") or m.get("role") == "tool")
                                         for m in msgs)


def load_sft(path: str | Path) -> list[list[dict]]:
    """SFT conversations from a JSON/JSONL file in any supported format."""
    return [to_messages(r, f"{path}:{i + 1}") for i, r in enumerate(read_records(path))]


def _reply(x, where: str) -> str:
    if isinstance(x, str):
        return x
    if isinstance(x, dict):
        return x.get("value", x.get("content", ""))
    if isinstance(x, list) and x and isinstance(x[-1], dict):  # a list of messages: the last one is the reply
        return x[-1].get("value", x[-1].get("content", ""))
    raise ValueError(f"{where}: chosen/rejected must be a string or a {{'from', 'value'}} object")


def to_preference(rec: dict, where: str = "record") -> Preference:
    if "chosen" not in rec or "rejected" not in rec:
        raise ValueError(f"{where}: a preference record needs 'chosen' and 'rejected'")
    if "conversations" in rec:
        prompt = _sharegpt(rec["conversations"], where)
    elif "messages" in rec or isinstance(rec.get("prompt"), list):
        prompt = _sharegpt(rec.get("messages", rec.get("prompt")), where)
    elif "instruction" in rec:
        prompt = alpaca_prompt(rec)
    elif isinstance(rec.get("prompt"), str):
        prompt = [{"role": "user", "content": rec["prompt"]}]
    else:
        raise ValueError(f"{where}: no prompt; use instruction/input, prompt, messages or conversations")
    return Preference(prompt, _reply(rec["chosen"], where), _reply(rec["rejected"], where))


def load_preferences(path: str | Path) -> list[Preference]:
    """Preference pairs from a JSON/JSONL file (Alpaca-with-preference, ShareGPT preference or messages form)."""
    return [to_preference(r, f"{path}:{i + 1}") for i, r in enumerate(read_records(path))]


def load_tasks(path: str | Path, need_answer: bool = True) -> list[dict]:
    """Verifiable tasks: each {"prompt": messages, "answer": str, "question": str}. GSM8K's "#### 42" answers
    are reduced to the number. need_answer=False: prompts only (rewards from a reward model)."""
    tasks = []
    for i, r in enumerate(read_records(path)):
        if need_answer and "answer" not in r:
            raise ValueError(f"{path}:{i + 1}: a task needs an 'answer'")
        if "instruction" in r:
            prompt = alpaca_prompt(r)
        elif "question" in r:
            prompt = [{"role": "user", "content": r["question"]}]
        else:
            raise ValueError(f"{path}:{i + 1}: a task needs 'instruction' or 'question'")
        answer = str(r.get("answer", ""))
        if "####" in answer:
            answer = answer.split("####")[-1].strip().replace(",", "")
        tasks.append({"prompt": prompt, "answer": answer, "question": r.get("question", prompt[-1]["content"])})
    return tasks


def split_holdout(items: list, val_fraction: float, seed: int = 0) -> tuple[list, list]:
    """Shuffle-free deterministic split: every k-th item goes to val (keeps both splits spread over the file)."""
    if not items:
        return [], []
    if val_fraction <= 0:
        return items, []
    k = max(2, round(1 / val_fraction))
    val = [x for i, x in enumerate(items) if i % k == seed % k]
    train = [x for i, x in enumerate(items) if i % k != seed % k]
    return train, val
