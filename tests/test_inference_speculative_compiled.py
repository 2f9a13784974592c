"""Speculative decoding on compiled models (speculative.py steps_batch over compiled.py) gives plain greedy's tokens.

One tiny random target and a noisy copy of it as the draft (so that rounds both accept and reject) are compiled
once for the module: the target's verify graph (width gamma + 1) and the draft's decode and width-2 graphs, for
batch 1 and batch 3. Plain greedy decoding is the eager engine's (tests/test_inference_compiled.py shows the
compiled engine gives the same tokens), so any difference comes from the speculative path.
"""

from __future__ import annotations

import copy

import pytest
import torch

from scratchlm.inference.engine import Engine
from scratchlm.inference.sampling import SamplingParams
from scratchlm.inference.speculative import SpeculativeConfig, SpeculativeDecoder
from scratchlm.inference.testing import ByteTokenizer
from scratchlm.model import ModelConfig, Transformer

# ragged (12, 3 and 7 tokens); the first repeats itself, so prompt lookup has something to copy
PROMPTS = [[40, 41, 42, 43, 44, 45, 40, 41, 42, 43, 44, 45], list(range(60, 63)), list(range(80, 87))]
GREEDY = SamplingParams(max_new_tokens=30, temperature=0, ignore_eos=True)


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    tok = ByteTokenizer()
    # init_std 0.3 (as test_inference_compiled.py): the next token depends on attention and positions, so a
    # verify forward with a wrong mask or position would pick other tokens
    cfg = ModelConfig(vocab_size=tok.vocab_size, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=128,
                      init_std=0.3)
    target = Transformer(cfg).eval()
    draft = copy.deepcopy(target)
    with torch.no_grad():  # close to the target but not equal to it: some drafts accepted, some rejected
        for p in draft.parameters():
            p.add_(0.02 * torch.randn_like(p))
    eager = Engine(target, tok)
    return eager, Engine(target, tok, compile=True), draft


def plain(eager, prompts, params=GREEDY):
    return [s.token_ids for s in eager.generate(prompts, params)]


@pytest.mark.parametrize("rows", [1, 3])
def test_compiled_draft_greedy_equals_plain_greedy(models, rows):
    eager, compiled, draft = models
    want = [plain(eager, [p])[0] for p in PROMPTS[:rows]]
    spec = SpeculativeDecoder(compiled, draft, SpeculativeConfig(gamma=4))
    got = spec.generate_batch(PROMPTS[:rows], GREEDY)
    assert [s.token_ids for s in got] == want
    assert all(s.finish_reason == "length" for s in got)
    st = spec.stats
    assert st.generated == 30 * rows and st.target_calls < 30  # fewer target forwards than tokens
    assert 0 < st.accepted <= st.agreed < st.drafted, st.as_dict()  # the noisy draft is right only sometimes
    assert st.draft_calls > 0 and st.compile_seconds >= 0


@pytest.mark.parametrize("rows", [1, 3])
def test_compiled_prompt_lookup_greedy_equals_plain_greedy(models, rows):
    """With and without the back-off: its rounds without guesses run the plain decode graph, not the verify."""
    eager, compiled, _ = models
    want = [plain(eager, [p])[0] for p in PROMPTS[:rows]]
    drafted = {}
    for backoff in (0, 16):
        spec = SpeculativeDecoder(compiled, None, SpeculativeConfig(gamma=4, lookup_backoff=backoff))
        got = spec.generate_batch(PROMPTS[:rows], GREEDY)
        assert [s.token_ids for s in got] == want, backoff
        assert spec.stats.drafted > 0 and spec.stats.draft_calls == 0
        drafted[backoff] = spec.stats.drafted
    assert drafted[16] <= drafted[0]


def test_batch_rows_with_their_own_stops_and_lengths(models):
    """Rows finish at different rounds (a stop token, a shorter max_new_tokens); the others go on unchanged."""
    eager, compiled, draft = models
    want = plain(eager, PROMPTS)
    rows = [GREEDY, SamplingParams(max_new_tokens=30, temperature=0, ignore_eos=True, stop_token_ids=[want[1][6]]),
            SamplingParams(max_new_tokens=4, temperature=0, ignore_eos=True)]
    got = SpeculativeDecoder(compiled, draft, SpeculativeConfig(gamma=4)).generate_batch(PROMPTS, rows)
    expect = plain(eager, PROMPTS, rows)
    assert [s.token_ids for s in got] == expect
    assert [s.finish_reason for s in got] == ["length", "stop", "length"]


def test_eager_batch_path_equals_plain_greedy(models):
    """steps_batch also runs eagerly (KVCache rollback instead of the static cache's rewind)."""
    eager, _, draft = models
    got = SpeculativeDecoder(eager, draft, SpeculativeConfig(gamma=4)).generate_batch(PROMPTS, GREEDY)
    assert [s.token_ids for s in got] == plain(eager, PROMPTS)


def test_compiled_sampling_runs_and_is_seeded(models):
    _, compiled, draft = models
    params = SamplingParams(max_new_tokens=20, temperature=0.8, seed=3, ignore_eos=True)
    spec = SpeculativeDecoder(compiled, draft, SpeculativeConfig(gamma=4))
    a = spec.generate(PROMPTS[0], params).token_ids
    assert len(a) == 20 and spec.generate(PROMPTS[0], params).token_ids == a


def test_compiled_refuses_adaptive_gamma(models):
    _, compiled, draft = models
    with pytest.raises(ValueError, match="fixed gamma"):
        SpeculativeDecoder(compiled, draft, SpeculativeConfig(gamma=2, adaptive=True)).generate(PROMPTS[0], GREEDY)


def test_cli_generate_compile_with_draft(tiny_chat_run, capsys):
    from scratchlm.cli.main import main

    base = ["generate", "--run", str(tiny_chat_run), "--prompt", "Once upon", "--max-new-tokens", "12",
            "--temperature", "0", "--device", "cpu"]
    assert main(base) == 0
    want = capsys.readouterr().out
    # the run as its own draft: every guess is accepted, and the text is plain greedy's
    assert main(base + ["--compile", "--draft", str(tiny_chat_run), "--stats"]) == 0
    out = capsys.readouterr()
    assert out.out == want and "identical output: True" in out.err


@pytest.mark.parametrize("rows", [1, 3])
def test_compiled_greedy_rounds_run_as_one_graph(models, rows):
    """The usual greedy round (draft gamma, verify, accept, rewind) is compiled.py's fused `_spec_round` graph:
    one compiled call and one sync per round, the draft counted once per round."""
    eager, compiled, draft = models
    spec = SpeculativeDecoder(compiled, draft, SpeculativeConfig(gamma=4))
    got = spec.generate_batch(PROMPTS[:rows], GREEDY)
    assert [s.token_ids for s in got] == [plain(eager, [p])[0] for p in PROMPTS[:rows]]
    done = set().union(*(c.__dict__.get("_compiled_widths", set()) for c in compiled.compiled._caches.values()))
    assert any(key[0] is compiled.compiled._round for key in done)
    st = spec.stats
    assert st.draft_calls <= st.target_calls + 4  # fused rounds count one draft call each; the tail may step
