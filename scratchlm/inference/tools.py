"""Tools the model can call while it chats: the built-in calculator, and the loop that runs a model's calls.

    tools = builtin_tools(["calculator"])
    new = chat_with_tools(engine, [{"role": "user", "content": "What is 12 times 7?"}], params, tools)
    # new: [assistant (tool_calls), tool ("84"), assistant ("12 times 7 is 84.")]

The model sees the offered tools in its system turn and calls one by writing <tool_call>{...}</tool_call> and
ending its turn (the format is in chat_template.py and docs/tools.md). `chat_with_tools` then runs the call, adds
the result as a `tool` turn, and lets the model go on, until it answers in words or `max_rounds` calls have been
made. A call the model gets wrong (an unknown tool, bad arguments, 1/0) is answered with "error: ..." as the
tool's result, as OpenAI's guides advise, so the model can see what went wrong; nothing is raised.

`scratchlm chat --tools calculator` and `scratchlm generate --chat --tools calculator` run this loop. The server
does not run tools: it hands the calls to the client (OpenAI's protocol), which runs its own functions.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Callable

from .calculator import CalculatorError, calculate
from .chat_template import TOOL_CALL_START, chat_stop_token_ids, encode_chat, parse_tool_calls
from .engine import Engine
from .sampling import SamplingParams

# The calculator as the model is offered it. Kept short, since every token of it sits in the context of every
# turn: a TinyWorld tool conversation (about 240 tokens) must fit the demo model's 256 ("required" would
# cost 20 more; run_calculator refuses a call without the expression instead).
# (scratchlm/data/tinyworld/tool_chats.py writes the same dict into TinyWorld's tool conversations; a test
# keeps the two equal.)
CALCULATOR_TOOL = {"type": "function", "function": {
    "name": "calculator",
    "description": "Arithmetic: + - * / ( )",
    "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}},
}}


def run_calculator(arguments: dict) -> str:
    expression = arguments.get("expression")
    if not isinstance(expression, str) or set(arguments) != {"expression"}:
        raise CalculatorError('the calculator takes one argument, {"expression": "..."}')
    return calculate(expression)


@dataclass(frozen=True)
class Tool:
    spec: dict  # OpenAI form: {"type": "function", "function": {"name", "description", "parameters"}}
    run: Callable[[dict], str]  # arguments -> result text; a ValueError becomes "error: ..." for the model


BUILTIN_TOOLS = {"calculator": Tool(CALCULATOR_TOOL, run_calculator)}


def builtin_tools(names: list[str]) -> dict[str, Tool]:
    """The built-in tools called `names` (e.g. from --tools), with a clear error for an unknown one."""
    unknown = [n for n in names if n not in BUILTIN_TOOLS]
    if unknown:
        raise ValueError(f"unknown tool {unknown[0]!r}; the built-in tools are: {', '.join(BUILTIN_TOOLS)}")
    return {n: BUILTIN_TOOLS[n] for n in names}


def run_tool(tools: dict[str, Tool], name: str, arguments: dict) -> str:
    """The result text of one call; a failure is the text "error: ..." (the model reads it, nothing raises)."""
    tool = tools.get(name)
    if tool is None:
        return f"error: there is no tool {name!r}; the tools are: {', '.join(tools) or 'none'}"
    try:
        return tool.run(arguments)
    except ValueError as e:  # CalculatorError and friends: the model's mistake, reported to the model
        return f"error: {e}"


def new_call_id() -> str:
    return "call_" + uuid.uuid4().hex[:24]


def reply_messages(text: str, finish_reason: str | None, tools: dict[str, Tool] | None,
                   on_tool: Callable[[str, dict, str], None] | None = None) -> list[dict]:
    """One generated reply as messages: the assistant turn, then a tool turn per call (run now), if the reply
    is a complete, well-formed call; else just the assistant turn with the text."""
    parsed = parse_tool_calls(text) if tools and finish_reason == "stop" else None
    if parsed is None:
        return [{"role": "assistant", "content": text}]
    content, calls = parsed
    ids = [new_call_id() for _ in calls]
    out = [{"role": "assistant", "content": content,
            "tool_calls": [{"id": i, "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
                           for i, c in zip(ids, calls)]}]
    for i, c in zip(ids, calls):
        result = run_tool(tools, c["name"], c["arguments"])
        if on_tool is not None:
            on_tool(c["name"], c["arguments"], result)
        out.append({"role": "tool", "tool_call_id": i, "content": result})
    return out


def _chat_params(engine: Engine, params: SamplingParams) -> SamplingParams:
    return SamplingParams(**{**params.__dict__, "stop_token_ids": chat_stop_token_ids(engine.tokenizer)}).validate()


def chat_with_tools(engine: Engine, messages: list[dict], params: SamplingParams, tools: dict[str, Tool],
                    max_rounds: int = 4, on_text: Callable[[str], None] | None = None,
                    on_tool: Callable[[str, dict, str], None] | None = None) -> list[dict]:
    """The model's reply to `messages`, running its tool calls: returns the new messages (assistant turns, and a
    tool turn per call). on_text streams the text of the reply as it is generated (a call's own text is held
    back: on_tool reports it with its result instead). If a tool's result leaves no room in the context for
    the answer, the new messages end with that tool turn (final_answer gives "")."""
    return chat_with_tools_batch(engine, [messages], params, tools, max_rounds, on_text=on_text, on_tool=on_tool)[0]


def chat_with_tools_batch(engine: Engine, conversations: list[list[dict]], params: SamplingParams,
                          tools: dict[str, Tool], max_rounds: int = 4, batch_size: int = 32,
                          on_text: Callable[[str], None] | None = None,
                          on_tool: Callable[[str, dict, str], None] | None = None) -> list[list[dict]]:
    """chat_with_tools for many conversations, generated together in batches: each round generates for every
    conversation still waiting for a reply, runs the calls, and goes again for those that made one.
    on_text streams only when there is a single conversation."""
    params = _chat_params(engine, params)
    specs = [t.spec for t in tools.values()]
    new: list[list[dict]] = [[] for _ in conversations]
    waiting = list(range(len(conversations)))
    for round_ in range(max_rounds + 1):
        offer = tools if round_ < max_rounds else None  # the last round's calls are not run: it is text
        if not waiting:
            break
        still = []
        for lo in range(0, len(waiting), batch_size):
            part = waiting[lo:lo + batch_size]
            prompts = []
            for i in part:
                ids = encode_chat(engine.tokenizer, conversations[i] + new[i], tools=specs)
                # no room to go on (after a long tool result): the conversation ends with that result
                prompts.append(ids if len(ids) < engine.max_seq_len else None)
            live = [(i, ids) for i, ids in zip(part, prompts) if ids is not None]
            if not live:
                continue
            seqs = engine.make_sequences([ids for _, ids in live], params)
            stream = ToolCallStream() if on_text is not None and len(conversations) == 1 else None
            for _ in engine.steps(seqs):
                if stream is not None:
                    shown = stream.push("".join(e.text for e in seqs[0].drain()))
                    if shown:
                        on_text(shown)
            for (i, _), s in zip(live, seqs):
                msgs = reply_messages(s.text, s.finish_reason, offer, on_tool)
                if stream is not None and len(msgs) == 1:
                    rest = stream.flush()
                    if rest:
                        on_text(rest)
                new[i] += msgs
                if len(msgs) > 1:
                    still.append(i)
        waiting = still
    return new


def final_answer(new: list[dict]) -> str:
    """The text of the last assistant turn of chat_with_tools' messages ("" if it ended on a tool result)."""
    return new[-1]["content"] if new and new[-1]["role"] == "assistant" else ""


