"""Issue 19.5, tool use: the calculator, the chat template's tool turns, the loop that runs calls, TinyWorld's
tool conversations, and `chat` / `generate --chat` with --tools.

Models: ScriptedLM (scratchlm/inference/testing.py) writes a fixed reply for a prompt, so the tool loop is tested
with the real engine and tokenizer path and a model that reliably calls; whether a trained model learns to call
is measured, not tested (docs/tools.md)."""

from __future__ import annotations

import io
import itertools
import json
import re
import sys
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scratchlm.inference.calculator import CalculatorError, calculate, evaluate, format_number
from scratchlm.inference.chat_template import (CHAT_TEMPLATE, encode_chat, format_tool_call, parse_tool_calls,
                                               render_chat, validate_messages, validate_tools)

# ----------------------------------------------------------------------------- the calculator

# Numbers small enough that no bound can trip for 8 leaves: every intermediate numerator and denominator stays
# below 999**8 < 1e24, so any difference from Python's arithmetic is a parsing or arithmetic bug.
NUMBER = st.one_of(st.integers(0, 999).map(str),
                   st.tuples(st.integers(0, 99), st.integers(0, 9)).map(lambda t: f"{t[0]}.{t[1]}"),
                   st.integers(0, 9).map(lambda d: f".{d}"))


def _compose(children):
    return st.one_of(
        st.tuples(children, st.sampled_from(["+", "-", "*", "/"]), children,
                  st.sampled_from(["", " "])).map(lambda t: f"{t[0]}{t[3]}{t[1]}{t[3]}{t[2]}"),
        children.map(lambda c: f"({c})"),
        children.map(lambda c: f"-{c}"),
    )


EXPRESSION = st.recursive(NUMBER, _compose, max_leaves=8)


def python_value(expression: str) -> Fraction:
    """Python's own parse and exact arithmetic of the same text: each literal becomes a Fraction, operators and
    parentheses stay as they are. (eval here runs only strings this test generated from digits and + - * / ( ).)"""
    assert re.fullmatch(r"[0-9. +\-*/()]+", expression)
    code = re.sub(r"\d+\.?\d*|\.\d+", lambda m: f"Fraction('{m.group(0)}')", expression)
    return eval(code, {"__builtins__": {}, "Fraction": Fraction})  # noqa: S307


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(EXPRESSION)
def test_calculator_agrees_with_python_arithmetic(expression):
    try:
        expected = python_value(expression)
    except ZeroDivisionError:
        with pytest.raises(CalculatorError, match="division by zero"):
            evaluate(expression)
        return
    assert evaluate(expression) == expected
    shown = calculate(expression)
    assert shown == format_number(expected)
    assert float(shown) == pytest.approx(float(expected), rel=1e-11, abs=1e-11)


@settings(max_examples=200, deadline=None)
@given(st.integers(-10**29, 10**29), st.integers(1, 10**6))
def test_calculator_formats_integers_exactly_and_fractions_to_12_digits(n, d):
    assert calculate(str(n).replace("-", "- ")) == str(n)
    value = Fraction(n, d)
    text = format_number(value)
    assert "e" not in text.lower() and "\n" not in text
    assert abs(Fraction(text) - value) <= abs(value) * Fraction(1, 10**11) + Fraction(1, 10**30)


def test_calculator_examples():
    assert calculate("3 + 4 * (2 - 0.5)") == "9"
    assert calculate("0.1 + 0.2") == "0.3"  # exact, not 0.30000000000000004
    assert calculate("1 / 3") == "0.333333333333"
    assert calculate("-2 * -3") == "6" and calculate("10 / 4") == "2.5" and calculate("--5") == "5"
    assert calculate("-" * 199 + "1") == "-1"  # a long run of signs is a loop, not recursion


