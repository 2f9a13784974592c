"""TinyWorld tool conversations: SFT data that teaches a model to call the calculator for arithmetic.

Each record is OpenAI's shape (what `scratchlm sft` reads, docs/tools.md), with the calculator offered:

    {"tools": [CALCULATOR_TOOL],
     "messages": [{"role": "user", "content": "Mia had 3 apples. Leo gave Mia 4 more. How many apples ..."},
                  {"role": "assistant", "content": null, "tool_calls": [{"id": "call_0", "type": "function",
                   "function": {"name": "calculator", "arguments": "{\"expression\": \"3 + 4\"}"}}]},
                  {"role": "tool", "tool_call_id": "call_0", "content": "7"},
                  {"role": "assistant", "content": "Now Mia has 7 apples."}],
     "kind": "arithmetic_tool", "answer": "7", "split": "train"}

The model has to read the problem into an expression (which numbers, which operation), call, and copy the
result into its answer: the adding itself is the tool's. A share of the records (NO_CALL_SHARE) offer the
calculator for a question that needs no arithmetic (a fact, "tell me about ...") and are answered directly, so
the model learns when not to call. Sums follow arithmetic.py's split: val holds only the held-out (a, op, b).
"""

from __future__ import annotations

import json
from typing import Iterator

from scratchlm.data.tinyworld.arithmetic import make_problem
from scratchlm.data.tinyworld.corpus import rng_for

# The calculator as scratchlm/inference/tools.py offers it (data/ may not import inference/; a test keeps the
# two equal, since a model trained on one and served the other would see a prompt it never learned).
CALCULATOR_TOOL = {"type": "function", "function": {
    "name": "calculator",
    "description": "Arithmetic: + - * / ( )",
    "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}},
}}
SYMBOL = {"plus": "+", "minus": "-", "times": "*"}
NO_CALL_SHARE = 0.3
NO_CALL_KINDS = ("fact_qa", "tell_facts")  # short, so the offered tool still leaves room in a 256-token context


def tool_chat_for(problem, split: str) -> dict:
    """One arithmetic problem as a conversation that calls the calculator and answers from its result."""
    user = f"{problem.setup} {problem.question}" if problem.setup else problem.question
    expression = f"{problem.a} {SYMBOL[problem.op]} {problem.b}"
    call = {"id": "call_0", "type": "function",
            "function": {"name": "calculator", "arguments": json.dumps({"expression": expression})}}
    messages = [{"role": "user", "content": user},
                {"role": "assistant", "content": None, "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "call_0", "content": str(problem.answer)},
                {"role": "assistant", "content": problem.answer_sentence}]
    return {"tools": [CALCULATOR_TOOL], "messages": messages, "kind": "arithmetic_tool",
            "answer": str(problem.answer), "split": split}


def iter_tool_chats(split: str = "train", seed: int = 0) -> Iterator[dict]:
    """Endless deterministic tool conversations: {tools, messages, kind, answer, split}; kind is
    "arithmetic_tool" (calls the calculator) or "no_call" (the calculator is offered, the answer needs none)."""
    from scratchlm.data.tinyworld.tasks import make_instruction  # here: tasks imports corpus, as this does

    rng = rng_for(seed, split, "tool_chats")
    while True:
        if rng.random() >= NO_CALL_SHARE:
            yield tool_chat_for(make_problem(rng, split), split)
            continue
        rec = make_instruction(rng, split)
        while rec["kind"] not in NO_CALL_KINDS:
            rec = make_instruction(rng, split)
        messages = [{"role": "user", "content": rec["instruction"]}, {"role": "assistant", "content": rec["output"]}]
        yield {"tools": [CALCULATOR_TOOL], "messages": messages, "kind": "no_call", "answer": rec["answer"],
               "split": split}
