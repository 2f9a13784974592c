"""Issue 17, points 3 and 10: the server, the sampler and the inference CLI refuse bad input, one at a time.

What a careless or hostile client sends: NaN and Infinity (Python's json accepts both bare words), numbers that
overflow to them, JSON nested 100k deep, content parts that are not text, OpenAI fields we do not implement, a
body that never finishes. Each gets a 400 (or 408) with the OpenAI error shape, never a 500, and never disturbs
the other requests that share its batch. The CLI turns the same mistakes into one line and exit code 2.

A mock bigram model and the byte tokenizer stand in for a trained model (as in test_server.py)."""

from __future__ import annotations

import asyncio
import io
import json
import math
import socket
import sys
import threading
import time

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")

import scratchlm.inference.engine as engine_module  # noqa: E402
from scratchlm.cli.main import main  # noqa: E402
from scratchlm.inference.batcher import BatchWorker  # noqa: E402
from scratchlm.inference.engine import Engine, Sequence  # noqa: E402
from scratchlm.inference.sampling import SamplingParams  # noqa: E402
from scratchlm.inference.server import ServerThread, create_app  # noqa: E402
from scratchlm.inference.testing import ByteTokenizer, MarkovLM  # noqa: E402

MODEL_ID = "mock-bigram"
READ_TIMEOUT = 0.5  # seconds; short, so the slow-client tests are quick


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is fastest, and the CPU is shared
    yield
    torch.set_num_threads(before)


def make_engine() -> Engine:
    tok = ByteTokenizer()
    return Engine(MarkovLM(tok.vocab_size, seed=0, max_seq_len=256), tok)


@pytest.fixture(scope="module")
def server():
    engine = make_engine()
    app = create_app(engine, model_id=MODEL_ID, max_batch=8, read_timeout=READ_TIMEOUT)
    with ServerThread(app) as srv:
        srv.engine, srv.app = engine, app
        yield srv


def post(server, path: str, body: dict | bytes) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(server.url + path, content=content, headers={"Content-Type": "application/json"}, timeout=60)


def assert_openai_error(r: httpx.Response, status: int, param: str | None = None) -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"] and err["type"]
    if param is not None:
        assert err["param"] == param, err
    return err


def assert_still_serving(server) -> None:
    r = post(server, "/v1/completions", {"model": MODEL_ID, "prompt": "ok", "max_tokens": 2})
    assert r.status_code == 200, r.text


# ----------------------------------------------------------------------------- point 3: non-finite numbers

FLOAT_FIELDS = ["temperature", "top_p", "min_p", "repetition_penalty", "frequency_penalty", "presence_penalty"]
INT_FIELDS = ["max_tokens", "n", "top_k", "seed"]
NON_FINITE = ["NaN", "Infinity", "-Infinity", "1e999", "-1e999"]  # the last two parse as +-inf


def raw_body(path: str, field: str, token: str) -> bytes:
    head = '"prompt": "x"' if path == "/v1/completions" else '"messages": [{"role": "user", "content": "x"}]'
    return f'{{"model": "{MODEL_ID}", {head}, "max_tokens": 4, "{field}": {token}}}'.encode()


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
@pytest.mark.parametrize("field", FLOAT_FIELDS + INT_FIELDS)
def test_nan_and_infinity_in_any_numeric_field_is_a_400(server, path, field):
    for token in NON_FINITE:
        r = post(server, path, raw_body(path, field, token))
        assert_openai_error(r, 400, field)
    assert_still_serving(server)


def test_nan_temperature_is_a_400_naming_it(server):
    err = assert_openai_error(post(server, "/v1/completions", raw_body("/v1/completions", "temperature", "1e999")),
                              400, "temperature")
    assert "finite" in err["message"]
    err = assert_openai_error(post(server, "/v1/completions", raw_body("/v1/completions", "temperature", "NaN")),
                              400, "temperature")
    assert "finite" in err["message"]
    # an integer too large for a float is a 400 too, not an OverflowError
    err = assert_openai_error(post(server, "/v1/completions", raw_body("/v1/completions", "temperature", "9" * 400)),
                              400, "temperature")


@pytest.mark.parametrize("field", ["temperature", "top_p", "min_p", "repetition_penalty"])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_sampling_params_validate_rejects_non_finite(field, value):
    with pytest.raises(ValueError, match=field):
        SamplingParams(**{field: value}).validate()
    # the Python API validates too, before anything runs
    with pytest.raises(ValueError, match=field):
        make_engine().generate(["x"], SamplingParams(max_new_tokens=2, **{field: value}))


