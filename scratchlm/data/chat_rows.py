"""Chat-shaped records read as text: instruction, conversation and preference data.

Pretraining text is plain text, but a user's corpus is often chat exports and instruction sets. A record with no
`text` field in one of the shapes below is read as its turns, "User: ..." / "Assistant: ..." separated by blank
lines (the chat preset keeps them unfiltered; data/ cannot import the ChatML template of inference/).
"""

from __future__ import annotations

CHAT_KEYS = {"messages", "conversations", "conversation", "instruction", "prompt", "question", "chosen"}
ROLES = {"user": "User", "human": "User", "assistant": "Assistant", "gpt": "Assistant", "bot": "Assistant",
         "model": "Assistant", "system": "System", "tool": "Tool", "function": "Tool"}


def _turn(m) -> str | None:
    """"Role: content" of one message ({"role", "content"} as OpenAI, or {"from", "value"} as ShareGPT)."""
    if isinstance(m, str):
        return m
    if not isinstance(m, dict):
        return None
    role, content = m.get("role", m.get("from")), m.get("content", m.get("value"))
    if isinstance(content, list):  # OpenAI content parts: keep the text ones
        content = "\n".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    if not isinstance(role, str) or not isinstance(content, str):
        return None
    return f"{ROLES.get(role.lower(), role.capitalize())}: {content}"


def _turns(value) -> list[str] | None:
    items = value if isinstance(value, list) else [value]
    turns = [_turn(m) for m in items]
    return None if not turns or None in turns else turns


def chat_text(record) -> str | None:
    """The text of a record in a chat shape, turns as "User: ..." / "Assistant: ..." separated by blank lines, or
    None for any other record. Shapes: messages/conversations (OpenAI, ShareGPT), instruction [+ input] + output
    (Alpaca), prompt + completion/response, question + answer, and preference pairs (prompt +) chosen [+ rejected],
    of which only the chosen answer is text: the rejected one is the answer not to learn."""
    if not isinstance(record, dict):
        return None
    turns = None
    for key in ("messages", "conversations", "conversation"):
        if isinstance(record.get(key), list):
            turns = _turns(record[key])
            break
    else:
        prompt = next((record[k] for k in ("instruction", "prompt", "question") if record.get(k) is not None), None)
        answer = next((record[k] for k in ("output", "completion", "response", "answer", "chosen")
                       if record.get(k) is not None), None)
        if prompt is not None and answer is not None:
            extra = record.get("input")
            if isinstance(prompt, str):
                asked = [f"User: {prompt}" + (f"\n\n{extra}" if isinstance(extra, str) and extra.strip() else "")]
            else:
                asked = _turns(prompt)  # conversational prompt (TRL): a list of messages
            said = [f"Assistant: {answer}"] if isinstance(answer, str) else _turns(answer)
            turns = asked + said if asked and said else None
        elif isinstance(record.get("chosen"), str) and "rejected" in record:
            return record["chosen"].strip()  # a whole dialogue as one string (Anthropic HH: "\n\nHuman: ...")
    if turns is not None and isinstance(record.get("chosen"), (dict, list)) and "conversations" in record:
        turns += _turns(record["chosen"]) or []  # ShareGPT preference: the conversation, then the chosen answer
    if turns is None:
        return None
    return "\n\n".join(t for t in turns if t.split(": ", 1)[-1].strip())  # "" when every turn is blank: removed
