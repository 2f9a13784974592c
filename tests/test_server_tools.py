"""Issue 19.5: `scratchlm serve` speaks OpenAI's tool protocol, driven by the official `openai` client.

The model is ScriptedLM (scratchlm/inference/testing.py): it writes a fixed reply for a prompt (a call of
get_weather when tools are offered and the user asks, an answer from the result when a tool turn comes back),
because a tiny trained model calls a tool only sometimes and this test is about the protocol. Everything around
it is real: the engine and its KV cache, the batcher, the chat template that offers the tools, the parser that
reads the call back, the HTTP layer and the client. docs/tools.md measures what a trained model does."""

from __future__ import annotations

import json
import re

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")

from scratchlm.inference.chat_template import format_tool_call  # noqa: E402
from scratchlm.inference.engine import Engine  # noqa: E402
from scratchlm.inference.server import ServerThread, create_app  # noqa: E402
from scratchlm.inference.testing import ByteTokenizer, ScriptedLM  # noqa: E402

MODEL_ID = "scripted"
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city now.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
PROMPTS = []  # every prompt the model saw, to check what the template offered it


def script(prompt: str) -> str:
    PROMPTS.append(prompt)
    role, _, body = prompt.rsplit("<|im_start|>", 2)[-2].partition("\n")
    body = body.split("<|im_end|>")[0]
    if role == "tool":
        return f"It is {body}."
    if "Tools:" in prompt and "weather" in body:
        cities = re.findall(r"Paris|Oslo", body)
        return "Let me look.\n" + "\n".join(format_tool_call("get_weather", {"city": c}) for c in cities)
    if "Tools:" in prompt and "missiles" in body:
        return format_tool_call("launch_missiles", {})
    return "Hello."


def get_weather(city: str) -> str:  # the client's own function
    return {"Paris": "sunny, 21 C", "Oslo": "snow, -3 C"}[city]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def server():
    tok = ByteTokenizer()
    engine = Engine(ScriptedLM(tok, script, max_seq_len=2048), tok)
    with ServerThread(create_app(engine, model_id=MODEL_ID, max_batch=8)) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="none", max_retries=0, timeout=60)


def run_calls(message) -> list[dict]:
    """What an application does with tool_calls: run each function, answer with a role "tool" message."""
    return [{"role": "tool", "tool_call_id": c.id, "content": get_weather(**json.loads(c.function.arguments))}
            for c in message.tool_calls]


def test_openai_client_tool_call_round_trip(client):
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    r = client.chat.completions.create(model=MODEL_ID, messages=messages, tools=[WEATHER], temperature=0)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Let me look."
    [call] = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
    assert '"name": "get_weather"' in PROMPTS[-1].split("<|im_start|>user")[0]  # offered in the system turn

    messages += [choice.message.model_dump(exclude_none=True)] + run_calls(choice.message)
    r = client.chat.completions.create(model=MODEL_ID, messages=messages, tools=[WEATHER], temperature=0)
    assert r.choices[0].finish_reason == "stop"
    assert r.choices[0].message.content == "It is sunny, 21 C." and r.choices[0].message.tool_calls is None
    assert "<|im_start|>tool\nsunny, 21 C<|im_end|>" in PROMPTS[-1]


def test_parallel_calls_and_parallel_tool_calls_false(client):
    ask = [{"role": "user", "content": "The weather in Paris and Oslo?"}]
    r = client.chat.completions.create(model=MODEL_ID, messages=ask, tools=[WEATHER], temperature=0)
    calls = r.choices[0].message.tool_calls
    assert [json.loads(c.function.arguments)["city"] for c in calls] == ["Paris", "Oslo"]
    results = run_calls(r.choices[0].message)
    r2 = client.chat.completions.create(model=MODEL_ID, messages=ask + [r.choices[0].message.model_dump(
        exclude_none=True)] + results[::-1], tools=[WEATHER], temperature=0)  # results may come in any order
    assert r2.choices[0].message.content == "It is sunny, 21 C."  # the last tool turn is Paris's
    r = client.chat.completions.create(model=MODEL_ID, messages=ask, tools=[WEATHER], parallel_tool_calls=False)
    assert len(r.choices[0].message.tool_calls) == 1


