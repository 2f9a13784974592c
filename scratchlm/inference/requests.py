"""What a request to the OpenAI-compatible server may say, checked field by field before any work is done.

Every field is checked for type, finiteness and range, with a 400 naming it (APIError); fields this server does
not implement are refused by name rather than ignored, since a client must never believe that its
`response_format` or `logit_bias` took effect. server.py turns APIError into OpenAI's error JSON.
"""

from __future__ import annotations

import json
import math
from typing import Any

from .engine import Engine
from .sampling import SamplingParams

MAX_LOGPROBS = 20  # OpenAI's limit for top_logprobs
MAX_SEQUENCES = 64  # prompts x n per request
MAX_STOPS = 16
SEED_MIN, SEED_MAX = -(2**63), 2**63 - 1  # int64, as OpenAI and vLLM take it; seed + i for n choices still fits torch

# Which request fields each endpoint reads. Anything else is refused with a 400 (see _check_fields), except:
HARMLESS = {"user", "metadata", "store", "service_tier", "prompt_cache_key", "safety_identifier", "prediction",
            "parallel_tool_calls"}  # they never change the generated text: accepted and ignored
OFF_VALUES = {  # OpenAI features we do not implement, accepted only with the value that turns them off
    "logit_bias": [{}], "tools": [[]], "functions": [[]], "tool_choice": ["none", "auto"],
    "function_call": ["none", "auto"], "response_format": [{"type": "text"}], "best_of": [1], "modalities": [["text"]],
}
WHY_UNSUPPORTED = {
    "tools": "tools are offered on /v1/chat/completions", "tool_choice": "tools are offered on /v1/chat/completions",
    "functions": "the deprecated form; send 'tools'", "function_call": "the deprecated form; send 'tool_choice'",
    "response_format": 'only {"type": "text"}: there is no JSON mode or structured output',
    "logit_bias": "logits are not biased", "best_of": "use n and pick yourself",
}
SAMPLING_FIELDS = {"model", "n", "stream", "stream_options", "temperature", "top_p", "top_k", "min_p",
                   "repetition_penalty", "frequency_penalty", "presence_penalty", "stop", "seed", "ignore_eos",
                   "max_tokens", "logprobs"}
COMPLETION_FIELDS = SAMPLING_FIELDS | {"prompt", "echo", "suffix"}
CHAT_FIELDS = SAMPLING_FIELDS | {"messages", "max_completion_tokens", "top_logprobs", "tools", "tool_choice"}


