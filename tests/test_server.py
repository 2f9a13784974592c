"""The OpenAI-compatible server, driven by the official `openai` client and raw HTTP.

A mock bigram model and the byte tokenizer stand in for a trained model, so these tests check the HTTP
contract (shapes, streaming, errors, concurrency), not text quality."""

from __future__ import annotations

import json
import threading

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")

from scratchlm.inference.engine import Engine  # noqa: E402
from scratchlm.inference.sampling import SamplingParams  # noqa: E402
from scratchlm.inference.server import ServerThread, create_app  # noqa: E402
from scratchlm.inference.testing import ByteTokenizer, MarkovLM  # noqa: E402

MODEL_ID = "mock-bigram"
API_KEY = "sk-test-123"


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # tiny models decode fastest on one thread, and the CPU is shared: two threads on a busy machine are
    # many times slower than one
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_engine(max_seq_len: int = 256) -> Engine:
    tok = ByteTokenizer()
    return Engine(MarkovLM(tok.vocab_size, seed=0, max_seq_len=max_seq_len), tok)


@pytest.fixture(scope="module")
def server():
    engine = make_engine()
    with ServerThread(create_app(engine, model_id=MODEL_ID, api_key=API_KEY, max_batch=8)) as srv:
        srv.engine = engine
        yield srv


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=API_KEY, max_retries=0, timeout=60)


def test_models(client):
    models = client.models.list()
    assert [m.id for m in models.data] == [MODEL_ID]


def test_completion_matches_engine(client, server):
    r = client.completions.create(model=MODEL_ID, prompt="Hello", max_tokens=12, temperature=0)
    expected = server.engine.generate(["Hello"], SamplingParams(max_new_tokens=12, temperature=0))[0]
    assert r.choices[0].text == expected.text
    assert r.choices[0].finish_reason == expected.finish_reason
    assert r.usage.completion_tokens == len(expected.token_ids)
    assert r.usage.prompt_tokens == len("Hello") + 1  # + BOS


def test_completion_seed_reproducible_and_n(client):
    kw = dict(model=MODEL_ID, prompt=["ab", "xyz"], max_tokens=8, temperature=1.0, seed=7, n=2)
    a, b = client.completions.create(**kw), client.completions.create(**kw)
    assert [c.text for c in a.choices] == [c.text for c in b.choices]
    assert [c.index for c in a.choices] == [0, 1, 2, 3]
    assert a.choices[0].text != a.choices[1].text  # the n choices get different seeds


def test_completion_echo_logprobs_scores_prompt(client, server):
    # what evaluation harnesses do: score a continuation without generating
    r = client.completions.create(model=MODEL_ID, prompt="The cat", max_tokens=0, echo=True, logprobs=2)
    c = r.choices[0]
    assert c.text == "The cat"
    lp = c.logprobs
    assert "".join(lp.tokens) == "The cat"
    # reference: log-softmax of the bigram table, conditioned on the previous token (BOS for the first)
    tok = server.engine.tokenizer
    ids = [tok.bos_id] + tok.encode("The cat")
    table = torch.log_softmax(server.engine.model.table.float(), dim=-1)
    ref = [float(table[a, b]) for a, b in zip(ids[:-1], ids[1:])]
    assert lp.token_logprobs == pytest.approx(ref, abs=1e-5)
    assert all(len(t) == 2 for t in lp.top_logprobs)
    assert lp.text_offset == list(range(len("The cat")))


def test_completion_logprobs_of_generated_tokens(client, server):
    r = client.completions.create(model=MODEL_ID, prompt="Hi", max_tokens=5, temperature=0, logprobs=3)
    lp = r.choices[0].logprobs
    assert len(lp.token_logprobs) == len(lp.tokens) == 5
    for chosen, top in zip(lp.token_logprobs, lp.top_logprobs):
        assert chosen == pytest.approx(max(top.values()), abs=1e-6)  # greedy picks the most likely token


def test_completion_stream(client, server):
    stream = client.completions.create(model=MODEL_ID, prompt="Hello", max_tokens=12, temperature=0, stream=True)
    chunks = list(stream)
    text = "".join(c.choices[0].text for c in chunks)
    expected = server.engine.generate(["Hello"], SamplingParams(max_new_tokens=12, temperature=0))[0]
    assert text == expected.text
    assert chunks[-1].choices[0].finish_reason == "length"


