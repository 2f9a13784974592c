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

Tools (OpenAI's `tools`, `tool_calls` and `role: "tool"`; docs/tools.md) add three things, and a chat without
them renders exactly as before:

    <|bos|><|im_start|>system
    You are terse.                                   <- the system message, if any, then a blank line

    Tools:
    {"name": "calculator", "description": ..., "parameters": {...}}     <- one JSON line per offered function
    <|im_end|>                                       (no newline before it; shown here for reading)
    <|im_start|>user
    What is 3 plus 4?<|im_end|>
    <|im_start|>assistant
    <tool_call>{"name": "calculator", "arguments": {"expression": "3 + 4"}}</tool_call><|im_end|>
    <|im_start|>tool
    7<|im_end|>
    <|im_start|>assistant
    3 plus 4 is 7.<|im_end|>

The call syntax is Hermes/Qwen's (<tool_call> JSON </tool_call>, what vLLM's "hermes" parser reads), written as
plain text rather than new special tokens, so every tokenizer we ever saved can carry it. An assistant turn with
text and calls writes the text first, then each call, one per line. `parse_tool_calls` reads a model's reply
back into calls; a reply whose calls are not well-formed JSON is plain text.
"""

from __future__ import annotations

import json
import re
from typing import Any

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
BOS = "<|bos|>"
ROLES = ("system", "user", "assistant", "tool")
TOOL_CALL_START, TOOL_CALL_END = "<tool_call>", "</tool_call>"
TOOLS_HEADER = "Tools:"
TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")  # OpenAI's rule for function names
MAX_TOOLS = 128  # OpenAI's limit per request

# Jinja for HF's tokenizer_config.json["chat_template"]; must render exactly like render_chat below. `tools` is
# apply_chat_template's tools= argument (OpenAI form); tool-call arguments may be objects or JSON strings (a
# string is inserted as written, so it renders like ours when it is in json.dumps's default form).
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% if tools %}"
    "{{ '<|im_start|>system\n' }}"
    "{% if messages[0]['role'] == 'system' %}{{ messages[0]['content'] + '\n\n' }}{% endif %}"
    "{{ 'Tools:' }}{% for t in tools %}{{ '\n' + (t['function'] | tojson) }}{% endfor %}{{ '<|im_end|>\n' }}"
    "{% endif %}"
    "{% for message in messages %}"
    "{% if not (tools and loop.first and message['role'] == 'system') %}"
    "{% set ns = namespace(body=message['content'] or '') %}"
    "{% for tc in message['tool_calls'] or [] %}"
    "{% set f = tc['function'] %}"
    "{% if f['arguments'] is string %}"
    "{% set call = '<tool_call>{\"name\": ' + (f['name'] | tojson) + ', \"arguments\": ' + f['arguments']"
    " + '}</tool_call>' %}"
    "{% else %}"
    "{% set call = '<tool_call>' + ({'name': f['name'], 'arguments': f['arguments']} | tojson) + '</tool_call>' %}"
    "{% endif %}"
    "{% set ns.body = ns.body + '\n' + call if ns.body else call %}"
    "{% endfor %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + ns.body + '<|im_end|>' + '\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def validate_messages(messages: Any, require_ids: bool = False) -> list[dict]:
    """Check an OpenAI-style list of messages; return it with content as str (text parts joined).

    Assistant messages may carry `tool_calls` ([{"id", "type": "function", "function": {"name", "arguments"}}],
    arguments a JSON object or its JSON text; content may then be null); they come back with arguments as a
    dict. A `role: "tool"` message answers one call of the assistant turn before it (`tool_call_id` names which;
    require_ids=True, the server's setting, makes ids compulsory as OpenAI does)."""
    if not isinstance(messages, list) or not messages:
        raise ValueError("messages must be a non-empty list of {'role': ..., 'content': ...} objects")
    out = []
    pending: dict | None = None  # the calls of the last assistant turn that tool messages may still answer
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
        calls = m.get("tool_calls")
        if calls is not None and role != "assistant":
            raise ValueError(f"messages[{i}] has tool_calls but role {role!r}; only assistant messages call tools")
        if content is None and calls:
            content = ""
        if not isinstance(content, str):
            raise ValueError(f"messages[{i}].content must be a string or a list of text parts")
        msg = {"role": role, "content": content}
        if calls:
            msg["tool_calls"] = _validate_calls(calls, f"messages[{i}]", require_ids)
        if role == "tool":
            if pending is None:
                raise ValueError(f"messages[{i}] has role 'tool' but does not follow an assistant message with "
                                 "tool_calls; a tool result answers a call")
            cid = m.get("tool_call_id")
            if cid is None and require_ids:
                raise ValueError(f"messages[{i}].tool_call_id is missing; give the id of the call it answers")
            if cid is not None:
                if not isinstance(cid, str) or cid not in pending:
                    raise ValueError(f"messages[{i}].tool_call_id {json.dumps(cid)[:80]} names no unanswered call of "
                                     f"the assistant turn before it (ids: {', '.join(map(str, pending)) or 'none'})")
                del pending[cid]
            elif not pending:
                raise ValueError(f"messages[{i}] answers more tool calls than the assistant turn before it made")
            else:
                del pending[next(iter(pending))]  # no ids: results answer the calls in order
            msg["tool_call_id"] = cid
        else:
            if pending:  # OpenAI's rule too: every call gets its result before the conversation goes on
                raise ValueError(f"messages[{i}] follows {len(pending)} tool call(s) with no 'tool' result; "
                                 "answer each call with a role 'tool' message first")
            pending = None
        if calls:
            pending = {c["id"] if c["id"] is not None else f"#{k}": True for k, c in enumerate(msg["tool_calls"])}
        out.append(msg)
    return out


def _validate_calls(calls: Any, where: str, require_ids: bool) -> list[dict]:
    if not isinstance(calls, list):
        raise ValueError(f"{where}.tool_calls must be a list of {{'id', 'type': 'function', 'function'}} objects")
    out, ids = [], set()
    for k, c in enumerate(calls):
        w = f"{where}.tool_calls[{k}]"
        f = c.get("function") if isinstance(c, dict) else None
        if not isinstance(f, dict) or c.get("type", "function") != "function":
            raise ValueError(f"{w} must be {{'id': ..., 'type': 'function', 'function': {{'name', 'arguments'}}}}")
        cid = c.get("id")
        if (cid is None and require_ids) or (cid is not None and (not isinstance(cid, str) or cid in ids)):
            raise ValueError(f"{w}.id must be a string unique within the message")
        ids.add(cid)
        name, args = f.get("name"), f.get("arguments", {})
        if not isinstance(name, str) or not TOOL_NAME.fullmatch(name):
            raise ValueError(f"{w}.function.name must be 1-64 letters, digits, '_' or '-'")
        if isinstance(args, str):
            try:
                args = json.loads(args)
            except (ValueError, RecursionError):
                args = None
        if not isinstance(args, dict):
            raise ValueError(f"{w}.function.arguments must be a JSON object (or its JSON text)")
        out.append({"id": cid, "type": "function", "function": {"name": name, "arguments": args}})
    return out


def validate_tools(tools: Any) -> list[dict]:
    """Check OpenAI `tools` ([{"type": "function", "function": {"name", "description", "parameters",
    "strict"}}]); return them unchanged. Unknown keys are refused: a misspelt "parameter" must not vanish."""
    if not isinstance(tools, list) or len(tools) > MAX_TOOLS:
        raise ValueError(f"tools must be a list of at most {MAX_TOOLS} {{'type': 'function', 'function': ...}} objects")
    names = set()
    for k, t in enumerate(tools):
        w = f"tools[{k}]"
        if not isinstance(t, dict) or t.get("type") != "function" or not isinstance(t.get("function"), dict):
            raise ValueError(f"{w} must be {{'type': 'function', 'function': {{'name': ..., 'parameters': ...}}}}")
        extra = set(t) - {"type", "function"}
        f = t["function"]
        extra |= {f"function.{x}" for x in set(f) - {"name", "description", "parameters", "strict"}}
        if extra:
            raise ValueError(f"{w} has unknown field(s) {', '.join(sorted(extra))}; a function has name, description, "
                             "parameters and strict")
        name = f.get("name")
        if not isinstance(name, str) or not TOOL_NAME.fullmatch(name):
            raise ValueError(f"{w}.function.name must be 1-64 letters, digits, '_' or '-'")
        if name in names:
            raise ValueError(f"{w}.function.name {name!r} is given twice; tool names must be unique")
        names.add(name)
        if not isinstance(f.get("description", ""), str):
            raise ValueError(f"{w}.function.description must be a string")
        params = f.get("parameters", {})
        if not isinstance(params, dict) or params.get("type", "object") != "object":
            raise ValueError(f"{w}.function.parameters must be a JSON Schema object like "
                             "{'type': 'object', 'properties': {...}}")
        if not isinstance(f.get("strict", False), bool):
            raise ValueError(f"{w}.function.strict must be true or false")
    return tools


def tools_text(tools: list[dict]) -> str:
    """The lines that offer `tools` in the system turn: the header, then each function as one JSON line."""
    return TOOLS_HEADER + "".join("\n" + json.dumps(t["function"], ensure_ascii=False) for t in tools)


def with_tools(messages: list[dict], tools: list[dict] | None) -> list[dict]:
    """Validated messages with `tools` offered in the system turn (added after the system message's text, or as
    a system turn of its own); without tools, just the validated messages."""
    msgs = validate_messages(messages)
    if not tools:
        return msgs
    text = tools_text(validate_tools(tools))
    if msgs[0]["role"] == "system":
        return [{**msgs[0], "content": msgs[0]["content"] + "\n\n" + text}] + msgs[1:]
    return [{"role": "system", "content": text}] + msgs


def format_tool_call(name: str, arguments: dict) -> str:
    """One call as the model writes it: <tool_call>{"name": ..., "arguments": {...}}</tool_call>."""
    return TOOL_CALL_START + json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False) + TOOL_CALL_END