HOSTILE = [
    "__import__('os').system('ls')", "().__class__.__bases__[0].__subclasses__()", "open('/etc/passwd').read()",
    "2**99999999", "9**9**9", "1e999999", "10**1000", "9" * 31, "1" + "0" * 30 + " * 10",
    "999999999999999 * " * 3 + "1",
    "(" * 50 + "1" + ")" * 50, "(" * 1000 + "1" + ")" * 1000, "1" + "+1" * 150, "1/0", "1 / (2 - 2)", "0x10",
    "1_000", "\u0663 + 1", "1,5", "abs(-1)", "", "   ", "1 2", "(1", "1)", ")(", "*", "1 +", "1..2", ".", "\x00",
    ("1" + " / 3" * 65)[:199],  # each step fine, the denominator 3**65 too long
]


@pytest.mark.parametrize("expression", HOSTILE, ids=lambda e: repr(e[:24]))
def test_hostile_input_is_refused_with_one_line(expression):
    with pytest.raises(CalculatorError) as e:
        calculate(expression)
    assert isinstance(e.value, ValueError) and "\n" not in str(e.value) and len(str(e.value)) < 200


def test_non_string_expression_and_bad_arguments_are_refused():
    from scratchlm.inference.tools import BUILTIN_TOOLS, run_tool

    with pytest.raises(CalculatorError, match="string"):
        calculate(None)
    tools = {"calculator": BUILTIN_TOOLS["calculator"]}
    assert run_tool(tools, "calculator", {"expression": "6 * 7"}) == "42"
    assert run_tool(tools, "calculator", {"expr": "6 * 7"}).startswith("error: the calculator takes one argument")
    assert run_tool(tools, "calculator", {"expression": "1/0"}).startswith("error: division by zero")
    assert run_tool(tools, "rm", {}) == "error: there is no tool 'rm'; the tools are: calculator"


# ----------------------------------------------------------------------------- the chat template

# The template before tools (scratchlm 2026-12, commit 093eaad): old chats must render byte for byte as it did.
OLD_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
OLD_CHATS = [
    [{"role": "user", "content": "hi"}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "2+2?"},
     {"role": "assistant", "content": "4"}, {"role": "user", "content": "and 3+3?\n"}],
    [{"role": "user", "content": "<tool_call>{}</tool_call> is just text here"}, {"role": "assistant", "content": ""}],
    [{"role": "system", "content": ""}, {"role": "user", "content": "multi\nline  text \u00e9\u4e2d"}],
]
CALC = {"type": "function", "function": {"name": "calculator", "description": "Arithmetic: + - * / ( )",
                                         "parameters": {"type": "object",
                                                        "properties": {"expression": {"type": "string"}}}}}
TOOL_CHAT = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "What is 3 plus 4?"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "calculator", "arguments": '{"expression": "3 + 4"}'}}]},
    {"role": "tool", "tool_call_id": "c1", "content": "7"},
    {"role": "assistant", "content": "3 plus 4 is 7."},
]


def _bpe():
    from scratchlm.tokenizer import train_bpe_from_texts

    return train_bpe_from_texts(['user assistant system tool calculator "expression" 3 + 4 is 7 ' * 30],
                                vocab_size=300)


def test_old_chats_render_byte_identically():
    jinja2 = pytest.importorskip("jinja2")
    old, new = jinja2.Environment().from_string(OLD_TEMPLATE), jinja2.Environment().from_string(CHAT_TEMPLATE)
    tok = _bpe()
    bos, start, end = tok.bos_id, tok.special_tokens["<|im_start|>"], tok.special_tokens["<|im_end|>"]
    for chat in OLD_CHATS:
        for gen in (True, False):
            before = old.render(messages=chat, add_generation_prompt=gen, bos_token="<|bos|>")
            assert render_chat(chat, add_generation_prompt=gen) == before
            assert new.render(messages=chat, add_generation_prompt=gen, bos_token="<|bos|>") == before
            # and the ids, as encode_chat made them before tools existed
            ids = [bos] + [t for m in chat for t in [start] + tok.encode(f"{m['role']}\n{m['content']}") + [end]
                           + tok.encode("\n")]
            ids += [start] + tok.encode("assistant\n") if gen else []
            assert encode_chat(tok, chat, add_generation_prompt=gen) == ids