class APIError(Exception):
    """An error to return as OpenAI-shaped JSON."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 type: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type


def get_field(body: dict, name: str, kind: type | tuple, default: Any = None, lo: float | None = None,
         hi: float | None = None, hint: str = "") -> Any:
    """body[name] checked against a type, finiteness and an inclusive range; a clear 400 otherwise.
    hint follows the range in the message, e.g. " (-1 or 0 = off)"."""
    value = body.get(name, default)
    if value is None:
        return default
    kinds = kind if isinstance(kind, tuple) else (kind,)
    ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
    if float in kinds and isinstance(value, int) and not isinstance(value, bool):
        ok, value = True, float(value) if abs(value) < 2**1023 else math.inf  # float() of a 400-digit int raises
    if not ok:
        names = " or ".join({float: "a number", int: "an integer", bool: "a boolean"}.get(k, k.__name__) for k in kinds)
        raise APIError(400, f"'{name}' must be {names}, got {json.dumps(value)[:50]}", param=name)
    if isinstance(value, float) and not math.isfinite(value):  # 1e999 parses as inf, and inf passes `<= hi`
        raise APIError(400, f"'{name}' must be a finite number, got {value}", param=name)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        bounds = f"between {lo} and {hi}" if lo is not None and hi is not None else f">= {lo}" if lo is not None \
            else f"<= {hi}"
        raise APIError(400, f"'{name}' must be {bounds}{hint}, got {value}", param=name)
    return value


def check_fields(body: dict, accepted: set[str]) -> None:
    """Refuse every field this endpoint does not implement: ignoring one silently would let a client believe
    its `tools` or `logit_bias` took effect. null always means "not given"."""
    for name, value in body.items():
        if value is None or name in accepted or name in HARMLESS or value in OFF_VALUES.get(name, []):
            continue
        why = WHY_UNSUPPORTED.get(name)
        raise APIError(400, f"'{name}' is not supported by this server" + (f" ({why})" if why else "")
                       + "; remove it from the request", param=name, code="unsupported_parameter")


def include_usage(body: dict) -> bool:
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise APIError(400, "'stream_options' must be an object like {\"include_usage\": true}", param="stream_options")
    return bool(get_field(options or {}, "include_usage", bool, False))


def sampling_params(body: dict, max_tokens: int, stop_ids: list[int]) -> SamplingParams:
    for name in ("frequency_penalty", "presence_penalty"):
        if get_field(body, name, float, 0.0, -2.0, 2.0) != 0.0:
            raise APIError(400, f"'{name}' is not supported; use 'repetition_penalty' (e.g. 1.1) instead", param=name)
    stop = body.get("stop")
    if stop is None:
        stop = []
    elif isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop) or len(stop) > MAX_STOPS:
        raise APIError(400, f"'stop' must be a non-empty string or a list of at most {MAX_STOPS} of them", param="stop")
    top_k = get_field(body, "top_k", int, 0, -1, hint=" (-1 or 0 = off)")
    params = SamplingParams(
        max_new_tokens=max_tokens,
        temperature=get_field(body, "temperature", float, 1.0, 0.0, 2.0),
        top_p=get_field(body, "top_p", float, 1.0, 0.0, 1.0) or 1e-9,  # top_p=0 means "only the top token"
        top_k=max(top_k, 0),  # vLLM's -1 means off too
        min_p=get_field(body, "min_p", float, 0.0, 0.0, 1.0),
        repetition_penalty=get_field(body, "repetition_penalty", float, 1.0, 0.01, 10.0),
        stop=stop,
        stop_token_ids=stop_ids,
        seed=get_field(body, "seed", int, None, SEED_MIN, SEED_MAX),
        ignore_eos=get_field(body, "ignore_eos", bool, False),
    )
    try:  # the one place every path (CLI, server, API) validates; anything _get let through is still a 400
        return params.validate()
    except ValueError as e:
        raise APIError(400, str(e)) from None


def parse_prompts(body: dict, engine: Engine) -> list[tuple[list[int], str]]:
    """OpenAI's prompt forms (str, [str], [int], [[int]]) -> [(ids with BOS, text)]."""
    prompt = body.get("prompt")
    if isinstance(prompt, str) or (isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt)):
        prompt = [prompt]
    if not isinstance(prompt, list) or not prompt:
        raise APIError(400, "'prompt' must be a string, a list of strings, or token ids", param="prompt")
    if len(prompt) > MAX_SEQUENCES:  # before encoding them all: a 4 MiB body holds a million one-letter prompts
        raise APIError(400, f"'prompt' holds {len(prompt)} prompts; at most {MAX_SEQUENCES} per request", param="prompt")
    out = []
    bos = engine.tokenizer.bos_id
    for p in prompt:
        if isinstance(p, str):
            out.append((engine.encode(p), p))
        elif isinstance(p, list) and p and all(isinstance(t, int) and not isinstance(t, bool) for t in p):
            if engine.vocab_size and not all(0 <= t < engine.vocab_size for t in p):
                raise APIError(400, f"token ids in 'prompt' must be in [0, {engine.vocab_size})", param="prompt")
            ids = p if (bos is None or p[0] == bos) else [bos] + p
            out.append((ids, engine.decode(ids[1:] if bos is not None and ids[0] == bos else ids)))
        else:
            raise APIError(400, "'prompt' must be a string, a list of strings, or token ids", param="prompt")
    return out


def check_context(n_prompt: int, max_tokens: int, context: int) -> None:
    if n_prompt + max_tokens > context:
        raise APIError(400, f"This model's maximum context length is {context} tokens, however you requested "
                            f"{n_prompt + max_tokens} tokens ({n_prompt} in the prompt, {max_tokens} for the "
                            "completion). Please reduce the prompt or max_tokens.",
                       param="max_tokens" if n_prompt < context else "prompt", code="context_length_exceeded")


def tool_settings(body: dict) -> tuple[list[dict] | None, bool]:
    """(the tools to offer the model, or None; whether it may make several calls at once) from `tools`,
    `tool_choice` and `parallel_tool_calls`. "required" and a named function would need decoding constrained to
    a call, which this server does not do: they are refused rather than treated as "auto"."""
    from .chat_template import validate_tools

    tools = body.get("tools")
    if tools is not None:
        try:
            validate_tools(tools)
        except ValueError as e:
            raise APIError(400, str(e), param="tools") from None
    choice = body.get("tool_choice")
    if choice is not None and choice not in ("auto", "none"):
        raise APIError(400, f"'tool_choice' {json.dumps(choice)[:80]} is not supported by this server (a forced "
                            "call needs constrained decoding); use 'auto' or 'none'", param="tool_choice",
                       code="unsupported_parameter")
    parallel = get_field(body, "parallel_tool_calls", bool, True)
    return (tools or None) if choice != "none" else None, parallel