def turn_text(m: dict) -> str:
    """The text inside one validated message's turn: its content, then its tool calls one per line."""
    calls = [format_tool_call(c["function"]["name"], c["function"]["arguments"]) for c in m.get("tool_calls") or []]
    return "\n".join(([m["content"]] if m["content"] else []) + calls)


_CALL = re.compile(re.escape(TOOL_CALL_START) + r"(.*?)" + re.escape(TOOL_CALL_END), re.S)


def parse_tool_calls(text: str) -> tuple[str, list[dict]] | None:
    """A model's reply -> (the text before its calls, [{"name", "arguments"}]); None if it makes no call or if
    any call is not well-formed ({"name": str, "arguments": object} between the tags), so it stays text."""
    first = text.find(TOOL_CALL_START)
    if first < 0:
        return None
    calls = []
    for m in _CALL.finditer(text, first):
        try:
            obj = json.loads(m.group(1))
        except (ValueError, RecursionError):
            return None
        if not (isinstance(obj, dict) and isinstance(obj.get("name"), str) and isinstance(obj.get("arguments"), dict)):
            return None
        calls.append({"name": obj["name"], "arguments": obj["arguments"]})
    if len(calls) != text.count(TOOL_CALL_START):  # a call cut off (max_tokens) or never closed
        return None
    return text[:first].rstrip(), calls