def test_sampling_params_validate_rejects_wrong_types_and_seeds():
    for bad in [dict(max_new_tokens=2.5), dict(top_k=True), dict(temperature="0.7"), dict(seed=2**64),
                dict(seed=-(2**63) - 1), dict(seed=1.5), dict(stop="stop")]:
        with pytest.raises(ValueError):
            SamplingParams(**bad).validate()


def test_tiny_temperature_decodes_greedily():
    # 1e-300 becomes 0 in float32: logits / 0 = inf, softmax NaN, and torch.multinomial raised inside the batch
    eng = make_engine()
    greedy = eng.generate(["Hello"], SamplingParams(max_new_tokens=10, temperature=0))[0]
    tiny = eng.generate(["Hello"], SamplingParams(max_new_tokens=10, temperature=1e-300, seed=1))[0]
    assert tiny.text == greedy.text


# ----------------------------------------------------------------------------- point 3: one bad request, one batch

def _hold_worker(worker: BatchWorker) -> tuple[threading.Event, threading.Thread]:
    """Keep the model thread busy until the returned event is set, so the requests sent meanwhile queue up and
    then run as one batch."""
    gate, started = threading.Event(), threading.Event()

    def block():
        started.set()
        gate.wait(60)

    t = threading.Thread(target=lambda: asyncio.run(worker.run_call(block)), daemon=True)
    t.start()
    assert started.wait(30)
    return gate, t


def test_one_bad_request_never_fails_its_batch(server):
    """Three requests in one batch: two good, one that only went wrong inside the batch (temperature 1e-300
    divided logits by float32 zero); plus a NaN that must be stopped at the door. The good ones complete."""
    eng, worker = server.engine, server.app.state.worker
    greedy = eng.generate(["Hello"], SamplingParams(max_new_tokens=12, temperature=0))[0].text
    seeded = eng.generate(["Once"], SamplingParams(max_new_tokens=12, temperature=0.9, seed=5))[0].text
    bodies = {
        "good greedy": {"model": MODEL_ID, "prompt": "Hello", "max_tokens": 12, "temperature": 0},
        "tiny temperature": {"model": MODEL_ID, "prompt": "Hello", "max_tokens": 12, "temperature": 1e-300},
        "good seeded": {"model": MODEL_ID, "prompt": "Once", "max_tokens": 12, "temperature": 0.9, "seed": 5},
        "nan": raw_body("/v1/completions", "temperature", "NaN"),
    }
    results: dict[str, httpx.Response] = {}
    gate, holder = _hold_worker(worker)
    try:
        threads = [threading.Thread(target=lambda k=k, b=b: results.__setitem__(k, post(server, "/v1/completions", b)))
                   for k, b in bodies.items()]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 30
        while worker._q.qsize() < 3 and time.monotonic() < deadline:  # the three valid ones are queued
            time.sleep(0.01)
    finally:
        gate.set()
    for t in threads + [holder]:
        t.join(timeout=60)
    assert_openai_error(results["nan"], 400, "temperature")
    for k in ("good greedy", "tiny temperature", "good seeded"):
        assert results[k].status_code == 200, (k, results[k].text)
    assert results["good greedy"].json()["choices"][0]["text"] == greedy
    assert results["tiny temperature"].json()["choices"][0]["text"] == greedy
    assert results["good seeded"].json()["choices"][0]["text"] == seeded


