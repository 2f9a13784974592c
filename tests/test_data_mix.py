"""Issue 18.4: the loader streams across numbered shards (exactly what one big shard would give, exact resume,
disjoint ranks), and shard folders mix at fixed weights (within 1% over a run, logged, resumable exactly)."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import tomllib
import torch
from test_data_shards import DOCS, ByteTokenizer

from scratchlm.config import ConfigError
from scratchlm.data.shards import ShardedTokens, open_shard, write_shards
from scratchlm.train.loader import MixtureLoader, TokenLoader


@pytest.fixture(scope="module")
def one_and_many(tmp_path_factory):
    """The same documents written as one shard and as ~40 shards of at most 200 tokens."""
    root = tmp_path_factory.mktemp("shards")
    docs = DOCS[:-2] * 2
    for name, bound in (("one", 10**9), ("many", 200)):
        write_shards(root / name, docs, docs[:50], ByteTokenizer(), num_workers=1, progress=False, shard_tokens=bound)
    return open_shard(root / "one", "train")[:2], open_shard(root / "many", "train")[:2]


def _rows(x, y):
    return torch.cat([x, y[:, -1:]], dim=1)


# ---------------------------------------------------------------------------------------------- across shards

@pytest.mark.parametrize("mode", ["random", "docs"])
def test_loader_over_many_shards_yields_what_one_shard_yields(one_and_many, mode):
    (flat, flat_off), (many, many_off) = one_and_many
    assert isinstance(many, ShardedTokens) and len(many.parts) > 30 and isinstance(flat, np.memmap)
    a = TokenLoader(flat, flat_off, seq_len=24, rows=5, mode=mode, seed=2)
    b = TokenLoader(many, many_off, seq_len=24, rows=5, mode=mode, seed=2)
    for _ in range(80 if mode == "random" else 300):  # docs: past the end of an epoch
        xa, ya = a.next_batch()
        xb, yb = b.next_batch()
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    if mode == "random":  # the windows drawn (seeded by (seed, 0, batch)): many spanned two shard files
        starts = np.concatenate([np.random.default_rng([2, 0, i]).integers(0, len(many) - 24, 5) for i in range(80)])
        assert sum(many.locate(s)[0] != many.locate(s + 24)[0] for s in starts) > 20
    else:
        assert a.epoch == b.epoch >= 1 and a.cursor == b.cursor and a.doc_offset == b.doc_offset


def test_random_windows_come_from_every_shard_in_proportion_to_its_size(one_and_many):
    _, (many, many_off) = one_and_many
    loader = TokenLoader(many, many_off, seq_len=8, rows=50, seed=0)
    counts = np.zeros(len(many.parts))
    for _ in range(200):
        rng = np.random.default_rng([0, 0, loader.batch_index])
        for s in rng.integers(0, len(many) - 8, size=50):
            counts[many.locate(s)[0]] += 1
        loader.next_batch()
    sizes = np.diff(many.bounds)
    expected = sizes / sizes.sum() * counts.sum()
    assert np.all(counts > 0) and np.abs(counts - expected).max() < 5 * np.sqrt(expected.max())


@pytest.mark.parametrize("mode", ["random", "docs"])
def test_resume_mid_shard_and_across_shard_boundaries(one_and_many, mode):
    _, (many, many_off) = one_and_many
    loader = TokenLoader(many, many_off, seq_len=24, rows=3, mode=mode, seed=5)
    shards_seen, boundary_resumes = set(), 0
    for _ in range(60):
        state = loader.state_dict()
        again = TokenLoader(many, many_off, seq_len=24, rows=3, mode=mode, seed=5)
        again.load_state_dict(_through_torch_save(state))
        x, _ = loader.next_batch()
        assert torch.equal(again.next_batch()[0], x)
        assert torch.equal(again.next_batch()[0], loader.next_batch()[0])  # and it keeps going
        if mode == "docs":
            shards_seen.add(state["shard"])
            boundary_resumes += state["shard"] != loader.state_dict()["shard"]
    if mode == "docs":  # the saved position named many shards; resumes right before a shard change matched too
        assert len(shards_seen) > 10 and boundary_resumes > 10


def _through_torch_save(state):
    """As a checkpoint stores it: state.pt is read with weights_only=True (plain values only)."""
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def test_resume_on_different_data_is_refused(one_and_many):
    (flat, flat_off), (many, many_off) = one_and_many
    state = TokenLoader(many, many_off, seq_len=8, rows=2, seed=1).state_dict()
    fewer = TokenLoader(flat[:5000], flat_off[flat_off < 5000], seq_len=8, rows=2, seed=1)
    with pytest.raises(ValueError, match="the data changed; resume with the shards the run started with"):
        fewer.load_state_dict(state)
    older = {k: v for k, v in state.items() if k not in ("n_tokens", "n_docs")}  # a checkpoint from before
    fewer.load_state_dict(older)


def test_ranks_read_disjoint_rows_that_make_up_one_process(one_and_many):
    # random: the two ranks' rows are exactly the single process's batch, across shard files
    _, (many, many_off) = one_and_many
    one = TokenLoader(many, many_off, seq_len=24, rows=6, seed=3)
    ranks = [TokenLoader(many, many_off, seq_len=24, rows=3, seed=3, rank=k, world_size=2) for k in (0, 1)]
    for _ in range(20):
        assert torch.equal(one.next_batch()[0], torch.cat([r.next_batch()[0] for r in ranks]))
    # docs: every document is read by exactly one rank in an epoch. Documents of exactly one row (seq_len + 1
    # tokens) make each row one document; document i is [bos] + [i + 1] * 8, over shards of 3 documents each.
    n_docs, T = 40, 8
    docs = [np.array([0] + [i + 1] * T, dtype=np.uint16) for i in range(n_docs)]
    parts = [np.concatenate(docs[i : i + 3]) for i in range(0, n_docs, 3)]
    tokens, offsets = ShardedTokens(parts), np.arange(n_docs) * (T + 1)
    seen = []
    for k in (0, 1):
        r = TokenLoader(tokens, offsets, seq_len=T, rows=4, mode="docs", seed=9, rank=k, world_size=2)
        rows = torch.cat([_rows(*r.next_batch()) for _ in range(n_docs // 2 // 4)])
        assert torch.all(rows[:, 0] == 0) and r.epoch == 1 and r.cursor == 0  # exactly one epoch read
        seen.append(set(rows[:, 1].tolist()))
    assert seen[0].isdisjoint(seen[1]) and seen[0] | seen[1] == set(range(1, n_docs + 1))


# ---------------------------------------------------------------------------------------------- mixtures

def _sources(sizes=(3000, 5000, 800)):
    """Sources whose token ids say where they came from: source s holds ids in [1000 s, 1000 s + 999]."""
    rng = np.random.default_rng(0)
    out = {}
    for s, (name, n) in enumerate(zip(("web", "books", "code"), sizes)):
        tokens = (1000 * s + rng.integers(0, 1000, n)).astype(np.uint16)
        offsets = np.arange(0, n, 50)
        tokens[offsets] = 1000 * s  # a BOS of its own, so docs-mode rows are attributable too
        out[name] = (ShardedTokens([tokens[: n // 2], tokens[n // 2 :]]), offsets)
    return out


WEIGHTS = {"web": 0.7, "books": 0.2, "code": 0.1}


@pytest.mark.parametrize("mode", ["random", "docs"])
def test_mixture_proportions_hold_within_one_percent_over_a_run(mode):
    mix = MixtureLoader(_sources(), WEIGHTS, seq_len=16, rows=8, mode=mode, seed=0)
    drawn = np.zeros(3)
    worst = 0.0
    for step in range(200):
        x, y = mix.next_batch()
        for row in _rows(x, y):
            drawn[int(row[0]) // 1000] += 1  # counted from the tokens themselves, not the loader's counters
        share = drawn / drawn.sum()
        if step >= 20:  # from 160 rows on
            worst = max(worst, float(np.abs(share - list(WEIGHTS.values())).max()))
        # at every step, every source is within one row of its exact share
        assert np.all(np.abs(drawn - np.array(list(WEIGHTS.values())) * drawn.sum()) < 1)
    assert worst < 0.01
    assert mix.metrics() == {f"mix/{n}": round(drawn[i] / drawn.sum(), 5) for i, n in enumerate(WEIGHTS)}
    assert mix.metrics()["mix/web"] == pytest.approx(0.7, abs=1 / 1600)


def test_mixture_weights_are_normalised_and_validated():
    mix = MixtureLoader(_sources(), {"web": 3, "books": 1, "code": 1}, seq_len=16, rows=5)
    for _ in range(40):
        mix.next_batch()
    assert mix.fractions() == {"web": 0.6, "books": 0.2, "code": 0.2}
    for bad in ({"web": float("nan"), "books": 1, "code": 1}, {"web": 0, "books": 1, "code": 1},
                {"web": -1, "books": 1, "code": 1}, {"web": 1, "books": 1}):
        with pytest.raises(ValueError, match="mixture weights"):
            MixtureLoader(_sources(), bad, seq_len=16, rows=5)
    with pytest.raises(ValueError, match="data.mix source 'code': the split has 800 tokens"):
        MixtureLoader(_sources(), WEIGHTS, seq_len=1000, rows=1)


@pytest.mark.parametrize("mode", ["random", "docs"])
def test_mixture_resumes_exactly(mode):
    a = MixtureLoader(_sources(), WEIGHTS, seq_len=16, rows=7, mode=mode, seed=4)
    for _ in range(37):
        a.next_batch()
    state = _through_torch_save(a.state_dict())
    b = MixtureLoader(_sources(), WEIGHTS, seq_len=16, rows=7, mode=mode, seed=4)
    b.load_state_dict(state)
    for _ in range(30):
        assert torch.equal(a.next_batch()[0], b.next_batch()[0])
    assert a.state_dict() == b.state_dict()
    # resuming with other weights, or a plain loader's state, is refused with the fix
    c = MixtureLoader(_sources(), {"web": 0.5, "books": 0.4, "code": 0.1}, seq_len=16, rows=7, mode=mode, seed=4)
    with pytest.raises(ValueError, match="resume with the same data.mix"):
        c.load_state_dict(state)
    plain = TokenLoader(*_sources()["web"], seq_len=16, rows=7, mode=mode, seed=4)
    with pytest.raises(ValueError, match="resume with the same data.mix"):
        plain.load_state_dict(state)
    with pytest.raises(ValueError, match="this run mixes web, books, code"):
        b.load_state_dict(plain.state_dict())


def test_mixture_ranks_make_up_the_single_process_batch():
    one = MixtureLoader(_sources(), WEIGHTS, seq_len=16, rows=6, seed=1)
    ranks = [MixtureLoader(_sources(), WEIGHTS, seq_len=16, rows=3, seed=1, rank=k, world_size=2) for k in (0, 1)]
    for _ in range(25):
        assert torch.equal(one.next_batch()[0], torch.cat([r.next_batch()[0] for r in ranks]))
    assert ranks[0].fractions() == ranks[1].fractions() == one.fractions()


# ---------------------------------------------------------------------------------------------- config and folders

def _mix_cfg(mix: dict, **data):
    from scratchlm.train.config import load_pretrain_config

    return load_pretrain_config(None, [], defaults={"data": {"mix": mix, **data}})


@pytest.mark.parametrize("mix, message", [
    ({"web": {"shards": "a", "weight": float("nan")}}, "data.mix.web.weight must be a finite number > 0"),
    ({"web": {"shards": "a", "weight": 0}}, "data.mix.web.weight must be a finite number > 0"),
    ({"web": {"shards": "a", "weight": -0.5}}, "data.mix.web.weight must be a finite number > 0"),
    ({"web": {"shards": "a", "weight": True}}, "data.mix.web.weight must be a finite number > 0"),
    ({"web": {"shards": "a", "weight": "lots"}}, "data.mix.web.weight must be a finite number > 0"),
    ({"web": 0.7}, 'data.mix.web must be a table like web = { shards = "runs/web_shards", weight = 0.7 }'),
    ({"web": {"weight": 0.7}}, "data.mix.web needs shards"),
    ({"web": {"shards": "a", "weight": 1, "path": "b"}}, "data.mix.web has unknown key 'path'"),
    ({"web": {"shards": 3, "weight": 1}}, "data.mix.web.shards must be a shard folder"),
    ({"my web": {"shards": "a", "weight": 1}}, "data.mix name 'my web' is not a plain name"),
])
def test_bad_mix_entries_are_one_line_config_errors(mix, message):
    with pytest.raises(ConfigError) as e:
        _mix_cfg(mix)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_mix_with_shards_or_text_is_refused():
    mix = {"web": {"shards": "a", "weight": 1}}
    for other in ({"shards": "b"}, {"train_text": "c.txt"}):
        with pytest.raises(ConfigError, match="data.mix and data.(shards|train_text) are both set"):
            _mix_cfg(mix, **other)


def test_a_tokenizer_mismatch_is_one_line_naming_both_folders(tmp_path):
    from scratchlm.train.config import DataConfig
    from scratchlm.train.data import prepare_data

    write_shards(tmp_path / "web", DOCS, DOCS[:20], ByteTokenizer(), num_workers=1, progress=False)
    write_shards(tmp_path / "code", DOCS, DOCS[:20], ByteTokenizer(offset=4), num_workers=1, progress=False)
    dc = DataConfig(mix={"web": {"shards": str(tmp_path / "web"), "weight": 1},
                         "code": {"shards": str(tmp_path / "code"), "weight": 1}})
    with pytest.raises(ValueError) as e:
        prepare_data(dc, tmp_path / "run")
    msg = str(e.value)
    assert "\n" not in msg and "different tokenizers" in msg
    assert str((tmp_path / "web").resolve()) in msg and str((tmp_path / "code").resolve()) in msg
    dc.mix["code"]["shards"] = str(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="data.mix.code: .*nowhere/manifest.json not found"):
        prepare_data(dc, tmp_path / "run")


# ---------------------------------------------------------------------------------------------- end to end

def _cli(*args) -> int:
    from scratchlm.cli.main import main

    return main([str(a) for a in args])


@pytest.fixture(scope="module")
def two_folders(tmp_path_factory) -> Path:
    """TinyWorld's train and val text tokenized, with one tokenizer, into two folders of several shards each."""
    root = tmp_path_factory.mktemp("mix")
    assert _cli("data", "synth", "--out", root / "tw", "--size", "150KB", "-q") == 0
    assert _cli("tokenizer", "train", "--input", root / "tw" / "train.txt", "--vocab-size", "300", "--out",
                root / "tok", "-q") == 0
    for name, text in (("stories", "train.txt"), ("held", "val.txt")):
        assert _cli("data", "tokenize", "--tokenizer", root / "tok" / "tokenizer", "--input", root / "tw" / text,
                    "--text-split", "paragraph", "--shard-tokens", "4k", "--workers", "1", "--out", root / name,
                    "-q") == 0
    return root


