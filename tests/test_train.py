"""Pretraining: optimizer groups, schedules, loader, gradient accumulation, guards, config checks, a short run."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from scratchlm.config import ConfigError
from scratchlm.model import ModelConfig, Transformer
from scratchlm.train import Trainer, TrainingStopped, load_pretrain_config, pretrain
from scratchlm.train.loader import TokenLoader, eval_windows
from scratchlm.train.optim import Muon, build_optimizer, muon_split, param_groups, zeropower_newton_schulz
from scratchlm.train.schedule import lr_multiplier

from conftest import shared_path

TEXT = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
        "First Citizen:\nYou are all resolved rather to die than to famish?\n\n") * 40


def tiny_cfg(tmp_path, **train):
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "input.txt").write_text(TEXT)
    t = {"seq_len": 16, "micro_batch_size": 4, "max_steps": 6, "lr": 3e-3, "warmup_steps": 2, "eval_every": 0,
         "sample_tokens": 0, "tensorboard": False, "progress": False, "device": "cpu", "dtype": "float32",
         "log_every": 1, "num_threads": 1}
    t.update(train)
    return load_pretrain_config(None, [], defaults={
        "data": {"train_text": str(tmp_path / "input.txt"), "tokenizer": "char"},
        "model": {"d_model": 32, "n_layers": 2, "n_heads": 2, "max_seq_len": 32, "pad_vocab_multiple": 8},
        "train": t})


# ---------------------------------------------------------------------------------------------- optimizer

def _names(group):
    return sorted(group["names"])


@pytest.mark.parametrize("family", ["llama", "gpt2"])
@pytest.mark.parametrize("tied", [True, False])
def test_weight_decay_groups(family, tied):
    extra = dict(activation="gelu", norm="layernorm", pos_emb="learned", bias=True) if family == "gpt2" else {}
    model = Transformer(ModelConfig(vocab_size=50, d_model=16, n_layers=2, n_heads=2, max_seq_len=8,
                                    tie_embeddings=tied, **extra))
    decay, no_decay = param_groups(model, weight_decay=0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    names = dict(model.named_parameters())
    expect_decay = sorted(n for n, p in names.items() if p.dim() == 2 and "emb" not in n)
    assert _names(decay) == expect_decay
    assert all(n.endswith((".wq.weight", ".wk.weight", ".wv.weight", ".wo.weight", ".w_up.weight", ".w_down.weight",
                           ".w_gate.weight")) or n == "lm_head.weight" for n in decay["names"])
    assert ("lm_head.weight" in decay["names"]) == (not tied)
    # norms, biases and embeddings are not decayed; every parameter is in exactly one group
    assert "tok_emb.weight" in no_decay["names"]
    assert all(names[n].dim() == 1 or "emb" in n for n in no_decay["names"])
    assert sorted(decay["names"] + no_decay["names"]) == sorted(names)
    if family == "gpt2":
        assert "pos_emb.weight" in no_decay["names"] and "layers.0.attn.wq.bias" in no_decay["names"]
    # decay_embeddings moves the embeddings (not norms or biases) into the decay group
    decay_e, no_decay_e = param_groups(model, 0.1, decay_embeddings=True)
    assert "tok_emb.weight" in decay_e["names"] and all(names[n].dim() == 1 for n in no_decay_e["names"])


def test_adamw_settings_and_muon_split(tmp_path):
    cfg = tiny_cfg(tmp_path)
    model = Transformer(ModelConfig(vocab_size=50, d_model=16, n_layers=2, n_heads=2, max_seq_len=8,
                                    tie_embeddings=False))
    opt = build_optimizer(model, cfg.train, "cpu")
    assert opt.defaults["betas"] == (0.9, 0.95)
    assert opt.defaults.get("fused") or opt.defaults.get("foreach")
    hidden, rest = muon_split(model)
    hidden_names = {n for n, p in model.named_parameters() if any(p is h for h in hidden)}
    assert hidden_names == {n for n, p in model.named_parameters() if p.dim() == 2 and n.startswith("layers.")}
    muon_cfg = load_pretrain_config(None, ["train.optimizer=muon"])
    combined = build_optimizer(model, muon_cfg.train, "cpu")
    adamw_ids = {id(p) for g in combined.optimizers[0].param_groups for p in g["params"]}
    assert adamw_ids.isdisjoint(id(p) for p in hidden) and len(adamw_ids) + len(hidden) == len(list(model.parameters()))
    with pytest.raises(ValueError, match="2-D"):
        Muon([torch.nn.Parameter(torch.zeros(3))])


def test_newton_schulz_orthogonalises():
    torch.manual_seed(0)
    G = torch.randn(32, 64)
    X = zeropower_newton_schulz(G, steps=5).float()
    s = torch.linalg.svdvals(X)
    assert s.min() > 0.5 and s.max() < 1.3  # all singular values pushed near 1 (SVD of G spans ~0.3..2.5x)
    # the direction is G's polar factor U V^T
    U, _, Vh = torch.linalg.svd(G, full_matrices=False)
    assert torch.nn.functional.cosine_similarity(X.flatten(), (U @ Vh).flatten(), dim=0) > 0.95


# ---------------------------------------------------------------------------------------------- schedule

def test_schedules():
    kw = dict(warmup_steps=10, min_ratio=0.1)
    assert lr_multiplier(0, 0.0, **kw) == pytest.approx(1 / 11)
    assert lr_multiplier(9, 0.0, **kw) == pytest.approx(10 / 11)
    assert lr_multiplier(10, 0.0, **kw) == pytest.approx(1.0)
    assert lr_multiplier(50, 0.5, **kw) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_multiplier(99, 1.0, **kw) == pytest.approx(0.1)
    assert lr_multiplier(99, 1.7, **kw) == pytest.approx(0.1)  # clamped past the end
    wsd = dict(kw, schedule="wsd", decay_fraction=0.2)
    assert lr_multiplier(50, 0.79, **wsd) == 1.0
    assert lr_multiplier(50, 0.9, **wsd) == pytest.approx(1 - 0.9 * 0.5)
    assert lr_multiplier(50, 1.0, **wsd) == pytest.approx(0.1)
    assert lr_multiplier(50, 0.9, schedule="constant") == 1.0


# ---------------------------------------------------------------------------------------------- loader

def _docs_array(lengths, bos=0):
    parts, offsets, pos = [], [], 0
    for i, n in enumerate(lengths):
        offsets.append(pos)
        parts.append(np.concatenate([[bos], np.full(n - 1, i + 1)]))
        pos += n
    return np.concatenate(parts).astype(np.uint16), np.array(offsets)


def test_random_loader_resumes_exactly_and_ranks_differ():
    tokens = np.arange(1000, dtype=np.uint16)
    a = TokenLoader(tokens, None, seq_len=8, rows=3, seed=1)
    batches = [a.next_batch() for _ in range(5)]
    x, y = batches[0]
    assert x.shape == (3, 8) and x.dtype == torch.int64 and torch.equal(x[:, 1:], y[:, :-1])
    b = TokenLoader(tokens, None, seq_len=8, rows=3, seed=1)
    b.next_batch(), b.next_batch()
    c = TokenLoader(tokens, None, seq_len=8, rows=3, seed=1)
    c.load_state_dict(b.state_dict())
    assert all(torch.equal(c.next_batch()[0], batches[i][0]) for i in (2, 3, 4))
    r1 = TokenLoader(tokens, None, seq_len=8, rows=3, seed=1, rank=1, world_size=2)
    assert not torch.equal(r1.next_batch()[0], batches[0][0])


def test_docs_loader_packs_from_bos_and_resumes():
    tokens, offsets = _docs_array([5, 3, 20, 4, 7, 6])
    loader = TokenLoader(tokens, offsets, seq_len=7, rows=2, mode="docs", seed=3)
    seen = []
    for _ in range(6):
        x, y = loader.next_batch()
        full = torch.cat([x, y[:, -1:]], dim=1)
        for row in full:
            seen.append(row)
            # a row starts at a BOS or continues the long document (id 3); every BOS starts a document
            assert row[0].item() == 0 or row[0].item() == 3
            for j in range(1, len(row)):
                if row[j] != row[j - 1] and row[j] != 0:
                    assert row[j - 1] == 0  # a document's tokens follow its own BOS
    state = loader.state_dict()
    nxt = loader.next_batch()[0]
    again = TokenLoader(tokens, offsets, seq_len=7, rows=2, mode="docs", seed=3)
    again.load_state_dict(state)
    assert torch.equal(again.next_batch()[0], nxt)
    # ranks split the documents: rank 0 and rank 1 never start a row with the same document
    r = [TokenLoader(tokens, offsets, seq_len=3, rows=1, mode="docs", seed=3, rank=k, world_size=2) for k in (0, 1)]
    docs = [{int(r[k].next_batch()[0][0, 1]) for _ in range(3)} for k in (0, 1)]
    assert docs[0].isdisjoint(docs[1])


def test_eval_windows_cover_every_target_once():
    tokens = np.arange(103, dtype=np.uint16)
    targets = torch.cat([y.flatten() for _, y in eval_windows(tokens, seq_len=10, rows=4)])
    assert targets.tolist() == list(range(1, 103))
    two = [torch.cat([y.flatten() for _, y in eval_windows(tokens, 10, 4, rank=k, world_size=2)]) for k in (0, 1)]
    assert sorted(torch.cat(two).tolist()) == list(range(1, 103))
    assert torch.cat([y.flatten() for _, y in eval_windows(tokens, 10, 4, max_tokens=25)]).tolist() == list(range(1, 26))


# ---------------------------------------------------------------------------------------------- the loop

def test_grad_accumulation_4x1_equals_1x4(tmp_path):
    one = Trainer(tiny_cfg(tmp_path / "a", micro_batch_size=4), tmp_path / "run_a")
    four = Trainer(tiny_cfg(tmp_path / "b", micro_batch_size=1, global_batch_tokens=64), tmp_path / "run_b")
    assert (one.grad_accum, four.grad_accum) == (1, 4)
    xa, ya = one.loader.next_batch()
    xb, yb = four.loader.next_batch()
    assert torch.equal(xa, xb) and torch.equal(ya, yb)  # the same global batch, cut differently
    la, lb = one.accumulate_gradients(xa, ya), four.accumulate_gradients(xb, yb)
    assert torch.allclose(la, lb, rtol=1e-6, atol=1e-6)
    for (name, pa), (_, pb) in zip(one.model.named_parameters(), four.model.named_parameters()):
        assert torch.allclose(pa.grad, pb.grad, rtol=1e-5, atol=1e-7), name


def test_nan_guard_skips_counts_and_stops(tmp_path):
    trainer = Trainer(tiny_cfg(tmp_path, max_bad_steps=3), tmp_path / "run")
    x, y = trainer.loader.next_batch()
    trainer.train_step(x, y)  # a good step
    trainer.save()
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    poison = {"on": True}

    def nan_logits(module, args, output):
        return output * float("nan") if poison["on"] else output

    handle = trainer.model.register_forward_hook(nan_logits)
    loss, norm, _ = trainer.train_step(x, y)
    assert math.isnan(loss) and trainer.bad_steps == 1 and trainer.step == 2
    assert all(torch.equal(p, before[n]) for n, p in trainer.model.named_parameters())  # skipped: untouched
    assert all(p.grad is None for p in trainer.model.parameters())
    poison["on"] = False
    trainer.train_step(x, y)
    assert trainer.bad_in_a_row == 0 and trainer.bad_steps == 1
    poison["on"] = True
    trainer.train_step(x, y)
    trainer.train_step(x, y)
    with pytest.raises(TrainingStopped, match="3 non-finite steps in a row.*step_0000001"):
        trainer.train_step(x, y)
    handle.remove()


def test_short_run_writes_the_run_folder(tmp_path):
    cfg = tiny_cfg(tmp_path, max_steps=8, eval_every=4, sample_tokens=8, tensorboard=True)
    s = pretrain(cfg, tmp_path / "run")
    run = tmp_path / "run"
    for rel in ("config.toml", "DONE", "metrics.jsonl", "plots/loss.png", "tokenizer/scratchlm_tokenizer.json",
                "data/manifest.json", "checkpoints/best.json", "logs/samples.txt"):
        assert (run / rel).exists(), rel
    assert any((run / "logs").glob("events.out.tfevents.*"))
    assert s["steps"] == 8 and s["stopped_by"] == "max_steps" and s["tokens"] == 8 * 4 * 16
    from scratchlm.train.checkpoint import load_model

    model, meta = load_model(run)  # a later stage's view: config.json + model.safetensors
    from scratchlm.tokenizer import load_tokenizer

    assert meta["step"] == 8 and model.config.vocab_size == load_tokenizer(run / "tokenizer").vocab_size
    from scratchlm.runs import read_jsonl

    rows = read_jsonl(run / "metrics.jsonl")
    train_rows = [r for r in rows if "loss" in r]
    assert [r["step"] for r in train_rows] == list(range(1, 9))
    assert {"lr", "grad_norm", "tokens_per_sec", "mem_gb"} <= set(train_rows[-1])
    # the ASCII text: bits per byte = val loss in nats per char / ln 2 (special tokens are not targets here)
    assert s["val_bpb"] == pytest.approx(s["val_loss"] / math.log(2), rel=1e-3)
    with pytest.raises(FileExistsError, match="--overwrite"):
        pretrain(cfg, run)  # a finished run is not silently replaced


def test_time_budget_stops_and_schedules_on_the_clock(tmp_path):
    s = pretrain(tiny_cfg(tmp_path, max_steps=0, max_time=2.0, warmup_steps=0), tmp_path / "run")
    assert s["stopped_by"] == "max_time" and s["steps"] > 1
    from scratchlm.runs import read_jsonl

    lrs = [r["lr"] for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if "lr" in r]
    assert lrs[-1] < 0.5 * lrs[0]  # the cosine decayed with the clock


# ---------------------------------------------------------------------------------------------- config checks

def test_config_checks_fail_before_training(tmp_path):
    with pytest.raises(ConfigError, match="model.max_seq_len"):
        Trainer(tiny_cfg(tmp_path, seq_len=64), tmp_path / "r1")
    with pytest.raises(ConfigError, match="not a multiple of micro_batch_size x seq_len x world size.*set it to 64"):
        Trainer(tiny_cfg(tmp_path, global_batch_tokens=100), tmp_path / "r2")
    cfg = tiny_cfg(tmp_path)
    cfg.data.vocab_from_tokenizer = False
    cfg.model.vocab_size = 1000
    with pytest.raises(ConfigError, match="does not match the tokenizer.*set model.vocab_size = "):
        Trainer(cfg, tmp_path / "r3")
    with pytest.raises(ConfigError, match="did you mean 'train.lr'"):
        load_pretrain_config(None, ["train.lrr=1"])
    with pytest.raises(ConfigError, match="no budget"):
        Trainer(tiny_cfg(tmp_path, max_steps=0), tmp_path / "r4")
    from scratchlm.train.config import check_fit

    cfg = tiny_cfg(tmp_path, seq_len=15)
    cfg.parallel.tp, cfg.parallel.sequence_parallel = 2, True
    with pytest.raises(ConfigError, match=r"seq_len \(15\) must be divisible by parallel.tp \(2\).*use seq_len = 14"):
        check_fit(cfg)


def test_preset_expands_with_model_overrides(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('preset = "llama-1m"\n[model]\nd_model = 64\n')
    cfg = load_pretrain_config(path)
    assert cfg.model.d_model == 64 and cfg.model.n_layers == 5 and cfg.model.ffn_hidden == 192  # recomputed


def test_cli_pretrain_unknown_key_exits_2(capsys, tmp_path):
    from scratchlm.cli.main import main

    assert main(["pretrain", "--config", "configs/shakespeare_cpu.toml", "--set", "train.max_stpes=3",
                 "--out", str(tmp_path / "r")]) == 2
    assert "did you mean 'train.max_steps'" in capsys.readouterr().err


def test_loss_decreases_on_tinyworld(tmp_path):
    from scratchlm.data.tinyworld import synthesize

    synthesize(tmp_path / "tw", 200_000, seed=0)
    cfg = load_pretrain_config(None, [], defaults={
        "data": {"train_text": str(tmp_path / "tw" / "train.txt"), "val_text": str(tmp_path / "tw" / "val.txt"),
                 "doc_separator": "\n\n", "tokenizer": "bpe", "vocab_size": 512, "packing": "docs"},
        "model": {"d_model": 64, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "max_seq_len": 64},
        "train": {"seq_len": 64, "micro_batch_size": 8, "max_steps": 60, "lr": 3e-3, "warmup_steps": 5,
                  "eval_every": 0, "sample_tokens": 0, "tensorboard": False, "progress": False, "device": "cpu",
                  "dtype": "float32", "num_threads": 1}})
    s = pretrain(cfg, tmp_path / "run")
    from scratchlm.runs import read_jsonl

    losses = [r["loss"] for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if "loss" in r]
    assert losses[0] == pytest.approx(math.log(512), abs=0.3)  # starts at chance
    assert s["val_loss"] < losses[0] - 1.0  # 60 steps learn token statistics: > 1 nat below chance
    assert sum(losses[-5:]) / 5 < losses[0] - 1.0
    assert s["val_bpb"] < 3.5


@pytest.mark.slow
def test_shakespeare_recipe_beats_nanogpt_at_a_fixed_step_budget(tmp_path):
    """configs/shakespeare_cpu.toml at 300 steps (what ~71 s buys on 2 quiet cores): <= 1.60 nats/char on the
    last 10% of Tiny Shakespeare (nanoGPT's baby GPT: 1.886). A step budget, so the result does not depend on
    the machine's speed."""
    text = shared_path("tinyshakespeare/input.txt")
    root = Path(__file__).resolve().parents[1]
    cfg = load_pretrain_config(root / "configs" / "shakespeare_cpu.toml", [
        f"data.train_text={text}", "train.max_time=0", "train.max_steps=300", "train.progress=false",
        "train.tensorboard=false", "train.sample_tokens=0"])
    s = pretrain(cfg, tmp_path / "run")
    assert s["val_bpb"] * math.log(2) <= 1.60


@pytest.mark.slow
def test_compiled_training_matches_eager(tmp_path):
    # train.compile=true is the path that beats nanoGPT's step (BENCHMARKS.md); it must be the same training:
    # the same losses step by step (inductor reorders float sums, hence the tolerance) and plain checkpoint keys
    runs = {}
    for compiled in (False, True):
        cfg = tiny_cfg(tmp_path / str(compiled), compile=compiled, max_steps=4)
        cfg.model.activation, cfg.model.norm, cfg.model.pos_emb = "gelu_exact", "layernorm", "learned"
        runs[compiled] = pretrain(cfg, tmp_path / f"run_{compiled}")
    from scratchlm.runs import read_jsonl
    from scratchlm.train.checkpoint import load_model

    losses = {c: [r["loss"] for r in read_jsonl(tmp_path / f"run_{c}" / "metrics.jsonl") if "loss" in r] for c in runs}
    assert len(losses[True]) == 4 and losses[True] == pytest.approx(losses[False], rel=1e-4)
    model, _ = load_model(tmp_path / "run_True")
    assert not any("_orig_mod" in k for k in model.state_dict())