@pytest.mark.parametrize("bad", ["unvalidated NaN params", "empty prompt", "sampling raises mid-batch"])
def test_a_failing_row_fails_only_its_own_request(bad, monkeypatch):
    """The batcher, driven directly: the Python API can hand it a Sequence nobody validated, and a row can fail
    while sampling (here: injected). Only that request gets the error; its batch-mates finish normally."""
    eng = make_engine()
    if bad == "sampling raises mid-batch":
        real = engine_module.process_logits

        def flaky(logits, params, context=None):
            if params.seed == 13 and context is None:
                raise RuntimeError("injected sampling failure")
            return real(logits, params, context)

        monkeypatch.setattr(engine_module, "process_logits", flaky)
    bad_seq = {
        "unvalidated NaN params": Sequence(eng.encode("Hi"), SamplingParams(max_new_tokens=8, temperature=math.nan)),
        "empty prompt": Sequence([], SamplingParams(max_new_tokens=8)),
        "sampling raises mid-batch": Sequence(eng.encode("Hi"), SamplingParams(max_new_tokens=8, temperature=0.8,
                                                                               seed=13)),
    }[bad]
    good_params = [SamplingParams(max_new_tokens=8, temperature=0.8, seed=7), SamplingParams(max_new_tokens=8,
                                                                                             temperature=0)]
    expected = [eng.generate(["Once"], p)[0].text for p in good_params]
    goods = [Sequence(eng.encode("Once"), p.validate(), logprobs=1) for p in good_params]

    async def run() -> list[tuple]:
        worker = BatchWorker(eng, max_batch=8)
        gate, holder = _hold_worker(worker)  # all three jobs are queued before the batch starts
        outs = [worker.submit([goods[0]]), worker.submit([bad_seq]), worker.submit([goods[1]])]
        gate.set()
        last = []
        for out in outs:
            while True:
                item = await asyncio.wait_for(out.get(), 60)
                if item[0] in ("end", "error"):
                    last.append(item)
                    break
        holder.join(timeout=30)
        worker.close()
        return last

    good0, failed, good1 = asyncio.run(run())
    assert failed[0] == "error" and isinstance(failed[1], (ValueError, RuntimeError))
    assert good0 == ("end",) and good1 == ("end",)
    assert [s.text for s in goods] == expected
    assert all(len(s.token_logprobs) == len(s.token_ids) for s in goods)


# ----------------------------------------------------------------------------- point 10: server input

def test_deeply_nested_json_is_a_400(server):
    deep = 100_000
    for body in [b"[" * deep + b"]" * deep, b'{"prompt": ' + b"[" * deep + b"]" * deep + b"}",
                 b'{"messages": ' + b'{"a": ' * deep + b"1" + b"}" * deep + b"}"]:
        for path in ("/v1/completions", "/v1/chat/completions"):
            err = assert_openai_error(post(server, path, body), 400)
            assert "nested too deeply" in err["message"]
    assert_still_serving(server)


@pytest.mark.parametrize("content,where", [
    (7, "messages[0].content"),
    (None, "messages[0].content"),
    ({"type": "text", "text": "hi"}, "messages[0].content"),
    ([{"type": "text", "text": 5}], "messages[0].content[0].text"),
    ([{"type": "text"}], "messages[0].content[0].text"),
    ([{"type": "text", "text": "look:"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}],
     "messages[0].content[1]"),
    ([{"type": "input_audio", "input_audio": {"data": "AA", "format": "wav"}}], "messages[0].content[0]"),
    (["hello"], "messages[0].content[0]"),
    ([{"text": "no type"}], "messages[0].content[0]"),
    ([[{"type": "text", "text": "nested"}]], "messages[0].content[0]"),
])
def test_non_string_content_part_is_a_400_naming_it(server, content, where):
    r = post(server, "/v1/chat/completions", {"model": MODEL_ID, "max_tokens": 2,
                                              "messages": [{"role": "user", "content": content}]})
    err = assert_openai_error(r, 400, "messages")
    assert err["message"].startswith(where), err["message"]


def test_text_content_parts_are_joined(server):
    def chat(content):
        r = post(server, "/v1/chat/completions", {"model": MODEL_ID, "max_tokens": 8, "temperature": 0,
                                                  "messages": [{"role": "user", "content": content}]})
        assert r.status_code == 200, r.text
        return r.json()["choices"][0]["message"]["content"]

    assert chat([{"type": "text", "text": "Hi "}, {"type": "text", "text": "there"}]) == chat("Hi there")


UNSUPPORTED = [
    ("logit_bias", {"65": 100}), ("tool_choice", "required"), ("tool_choice", {"type": "function", "function": {"name": "f"}}),
    ("functions", [{"name": "f", "parameters": {}}]), ("function_call", {"name": "f"}),
    ("response_format", {"type": "json_object"}),
    ("response_format", {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}),
    ("best_of", 3), ("audio", {"voice": "alloy", "format": "wav"}), ("modalities", ["text", "audio"]),
    ("reasoning_effort", "low"), ("web_search_options", {}), ("frobnicate", 1),
]


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
@pytest.mark.parametrize("field,value", UNSUPPORTED)
def test_unsupported_fields_are_a_400_not_ignored(server, path, field, value):
    body = {"model": MODEL_ID, "max_tokens": 2, field: value}
    body.update({"prompt": "x"} if path == "/v1/completions" else {"messages": [{"role": "user", "content": "x"}]})
    err = assert_openai_error(post(server, path, body), 400, field)
    assert "not supported" in err["message"] and err["code"] == "unsupported_parameter"