def render_chat(messages: list[dict], add_generation_prompt: bool = True, bos_token: str = BOS,
                tools: list[dict] | None = None) -> str:
    """The chat as text (what CHAT_TEMPLATE renders), with `tools` offered if given."""
    parts = [bos_token]
    for m in with_tools(messages, tools):
        parts.append(f"{IM_START}{m['role']}\n{turn_text(m)}{IM_END}\n")
    if add_generation_prompt:
        parts.append(f"{IM_START}assistant\n")
    return "".join(parts)


def chat_special_ids(tokenizer: Any) -> tuple[int | None, int, int]:
    """(bos id or None, <|im_start|> id, <|im_end|> id) from the tokenizer, with a clear error if missing."""
    special = getattr(tokenizer, "special_tokens", {}) or {}
    missing = [t for t in (IM_START, IM_END) if t not in special]
    if missing:
        raise ValueError(f"the tokenizer has no {' / '.join(missing)} token and no chat template of its own; "
                         "retrain it with the chat special tokens (scratchlm tokenizer train), or, for an imported "
                         "model, add a chat_template to its tokenizer_config.json")
    return getattr(tokenizer, "bos_id", None), special[IM_START], special[IM_END]


def turn_end_id(tokenizer: Any) -> int:
    """The token that closes an assistant turn: <|im_end|> in our template; in a Hugging Face model's own
    template the special token it writes after a reply (<|eot_id|>, ...), else its eos."""
    from .hf_chat import has_hf_template, hf_turn_end_id

    if has_hf_template(tokenizer):
        end = hf_turn_end_id(tokenizer)
        end = end if end is not None else getattr(tokenizer, "eos_id", None)
        if end is None:
            raise ValueError("the model's chat template writes no special token after a reply and the tokenizer "
                             "has no eos token, so a reply's end cannot be learnt; set eos_token in "
                             "tokenizer_config.json")
        return end
    return chat_special_ids(tokenizer)[2]


def encode_chat(tokenizer: Any, messages: list[dict], add_generation_prompt: bool = True,
                tools: list[dict] | None = None) -> list[int]:
    """Token ids of render_chat(messages, tools=tools). Equals encoding that text with special tokens allowed, as
    long as no message contains special-token text; if one does, it is encoded as ordinary text (no injection).
    A Hugging Face tokenizer with its own chat template (an imported model) is rendered with that (hf_chat.py)."""
    from .hf_chat import encode_hf_chat, has_hf_template

    if has_hf_template(tokenizer):
        return encode_hf_chat(tokenizer, messages, add_generation_prompt, tools)
    bos, start, end = chat_special_ids(tokenizer)
    nl = tokenizer.encode("\n")
    ids = [] if bos is None else [bos]
    for m in with_tools(messages, tools):
        # role, newline and content form one text segment between two special tokens, exactly as a tokenizer
        # splits the rendered string at special tokens before applying BPE
        ids += [start] + tokenizer.encode(f"{m['role']}\n{turn_text(m)}") + [end] + nl
    if add_generation_prompt:
        ids += [start] + tokenizer.encode("assistant\n")
    return ids


def chat_stop_token_ids(tokenizer: Any) -> list[int]:
    """Tokens that end an assistant turn: <|im_end|>; also <|im_start|> (a model that skips <|im_end|> and
    starts the next turn), end-of-text and BOS (a new document), as fallbacks for weakly trained models.
    With a Hugging Face chat template: its eos ids and end-of-turn token (hf_chat.py)."""
    from .hf_chat import has_hf_template, hf_chat_stop_ids

    if has_hf_template(tokenizer):
        return hf_chat_stop_ids(tokenizer)
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