def test_data_tokenize_writes_bounded_shards_and_refuses_bad_bounds(two_folders, capsys):
    m = json.loads((two_folders / "stories" / "manifest.json").read_text())
    assert m["shard_tokens"] == 4000 and len(m["shards"]["train"]) >= 3
    assert all(e["n_tokens"] <= 4000 for e in m["shards"]["train"])
    for bad in ("0", "-5", "lots", "nan"):
        assert _cli("data", "tokenize", "--tokenizer", two_folders / "tok" / "tokenizer", "--input",
                    two_folders / "tw" / "val.txt", "--shard-tokens", bad, "--out", two_folders / "bad", "-q") == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: --shard-tokens") and "\n" not in err


def _mix_toml(two_folders, path) -> Path:
    path.write_text(f"""
[model]
d_model = 32
n_layers = 1
n_heads = 2
n_kv_heads = 2
max_seq_len = 32
[data.mix]
stories = {{ shards = "{two_folders / 'stories'}", weight = 2 }}
held = {{ shards = "{two_folders / 'held'}", weight = 1 }}
[train]
seq_len = 32
micro_batch_size = 4
log_every = 1
eval_every = 0
sample_tokens = 0
tensorboard = false
progress = false
num_threads = 1
warmup_steps = 2
schedule = "constant"   # the lr of a step does not depend on max_steps: the cut run matches the whole one
""")
    return path