def test_fields_of_the_other_endpoint_are_refused(server):
    chat_only = {"model": MODEL_ID, "prompt": "x", "max_tokens": 2, "top_logprobs": 2}
    assert_openai_error(post(server, "/v1/completions", chat_only), 400, "top_logprobs")
    completion_only = {"model": MODEL_ID, "messages": [{"role": "user", "content": "x"}], "max_tokens": 2, "echo": True}
    assert_openai_error(post(server, "/v1/chat/completions", completion_only), 400, "echo")


def test_harmless_and_switched_off_fields_are_accepted(server):
    harmless = {"user": "u-1", "metadata": {"k": "v"}, "store": False, "service_tier": "auto",
                "parallel_tool_calls": False, "logit_bias": {}, "tools": [], "tool_choice": "none",
                "response_format": {"type": "text"}, "functions": None, "best_of": 1, "modalities": ["text"]}
    r = post(server, "/v1/chat/completions", {"model": MODEL_ID, "max_tokens": 2,
                                              "messages": [{"role": "user", "content": "x"}], **harmless})
    assert r.status_code == 200, r.text
    r = post(server, "/v1/completions", {"model": MODEL_ID, "prompt": "x", "max_tokens": 2, "user": "u-1",
                                         "logit_bias": {}, "best_of": 1})
    assert r.status_code == 200, r.text


def test_openai_client_gets_bad_request_for_tools(server):
    # tools are implemented on chat (tests/test_server_tools.py); a schema the server cannot offer is a 400
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0, timeout=60)
    with pytest.raises(openai.BadRequestError, match="tools"):
        client.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": "x"}], max_tokens=2,
                                       tools=[{"type": "function", "function": {"name": "f", "parameters": []}}])


def test_completion_stream_include_usage(server):
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0, timeout=60)
    kw = dict(model=MODEL_ID, prompt="Hi", max_tokens=5, temperature=0)
    chunks = list(client.completions.create(**kw, stream=True, stream_options={"include_usage": True}))
    assert chunks[-1].choices == [] and chunks[-1].usage == client.completions.create(**kw).usage
    assert_openai_error(post(server, "/v1/completions", {"model": MODEL_ID, "prompt": "x", "stream": True,
                                                         "stream_options": "yes"}), 400, "stream_options")


def test_top_k_error_reads_sensibly(server):
    err = assert_openai_error(post(server, "/v1/completions", {"model": MODEL_ID, "prompt": "x", "top_k": -5}),
                              400, "top_k")
    assert err["message"] == "'top_k' must be >= -1 (-1 or 0 = off), got -5"
    for body in [{"seed": 2**70}, {"n": 0}, {"max_tokens": -1}, {"logprobs": -1}]:
        err = assert_openai_error(post(server, "/v1/completions", {"model": MODEL_ID, "prompt": "x", **body}), 400)
        assert "None" not in err["message"], err


def test_too_many_prompts_are_refused_before_encoding(server):
    r = post(server, "/v1/completions", {"model": MODEL_ID, "prompt": ["a"] * 100_000, "max_tokens": 1})
    err = assert_openai_error(r, 400, "prompt")
    assert "100000 prompts" in err["message"]


# ----------------------------------------------------------------------------- point 10: slow clients

def _raw(server, data: bytes, trickle: bytes = b"") -> bytes:
    """Send data, then trickle one byte of `trickle` every 0.05 s; return everything the server sends until it
    closes the connection. The 30 s socket timeout only keeps a broken server from hanging the test."""
    with socket.create_connection((server.host, server.port), timeout=30) as s:
        s.sendall(data)
        stop = threading.Event()

        def drip():
            for i in range(len(trickle)):
                if stop.wait(0.05):
                    return
                try:
                    s.sendall(trickle[i:i + 1])
                except OSError:  # the server closed the connection: what we want
                    return

        t = threading.Thread(target=drip, daemon=True)
        t.start()
        received = b""
        try:
            while chunk := s.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass
        finally:
            stop.set()
            t.join(timeout=10)
        return received


def _head(n_body: int) -> bytes:
    return (f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {n_body}\r\n\r\n").encode()


def _parse_408(received: bytes) -> dict:
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), received[:200]
    assert b"connection: close" in head.lower()
    err = json.loads(body)["error"]
    assert err["code"] == "request_timeout" and err["message"]
    return err