def test_tool_turns_render_as_documented():
    assert render_chat(TOOL_CHAT, tools=[CALC], add_generation_prompt=False) == (
        "<|bos|><|im_start|>system\nYou are terse.\n\nTools:\n"
        '{"name": "calculator", "description": "Arithmetic: + - * / ( )", "parameters": {"type": "object", '
        '"properties": {"expression": {"type": "string"}}}}<|im_end|>\n'
        "<|im_start|>user\nWhat is 3 plus 4?<|im_end|>\n"
        '<|im_start|>assistant\n<tool_call>{"name": "calculator", "arguments": {"expression": "3 + 4"}}'
        "</tool_call><|im_end|>\n"
        "<|im_start|>tool\n7<|im_end|>\n"
        "<|im_start|>assistant\n3 plus 4 is 7.<|im_end|>\n")
    # no system message: the tools get a system turn of their own; text and calls share a turn, one per line
    two = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Let me see.", "tool_calls": [
        {"id": "a", "type": "function", "function": {"name": "f", "arguments": {}}},
        {"id": "b", "type": "function", "function": {"name": "g", "arguments": {"x": "\u00e9"}}}]},
        {"role": "tool", "tool_call_id": "b", "content": "B"}, {"role": "tool", "tool_call_id": "a", "content": "A"}]
    text = render_chat(two, tools=[CALC])
    assert text.startswith("<|bos|><|im_start|>system\nTools:\n{")
    assert ('<|im_start|>assistant\nLet me see.\n<tool_call>{"name": "f", "arguments": {}}</tool_call>\n'
            '<tool_call>{"name": "g", "arguments": {"x": "\u00e9"}}</tool_call><|im_end|>') in text


def test_hf_apply_chat_template_renders_tool_turns_like_render_chat(tmp_path):
    transformers = pytest.importorskip("transformers")
    tok = _bpe()
    tok.save(tmp_path, chat_template=CHAT_TEMPLATE)
    hf = transformers.PreTrainedTokenizerFast.from_pretrained(str(tmp_path))
    dict_args = [dict(m, tool_calls=[{**c, "function": {**c["function"], "arguments": json.loads(
        c["function"]["arguments"])}} for c in m["tool_calls"]]) if "tool_calls" in m else m for m in TOOL_CHAT]
    for chat in (TOOL_CHAT, TOOL_CHAT[1:], dict_args, OLD_CHATS[1]):
        for tools in (None, [CALC]):
            for gen in (True, False):
                text = hf.apply_chat_template(chat, tools=tools, tokenize=False, add_generation_prompt=gen)
                assert text == render_chat(chat, tools=tools, add_generation_prompt=gen)
                assert tok.encode(text, allowed_special="all") == encode_chat(tok, chat, gen, tools=tools)


def test_sft_trains_the_call_and_the_answer_not_the_tool_result():
    from scratchlm.posttrain.formats import to_messages
    from scratchlm.posttrain.tokenize import encode_chat_with_mask

    tok = _bpe()
    msgs = to_messages({"tools": [CALC], "messages": TOOL_CHAT})
    ids, target = encode_chat_with_mask(tok, msgs)
    assert ids == encode_chat(tok, TOOL_CHAT, add_generation_prompt=False, tools=[CALC])
    trained = tok.decode([t for t, y in zip(ids, target) if y])
    assert trained == ('<tool_call>{"name": "calculator", "arguments": {"expression": "3 + 4"}}</tool_call>'
                       "<|im_end|>3 plus 4 is 7.<|im_end|>")
    assert "Tools:" in msgs[0]["content"]  # the offered tools are in the system turn the model reads