def test_dry_run_shows_every_folder_of_the_mix(two_folders, tmp_path, capsys):
    assert _cli("pretrain", "--config", _mix_toml(two_folders, tmp_path / "mix.toml"), "--set", "train.max_steps=5",
                "--dry-run") == 0
    out = capsys.readouterr().out
    assert f"# data: mix stories 66.7%: shards {two_folders / 'stories'}" in out
    assert f"# data: mix held 33.3%: shards {two_folders / 'held'}" in out
    assert f"# tokenizer: {(two_folders / 'tok' / 'tokenizer').resolve()}" in out
    assert tomllib.loads(out)["data"]["mix"]["stories"]["weight"] == 2


def test_pretrain_cli_mixes_two_folders_and_resumes_exactly(two_folders, tmp_path):
    cfg = _mix_toml(two_folders, tmp_path / "mix.toml")
    common = ("--config", cfg, "-q")
    assert _cli("pretrain", *common, "--out", tmp_path / "whole", "--set", "train.max_steps=8") == 0
    assert _cli("pretrain", *common, "--out", tmp_path / "cut", "--set", "train.max_steps=5") == 0
    assert _cli("pretrain", *common, "--out", tmp_path / "cut", "--set", "train.max_steps=8", "--resume") == 0
    from scratchlm.runs import read_jsonl

    whole, cut = (read_jsonl(tmp_path / r / "metrics.jsonl") for r in ("whole", "cut"))
    steps = [r for r in whole if "loss" in r]
    assert [r["step"] for r in steps] == list(range(1, 9))
    # the realised shares, 2:1 in rows of 4 a step: within one row of 2/3 after every step (so a step's split
    # depends on the rows before it, and a resume must restore them)
    assert all(abs(r["mix/stories"] - 2 / 3) < 1 / (4 * r["step"]) + 1e-5 for r in steps)
    assert all(r["mix/stories"] + r["mix/held"] == pytest.approx(1, abs=2e-5) for r in steps)
    # the resumed run trained on the same rows: the same losses after the cut as the uninterrupted run
    resumed = {r["step"]: r["loss"] for r in cut if "loss" in r}
    assert all(math.isclose(resumed[r["step"]], r["loss"], rel_tol=1e-6) for r in steps)
    # validation read both folders' val shards
    val = [r for r in whole if "val_loss" in r][-1]
    n_val = sum(json.loads((two_folders / f / "manifest.json").read_text())["n_tokens"]["val"]
                for f in ("stories", "held"))
    assert val["val_tokens"] == n_val - 1
    saved = tomllib.loads((tmp_path / "whole" / "config.toml").read_text())
    assert saved["data"]["mix"]["held"] == {"shards": str(two_folders / "held"), "weight": 1}


