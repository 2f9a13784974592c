"""Inference: KV-cache generation, sampling, speculative decoding, the chat template, and an OpenAI-style server.

    from scratchlm.inference import load_engine, SamplingParams
    engine = load_engine("runs/pretrain")
    print(engine.generate(["Once upon a time"], SamplingParams(max_new_tokens=50))[0].text)

Files, one concept each:
    sampling.py       temperature, top-k, top-p, min-p, repetition penalty, seeded generators
    detokenizer.py    UTF-8-safe streaming text and stop-string hold-back
    engine.py         batched prefill + decode against the model's static KV cache
    speculative.py    draft-model and prompt-lookup speculative decoding
    chat_template.py  the ChatML-like template (text, ids, Jinja for Hugging Face), tool calls and results
    tools.py          the loop that runs a model's tool calls; the built-in tools
    calculator.py     the calculator tool: arithmetic parsed by hand, never eval
    quant.py          weight-only int8 (per channel) and int4 (per group)
    loading.py        model + tokenizer from a run folder
    batcher.py        one model thread serving queued requests in batches
    server.py         FastAPI app: /v1/models, /v1/completions, /v1/chat/completions, the chat page
    testing.py        byte tokenizer and mock models for tests
"""

from .chat_template import CHAT_TEMPLATE, encode_chat, render_chat
from .engine import Engine, Sequence, StreamChunk
from .loading import load_engine, load_model, load_tokenizer_for
from .sampling import SamplingParams
from .speculative import SpecStats, SpeculativeConfig, SpeculativeDecoder

__all__ = [
    "Engine", "Sequence", "StreamChunk", "SamplingParams", "SpeculativeDecoder", "SpeculativeConfig", "SpecStats",
    "CHAT_TEMPLATE", "render_chat", "encode_chat", "load_engine", "load_model", "load_tokenizer_for",
]