BAD_MESSAGES = [
    ([{"role": "tool", "content": "7"}], "does not follow an assistant message with tool_calls"),
    ([{"role": "user", "content": "x"}, {"role": "tool", "content": "7", "tool_call_id": "c1"}], "does not follow"),
    (TOOL_CHAT[:3] + [{"role": "tool", "tool_call_id": "zz", "content": "7"}], "names no unanswered call"),
    (TOOL_CHAT[:4] + [{"role": "tool", "tool_call_id": "c1", "content": "7"}], "names no unanswered call"),
    (TOOL_CHAT[:3] + [{"role": "user", "content": "go on"}], "with no 'tool' result"),
    ([{"role": "user", "content": "x", "tool_calls": []}], "only assistant messages call tools"),
    ([{"role": "assistant", "content": None, "tool_calls": {"id": "x"}}], "must be a list"),
    ([{"role": "assistant", "content": None, "tool_calls": [{"id": "x", "type": "function",
                                                             "function": {"name": "f", "arguments": "{oops"}}]}],
     "arguments must be a JSON object"),
    ([{"role": "assistant", "content": None, "tool_calls": [{"id": "x", "type": "function",
                                                             "function": {"name": "f", "arguments": "[1]"}}]}],
     "arguments must be a JSON object"),
    ([{"role": "assistant", "content": None, "tool_calls": [{"id": "x", "type": "function",
                                                             "function": {"name": "no spaces", "arguments": "{}"}}]}],
     "name must be 1-64"),
    ([{"role": "assistant", "content": None, "tool_calls": [{"id": 5, "type": "function",
                                                             "function": {"name": "f", "arguments": "{}"}}]}],
     "id must be a string"),
    ([{"role": "assistant", "content": None, "tool_calls": [{"type": "retrieval"}]}], "'type': 'function'"),
    ([{"role": "assistant", "content": None}], "content must be a string"),
]


@pytest.mark.parametrize("messages,why", BAD_MESSAGES)
def test_bad_tool_messages_are_refused_with_one_line(messages, why):
    with pytest.raises(ValueError, match=re.escape(why)) as e:
        validate_messages(messages)
    assert "\n" not in str(e.value)


def test_tool_ids_are_required_where_asked():
    no_ids = [dict(m) for m in TOOL_CHAT]
    no_ids[2] = {**no_ids[2], "tool_calls": [{k: v for k, v in no_ids[2]["tool_calls"][0].items() if k != "id"}]}
    no_ids[3] = {k: v for k, v in no_ids[3].items() if k != "tool_call_id"}
    assert validate_messages(no_ids)[3]["tool_call_id"] is None  # SFT data may leave ids out
    two = {**no_ids[2], "tool_calls": no_ids[2]["tool_calls"] * 2}  # results then answer the calls in order
    assert len(validate_messages(no_ids[:2] + [two, no_ids[3], no_ids[3]])) == 5
    with pytest.raises(ValueError, match="answers more tool calls"):
        validate_messages(no_ids[:2] + [two] + [no_ids[3]] * 3)
    with pytest.raises(ValueError, match="id must be a string"):
        validate_messages(no_ids, require_ids=True)  # the server: OpenAI's rule


BAD_TOOLS = [
    ({"type": "function"}, "must be a list"),
    ([{"type": "function", "function": {"name": "f"}}] * 2, "given twice"),
    ([{"type": "code_interpreter"}], "must be {'type': 'function'"),
    ([{"type": "function", "function": {"name": "f", "parameter": {}}}], "unknown field(s) function.parameter"),
    ([{"type": "function", "function": {"name": ""}}], "name must be 1-64"),
    ([{"type": "function", "function": {"name": "f", "parameters": {"type": "array"}}}], "JSON Schema object"),
    ([{"type": "function", "function": {"name": "f", "parameters": "x"}}], "JSON Schema object"),
    ([{"type": "function", "function": {"name": "f", "description": 3}}], "description must be a string"),
    ([{"type": "function", "function": {"name": "f", "strict": "yes"}}], "strict must be true or false"),
    ([{"type": "function", "function": {"name": f"f{i}"}} for i in range(129)], "at most 128"),
]


@pytest.mark.parametrize("tools,why", BAD_TOOLS)
def test_bad_tool_schemas_are_refused_with_one_line(tools, why):
    with pytest.raises(ValueError, match=re.escape(why)) as e:
        validate_tools(tools)
    assert "\n" not in str(e.value)


