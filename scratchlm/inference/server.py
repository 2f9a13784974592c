"""An OpenAI-compatible HTTP API for a scratchlm model (FastAPI + uvicorn), plus a chat page at `/`.

    GET  /v1/models                 the one model this server holds
    POST /v1/completions            text in, text out; `logprobs` + `echo` let eval harnesses score prompts
    POST /v1/chat/completions       messages in (rendered with chat_template.py), an assistant message out
    POST /tokenize                  a prompt's or a chat's token count, and the context (not OpenAI: vLLM's shape)
    GET  /                          a small chat page (static/index.html) that streams from the API above

Both POST endpoints take `stream: true` and then answer with Server-Sent Events: one `data: {json}` line per
chunk and a final `data: [DONE]`, the format the official `openai` client parses. Beyond OpenAI's fields they
accept `top_k`, `min_p` and `repetition_penalty` (pass them with the client's `extra_body=`).

Errors are OpenAI-shaped, `{"error": {"message", "type", "param", "code"}}`, with the status a client expects:
400 malformed JSON or invalid parameter (including a prompt longer than the context), 401 wrong API key,
404 unknown model or route, 408 body not received within the read timeout, 413 body too large, 500 a bug (the
server stays up either way).

Tools follow OpenAI's protocol: a chat request with `tools` offers them to the model (in the system turn, see
chat_template.py); a reply that is a well-formed call of an offered tool comes back as `tool_calls` with
finish_reason "tool_calls" (streamed as tool_calls deltas), the client runs its function and sends the result as a
`role: "tool"` message in its next request. The server itself runs nothing. `tool_choice` "auto" and "none" are
honoured; "required" and a named function are refused (they need decoding constrained to a call).

Input is refused rather than guessed at: NaN, Infinity and numbers that overflow to them, JSON nested too deeply,
content parts that are not text, and every parameter this server does not implement (`logit_bias`,
`response_format` other than text, ...): a client must never believe a setting worked when it was ignored. Fields
that cannot change the output (`user`, `metadata`, ...) are accepted. A client that is slow to send its request
(head or body) is cut off after `read_timeout` seconds, so idle connections cannot pile up. The field-by-field
checks live in requests.py.

Requests are queued and batched onto one model thread: continuously (continuous.py, the default) or in whole
batches (batcher.py, `batching="static"`). The server binds 127.0.0.1 unless told otherwise: an LLM endpoint on
a public interface is an open compute resource.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
import time
import uuid
from pathlib import Path
from typing import Any, AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from .batcher import BatchWorker
from .chat_template import chat_stop_token_ids, encode_chat, parse_tool_calls, validate_messages
from .continuous import ContinuousWorker
from .detokenizer import token_bytes_fn
from .engine import Engine, Sequence, TokenEvent
from .requests import (CHAT_FIELDS, COMPLETION_FIELDS, MAX_LOGPROBS, MAX_SEQUENCES, APIError, check_context,
                       check_fields, get_field, include_usage, parse_prompts, sampling_params, tool_settings)
from .sampling import SamplingParams
from .tools import ToolCallStream, new_call_id

log = logging.getLogger("scratchlm")

STATIC_DIR = Path(__file__).parent / "static"
MAX_BODY_BYTES = 4 * 1024 * 1024  # a larger request is refused with 413 before it is parsed
READ_TIMEOUT = 30.0  # seconds a client may take to send its request (head + body); `scratchlm serve --read-timeout`


def error_json(status: int, message: str, type: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": type, "param": param, "code": code}}, status_code=status)


# ----------------------------------------------------------------------------- the app

def create_app(engine: Engine, model_id: str = "scratchlm", api_key: str | None = None, max_batch: int = 8,
               read_timeout: float = READ_TIMEOUT, batching: str = "continuous") -> FastAPI:
    """The FastAPI app serving `engine`. Start it with `run_server(app)` or `ServerThread(app)`, which also apply
    read_timeout to the request head; under another ASGI server only the body is timed. batching: "continuous"
    (requests join and leave the running batch at every step, continuous.py) or "static" (batcher.py)."""
    if batching not in ("continuous", "static"):
        raise ValueError(f"batching must be 'continuous' or 'static', got {batching!r}")
    if not (isinstance(read_timeout, (int, float)) and math.isfinite(read_timeout) and read_timeout > 0):
        raise ValueError(f"read_timeout must be a finite number of seconds > 0, got {read_timeout!r}")
    app = FastAPI(title="scratchlm", docs_url=None, redoc_url=None, openapi_url=None)
    worker = (ContinuousWorker if batching == "continuous" else BatchWorker)(engine, max_batch=max_batch)
    app.state.worker, app.state.engine, app.state.read_timeout = worker, engine, float(read_timeout)
    tok = engine.tokenizer
    created = int(time.time())

    @app.exception_handler(APIError)
    async def _api_error(request: Request, e: APIError):
        response = error_json(e.status, e.message, e.type, e.param, e.code)
        if e.status in (408, 413):  # the body was not read to its end: this connection cannot carry another request
            response.headers["Connection"] = "close"
        return response

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, e: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(e.status_code)
        return error_json(e.status_code, f"{request.method} {request.url.path}: {e.detail}", code=code)

    @app.exception_handler(Exception)
    async def _crash(request: Request, e: Exception):
        log.exception("request failed")
        return error_json(500, f"internal error: {type(e).__name__}: {e}", type="server_error")

    def check_key(request: Request) -> None:
        if api_key is not None:
            auth = request.headers.get("authorization", "")
            given = auth[7:] if auth.lower().startswith("bearer ") else ""
            if not hmac.compare_digest(given.encode(), api_key.encode()):
                raise APIError(401, "Incorrect API key provided; pass it as 'Authorization: Bearer KEY'",
                               code="invalid_api_key")

    async def read_body(request: Request) -> dict:
        check_key(request)
        size = request.headers.get("content-length")
        if size is not None and size.isdigit() and int(size) > MAX_BODY_BYTES:
            raise APIError(413, f"request body is {size} bytes; the limit is {MAX_BODY_BYTES}", code="request_too_large")
        raw = b""
        parts = request.stream().__aiter__()
        deadline = asyncio.get_running_loop().time() + read_timeout  # a trickling client must not hold us forever
        while True:
            try:
                part = await asyncio.wait_for(parts.__anext__(), deadline - asyncio.get_running_loop().time())
            except StopAsyncIteration:
                break
            except asyncio.TimeoutError:
                raise APIError(408, f"the request body did not arrive within {read_timeout:g} s; send it at once "
                                    "(or start the server with a longer --read-timeout)",
                               code="request_timeout") from None
            raw += part
            if len(raw) > MAX_BODY_BYTES:
                raise APIError(413, f"request body exceeds {MAX_BODY_BYTES} bytes", code="request_too_large")
        try:
            # Python's json also takes the bare words NaN, Infinity and -Infinity: they parse to floats here, and
            # _get refuses them by name (a client learns which field was wrong), as it does 1e999 (= inf)
            body = json.loads(raw)
        except RecursionError:  # json's decoder recurses once per [ or {
            raise APIError(400, "the JSON body is nested too deeply; send a flatter request") from None
        except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
            raise APIError(400, f"could not parse the JSON body of your request ({e}); send valid JSON") from None
        if not isinstance(body, dict):
            raise APIError(400, "the request body must be a JSON object")
        model = body.get("model")
        if model is not None and model != model_id:
            raise APIError(404, f"The model '{model}' does not exist; this server has '{model_id}'", param="model",
                           code="model_not_found")
        return body

    def model_card() -> dict:
        return {"id": model_id, "object": "model", "created": created, "owned_by": "scratchlm",
                "max_model_len": engine.max_seq_len}

    @app.get("/v1/models")
    async def list_models(request: Request):
        check_key(request)
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{name:path}")
    async def get_model(name: str, request: Request):
        check_key(request)
        if name != model_id:
            raise APIError(404, f"The model '{name}' does not exist", param="model", code="model_not_found")
        return model_card()

    @app.post("/tokenize")
    async def tokenize(request: Request):
        """How many tokens a prompt takes, counted by the server's own tokenizer and chat template, so a client
        (the chat page) can leave out old turns before a conversation outgrows the context. vLLM's shape: exactly
        one of `prompt` (text, counted with BOS as /v1/completions does) or `messages` (rendered as
        /v1/chat/completions renders them, with the assistant header when add_generation_prompt is true).
        A prompt longer than the context is counted, not refused: finding that out is the point."""
        body = await read_body(request)
        check_fields(body, {"model", "prompt", "messages", "add_generation_prompt", "tools", "tool_choice"})
        if (body.get("prompt") is None) == (body.get("messages") is None):
            raise APIError(400, "send exactly one of 'prompt' (a string) or 'messages' (a chat)", param="messages")
        if body.get("prompt") is not None:
            if not isinstance(body["prompt"], str):
                raise APIError(400, "'prompt' must be a string; to count a chat send 'messages'", param="prompt")
            ids = engine.encode(body["prompt"])
        else:
            try:
                messages = validate_messages(body["messages"], require_ids=True)
            except ValueError as e:
                raise APIError(400, str(e), param="messages") from None
            tools, _ = tool_settings(body)
            ids = encode_chat(tok, messages, get_field(body, "add_generation_prompt", bool, True), tools=tools)
        return {"count": len(ids), "max_model_len": engine.max_seq_len, "tokens": ids}

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/")
    async def index():
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    # ------------------------------------------------------------------ completions
    @app.post("/v1/completions")
    async def completions(request: Request):
        body = await read_body(request)
        check_fields(body, COMPLETION_FIELDS)
        prompts = parse_prompts(body, engine)
        max_tokens = get_field(body, "max_tokens", int, 16, 0, engine.max_seq_len)
        n = get_field(body, "n", int, 1, 1, MAX_SEQUENCES)
        logprobs = get_field(body, "logprobs", int, None, 0, MAX_LOGPROBS)
        echo = get_field(body, "echo", bool, False)
        stream = get_field(body, "stream", bool, False)
        with_usage = include_usage(body)
        if body.get("suffix"):
            raise APIError(400, "'suffix' (fill-in-the-middle) is not supported", param="suffix")
        if len(prompts) * n > MAX_SEQUENCES:
            raise APIError(400, f"{len(prompts)} prompts x n={n} exceeds {MAX_SEQUENCES} sequences per request", param="n")
        params = sampling_params(body, max_tokens, [])
        for ids, _ in prompts:
            check_context(len(ids), max_tokens, engine.max_seq_len)
        seqs = [Sequence(ids, _with_seed(params, i), logprobs) for ids, _ in prompts for i in range(n)]
        echoes = [None] * len(prompts)
        if echo:  # the prompt's own text (and log-probs, one forward each) go in front of the completion
            for j, (ids, text) in enumerate(prompts):
                lps, tops = (await worker.run_call(lambda ids=ids: engine.score(ids, logprobs or 0))) if logprobs is not None else (None, None)
                echoes[j] = (text, _drop_bos(ids, lps, tops, tok.bos_id))
        rid, ts = f"cmpl-{uuid.uuid4().hex}", int(time.time())

        def choice(i: int, text: str, lp_events: list[TokenEvent] | None, finish: str | None, offset: int = 0,
                   echo_of: int | None = None) -> dict:
            lp = None
            if logprobs is not None:
                lp = _completion_logprobs(tok, lp_events or [], offset)
                if echo_of is not None:
                    lp = _merge_logprobs(_prompt_logprobs(tok, *echoes[echo_of][1]), lp)
            return {"index": i, "text": text, "logprobs": lp, "finish_reason": _finish(finish)}

        if stream:
            async def events() -> AsyncIterator[str]:
                offsets = [0] * len(seqs)
                for i in range(len(seqs)):
                    if echoes[i // n] is not None:
                        text = echoes[i // n][0]
                        offsets[i] = len(text)
                        lp = _prompt_logprobs(tok, *echoes[i // n][1]) if logprobs is not None else None
                        yield _sse({"id": rid, "object": "text_completion", "created": ts, "model": model_id,
                                    "choices": [{"index": i, "text": text, "logprobs": lp, "finish_reason": None}]})
                async for i, evs, finish in _generate(worker, seqs, max_tokens):
                    text = "".join(e.text for e in evs)
                    c = choice(i, text, [e for e in evs if e.token_id >= 0], finish, offsets[i])
                    offsets[i] += len(text)
                    yield _sse({"id": rid, "object": "text_completion", "created": ts, "model": model_id,
                                "choices": [c]})
                if with_usage:
                    yield _sse({"id": rid, "object": "text_completion", "created": ts, "model": model_id,
                                "choices": [], "usage": _usage(seqs, sum(len(ids) for ids, _ in prompts))})
                yield "data: [DONE]\n\n"
            return _sse_response(events(), seqs)

        async for _ in _generate(worker, seqs, max_tokens):
            pass
        choices = []
        for i, s in enumerate(seqs):
            pre = echoes[i // n][0] if echoes[i // n] is not None else ""
            evs = [TokenEvent(t, "", lp, top) for t, lp, top in zip(s.token_ids, s.token_logprobs, s.top_logprobs)]
            choices.append(choice(i, pre + s.text, evs, s.finish_reason, len(pre),
                                  i // n if echoes[i // n] is not None else None))
        return {"id": rid, "object": "text_completion", "created": ts, "model": model_id, "choices": choices,
                "usage": _usage(seqs, sum(len(ids) for ids, _ in prompts))}

    # ------------------------------------------------------------------ chat
    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        body = await read_body(request)
        check_fields(body, CHAT_FIELDS)
        try:
            messages = validate_messages(body.get("messages"), require_ids=True)
        except ValueError as e:
            raise APIError(400, str(e), param="messages") from None
        tools, parallel = tool_settings(body)
        tool_names = {t["function"]["name"] for t in tools or []}
        ids = encode_chat(tok, messages, tools=tools)
        room = engine.max_seq_len - len(ids)
        max_tokens = get_field(body, "max_completion_tokens", int, None, 1, engine.max_seq_len)
        max_tokens = get_field(body, "max_tokens", int, max_tokens, 1, engine.max_seq_len)
        if max_tokens is None:  # OpenAI's default: whatever room the context leaves
            if room < 1:
                check_context(len(ids), 1, engine.max_seq_len)
            max_tokens = room
        check_context(len(ids), max_tokens, engine.max_seq_len)
        n = get_field(body, "n", int, 1, 1, MAX_SEQUENCES)
        stream = get_field(body, "stream", bool, False)
        want_lp = get_field(body, "logprobs", bool, False)
        top_lp = get_field(body, "top_logprobs", int, 0, 0, MAX_LOGPROBS)
        with_usage = include_usage(body)
        params = sampling_params(body, max_tokens, chat_stop_token_ids(tok))
        seqs = [Sequence(ids, _with_seed(params, i), top_lp if want_lp else None) for i in range(n)]
        rid, ts = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())

        def chat_lp(evs: list[TokenEvent]) -> dict | None:
            if not want_lp:
                return None
            return {"content": [_chat_token_lp(tok, e) for e in evs if e.token_id >= 0]}

        def tool_calls(s: Sequence) -> tuple[str, list[dict]] | None:
            """(content, OpenAI tool_calls) if this reply calls offered tools, else None: it is text."""
            parsed = parse_tool_calls(s.text) if tools and s.finish_reason == "stop" else None
            if parsed is None or not all(c["name"] in tool_names for c in parsed[1]):
                return None
            calls = parsed[1] if parallel else parsed[1][:1]
            return parsed[0], [{"id": new_call_id(), "type": "function",
                                "function": {"name": c["name"], "arguments": json.dumps(c["arguments"],
                                                                                       ensure_ascii=False)}}
                               for c in calls]

        if stream:
            async def events() -> AsyncIterator[str]:
                head = {"id": rid, "object": "chat.completion.chunk", "created": ts, "model": model_id}
                held = [ToolCallStream() for _ in range(n)] if tools else None  # a call is sent whole, at the end
                for i in range(n):
                    yield _sse({**head, "choices": [{"index": i, "delta": {"role": "assistant", "content": ""},
                                                     "logprobs": None, "finish_reason": None}]})
                async for i, evs, finish in _generate(worker, seqs, max_tokens):
                    text = "".join(e.text for e in evs)
                    if held is not None:
                        text = held[i].push(text)
                    if text or want_lp:
                        yield _sse({**head, "choices": [{"index": i, "delta": {"content": text},
                                                         "logprobs": chat_lp(evs), "finish_reason": None}]})
                    if finish is not None:
                        calls = tool_calls(seqs[i]) if held is not None else None
                        if calls is not None:
                            deltas = [{"index": k, **c} for k, c in enumerate(calls[1])]
                            yield _sse({**head, "choices": [{"index": i, "delta": {"tool_calls": deltas},
                                                             "logprobs": None, "finish_reason": None}]})
                            finish = "tool_calls"
                        elif held is not None and (rest := held[i].flush()):
                            yield _sse({**head, "choices": [{"index": i, "delta": {"content": rest},
                                                             "logprobs": None, "finish_reason": None}]})
                        yield _sse({**head, "choices": [{"index": i, "delta": {}, "logprobs": None,
                                                         "finish_reason": _finish(finish)}]})
                if with_usage:
                    yield _sse({**head, "choices": [], "usage": _usage(seqs, len(ids))})
                yield "data: [DONE]\n\n"
            return _sse_response(events(), seqs)

        async for _ in _generate(worker, seqs, max_tokens):
            pass
        choices = []
        for i, s in enumerate(seqs):
            evs = [TokenEvent(t, "", lp, top) for t, lp, top in zip(s.token_ids, s.token_logprobs, s.top_logprobs)]
            message, finish = {"role": "assistant", "content": s.text}, _finish(s.finish_reason)
            calls = tool_calls(s)
            if calls is not None:
                message = {"role": "assistant", "content": calls[0] or None, "tool_calls": calls[1]}
                finish = "tool_calls"
            choices.append({"index": i, "message": message, "logprobs": chat_lp(evs), "finish_reason": finish})
        return {"id": rid, "object": "chat.completion", "created": ts, "model": model_id, "choices": choices,
                "usage": _usage(seqs, len(ids))}

    return app


# ----------------------------------------------------------------------------- helpers

def _with_seed(params: SamplingParams, i: int) -> SamplingParams:
    """The i-th of n choices: a different (but reproducible) seed for each, or they would all be equal."""
    if i == 0 or params.seed is None:
        return params
    return SamplingParams(**{**params.__dict__, "seed": params.seed + i})


async def _generate(worker: BatchWorker, seqs: list[Sequence], max_tokens: int):
    """Yield (sequence index, new events, finish_reason or None) as the model thread produces them."""
    if max_tokens == 0:  # echo-only scoring: nothing to generate
        for i, s in enumerate(seqs):
            s.finish_reason = "length"
            yield i, [], "length"
        return
    out = worker.submit(seqs)
    while True:
        item = await out.get()
        if item[0] == "end":
            return
        if item[0] == "error":
            e = item[1]
            if isinstance(e, ValueError):
                raise APIError(400, str(e))
            raise e
        _, i, events, finish = item
        yield i, events, finish


def _sse(obj: dict) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


def _sse_response(gen: AsyncIterator[str], seqs: list[Sequence]) -> StreamingResponse:
    async def guarded() -> AsyncIterator[str]:
        try:
            async for chunk in gen:
                yield chunk
        except APIError as e:  # headers are already sent: report the error in the stream, as OpenAI does
            yield _sse({"error": {"message": e.message, "type": e.type, "param": e.param, "code": e.code}})
            yield "data: [DONE]\n\n"
        except Exception as e:  # noqa: BLE001
            log.exception("stream failed")
            yield _sse({"error": {"message": f"internal error: {e}", "type": "server_error", "param": None, "code": None}})
            yield "data: [DONE]\n\n"
        finally:  # the client went away (or we are done): stop spending compute on these rows
            for s in seqs:
                if not s.done:
                    s.cancelled = True
    return StreamingResponse(guarded(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _finish(reason: str | None) -> str | None:
    return {"abort": "stop"}.get(reason, reason) if reason else None


def _usage(seqs: list[Sequence], prompt: int) -> dict:
    """prompt: prompt tokens, counted once per prompt even when n > 1 choices share it (as OpenAI does)."""
    completion = sum(len(s.token_ids) for s in seqs)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _token_str(tok: Any, token_id: int) -> str:
    """A token as text; a token that is only part of a UTF-8 character is shown as "bytes:\\xe2\\x80" (OpenAI's
    convention), so distinct partial tokens stay distinct keys in top_logprobs."""
    to_bytes = token_bytes_fn(tok)
    if to_bytes is None:
        return tok.decode([token_id], errors="replace")
    raw = to_bytes(token_id)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return "bytes:" + "".join(f"\\x{b:02x}" for b in raw)


def _drop_bos(ids: list[int], lps, tops, bos: int | None):
    """Echoed prompt log-probs without the BOS we added (OpenAI never shows it)."""
    if bos is not None and ids and ids[0] == bos:
        return ids[1:], (lps[1:] if lps else lps), (tops[1:] if tops else tops)
    return ids, lps, tops


def _prompt_logprobs(tok: Any, ids: list[int], lps, tops) -> dict:
    tokens = [_token_str(tok, t) for t in ids]
    offsets, pos = [], 0
    for s in tokens:
        offsets.append(pos)
        pos += len(s)
    return {"tokens": tokens, "token_logprobs": list(lps),
            "top_logprobs": [None if t is None else {_token_str(tok, k): v for k, v in t.items()} for t in tops],
            "text_offset": offsets}


def _completion_logprobs(tok: Any, events: list[TokenEvent], offset: int) -> dict:
    tokens = [_token_str(tok, e.token_id) for e in events]
    offsets, pos = [], offset
    for s in tokens:
        offsets.append(pos)
        pos += len(s)
    return {"tokens": tokens, "token_logprobs": [e.logprob for e in events],
            "top_logprobs": [{_token_str(tok, k): v for k, v in (e.top_logprobs or {}).items()} for e in events],
            "text_offset": offsets}


def _merge_logprobs(a: dict, b: dict) -> dict:
    return {k: a[k] + b[k] for k in ("tokens", "token_logprobs", "top_logprobs", "text_offset")}


def _chat_token_lp(tok: Any, e: TokenEvent) -> dict:
    def entry(t: int, lp: float) -> dict:
        s = _token_str(tok, t)
        return {"token": s, "logprob": lp, "bytes": list(s.encode("utf-8"))}
    return {**entry(e.token_id, e.logprob),
            "top_logprobs": [entry(t, lp) for t, lp in (e.top_logprobs or {}).items()]}


def head_timeout_protocol(read_timeout: float) -> type:
    """uvicorn's HTTP/1.1 protocol (h11), plus a deadline for the request head.

    uvicorn times out idle keep-alive connections but not a client that connects and sends its request line and
    headers slowly, or never finishes them (slowloris): each such connection would be held forever. The app
    times the body (read_body); this closes a connection whose head is incomplete read_timeout seconds after
    it opened or after its previous response. There is no request yet to answer, so it just closes."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeadTimeoutH11Protocol(H11Protocol):
        _head_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm_head_timer()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm_head_timer()

        def connection_lost(self, exc) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
            super().connection_lost(exc)

        def _arm_head_timer(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
            self._head_timer = self.loop.call_later(read_timeout, self._head_timed_out)

        def _head_timed_out(self) -> None:
            # IDLE: no complete request head since the timer was armed (a request being read or answered is not)
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self.transport.close()

    return HeadTimeoutH11Protocol


def run_server(app: FastAPI, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
    import uvicorn

    protocol = head_timeout_protocol(getattr(app.state, "read_timeout", READ_TIMEOUT))
    uvicorn.run(app, host=host, port=port, log_level=log_level, http=protocol)


class ServerThread:
    """uvicorn in a background thread (tests, notebooks): `with ServerThread(app) as srv: srv.url`.

    port=0 picks a free port."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning"):
        import socket
        import threading

        import uvicorn

        if port == 0:
            with socket.socket() as s:
                s.bind((host, 0))
                port = s.getsockname()[1]
        self.host, self.port = host, port
        protocol = head_timeout_protocol(getattr(app.state, "read_timeout", READ_TIMEOUT))
        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level, lifespan="off",
                                                    http=protocol))
        self.thread = threading.Thread(target=self.server.run, name="scratchlm-uvicorn", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> "ServerThread":
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError(f"the server did not start on {self.url}")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
