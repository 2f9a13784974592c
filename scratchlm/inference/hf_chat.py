"""A Hugging Face tokenizer's own chat template (tokenizer_config.json "chat_template", or chat_template.jinja).

A model imported with `scratchlm import hf` was fine-tuned on its own chat format (Llama 3's <|start_header_id|>,
Qwen's ChatML, ...), not ours, so `generate --chat`, `chat` and `serve` render its template instead
(chat_template.py: encode_chat and chat_stop_token_ids send such tokenizers here). Rendering follows
transformers' apply_chat_template: Jinja's ImmutableSandboxedEnvironment (templates come from the Hub and are
untrusted code) with trim_blocks, lstrip_blocks and loop controls, its `tojson` (no HTML escaping),
`raise_exception` and `strftime_now`, and the variables messages, tools, add_generation_prompt and the named
special tokens (bos_token, eos_token, ...); message keys whose value is None are dropped, as it does.

Encoding the rendered text with special tokens allowed is what transformers does (tokenize=True). A message that
itself contains special-token text ("<|im_end|>") would then end its turn early, so such contents are located
in the rendering (with private-use placeholders) and encoded as plain text, as our own encode_chat does.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from .chat_template import validate_messages, validate_tools

TOKEN_NAMES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")


def has_hf_template(tokenizer: Any) -> bool:
    """True for a Hugging Face tokenizer (tokenizer/hf_load.py) that carries a chat template."""
    return bool(getattr(tokenizer, "chat_template", None)) and hasattr(tokenizer, "token_names")


def _environment():
    try:
        import jinja2
    except ImportError:
        raise ImportError("this tokenizer's chat template is Jinja: pip install 'jinja2>=3.1.6' "
                          "(or scratchlm[hf])") from None
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Generation(jinja2.ext.Extension):
        """transformers' {% generation %} ... {% endgeneration %} marks assistant text for training masks;
        rendering keeps the body unchanged."""
        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

        def _body(self, caller):
            return caller()

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[Generation, jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env


_COMPILED: dict[str, Any] = {}


def _template_for(tokenizer: Any, tools) -> str:
    """The template string; a list of named templates picks "tool_use" when tools are given, else "default"."""
    t = tokenizer.chat_template
    if isinstance(t, list):
        named = {x.get("name"): x.get("template") for x in t if isinstance(x, dict)}
        t = named.get("tool_use") if tools and "tool_use" in named else named.get("default")
        if t is None:
            raise ValueError(f"the tokenizer's chat templates are named {sorted(map(str, named))}, none 'default'; "
                             "name one 'default' in tokenizer_config.json")
    return t


def render_hf_chat(tokenizer: Any, messages: list[dict], add_generation_prompt: bool = True,
                   tools: list[dict] | None = None) -> str:
    """The text transformers' apply_chat_template(messages, tools=tools, add_generation_prompt=...,
    tokenize=False) gives for the same tokenizer folder."""
    source = _template_for(tokenizer, tools)
    env = _environment() if source not in _COMPILED else None  # a clear ImportError without jinja2
    import jinja2

    if env is not None:
        try:
            _COMPILED[source] = env.from_string(source)
        except jinja2.TemplateSyntaxError as e:
            raise ValueError(f"the tokenizer's chat template does not parse (line {e.lineno}: {e.message}); "
                             "fix chat_template in tokenizer_config.json") from None
    names = {k: v for k, v in tokenizer.token_names.items() if k in TOKEN_NAMES}
    msgs = [{k: v for k, v in m.items() if v is not None} for m in messages]
    try:
        return _COMPILED[source].render(messages=msgs, tools=tools, documents=None,
                                        add_generation_prompt=add_generation_prompt, **names)
    except jinja2.TemplateError as e:
        raise ValueError(f"the tokenizer's chat template refused these messages: {e}") from None


def encode_hf_chat(tokenizer: Any, messages: list[dict], add_generation_prompt: bool = True,
                   tools: list[dict] | None = None) -> list[int]:
    """Token ids of render_hf_chat: the rendered text encoded with special tokens allowed, except inside message
    contents (injection-safe); equal to transformers' tokenize=True when no content holds special-token text."""
    msgs = validate_messages(messages)
    if tools:
        validate_tools(tools)
    text = render_hf_chat(tokenizer, msgs, add_generation_prompt, tools)
    specials = tokenizer.special_tokens
    risky = [i for i, m in enumerate(msgs) if any(s in (m["content"] or "") for s in specials)]
    if not risky:
        return tokenizer.encode(text, allowed_special="all")
    # render again with each risky content replaced by a placeholder; if the template copies contents verbatim
    # the placeholders show where they sit, and those spans are encoded as plain text
    marks = {i: f"\ue000{i}\ue001" for i in risky}
    marked = render_hf_chat(tokenizer, [{**m, "content": marks[i]} if i in marks else m for i, m in enumerate(msgs)],
                            add_generation_prompt, tools)
    pieces, rest = [], marked
    for i in risky:
        before, sep, rest = rest.partition(marks[i])
        if not sep or marks[i] in rest:
            raise ValueError(f"messages[{i}] contains special-token text and the chat template does not copy it "
                             "verbatim, so it cannot be kept as plain text; remove the special-token text")
        pieces += [(before, True), (msgs[i]["content"], False)]
    pieces.append((rest, True))
    if "".join(p for p, _ in pieces) != text:
        raise ValueError(f"messages[{risky[0]}] contains special-token text and the chat template does not copy it "
                         "verbatim, so it cannot be kept as plain text; remove the special-token text")
    ids: list[int] = []
    for part, template in pieces:
        ids += tokenizer.encode(part, allowed_special="all" if template else frozenset())
    return ids


def hf_chat_stop_ids(tokenizer: Any) -> list[int]:
    """Tokens that end an assistant turn: the eos ids of generation_config.json (an int or a list) and of
    tokenizer_config.json, and the special token the template writes right after an assistant's text
    (<|im_end|>, <|eot_id|>, ...)."""
    ids: list[int] = []
    gen = getattr(tokenizer, "generation_config", {}) or {}
    eos = gen.get("eos_token_id")
    for i in (eos if isinstance(eos, list) else [eos]) + [tokenizer.eos_id]:
        if isinstance(i, int) and i not in ids:
            ids.append(i)
    sentinel = "\ue000"
    try:
        turns = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": sentinel}]
        text = render_hf_chat(tokenizer, turns, add_generation_prompt=False)
    except ValueError:  # a template that wants a system turn first, say: the eos ids alone
        return ids
    after = text.partition(sentinel)[2].lstrip(" ")
    for s, i in sorted(tokenizer.special_tokens.items(), key=lambda kv: -len(kv[0])):
        if after.startswith(s):
            if i not in ids:
                ids.append(i)
            break
    return ids