def test_parse_tool_calls_reads_what_the_template_writes():
    call = format_tool_call("calculator", {"expression": "6 * 7"})
    assert parse_tool_calls(call) == ("", [{"name": "calculator", "arguments": {"expression": "6 * 7"}}])
    assert parse_tool_calls("Sure.\n" + call + "\n" + call)[0] == "Sure."
    assert len(parse_tool_calls("Sure.\n" + call + "\n" + call)[1]) == 2
    for text in ("no call", "<tool_call>{not json}</tool_call>", call + "\n<tool_call>{\"name\": \"f\"",
                 '<tool_call>{"name": "f", "arguments": "6*7"}</tool_call>', '<tool_call>["f"]</tool_call>',
                 "<tool_call>" + "[" * 100000 + "</tool_call>"):
        assert parse_tool_calls(text) is None, text[:40]


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="<tool_call>/ ab\n", max_size=40), st.booleans(), st.lists(st.integers(1, 12), max_size=20))
def test_streamed_text_equals_the_reply_content(before, with_call, cuts):
    """Whatever the token boundaries, the text a streaming client sees equals what a non-streamed reply returns:
    the content before a call (a call is held back and sent whole), or all of the text when there is no call."""
    from scratchlm.inference.tools import ToolCallStream

    text = before + (format_tool_call("f", {"x": 1}) if with_call else "")
    pieces, i = [], 0
    for c in cuts + [len(text)]:
        pieces.append(text[i:i + c])
        i += c
    s = ToolCallStream()
    shown = "".join(s.push(p) for p in pieces)
    parsed = parse_tool_calls(text)
    if parsed is not None:
        assert shown == parsed[0]
    else:  # not a call after all (or a broken one): the held text is shown at the end, nothing is lost
        assert shown + s.flush() == text


# ----------------------------------------------------------------------------- the loop that runs calls

def _last_turn(prompt: str) -> tuple[str, str]:
    role, _, body = prompt.rsplit("<|im_start|>", 2)[-2].partition("\n")
    return role, body.split("<|im_end|>")[0]


def calculator_script(prompt: str) -> str:
    """What a model trained on tool conversations does: a question with numbers -> a call; a result -> an answer."""
    role, body = _last_turn(prompt)
    if role == "tool":
        return f"The answer is {body}."
    nums = re.findall(r"\d+", body)
    if "Tools:" in prompt and len(nums) == 2:
        op = {"times": "*", "plus": "+", "minus": "-", "over": "/"}[re.search(r"times|plus|minus|over", body).group()]
        return format_tool_call("calculator", {"expression": f"{nums[0]} {op} {nums[1]}"})
    return "I think it is 12."


def scripted_engine(script=calculator_script, max_seq_len: int = 1024):
    from scratchlm.inference.engine import Engine
    from scratchlm.inference.testing import ByteTokenizer, ScriptedLM

    tok = ByteTokenizer()
    return Engine(ScriptedLM(tok, script, max_seq_len=max_seq_len), tok)


def test_engine_runs_the_calculator_and_continues():
    from scratchlm.inference.sampling import SamplingParams
    from scratchlm.inference.tools import builtin_tools, chat_with_tools, final_answer

    engine, tools = scripted_engine(), builtin_tools(["calculator"])
    seen, streamed = [], []
    new = chat_with_tools(engine, [{"role": "user", "content": "What is 12 times 7?"}],
                          SamplingParams(max_new_tokens=200, temperature=0), tools,
                          on_text=streamed.append, on_tool=lambda *a: seen.append(a))
    assert [m["role"] for m in new] == ["assistant", "tool", "assistant"]
    assert new[0]["tool_calls"][0]["function"] == {"name": "calculator", "arguments": {"expression": "12 * 7"}}
    assert new[1] == {"role": "tool", "tool_call_id": new[0]["tool_calls"][0]["id"], "content": "84"}
    assert final_answer(new) == "The answer is 84." == "".join(streamed)  # the call's text is not streamed
    assert seen == [("calculator", {"expression": "12 * 7"}, "84")]
    # a tool error goes back to the model as the result, and nothing raises
    new = chat_with_tools(engine, [{"role": "user", "content": "What is 5 over 0?"}],
                          SamplingParams(max_new_tokens=200, temperature=0), tools)
    assert new[1]["content"].startswith("error: division by zero")
    assert final_answer(new).startswith("The answer is error: division by zero")
    # without tools offered the model answers in words and nothing runs
    new = chat_with_tools(engine, [{"role": "user", "content": "What is 12 times 7?"}],
                          SamplingParams(max_new_tokens=200, temperature=0), {})
    assert new == [{"role": "assistant", "content": "I think it is 12."}]


