"""Continuous batching (scratchlm/inference/continuous.py): requests join the running batch at any step and leave
it when done, and each gets exactly what it gets alone (Engine.generate), whatever runs beside it.

The model is a random llama-tiny (4 layers, RoPE, GQA): with near-uniform logits any slip in a row's position,
its mask or its slot's stale K/V changes its greedy tokens within a few steps. Steps are counted, never timed."""

from __future__ import annotations

import json
import threading

import pytest

torch = pytest.importorskip("torch")

from scratchlm.inference.continuous import RunningBatch, SlotKVCache  # noqa: E402
from scratchlm.inference.engine import Engine, Sequence  # noqa: E402
from scratchlm.inference.sampling import SamplingParams  # noqa: E402
from scratchlm.inference.testing import ByteTokenizer, MarkovLM  # noqa: E402
from scratchlm.model import ModelConfig, Transformer  # noqa: E402

PROMPTS = ["Once upon a time", "Hi", "The cat sat on the mat and looked", "x" * 30, "ab", "Lily had a red ball"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models decode fastest on one thread, and the CPU is shared
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def engine() -> Engine:
    tok = ByteTokenizer()
    torch.manual_seed(0)
    model = Transformer(ModelConfig.from_preset("llama-tiny", vocab_size=tok.vocab_size, max_seq_len=128))
    return Engine(model, tok)


def greedy(n: int) -> SamplingParams:
    return SamplingParams(max_new_tokens=n, temperature=0, ignore_eos=True)


def run(engine: Engine, requests: list[tuple[int, str, SamplingParams, int | None]], n_slots: int,
        on_step=None) -> tuple[list[Sequence], list[int]]:
    """Drive a RunningBatch: request i = (step it arrives at, prompt, params, logprobs). Returns the sequences
    and the step each finished at."""
    batch = RunningBatch(engine, n_slots=n_slots)
    seqs = [Sequence(engine.encode(p), sp, lp) for _, p, sp, lp in requests]
    finished = [-1] * len(seqs)
    step = 0
    while step < 500 and (step <= max(r[0] for r in requests) or batch.busy):
        for (arrive, *_), s in zip(requests, seqs):
            if arrive == step:
                batch.add(s)
        batch.step()
        step += 1
        for i, s in enumerate(seqs):
            if s.done and finished[i] < 0:
                finished[i] = step
        if on_step is not None:
            on_step(batch)
    assert not batch.busy
    return seqs, finished


def solo(engine: Engine, prompt: str, params: SamplingParams, logprobs: int | None = None) -> Sequence:
    return engine.generate([prompt], params, logprobs=logprobs)[0]


@pytest.mark.parametrize("arrivals", [[0, 0, 0, 0, 0, 0], [0, 3, 4, 9, 10, 25], [7, 0, 2, 2, 15, 1]])
def test_staggered_arrivals_equal_solo_runs(engine, arrivals):
    params = [greedy(20), SamplingParams(max_new_tokens=15, temperature=0.9, top_k=20, seed=3, ignore_eos=True),
              greedy(30), greedy(10), SamplingParams(max_new_tokens=25, temperature=1.2, top_p=0.9, seed=11,
                                                     ignore_eos=True), greedy(12)]
    requests = [(a, p, sp, None) for a, p, sp in zip(arrivals, PROMPTS, params)]
    seqs, _ = run(engine, requests, n_slots=3)
    for (_, p, sp, _), s in zip(requests, seqs):
        alone = solo(engine, p, sp)
        assert s.token_ids == alone.token_ids, p
        assert (s.text, s.finish_reason) == (alone.text, alone.finish_reason)


def test_rows_at_different_lengths_get_the_logits_of_solo_runs(engine):
    """Slot 0 prefilled alone over a stale occupant's K/V, slots 1 and 2 in one right-padded forward (12 and 1
    tokens, then trimmed); one decode forward over the three gives each row the logits of its own sequence run
    alone without any cache."""
    model, cache = engine.model, SlotKVCache.for_model(engine.model, n_slots=3, max_len=32)
    with torch.inference_mode():
        g = torch.Generator().manual_seed(0)
        stale = torch.randint(0, 256, (1, 20), generator=g)
        cache.select([0])
        model(stale, cache=cache)
        cache.free(0)  # its K/V stay in memory: the next occupant must never see them
        rows = [torch.randint(0, 256, (1, n), generator=g) for n in (5, 12, 1)]
        cache.select([0])
        model(rows[0], cache=cache)
        cache.select([1, 2])
        padded = torch.cat([rows[1], torch.cat([rows[2], torch.full((1, 11), 258)], dim=1)])  # (2, 12)
        first = model(padded, cache=cache)  # (2, 12, V)
        cache.trim(2, 1)
        torch.testing.assert_close(first[1, 0], model(rows[2])[0, -1], atol=1e-5, rtol=1e-5)
        nxt = torch.tensor([[7], [8], [9]])  # (3, 1)
        cache.select([0, 1, 2])
        got = model(nxt, cache=cache)[:, -1]  # (3, V)
        for b, ids in enumerate(rows):
            want = model(torch.cat([ids, nxt[b:b + 1]], dim=1))[0, -1]
            torch.testing.assert_close(got[b], want, atol=1e-5, rtol=1e-5)
    assert cache.lens == [6, 13, 2]


def test_a_short_request_during_a_long_one_finishes_first(engine):
    requests = [(0, PROMPTS[0], greedy(60), None), (5, PROMPTS[1], greedy(4), None)]
    seqs, finished = run(engine, requests, n_slots=2)
    # the short one is prefilled at the step it arrives (its first token) and decodes 3 more: done at step 5 + 4;
    # a static batch would have kept it waiting until the long one's 60 steps were over
    assert finished[1] == 5 + 4 and finished[0] == 60
    assert seqs[1].token_ids == solo(engine, PROMPTS[1], greedy(4)).token_ids


def test_slots_are_reused_and_freed_at_once(engine):
    used: list[set[int]] = []
    requests = [(0, p, greedy(n), None) for p, n in zip(PROMPTS, (3, 9, 5, 2, 7, 4))]
    seqs, finished = run(engine, requests, n_slots=2, on_step=lambda b: used.append(set(b.running)))
    assert set().union(*used) == {0, 1} and max(len(u) for u in used) == 2  # six requests, two slots
    assert all(s.finish_reason == "length" for s in seqs)
    # a freed slot is taken at the next step, so the six replies run as two lanes packed in arrival order:
    # slot 0 takes 3, 5, 2, 4 tokens (14 steps), slot 1 takes 9 then 7 (16 steps)
    assert max(finished) == 16
    for (_, p, sp, _), s in zip(requests, seqs):
        assert s.token_ids == solo(engine, p, sp).token_ids  # stale K/V of a slot's last occupant is never read


def test_per_request_sampling_parameters(engine):
    free_text = solo(engine, PROMPTS[2], greedy(30)).text
    stop = free_text[10:13]  # a stop string this reply is known to reach
    stop_token = solo(engine, PROMPTS[0], greedy(20)).token_ids[6]
    params = [
        (PROMPTS[2], SamplingParams(max_new_tokens=30, temperature=0, stop=[stop], ignore_eos=True), None),
        (PROMPTS[0], SamplingParams(max_new_tokens=20, temperature=0, stop_token_ids=[stop_token],
                                    ignore_eos=True), None),
        (PROMPTS[1], SamplingParams(max_new_tokens=18, temperature=0.8, top_k=5, seed=1, ignore_eos=True), 3),
        (PROMPTS[3], SamplingParams(max_new_tokens=14, temperature=1.0, min_p=0.1, repetition_penalty=1.3, seed=2,
                                    ignore_eos=True), 0),
        (PROMPTS[4], SamplingParams(max_new_tokens=9, temperature=0.7, top_p=0.5, seed=5, ignore_eos=True), None),
        (PROMPTS[5], greedy(0), None),
    ]
    requests = [(i * 2, p, sp, lp) for i, (p, sp, lp) in enumerate(params)]
    seqs, _ = run(engine, requests, n_slots=4)
    assert seqs[0].finish_reason == "stop" and stop not in seqs[0].text and len(seqs[0].token_ids) < 30
    assert seqs[1].finish_reason == "stop" and stop_token not in seqs[1].token_ids
    assert seqs[5].token_ids == [] and seqs[5].finish_reason == "length"
    for (_, p, sp, lp), s in zip(requests, seqs):
        alone = solo(engine, p, sp, lp)
        assert (s.token_ids, s.text, s.finish_reason) == (alone.token_ids, alone.text, alone.finish_reason), p
        assert len(s.token_logprobs) == (len(s.token_ids) if lp is not None else 0)
        torch.testing.assert_close(s.token_logprobs, alone.token_logprobs, atol=1e-4, rtol=1e-4)
        for mine, theirs in zip(s.top_logprobs, alone.top_logprobs):
            assert list(mine) == list(theirs) and len(mine) == lp


def test_a_cancelled_row_leaves_at_the_next_step_and_its_slot_is_taken(engine):
    batch = RunningBatch(engine, n_slots=1)
    first, second = Sequence(engine.encode("a"), greedy(50)), Sequence(engine.encode("b"), greedy(3))
    batch.add(first)
    batch.add(second)
    for _ in range(3):
        batch.step()
    assert list(batch.running.values()) == [first] and len(first.token_ids) == 3
    first.cancelled = True  # the client went away
    batch.step()
    assert first.finish_reason == "abort" and len(first.token_ids) == 3
    assert list(batch.running.values()) == [second] and batch.cache.lens[0] == len(second.prompt_ids)
    while batch.busy:
        batch.step()
    assert second.token_ids == solo(engine, "b", greedy(3)).token_ids


def test_slot_cache_refuses_what_it_cannot_do(engine):
    cache = SlotKVCache.for_model(engine.model, n_slots=2, max_len=8)
    cache.select([0])
    cache.begin(2, None, None)
    cache.commit()
    cache.select([0, 1])
    with pytest.raises(ValueError, match="needs them empty"):
        cache.begin(3, None, None)
    with pytest.raises(ValueError, match="cannot trim slot 1 to 1"):
        cache.trim(1, 1)
    with pytest.raises(ValueError, match="no padding mask"):
        cache.begin(1, None, torch.ones(2, 1, dtype=torch.bool))
    cache.select([0])
    with pytest.raises(ValueError, match="KV cache is full"):
        cache.begin(9, None, None)


# ----------------------------------------------------------------------------- over HTTP, both modes

def _stream(url: str, body: dict) -> tuple[str, str | None]:
    import httpx

    text, finish = "", None
    with httpx.stream("POST", url + "/v1/completions", json={**body, "stream": True}, timeout=60) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                choice = json.loads(line[6:])["choices"][0]
                text += choice["text"]
                finish = choice["finish_reason"] or finish
    return text, finish


@pytest.mark.parametrize("batching", ["static", "continuous"])
def test_http_streaming_in_both_modes(engine, batching):
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from scratchlm.inference.server import ServerThread, create_app

    bodies = [{"prompt": p, "max_tokens": n, "temperature": 0, "ignore_eos": True}
              for p, n in zip(PROMPTS[:4], (24, 4, 12, 8))]
    bodies[1].update(temperature=0.9, seed=4)
    results: dict[int, tuple] = {}
    with ServerThread(create_app(engine, model_id="tiny", max_batch=3, batching=batching)) as srv:
        threads = [threading.Thread(target=lambda i=i, b=b: results.__setitem__(i, _stream(srv.url, b)))
                   for i, b in enumerate(bodies)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    for i, b in enumerate(bodies):
        alone = solo(engine, b["prompt"], SamplingParams(max_new_tokens=b["max_tokens"], temperature=b["temperature"],
                                                         seed=b.get("seed"), ignore_eos=True))
        assert results[i] == (alone.text, "length"), (batching, i)


def test_unknown_batching_mode_is_refused(engine):
    pytest.importorskip("fastapi")
    from scratchlm.inference.server import create_app

    with pytest.raises(ValueError, match="batching must be 'continuous' or 'static'"):
        create_app(engine, batching="dynamic")


def test_a_client_that_disconnects_frees_its_slot():
    """Continuous mode: the disconnected request leaves the running batch (its slot freed) long before its
    max_tokens, while another request goes on being served beside it."""
    httpx = pytest.importorskip("httpx")
    pytest.importorskip("fastapi")
    import time

    from scratchlm.inference.server import ServerThread, create_app

    class Counting(MarkovLM):
        forwards = 0

        def forward(self, idx, *args, **kwargs):
            self.forwards += 1
            time.sleep(0.005)  # so the client's disconnect lands while there are many steps left
            return super().forward(idx, *args, **kwargs)

    tok = ByteTokenizer()
    model = Counting(tok.vocab_size, seed=0, max_seq_len=512)
    app = create_app(Engine(model, tok), model_id="mock", batching="continuous")
    worker = app.state.worker
    with ServerThread(app) as srv:
        with httpx.Client(timeout=30) as client:
            with client.stream("POST", srv.url + "/v1/completions",
                               json={"prompt": "go", "max_tokens": 400, "stream": True, "ignore_eos": True}) as r:
                lines = (line for line in r.iter_lines() if line.startswith("data: "))
                for _ in range(3):
                    next(lines)
        deadline = time.monotonic() + 60  # a deadline for the wait, not an assertion about speed
        while worker.batch.busy and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not worker.batch.busy
        r = httpx.post(srv.url + "/v1/completions", json={"prompt": "next", "max_tokens": 2}, timeout=60)
        assert r.status_code == 200
    assert model.forwards < 400 // 2, f"{model.forwards} forwards after the client left at ~3 tokens"


def test_a_compiled_engine_is_refused_not_ignored():
    tok = ByteTokenizer()
    engine = Engine(MarkovLM(tok.vocab_size), tok)
    engine.compiled = object()  # what Engine.enable_compile sets: graphs this eager scheduler would never use
    with pytest.raises(ValueError, match="cannot use a compiled engine"):
        RunningBatch(engine)