def test_a_damaged_or_half_copied_shard_stops_the_run_naming_the_file(two_folders, tmp_path):
    import shutil

    from scratchlm.train.config import DataConfig
    from scratchlm.train.data import prepare_data

    copy = tmp_path / "stories"
    shutil.copytree(two_folders / "stories", copy)
    mix = {"stories": {"shards": str(copy), "weight": 1}, "held": {"shards": str(two_folders / "held"), "weight": 1}}
    shard = copy / "train_00001.bin"
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"train_00001.bin does not match the SHA-256 in .*manifest.json") as e:
        prepare_data(DataConfig(mix=mix), tmp_path / "run")
    assert "\n" not in str(e.value)
    assert prepare_data(DataConfig(mix=mix, verify=False), tmp_path / "run").mix["stories"].shard_dir == copy
    (copy / "train_00002.idx.npy").unlink()
    with pytest.raises(ValueError, match="train_00002.idx.npy is missing: the folder is half-copied"):
        prepare_data(DataConfig(mix=mix, verify=False), tmp_path / "run")
    (copy / "train_00000.bin").unlink()
    with pytest.raises(ValueError, match="train_00000.bin is missing: the folder is half-copied"):
        prepare_data(DataConfig(shards=str(copy), verify=False), tmp_path / "run2")
