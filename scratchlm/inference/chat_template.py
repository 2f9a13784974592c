"""The one chat format used everywhere: SFT, DPO, RL, the terminal chat, the server and the HF export.

ChatML-like (the format of OpenAI's ChatML, Qwen and SmolLM), with special tokens around each turn:

    <|bos|><|im_start|>system
    You are a helpful assistant.<|im_end|>
    <|im_start|>user
    What is 2+2?<|im_end|>
    <|im_start|>assistant
    4<|im_end|>

A prompt for generation ends with "<|im_start|>assistant\\n" and the model writes until it emits <|im_end|>.
The leading BOS mirrors pretraining, where every document starts with BOS (see data/shards.py).

`render_chat` gives the text; `CHAT_TEMPLATE` is the same thing as a Jinja template for Hugging Face's
tokenizer_config.json, so `tokenizer.apply_chat_template(messages, add_generation_prompt=True,
tokenize=False)` renders the identical string. `encode_chat` gives token ids and is injection-safe: message
contents are encoded as plain text, so a user typing "<|im_end|>" cannot end their turn early.
"""

from __future__ import annotations

from typing import Any

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
BOS = "<|bos|>"
ROLES = ("system", "user", "assistant")

# Jinja for HF's tokenizer_config.json["chat_template"]; must render exactly like render_chat below.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def validate_messages(messages: Any) -> list[dict]:
    """Check an OpenAI-style list of {"role", "content"} dicts; return it with content as str."""
    if not isinstance(messages, list) or not messages:
        raise ValueError("messages must be a non-empty list of {'role': ..., 'content': ...} objects")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m:
            raise ValueError(f"messages[{i}] must be an object with 'role' and 'content'")
        role, content = m["role"], m.get("content")
        if role not in ROLES:
            raise ValueError(f"messages[{i}].role is {role!r}; use one of {', '.join(ROLES)}")
        if isinstance(content, list):  # OpenAI "content parts": text parts are joined; anything else is refused
            texts = []                  # (dropping an image silently would answer a question nobody asked)
            for j, part in enumerate(content):
                kind = part.get("type") if isinstance(part, dict) else None
                if kind != "text":
                    raise ValueError(f"messages[{i}].content[{j}] must be a text part {{'type': 'text', 'text': ...}}"
                                     + (f"; '{kind}' parts are not supported" if isinstance(kind, str) else ""))
                if not isinstance(part.get("text"), str):
                    raise ValueError(f"messages[{i}].content[{j}].text must be a string")
                texts.append(part["text"])
            content = "".join(texts)
        if not isinstance(content, str):
            raise ValueError(f"messages[{i}].content must be a string or a list of text parts")
        out.append({"role": role, "content": content})
    return out


def render_chat(messages: list[dict], add_generation_prompt: bool = True, bos_token: str = BOS) -> str:
    """The chat as text (what CHAT_TEMPLATE renders)."""
    parts = [bos_token]
    for m in validate_messages(messages):
        parts.append(f"{IM_START}{m['role']}\n{m['content']}{IM_END}\n")
    if add_generation_prompt:
        parts.append(f"{IM_START}assistant\n")
    return "".join(parts)


def chat_special_ids(tokenizer: Any) -> tuple[int | None, int, int]:
    """(bos id or None, <|im_start|> id, <|im_end|> id) from the tokenizer, with a clear error if missing."""
    special = getattr(tokenizer, "special_tokens", {}) or {}
    missing = [t for t in (IM_START, IM_END) if t not in special]
    if missing:
        raise ValueError(f"the tokenizer has no {' / '.join(missing)} token; retrain it with the chat special tokens")
    return getattr(tokenizer, "bos_id", None), special[IM_START], special[IM_END]


def encode_chat(tokenizer: Any, messages: list[dict], add_generation_prompt: bool = True) -> list[int]:
    """Token ids of render_chat(messages). Equals encoding that text with special tokens allowed, as long as
    no message contains special-token text; if one does, it is encoded as ordinary text (no injection)."""
    bos, start, end = chat_special_ids(tokenizer)
    nl = tokenizer.encode("\n")
    ids = [] if bos is None else [bos]
    for m in validate_messages(messages):
        # role, newline and content form one text segment between two special tokens, exactly as a tokenizer
        # splits the rendered string at special tokens before applying BPE
        ids += [start] + tokenizer.encode(f"{m['role']}\n{m['content']}") + [end] + nl
    if add_generation_prompt:
        ids += [start] + tokenizer.encode("assistant\n")
    return ids


def chat_stop_token_ids(tokenizer: Any) -> list[int]:
    """Tokens that end an assistant turn: <|im_end|>; also <|im_start|> (a model that skips <|im_end|> and
    starts the next turn), end-of-text and BOS (a new document), as fallbacks for weakly trained models."""
    _, start, end = chat_special_ids(tokenizer)
    ids = [end, start]
    for name in ("eos_id", "bos_id"):
        i = getattr(tokenizer, name, None)
        if i is not None and i not in ids:
            ids.append(i)
    return ids


def alpaca_prompt(rec: dict) -> list[dict]:
    """The user turn of an Alpaca record: the instruction, then the input (if any) after a blank line."""
    user = rec["instruction"].strip()
    if rec.get("input", "").strip():
        user += "\n\n" + rec["input"].strip()
    msgs = [{"role": "system", "content": rec["system"]}] if rec.get("system") else []
    return msgs + [{"role": "user", "content": user}]
