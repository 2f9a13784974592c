"""What the chat page needs from the server, over plain HTTP: the context length (GET /v1/models), token counts
(POST /tokenize) and a generation that stops when its client goes away (the page's Stop button).

The browser side of the same features is in test_server_browser.py."""

from __future__ import annotations

import time

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from scratchlm.inference.chat_template import encode_chat  # noqa: E402
from scratchlm.inference.engine import Engine  # noqa: E402
from scratchlm.inference.server import ServerThread, create_app  # noqa: E402
from scratchlm.inference.testing import ByteTokenizer, MarkovLM  # noqa: E402

MODEL_ID = "mock-bigram"
API_KEY = "sk-test-123"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"},
        {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "And again"}]
TOOLS = [{"type": "function", "function": {"name": "add", "description": "Add two numbers",
                                           "parameters": {"type": "object", "properties": {"a": {"type": "number"}}}}}]


class CountingMarkov(MarkovLM):
    """A bigram model that counts its forward passes and takes `delay` seconds over each, so a test can see
    whether generation went on after the client left."""

    def __init__(self, *args, delay: float = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.delay, self.forwards = delay, 0
        with torch.no_grad():  # printable ASCII only: never a stop token, so only max_tokens or a cancel ends it
            self.table[:, :32] = -1e4
            self.table[:, 127:] = -1e4

    def forward(self, idx, *args, **kwargs):
        self.forwards += 1
        time.sleep(self.delay)
        return super().forward(idx, *args, **kwargs)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models decode fastest on one thread, and the CPU is shared
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def server():
    tok = ByteTokenizer()
    engine = Engine(MarkovLM(tok.vocab_size, seed=0, max_seq_len=128), tok)
    with ServerThread(create_app(engine, model_id=MODEL_ID, api_key=API_KEY)) as srv:
        srv.engine = engine
        yield srv


def _tokenize(server, body, headers=AUTH):
    return httpx.post(server.url + "/tokenize", json=body, headers=headers, timeout=30)


def test_models_report_the_context(server):
    r = httpx.get(server.url + "/v1/models", headers=AUTH, timeout=30)
    assert r.status_code == 200
    assert r.json()["data"][0]["max_model_len"] == 128


def test_tokenize_counts_what_chat_completions_sends(server):
    tok = server.engine.tokenizer
    r = _tokenize(server, {"model": MODEL_ID, "messages": CHAT})
    assert r.status_code == 200, r.text
    j = r.json()
    assert j["tokens"] == encode_chat(tok, CHAT) and j["count"] == len(j["tokens"])
    assert j["max_model_len"] == 128
    # the same count the completion endpoint charges as prompt_tokens
    usage = httpx.post(server.url + "/v1/chat/completions", headers=AUTH, timeout=30,
                       json={"messages": CHAT, "max_tokens": 2}).json()["usage"]
    assert usage["prompt_tokens"] == j["count"]
    # without the assistant header, and with tools rendered into the system turn
    r = _tokenize(server, {"messages": CHAT, "add_generation_prompt": False})
    assert r.json()["tokens"] == encode_chat(tok, CHAT, add_generation_prompt=False)
    r = _tokenize(server, {"messages": CHAT, "tools": TOOLS})
    assert r.json()["tokens"] == encode_chat(tok, CHAT, tools=TOOLS) and r.json()["count"] > j["count"]
    assert _tokenize(server, {"messages": CHAT, "tools": TOOLS, "tool_choice": "none"}).json()["count"] == j["count"]


def test_tokenize_prompt_counts_bos_like_completions(server):
    r = _tokenize(server, {"prompt": "Hello"})
    assert r.json()["tokens"] == server.engine.encode("Hello")
    assert r.json()["count"] == len("Hello") + 1  # + BOS, as /v1/completions counts prompt_tokens


def test_tokenize_counts_a_chat_longer_than_the_context(server):
    # the page asks precisely to find out that a chat no longer fits: a count, not a 400
    r = _tokenize(server, {"messages": [{"role": "user", "content": "x" * 400}]})
    assert r.status_code == 200
    assert r.json()["count"] > r.json()["max_model_len"]


@pytest.mark.parametrize("body,status,param", [
    (b"{not json", 400, None),
    (b"[1, 2]", 400, None),
    ({}, 400, "messages"),
    ({"prompt": "x", "messages": CHAT}, 400, "messages"),
    ({"prompt": [1, 2, 3]}, 400, "prompt"),
    ({"messages": []}, 400, "messages"),
    ({"messages": [{"role": "wizard", "content": "x"}]}, 400, "messages"),
    ({"messages": "hello"}, 400, "messages"),
    ({"messages": CHAT, "add_generation_prompt": "yes"}, 400, "add_generation_prompt"),
    ({"messages": CHAT, "tools": [{"type": "function"}]}, 400, "tools"),
    ({"messages": CHAT, "tool_choice": "required"}, 400, "tool_choice"),
    ({"messages": CHAT, "max_tokens": 5}, 400, "max_tokens"),  # not a field of /tokenize: refused, not ignored
    ({"model": "nope", "messages": CHAT}, 404, "model"),
])
def test_tokenize_bad_input(server, body, status, param):
    if isinstance(body, bytes):
        r = httpx.post(server.url + "/tokenize", content=body, timeout=30,
                       headers={**AUTH, "Content-Type": "application/json"})
    else:
        r = _tokenize(server, body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["message"] and err["type"]
    if param:
        assert err["param"] == param
    assert _tokenize(server, {"messages": CHAT}).status_code == 200  # the server is still fine


def test_tokenize_needs_the_api_key(server):
    assert _tokenize(server, {"messages": CHAT}, headers={}).status_code == 401
    assert _tokenize(server, {"messages": CHAT}, headers={"Authorization": "Bearer wrong"}).status_code == 401


def test_page_uses_tokenize_and_the_context(server):
    page = httpx.get(server.url + "/", timeout=30).text
    assert "/tokenize" in page and "max_model_len" in page and "AbortController" in page


def test_a_client_that_disconnects_stops_its_generation():
    """What the page's Stop button relies on: the browser aborts the fetch, the connection closes, and the
    server stops decoding for it instead of spending the rest of max_tokens on nobody."""
    tok = ByteTokenizer()
    model = CountingMarkov(tok.vocab_size, seed=0, max_seq_len=512, delay=0.01)
    engine = Engine(model, tok)
    max_tokens = 400  # 4 s of decoding at 10 ms a step if nothing stops it
    with ServerThread(create_app(engine, model_id=MODEL_ID)) as srv:
        with httpx.Client(timeout=30) as client:
            with client.stream("POST", srv.url + "/v1/chat/completions",
                               json={"messages": [{"role": "user", "content": "go"}], "max_tokens": max_tokens,
                                     "stream": True, "ignore_eos": True}) as r:
                assert r.status_code == 200
                events = (line for line in r.iter_lines() if line.startswith("data: "))
                for _ in range(4):  # the role chunk and three content chunks: generation is under way
                    next(events)
            # the stream's connection is closed here (the client's pool is closed below with it)
        # one batch runs at a time: this answer comes only once the abandoned one has stopped
        r = httpx.post(srv.url + "/v1/chat/completions", timeout=60,
                       json={"messages": [{"role": "user", "content": "next"}], "max_tokens": 1})
        assert r.status_code == 200
    # prefill + a few decode steps + the steps until the disconnect was noticed, far from max_tokens
    assert model.forwards < max_tokens // 2, f"{model.forwards} forwards after the client left at ~3 tokens"