def test_chat_and_chat_stream(client):
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}]
    r = client.chat.completions.create(model=MODEL_ID, messages=msgs, max_tokens=10, temperature=0)
    assert r.choices[0].message.role == "assistant"
    assert r.object == "chat.completion"
    stream = client.chat.completions.create(model=MODEL_ID, messages=msgs, max_tokens=10, temperature=0, stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == r.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == r.choices[0].finish_reason
    assert chunks[-1].usage.completion_tokens == r.usage.completion_tokens


def test_chat_extra_sampling_params_and_logprobs(client):
    r = client.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": "x"}], max_tokens=6,
                                       temperature=0.7, seed=1, logprobs=True, top_logprobs=2,
                                       extra_body={"top_k": 5, "min_p": 0.05, "repetition_penalty": 1.2})
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens
    assert all(len(t.top_logprobs) == 2 for t in content)


def test_sse_wire_format(server):
    with httpx.stream("POST", server.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {API_KEY}"},
                      json={"model": MODEL_ID, "messages": [{"role": "user", "content": "hey"}], "max_tokens": 4,
                            "stream": True}, timeout=30) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"
    for line in lines[:-1]:
        json.loads(line[6:])


def _post(server, path, content=None, json_body=None, key=API_KEY):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    if content is not None:
        headers["Content-Type"] = "application/json"
    return httpx.post(server.url + path, content=content, json=json_body, headers=headers, timeout=30)


@pytest.mark.parametrize("path,body,status,param", [
    ("/v1/completions", b"{not json", 400, None),
    ("/v1/completions", b"[1, 2]", 400, None),
    ("/v1/completions", {"model": "nope", "prompt": "x"}, 404, "model"),
    ("/v1/completions", {"model": MODEL_ID, "prompt": "x" * 300}, 400, "prompt"),  # longer than the context (256)
    ("/v1/completions", {"model": MODEL_ID, "prompt": "x", "max_tokens": -1}, 400, "max_tokens"),
    ("/v1/completions", {"model": MODEL_ID, "prompt": "x", "max_tokens": 10**6}, 400, "max_tokens"),
    ("/v1/completions", {"model": MODEL_ID, "prompt": "x" * 200, "max_tokens": 100}, 400, "max_tokens"),
    ("/v1/completions", {"model": MODEL_ID, "prompt": "x", "temperature": "hot"}, 400, "temperature"),
    ("/v1/completions", {"model": MODEL_ID, "prompt": "x", "top_p": 1.5}, 400, "top_p"),
    ("/v1/completions", {"model": MODEL_ID, "prompt": [10**9]}, 400, "prompt"),
    ("/v1/completions", {"model": MODEL_ID}, 400, "prompt"),
    ("/v1/completions", {"model": MODEL_ID, "prompt": "x", "logprobs": 99}, 400, "logprobs"),
    ("/v1/chat/completions", {"model": MODEL_ID, "messages": []}, 400, "messages"),
    ("/v1/chat/completions", {"model": MODEL_ID, "messages": [{"role": "wizard", "content": "x"}]}, 400, "messages"),
    ("/v1/chat/completions", {"model": MODEL_ID, "messages": [{"role": "user", "content": "x" * 400}]}, 400, "prompt"),
    ("/v1/nothing", {"model": MODEL_ID}, 404, None),
])
def test_bad_requests_get_openai_errors(server, path, body, status, param):
    r = _post(server, path, content=body) if isinstance(body, bytes) else _post(server, path, json_body=body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["message"] and err["type"]
    if param:
        assert err["param"] == param
    assert _post(server, "/v1/completions", json_body={"model": MODEL_ID, "prompt": "ok", "max_tokens": 2}).status_code == 200


def test_oversized_body_is_413(server):
    r = _post(server, "/v1/completions", content=b'{"prompt": "' + b"x" * (5 * 1024 * 1024) + b'"}')
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "request_too_large"


def test_wrong_api_key_is_401(server):
    bad = openai.OpenAI(base_url=server.url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    assert _post(server, "/v1/completions", json_body={"prompt": "x"}, key=None).status_code == 401


def test_16_concurrent_streams_all_complete(server, client):
    results: dict[int, str] = {}
    errors: list[BaseException] = []

    def one(i: int) -> None:
        try:
            s = client.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": f"req {i}"}],
                                               max_tokens=20 + i, temperature=0.8, seed=i, stream=True,
                                               extra_body={"ignore_eos": True})
            finish, text = None, ""
            for c in s:
                if c.choices:
                    text += c.choices[0].delta.content or ""
                    finish = c.choices[0].finish_reason or finish
            results[i] = finish
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert sorted(results) == list(range(16))
    assert all(f in ("length", "stop") for f in results.values())


def test_chat_page_served(server):
    r = httpx.get(server.url + "/", timeout=10)
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    assert "/v1/chat/completions" in r.text
    assert "http://" not in r.text and "https://" not in r.text  # no external assets