class ToolCallStream:
    """Splits streamed reply text into what can be shown now and what may be a tool call.

    Text is passed through until "<tool_call>" appears; from there on it is held (the caller shows the call its
    own way, or as text with flush() if it turns out not to be a call). A tail that could be the start of
    "<tool_call>", and whitespace before it, is held until the next piece decides it, so a client never sees
    half a tag, and the streamed text equals the content a non-streamed reply would return."""

    def __init__(self):
        self.text, self.shown, self.in_call = "", 0, False

    def push(self, piece: str) -> str:
        self.text += piece
        if self.in_call:
            return ""
        at = self.text.find(TOOL_CALL_START, max(0, self.shown - len(TOOL_CALL_START)))
        if at >= 0:
            self.in_call = True
            end = len(self.text[:at].rstrip())
        else:
            keep = next((k for k in range(min(len(TOOL_CALL_START) - 1, len(self.text)), 0, -1)
                         if self.text.endswith(TOOL_CALL_START[:k])), 0)
            end = len(self.text) - keep
            while end > self.shown and self.text[end - 1].isspace():
                end -= 1
        out = self.text[self.shown:max(end, self.shown)]
        self.shown = max(end, self.shown)
        return out

    def flush(self) -> str:
        """Everything not shown yet (the reply ended, or its call did not parse: it is text after all)."""
        out, self.shown = self.text[self.shown:], len(self.text)
        return out
