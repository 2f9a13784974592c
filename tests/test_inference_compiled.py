"""The compiled decode path (inference/compiled.py) gives the eager engine's tokens, and compiles once per shape.

One tiny random Llama is compiled once for the module (batch 1 and batch 3 are two graphs): a few seconds with
a warm inductor cache, about a minute cold on 2 busy cores (the first compile of a process builds inductor's
C++ headers). Eager and compiled engines share the weights, so any difference comes from the decode path.
"""

from __future__ import annotations

import pytest
import torch

from scratchlm.inference.engine import Engine
from scratchlm.inference.sampling import SamplingParams
from scratchlm.inference.testing import ByteTokenizer, MarkovLM
from scratchlm.model import ModelConfig, Transformer

PROMPTS = [list(range(40, 52)), list(range(60, 63)), list(range(80, 87))]  # 12, 3 and 7 tokens: ragged


@pytest.fixture(scope="module")
def engines():
    torch.manual_seed(0)
    tok = ByteTokenizer()
    # init_std 0.3, not 0.02: with near-zero weights the next token hardly depends on attention or positions,
    # and a decode step that got them wrong would still pick the same tokens
    cfg = ModelConfig(vocab_size=tok.vocab_size, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=128,
                      init_std=0.3)
    model = Transformer(cfg).eval()
    return Engine(model, tok), Engine(model, tok, compile=True)


def ids(engine, prompts, params):
    return [s.token_ids for s in engine.generate(prompts, params)]


def logits_seen(engine, prompts, params) -> torch.Tensor:
    """Every (B, V) next-token logits the engine picked from, stacked: (steps, B, V)."""
    seen = []
    seqs = engine.make_sequences(prompts, params)
    for _ in engine.steps(seqs, on_logits=lambda x: seen.append(x.float().clone())):
        pass
    return torch.stack(seen)


def unique_graphs() -> int:
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"]


def test_batch1_greedy_equals_eager_with_stop_and_max_new_tokens(engines):
    eager, compiled = engines
    free = SamplingParams(max_new_tokens=24, temperature=0, ignore_eos=True)
    want = ids(eager, PROMPTS[:1], free)
    assert ids(compiled, PROMPTS[:1], free) == want and len(want[0]) == 24
    stop = want[0][9]  # a token the model does produce: both must stop at its first occurrence
    stopped = SamplingParams(max_new_tokens=24, temperature=0, ignore_eos=True, stop_token_ids=[stop])
    out_e, out_c = eager.generate(PROMPTS[:1], stopped)[0], compiled.generate(PROMPTS[:1], stopped)[0]
    assert out_c.token_ids == out_e.token_ids == want[0][:want[0].index(stop)]
    assert out_c.finish_reason == out_e.finish_reason == "stop"
    short = SamplingParams(max_new_tokens=5, temperature=0, ignore_eos=True)
    assert ids(compiled, PROMPTS[:1], short) == [want[0][:5]]


def test_batch3_ragged_greedy_equals_eager(engines):
    eager, compiled = engines
    greedy = SamplingParams(max_new_tokens=20, temperature=0, ignore_eos=True)
    want = ids(eager, PROMPTS, greedy)
    assert ids(compiled, PROMPTS, greedy) == want
    # the logits too, not only their argmax: a wrong position or mask moves them far beyond float rounding
    torch.testing.assert_close(logits_seen(compiled, PROMPTS, greedy), logits_seen(eager, PROMPTS, greedy),
                               rtol=1e-4, atol=1e-4)
    # per-row settings: row 1 stops on one of its own tokens, row 2 wants fewer tokens; the others ride along
    rows = [greedy, SamplingParams(max_new_tokens=20, temperature=0, ignore_eos=True, stop_token_ids=[want[1][6]]),
            SamplingParams(max_new_tokens=4, temperature=0, ignore_eos=True)]
    got_e, got_c = eager.generate(PROMPTS, rows), compiled.generate(PROMPTS, rows)
    assert [s.token_ids for s in got_c] == [s.token_ids for s in got_e]
    assert [s.finish_reason for s in got_c] == [s.finish_reason for s in got_e] == ["length", "stop", "length"]


