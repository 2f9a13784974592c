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


def hf_turn_end_id(tokenizer: Any) -> int | None:
    """The special token the template writes right after an assistant's text (<|im_end|>, <|eot_id|>, ...), or
    None when it writes none there (or wants turns this probe does not give, e.g. a system turn first)."""
    sentinel = "\ue000"
    try:
        turns = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": sentinel}]
        text = render_hf_chat(tokenizer, turns, add_generation_prompt=False)
    except ValueError:
        return None
    after = text.partition(sentinel)[2].lstrip(" ")
    for s, i in sorted(tokenizer.special_tokens.items(), key=lambda kv: -len(kv[0])):
        if after.startswith(s):
            return i
    return None


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
    end = hf_turn_end_id(tokenizer)
    if end is not None and end not in ids:
        ids.append(end)
    return ids


def hf_reply_span(tokenizer: Any, messages: list[dict], i: int, tools: list[dict] | None = None,
                  full: list[int] | None = None, end: int | None = None) -> tuple[int, int]:
    """[start, stop) of assistant turn messages[i] in the ids of the conversation `full` (default: messages[:i+1]):
    the tokens that turn adds after messages[:i] and the generation prompt, through the template's end-of-turn
    token `end` (default: hf_turn_end_id; as transformers' {% generation %} marks them; a newline after it is
    context). `full` must be the ids of messages[:j] for some j > i, without a generation prompt. Found by rendering
    prefixes, so the template must render a turn the same whatever follows it, which chat templates do; one that
    does not (e.g. one that rewrites earlier assistant turns) is refused with one line."""
    if i == 0:
        raise ValueError("the conversation starts with an assistant turn; the model's chat template needs a user "
                         "turn before it")
    head = encode_hf_chat(tokenizer, messages[:i], add_generation_prompt=True, tools=tools)
    last = i == len(messages) - 1
    upto = full if full is not None and last else encode_hf_chat(tokenizer, messages[:i + 1],
                                                                  add_generation_prompt=False, tools=tools)
    full = upto if full is None else full
    if upto[:len(head)] != head or full[:len(upto)] != upto:
        raise ValueError(f"the model's chat template renders messages[{i}] (assistant) differently once more turns "
                         "follow, so the reply's tokens cannot be told apart for training; fine-tune on "
                         "conversations that end with that turn, or give the tokenizer a simpler template")
    stop = len(upto)
    end = hf_turn_end_id(tokenizer) if end is None else end
    if end is not None and end in upto[len(head):]:
        stop = len(head) + upto[len(head):].index(end) + 1
    return len(head), stop


def encode_hf_chat_with_mask(tokenizer: Any, messages: list[dict], add_generation_prompt: bool = False,
                             tools: list[dict] | None = None,
                             assistant_only: bool = True) -> tuple[list[int], list[bool]]:
    """(ids, is_target) of a conversation in the tokenizer's own template: training in the template the model
    will be served with (TRL's way). is_target marks each assistant turn's reply through its end-of-turn token
    (hf_reply_span), or every token with assistant_only=False; a generation prompt, if asked for, is context."""
    msgs = validate_messages(messages)
    ids = encode_hf_chat(tokenizer, msgs, add_generation_prompt=False, tools=tools)
    mask = [not assistant_only] * len(ids)
    end = hf_turn_end_id(tokenizer)  # once per conversation, not per turn
    for i, m in enumerate(msgs):
        if m["role"] == "assistant" and assistant_only:
            a, b = hf_reply_span(tokenizer, msgs, i, tools, full=ids, end=end)
            mask[a:b] = [True] * (b - a)
    if add_generation_prompt:
        with_prompt = encode_hf_chat(tokenizer, msgs, add_generation_prompt=True, tools=tools)
        if with_prompt[:len(ids)] != ids:
            raise ValueError("the model's chat template renders the conversation differently with a generation "
                             "prompt; it cannot be trained on here")
        mask += [False] * (len(with_prompt) - len(ids))
        ids = with_prompt
    return ids, mask