def test_calls_stop_after_max_rounds_and_batches_match_single_runs():
    from scratchlm.inference.sampling import SamplingParams
    from scratchlm.inference.tools import builtin_tools, chat_with_tools, chat_with_tools_batch

    always = lambda prompt: format_tool_call("calculator", {"expression": "1 + 1"})  # noqa: E731
    params, tools = SamplingParams(max_new_tokens=100, temperature=0), builtin_tools(["calculator"])
    new = chat_with_tools(scripted_engine(always), [{"role": "user", "content": "x"}], params, tools, max_rounds=3)
    assert [m["role"] for m in new].count("tool") == 3
    assert new[-1]["role"] == "assistant" and "tool_calls" not in new[-1] and "<tool_call>" in new[-1]["content"]
    engine = scripted_engine()
    convs = [[{"role": "user", "content": q}] for q in ("What is 3 plus 4?", "Hello", "What is 9 minus 2?")]
    batch = chat_with_tools_batch(engine, convs, params, tools, batch_size=2)
    single = [chat_with_tools(engine, c, params, tools) for c in convs]
    strip = lambda ms: [{k: v for k, v in m.items() if k not in ("tool_calls", "tool_call_id")} for m in ms]  # noqa
    assert [strip(b) for b in batch] == [strip(s) for s in single]
    assert [b[-1]["content"] for b in batch] == ["The answer is 7.", "I think it is 12.", "The answer is 7."]


def test_a_result_that_fills_the_context_ends_the_turn():
    from scratchlm.inference.sampling import SamplingParams
    from scratchlm.inference.tools import Tool, chat_with_tools, final_answer

    def call(prompt):
        return "done" if _last_turn(prompt)[0] == "tool" else format_tool_call("big", {})

    tools = {"big": Tool({"type": "function", "function": {"name": "big"}}, lambda args: "x" * 400)}
    new = chat_with_tools(scripted_engine(call, max_seq_len=256), [{"role": "user", "content": "go"}],
                          SamplingParams(max_new_tokens=60, temperature=0), tools)
    assert new[-1]["role"] == "tool" and final_answer(new) == ""


# ----------------------------------------------------------------------------- TinyWorld tool conversations

def test_tinyworld_tool_chats_are_valid_correct_and_held_out():
    from scratchlm.data.tinyworld.heldout import sum_reserved
    from scratchlm.data.tinyworld.tasks import check_answer
    from scratchlm.data.tinyworld.tool_chats import CALCULATOR_TOOL as DATA_TOOL, iter_tool_chats
    from scratchlm.inference.tools import CALCULATOR_TOOL, run_calculator
    from scratchlm.posttrain.formats import to_messages

    assert DATA_TOOL == CALCULATOR_TOOL  # the model is served the tool it was trained with
    sym = {"+": "plus", "-": "minus", "*": "times"}
    for split in ("train", "val"):
        recs = list(itertools.islice(iter_tool_chats(split, 0), 400))
        assert recs == list(itertools.islice(iter_tool_chats(split, 0), 400))  # deterministic
        kinds = {r["kind"] for r in recs}
        assert kinds == {"arithmetic_tool", "no_call"}
        for r in recs:
            msgs = to_messages(r)  # what SFT reads: valid, with the tools in the system turn
            assert msgs[0]["role"] == "system" and "calculator" in msgs[0]["content"]
            if r["kind"] == "no_call":
                assert [m["role"] for m in msgs] == ["system", "user", "assistant"]
                continue
            call, result, answer = msgs[2]["tool_calls"][0]["function"], msgs[3]["content"], msgs[4]["content"]
            assert run_calculator(call["arguments"]) == result == r["answer"]  # the tool says what the data says
            assert check_answer(answer, r["answer"])
            a, op, b = call["arguments"]["expression"].split()
            assert sum_reserved(int(a), sym[op], int(b)) == (split == "val")