def test_sampling_uses_the_same_sampler(engines):
    eager, compiled = engines
    params = SamplingParams(max_new_tokens=16, temperature=0.9, top_k=50, seed=7, ignore_eos=True)
    assert ids(compiled, PROMPTS[:1], params) == ids(eager, PROMPTS[:1], params)


def test_second_request_of_another_length_does_not_recompile(engines):
    _, compiled = engines
    greedy = SamplingParams(max_new_tokens=10, temperature=0, ignore_eos=True)
    ids(compiled, [PROMPTS[0]], greedy)  # batch 1, length bucket 64: compiled by now (or here)
    graphs, shapes, seconds = unique_graphs(), compiled.compiled.compiled_shapes, compiled.compiled.compile_seconds
    ids(compiled, [list(range(100, 131))], SamplingParams(max_new_tokens=30, temperature=0))  # 31 + 30 <= 64
    ids(compiled, [[5, 6]], greedy)
    assert unique_graphs() == graphs, "a new prompt length within the bucket recompiled the decode step"
    assert compiled.compiled.compiled_shapes == shapes and compiled.compiled.compile_seconds == seconds


def test_compile_refuses_a_model_it_cannot_compile():
    with pytest.raises(ValueError, match="compile needs a scratchlm Transformer"):
        Engine(MarkovLM(ByteTokenizer().vocab_size), ByteTokenizer(), compile=True)


def test_cli_generate_compile_matches_eager_and_refuses_what_it_cannot_do(tiny_chat_run, capsys):
    from scratchlm.cli.main import main

    base = ["generate", "--run", str(tiny_chat_run), "--prompt", "Once upon", "--max-new-tokens", "12",
            "--temperature", "0", "--device", "cpu"]
    assert main(base) == 0
    eager = capsys.readouterr().out
    assert main(base + ["--compile", "--stats"]) == 0
    out = capsys.readouterr()
    assert out.out == eager and "of which compiling" in out.err
    assert main(base + ["--compile", "--prompt-lookup", "--stats"]) == 0  # the speedup leaves compiling out
    out = capsys.readouterr()
    assert out.out == eager and "(compiling excluded on both sides), identical output: True" in out.err
    assert main(base + ["--compile", "--prompt-lookup", "--adaptive-gamma"]) == 2
    assert "drop --adaptive-gamma" in capsys.readouterr().err
    assert main(["serve", "--run", str(tiny_chat_run), "--compile"]) == 2  # continuous batching: not compiled
    assert "add --batching static" in capsys.readouterr().err


def test_compile_refuses_int8_with_bf16_activations_on_cpu():
    from scratchlm.inference.quant import quantize_int8

    tok = ByteTokenizer()
    cfg = ModelConfig(vocab_size=tok.vocab_size, d_model=64, n_layers=1, n_heads=4, n_kv_heads=2, max_seq_len=64)
    with pytest.raises(RuntimeError, match="run int8 without --compile"):
        Engine(quantize_int8(Transformer(cfg)), tok, compile=True)


def test_forget_by_tensor_equals_rewind_by_int():
    """StaticKVCache.forget (the fused speculative round's rewind, a tensor amount) leaves the cache exactly as
    rewind (a Python int) does, left padding included. Eager: no compile needed."""
    from scratchlm.inference.compiled import StaticKVCache

    a, b = (StaticKVCache(1, 2, 16, 1, 4, torch.float32, torch.device("cpu")) for _ in range(2))
    for c in (a, b):
        c.valid[0, 2:9] = True  # row 0 left-padded by 2, row 1 full
        c.valid[1, :9] = True
        c.slot.fill_(9)
        c.pos.copy_(torch.tensor([[7], [9]]))
    a.rewind(3)
    b.forget(torch.tensor(3))
    assert torch.equal(a.valid, b.valid) and torch.equal(a.slot, b.slot) and torch.equal(a.pos, b.pos)
    assert a.valid[0].tolist() == [False] * 2 + [True] * 4 + [False] * 10 and int(a.slot) == 6