def test_slow_client_body_that_never_comes_gets_408_and_is_closed(server):
    body = json.dumps({"model": MODEL_ID, "prompt": "x", "max_tokens": 2}).encode()
    _parse_408(_raw(server, _head(len(body)) + body[:10]))  # headers and a tenth of the body, then nothing
    _parse_408(_raw(server, _head(len(body))))  # headers, then nothing
    assert_still_serving(server)


def test_slow_client_trickling_the_body_gets_408_and_is_closed(server):
    body = json.dumps({"model": MODEL_ID, "prompt": "x" * 200, "max_tokens": 2}).encode()
    # one byte per 0.05 s would take 11 s for the whole body; the server cuts it off after READ_TIMEOUT
    _parse_408(_raw(server, _head(len(body)), trickle=body))
    assert_still_serving(server)


def test_slow_client_that_never_finishes_its_headers_is_closed(server):
    assert _raw(server, b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n") == b""
    assert _raw(server, b"POST /v1/completions HTTP/1.1\r\n", trickle=b"X-Slow: " + b"a" * 400) == b""
    assert_still_serving(server)


def test_read_timeout_must_be_finite_and_positive():
    for bad in [0, -1, math.nan, math.inf]:
        with pytest.raises(ValueError, match="read_timeout"):
            create_app(make_engine(), read_timeout=bad)


# ----------------------------------------------------------------------------- point 3: the CLI

@pytest.fixture(scope="module")
def run(tiny_chat_run):
    return tiny_chat_run  # tests/conftest.py


BAD_SAMPLING_FLAGS = [
    ("--temperature", "nan"), ("--temperature", "inf"), ("--temperature", "-inf"), ("--temperature", "-1"),
    ("--top-p", "0"), ("--top-p", "1.5"), ("--top-p", "nan"), ("--min-p", "nan"), ("--min-p", "2"),
    ("--repetition-penalty", "nan"), ("--repetition-penalty", "0"), ("--repetition-penalty", "inf"),
    ("--top-k", "-1"), ("--max-new-tokens", "-1"),
]


def _one_line_error(rc: int, err: str, flag: str) -> None:
    """Exit code 2 and one line that names the setting (as the flag, or as SamplingParams spells it)."""
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert flag in lines[0] or flag.lstrip("-").replace("-", "_") in lines[0], err


@pytest.mark.parametrize("flag,value", BAD_SAMPLING_FLAGS + [("--batch-size", "0"), ("--gamma", "0")])
def test_generate_bad_sampling_flag_is_one_line_exit_2(run, capsys, flag, value):
    rc = main(["generate", "--run", str(run), "--prompt", "Once", "--max-new-tokens", "4", "--device", "cpu",
               f"{flag}={value}"])
    _one_line_error(rc, capsys.readouterr().err, flag)


@pytest.mark.parametrize("flag,value", [("--temperature", "nan"), ("--top-p", "1.5"), ("--repetition-penalty", "inf"),
                                        ("--min-p", "-inf")])
def test_chat_bad_sampling_flag_is_one_line_exit_2(run, capsys, monkeypatch, flag, value):
    monkeypatch.setattr(sys, "stdin", io.StringIO("Hello\n"))
    rc = main(["chat", "--run", str(run), "--max-new-tokens", "4", "--device", "cpu", f"{flag}={value}"])
    _one_line_error(rc, capsys.readouterr().err, flag)


@pytest.mark.parametrize("flag,value", [("--read-timeout", "nan"), ("--read-timeout", "inf"), ("--read-timeout", "0"),
                                        ("--read-timeout", "-5"), ("--max-batch", "0")])
def test_serve_bad_flag_is_one_line_exit_2(run, capsys, monkeypatch, flag, value):
    import scratchlm.inference.server as server_module

    def must_not_start(*a, **k):
        raise AssertionError("the server started despite a bad flag")

    monkeypatch.setattr(server_module, "run_server", must_not_start)
    rc = main(["serve", "--run", str(run), "--device", "cpu", f"{flag}={value}"])
    _one_line_error(rc, capsys.readouterr().err, flag)


def test_serve_read_timeout_reaches_the_app(run, monkeypatch):
    import scratchlm.inference.server as server_module

    seen = {}
    monkeypatch.setattr(server_module, "run_server", lambda app, **kw: seen.update(app=app))
    assert main(["serve", "--run", str(run), "--device", "cpu", "--read-timeout", "2.5"]) == 0
    assert seen["app"].state.read_timeout == 2.5

