"""The whole pipeline: removals accounted for, planted duplicates removed, bad inputs survived, Ray == local."""

import gzip
import json
import re
from pathlib import Path

import numpy as np
import pytest

from scratchlm.data.executors import LocalExecutor
from scratchlm.data.normalize import normalize_text
from scratchlm.data.pipeline import PipelineConfig, document_reason, format_report, iter_clean_texts, run_pipeline
from scratchlm.data.quality import c4_clean_lines

from conftest import SHARED_DATA as DATA


def corpus(tmp_path: Path, n: int = 240) -> tuple[list[str], dict]:
    """Good paragraphs + planted exact/near duplicates + junk + bad files, spread over several input files."""
    if not DATA.exists():
        pytest.skip(f"needs shared data (Gutenberg, TinyStories): {DATA} is absent")
    raw = (DATA / "gutenberg" / "pg1342.txt").read_text(encoding="utf-8").replace("\r\n", "\n")
    raw += (DATA / "tinystories" / "tinystories_val_head.txt").read_text(encoding="utf-8")
    paras = [" ".join(p.split()) for p in re.split(r"\n\s*\n", raw) if 80 <= len(p.split()) <= 400]
    rng = np.random.default_rng(0)
    good = [paras[i] for i in rng.permutation(len(paras))[:n]]
    exact = [good[i].upper() for i in range(5)]  # same text after case folding
    near = []
    for i in range(5, 15):
        w = good[i].split()
        w[len(w) // 2] = "CHANGED"
        near.append(" ".join(w))
    junk = {"gopher_word_count": "Too short to be a document.",
            "gopher_alpha_words": " ".join(["1234 5678 9012 the and of"] * 30),
            "c4_lorem_ipsum": good[20] + " Lorem ipsum dolor sit amet.",
            "c4_curly_brace": good[21] + " function f() { return 1; }"}
    docs = good[:100] + exact + junk_list(junk)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in docs))
    with gzip.open(tmp_path / "in" / "b.jsonl.gz", "wt") as f:
        f.writelines(json.dumps({"text": t}) + "\n" for t in good[100:] + near)
    (tmp_path / "in" / "empty.jsonl").write_text("")
    (tmp_path / "in" / "binary.txt").write_bytes(bytes(range(256)) * 10)
    blob = gzip.compress("".join(json.dumps({"text": f"line {i} {i * i}"}) + "\n" for i in range(3000)).encode())
    (tmp_path / "in" / "corrupt.jsonl.gz").write_bytes(blob[: len(blob) // 2])
    with open(tmp_path / "in" / "huge.jsonl", "w") as f:
        f.write(json.dumps({"text": good[30]}) + "\n" + '{"text": "' + "y" * 12_000_000 + '"}\n')
    return good, junk


def junk_list(junk):
    return list(junk.values())


def config():
    cfg = PipelineConfig(shard_docs=60)  # several chunks per input: exercises the global numbering
    cfg.quality.min_words = 20
    return cfg


def test_pipeline_end_to_end(tmp_path):
    good, junk = corpus(tmp_path)
    report = run_pipeline([str(tmp_path / "in")], tmp_path / "out", config(), executor=LocalExecutor(2, progress=False),
                          progress=False)
    out = list(iter_clean_texts(report["clean_files"]))
    # every planted problem is gone, for the planted reason
    for reason in junk:
        assert reason in report["removed"], reason
    kept = set(out)
    canon = [" ".join(t.lower().split()) for t in out]
    assert len(set(canon)) == len(canon)  # no exact duplicates left (after case and whitespace folding)
    assert report["dedup"]["exact_removed"] >= 2 and report["dedup"]["near"]["removed"] >= 2
    for i in range(5, 15):  # a near copy never survives beside its original
        w = good[i].split()
        w[len(w) // 2] = "CHANGED"
        assert not (good[i] in kept and " ".join(w) in kept)
    assert good[30] in kept  # one copy of a duplicated document is kept
    # documents in = documents out + every removal
    removed = sum(r["docs"] for r in report["removed"].values())
    assert report["docs_in"] == report["docs_out"] + removed
    # bad inputs are reported, and the good documents they sat next to survive
    problems = {Path(p["path"]).name: p["problem"] for p in report["problems"]}
    assert problems == {"empty.jsonl": "empty", "binary.txt": "binary", "corrupt.jsonl.gz": "corrupt",
                        "huge.jsonl": "too_long"}
    # exactly the good documents that pass the filters on their own survive (duplicates were planted later)
    cfg = config()
    passing = set()
    for g in good:
        text, _ = c4_clean_lines(normalize_text(g), cfg.quality)
        if document_reason(text, cfg) is None:
            passing.add(text)
    assert len(passing) > 50 and passing == {t for t in out if t in passing | {normalize_text(g) for g in good}}
    # the report's files exist and read back
    on_disk = json.loads((tmp_path / "out" / "report.json").read_text())
    assert on_disk["docs_out"] == report["docs_out"] == len(out)
    for name in ["clusters.jsonl", "clusters.npy", "remove.npy", "signatures/00000.npy", "buckets/band_13/00000.npy"]:
        assert (tmp_path / "out" / "work" / name).exists(), name
    table = format_report(report)
    assert "gopher_word_count" in table and "duplicate clusters" in table


def test_pipeline_output_does_not_depend_on_worker_count(tmp_path):
    corpus(tmp_path, n=80)
    a = run_pipeline([str(tmp_path / "in")], tmp_path / "a", config(), executor=LocalExecutor(1, progress=False),
                     progress=False)
    b = run_pipeline([str(tmp_path / "in")], tmp_path / "b", config(), executor=LocalExecutor(2, progress=False),
                     progress=False)
    assert a["docs_out"] == b["docs_out"]
    assert list(iter_clean_texts(a["clean_files"])) == list(iter_clean_texts(b["clean_files"]))


def test_ray_executor_writes_the_same_files_as_local(tmp_path):
    pytest.importorskip("ray")
    from scratchlm.data.executors import RayExecutor

    corpus(tmp_path, n=80)
    run_pipeline([str(tmp_path / "in")], tmp_path / "local", config(), executor=LocalExecutor(2, progress=False),
                 progress=False)
    ray_ex = RayExecutor(workers=2, progress=False)
    try:
        rep = run_pipeline([str(tmp_path / "in")], tmp_path / "ray", config(), executor=ray_ex, progress=False)
    finally:
        ray_ex.close()
    assert rep["executor"] == "ray"
    local_files = sorted(p.relative_to(tmp_path / "local") for p in (tmp_path / "local").rglob("*") if p.is_file())
    ray_files = sorted(p.relative_to(tmp_path / "ray") for p in (tmp_path / "ray").rglob("*") if p.is_file())
    assert local_files == ray_files
    for rel in local_files:
        if rel.name == "report.json":
            continue  # names its executor and paths
        assert (tmp_path / "local" / rel).read_bytes() == (tmp_path / "ray" / rel).read_bytes(), rel


def test_prepare_cli_writes_token_shards(tmp_path):
    tokenizer = pytest.importorskip("scratchlm.tokenizer")
    import argparse

    from scratchlm.cli.data import register
    from scratchlm.data.shards import iter_documents, open_shard

    corpus(tmp_path, n=60)
    texts = [json.loads(line)["text"] for line in (tmp_path / "in" / "a.jsonl").read_text().splitlines()]
    tok = tokenizer.train_bpe_from_texts(texts, vocab_size=400)
    tok.save(tmp_path / "tok")
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["data", "prepare", "--input", str(tmp_path / "in"), "--tokenizer", str(tmp_path / "tok"),
                              "--out", str(tmp_path / "run"), "--workers", "2", "--set", "quality.min_words=20",
                              "--toxic-words", str(DATA / "toxicity" / "ldnoobw_en.txt"), "-q"])
    assert args.func(args) == 0
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    clean = list(iter_clean_texts(report["clean_files"]))
    loaded = tokenizer.load_tokenizer(tmp_path / "tok")
    decoded = []
    for split in ("train", "val"):
        tokens, offsets, manifest = open_shard(tmp_path / "run", split)
        decoded += [loaded.decode(d[1:].tolist()) for d in iter_documents(tokens, offsets)]
    assert sorted(decoded) == sorted(clean) and manifest["n_docs"]["val"] > 0