def test_streamed_tool_call(client):
    stream = client.chat.completions.create(model=MODEL_ID, messages=[{"role": "user", "content": "weather in Oslo?"}],
                                            tools=[WEATHER], temperature=0, stream=True)
    content, calls, finish = "", [], None
    for chunk in stream:
        delta = chunk.choices[0].delta
        content += delta.content or ""
        calls += delta.tool_calls or []
        finish = chunk.choices[0].finish_reason or finish
    assert content == "Let me look." and finish == "tool_calls"  # the call's text never leaks into content
    assert [(c.index, c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        (0, "get_weather", {"city": "Oslo"})]


def test_tool_choice_none_and_unoffered_tools_give_text(client):
    ask = [{"role": "user", "content": "What is the weather in Paris?"}]
    r = client.chat.completions.create(model=MODEL_ID, messages=ask, tools=[WEATHER], tool_choice="none")
    assert r.choices[0].message.content == "Hello." and r.choices[0].finish_reason == "stop"
    assert "Tools:" not in PROMPTS[-1]
    # a call of a function the client did not offer is not a tool call: the client gets the text
    r = client.chat.completions.create(model=MODEL_ID, tools=[WEATHER],
                                       messages=[{"role": "user", "content": "launch the missiles"}])
    assert r.choices[0].finish_reason == "stop" and r.choices[0].message.tool_calls is None
    assert "launch_missiles" in r.choices[0].message.content
    # without tools the server reads no calls at all, and old requests are answered as before
    r = client.chat.completions.create(model=MODEL_ID, messages=ask)
    assert r.choices[0].message.content == "Hello." and "Tools:" not in PROMPTS[-1]


BAD_REQUESTS = [
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": []}}]}, "tools", "JSON Schema object"),
    ({"tools": [{"type": "function", "function": {"name": "bad name"}}]}, "tools", "name must be 1-64"),
    ({"tools": [{"type": "function", "function": {"name": "f", "paramters": {}}}]}, "tools", "unknown field"),
    ({"tools": {"type": "function"}}, "tools", "must be a list"),
    ({"tools": [WEATHER, WEATHER]}, "tools", "given twice"),
    ({"tool_choice": "required", "tools": [WEATHER]}, "tool_choice", "not supported"),
    ({"tool_choice": {"type": "function", "function": {"name": "get_weather"}}, "tools": [WEATHER]}, "tool_choice",
     "not supported"),
    ({"parallel_tool_calls": "yes", "tools": [WEATHER]}, "parallel_tool_calls", "must be a boolean"),
    ({"messages": [{"role": "tool", "tool_call_id": "x", "content": "7"}]}, "messages", "does not follow"),
    ({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "content": "7"}]}, "messages", "tool_call_id is missing"),
    ({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "not json"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "7"}]}, "messages", "JSON object"),
    ({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": None, "tool_calls": [
        {"type": "function", "function": {"name": "f", "arguments": "{}"}}]}]}, "messages", "id must be a string"),
    ({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "user", "content": "and?"}]}, "messages", "no 'tool' result"),
]


@pytest.mark.parametrize("fields,param,why", BAD_REQUESTS)
def test_bad_tool_schemas_and_messages_are_a_400_with_one_line(server, fields, param, why):
    body = {"model": MODEL_ID, "max_tokens": 4, "messages": [{"role": "user", "content": "x"}], **fields}
    r = httpx.post(server.url + "/v1/chat/completions", json=body, timeout=30)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == param and why in err["message"] and "\n" not in err["message"]


def test_tools_on_completions_are_refused(server):
    body = {"model": MODEL_ID, "prompt": "x", "max_tokens": 2, "tools": [WEATHER]}
    r = httpx.post(server.url + "/v1/completions", json=body, timeout=30)
    assert r.status_code == 400 and "/v1/chat/completions" in r.json()["error"]["message"]