def test_synth_writes_tool_chats(tmp_path):
    from scratchlm.data.tinyworld import synthesize
    from scratchlm.posttrain.formats import load_sft

    m = synthesize(tmp_path, "60KB", seed=0)
    assert m["files"]["tool_chats.jsonl"]["records"] >= 100
    convs = load_sft(tmp_path / "tool_chats.jsonl")
    assert sum(any(x.get("tool_calls") for x in c) for c in convs) > len(convs) // 2
    assert load_sft(tmp_path / "tool_chats_val.jsonl")


# ----------------------------------------------------------------------------- the commands

@pytest.fixture
def scripted_cli(monkeypatch):
    import scratchlm.cli.chat as chat_cli
    import scratchlm.cli.generate as generate_cli

    engine = scripted_engine()
    monkeypatch.setattr(generate_cli, "load_engine_from_args", lambda args, run=None: engine)
    monkeypatch.setattr(chat_cli, "load_engine_from_args", lambda args, run=None: engine)
    return engine


def test_chat_with_tools_runs_the_calculator(scripted_cli, monkeypatch, capsys, tmp_path):
    from scratchlm.cli.main import main

    monkeypatch.setattr(sys, "stdin", io.StringIO("What is 12 times 7?\nWhat is 3 plus 4?\n/history\n/exit\n"))
    assert main(["chat", "--run", str(tmp_path), "--tools", "calculator", "--temperature", "0"]) == 0
    out = capsys.readouterr().out
    assert "[calculator(expression='12 * 7') -> 84]\nThe answer is 84." in out
    assert "[calculator(expression='3 + 4') -> 7]\nThe answer is 7." in out
    assert "[tool] 84" in out and '[assistant] calculator({"expression": "12 * 7"})' in out
    monkeypatch.setattr(sys, "stdin", io.StringIO("What is 12 times 7?\n"))
    assert main(["chat", "--run", str(tmp_path), "--temperature", "0"]) == 0  # no --tools: nothing offered
    assert capsys.readouterr().out.strip() == "I think it is 12."


def test_generate_chat_with_tools(scripted_cli, capsys, tmp_path):
    from scratchlm.cli.main import main

    assert main(["generate", "--run", str(tmp_path), "--chat", "--tools", "calculator", "--temperature", "0",
                 "--prompt", "What is 6 times 7?"]) == 0
    assert capsys.readouterr().out.strip() == "[calculator(expression='6 * 7') -> 42]\nThe answer is 42."
    f = tmp_path / "p.txt"
    f.write_text("What is 6 times 7?\nWhat is 9 minus 2?\nHello\n")
    assert main(["generate", "--run", str(tmp_path), "--chat", "--tools", "calculator", "--temperature", "0",
                 "--input", str(f), "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["completion"], r["tool_calls"]) for r in rows] == [
        ("The answer is 42.", 1), ("The answer is 7.", 1), ("I think it is 12.", 0)]


@pytest.mark.parametrize("argv,why", [
    (["generate", "--chat", "--tools", "abacus", "--prompt", "x"], "unknown tool 'abacus'"),
    (["generate", "--tools", "calculator", "--prompt", "x"], "--tools needs --chat"),
    (["generate", "--chat", "--tools", "calculator", "--prompt-lookup", "--prompt", "x"], "plain decoding"),
    (["generate", "--chat", "--tools", "calculator", "--max-tool-calls", "-1", "--prompt", "x"], ">= 0"),
    (["chat", "--tools", "abacus"], "unknown tool 'abacus'"),
])
def test_bad_tool_flags_are_one_line_and_exit_2(argv, why, scripted_cli, capsys, tmp_path):
    from scratchlm.cli.main import main

    assert main(argv[:1] + ["--run", str(tmp_path)] + argv[1:]) == 2
    err = capsys.readouterr().err.strip()
    assert why in err and len(err.splitlines()) == 1
