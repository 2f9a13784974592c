"""Dedup in bounded memory (issue 18.5): the disk-based stages remove exactly what sorting every document in memory
removes, whatever the chunk and buffer sizes; the merge reads its runs a block at a time; the union-find holds only
the documents in a pair; Ray writes the same files as the local pool, token shards included. Bare machine: the
corpus is TinyWorld with planted duplicates."""

import json
import re
from pathlib import Path

import numpy as np
import pytest

from scratchlm.data import external_sort
from scratchlm.data.dedup import DedupConfig, exact_key
from scratchlm.data.executors import LocalExecutor
from scratchlm.data.external_sort import NpyWriter, merge_runs, rows_in_range, sort_records, write_run
from scratchlm.data.minhash import (MinHashConfig, cluster_labels, duplicates_to_remove, estimate_jaccard, lsh_edges,
                                    minhash_signatures)
from scratchlm.data.pipeline import iter_clean_texts, run_dedup

from conftest import builtin_corpus


def planted_corpus(n_bytes: int = 300_000, seed: int = 0) -> list[str]:
    """TinyWorld stories plus exact copies (case, spacing), near copies (a word or two changed, some twice: clusters
    of 3), documents without a word, all shuffled so copies land in other chunks than their originals."""
    docs = builtin_corpus(n_bytes)
    rng = np.random.default_rng(seed)
    out = list(docs)
    for i in rng.choice(len(docs), 60, replace=False):
        out.append(docs[i].upper() if i % 2 else "  ".join(docs[i].split()))
    for i in rng.choice(len(docs), 60, replace=False):
        for variant in range(1 + int(i % 3 == 0)):
            w = docs[i].split()
            w[int(rng.integers(len(w)))] = f"edited{variant}"
            out.append(" ".join(w))
    out += ["!!! ???", "... --- ...", "!!! ???"]
    return [out[i] for i in rng.permutation(len(out))]


def write_chunks(texts: list[str], folder: Path, per_chunk: int) -> list[tuple[str, int]]:
    folder.mkdir(parents=True)
    chunks = []
    for k in range(0, len(texts), per_chunk):
        part = texts[k:k + per_chunk]
        path = folder / f"{k // per_chunk:05d}_000.jsonl"
        path.write_text("".join(json.dumps({"id": str(k + i), "text": t}) + "\n" for i, t in enumerate(part)))
        chunks.append((str(path), len(part)))
    return chunks


def in_memory_reference(texts: list[str], cfg: DedupConfig) -> tuple[set, np.ndarray]:
    """The old path: every hash and signature in memory. Returns (removed document indices, cluster labels)."""
    seen, exact = set(), np.zeros(len(texts), dtype=bool)
    for i, t in enumerate(texts):
        k = exact_key(t)
        exact[i] = k in seen
        seen.add(k)
    sig = minhash_signatures(texts, cfg.minhash)
    labels = cluster_labels(len(texts), lsh_edges(sig, cfg.minhash.bands, cfg.minhash.rows, ~exact))
    return set(np.flatnonzero(exact).tolist()) | set(duplicates_to_remove(labels).tolist()), labels


@pytest.mark.parametrize("per_chunk,buffer_mb", [(10_000, 128.0), (60, 0.0005)])
def test_disk_dedup_removes_what_the_in_memory_reference_removes(tmp_path, monkeypatch, per_chunk, buffer_mb):
    texts = planted_corpus()
    cfg = DedupConfig(buffer_mb=buffer_mb)
    removed, labels = in_memory_reference(texts, cfg)
    assert len(removed) > 100  # the planted copies are there to be found
    reads = []
    real_read = external_sort.RunReader.read

    def counting_read(self):
        rec = real_read(self)
        if self.block < 1 << 30:  # rows_in_range reads one chunk's ids at once: bounded by the chunk, not the buffer
            reads.append(len(rec))
        return rec

    monkeypatch.setattr(external_sort.RunReader, "read", counting_read)
    chunks = write_chunks(texts, tmp_path / "filtered", per_chunk)
    clean, stats = run_dedup(chunks, tmp_path / "work", tmp_path / "clean", cfg, LocalExecutor(1, progress=False))
    kept = list(iter_clean_texts([c for c, _ in clean]))
    assert kept == [t for i, t in enumerate(texts) if i not in removed]
    np.testing.assert_array_equal(np.load(tmp_path / "work" / "clusters.npy"), labels)
    assert stats["exact_removed"] + stats["near"]["removed"] == len(removed)
    if buffer_mb < 0.01:
        # a 512-byte buffer: many sorted runs, each read back a few records at a time, and the same result
        work = tmp_path / "work"
        assert len(chunks) > 10 and len(list((work / "buckets" / "band_00").glob("*.npy"))) == len(chunks)
        assert len(list(work.glob("pairs/*.npy"))) > 2 * DedupConfig().minhash.bands
        assert max(reads) <= cfg.buffer_bytes // 32 and sum(reads) > 10_000


def test_union_find_holds_only_the_documents_in_pairs(tmp_path):
    texts = planted_corpus()
    cfg = DedupConfig()
    _, labels = in_memory_reference(texts, cfg)
    _, sizes = np.unique(labels, return_counts=True)
    chunks = write_chunks(texts, tmp_path / "filtered", 500)
    _, stats = run_dedup(chunks, tmp_path / "work", tmp_path / "clean", cfg, LocalExecutor(2, progress=False))
    in_clusters = int(sizes[sizes > 1].sum())
    assert stats["near"]["documents_in_pairs"] == in_clusters < len(texts) // 5
    lines = (tmp_path / "work" / "clusters.jsonl").read_text().splitlines()
    assert sum(json.loads(line)["size"] for line in lines) == in_clusters
    first = json.loads(lines[0])
    name, row = first["refs"][1]  # refs name the chunk and row of each member
    text = json.loads((tmp_path / "filtered" / name).read_text().splitlines()[row])["text"]
    assert text == texts[first["members"][1]]


def test_min_jaccard_drops_candidates_whose_signatures_disagree(tmp_path):
    texts = planted_corpus()
    loose, strict = DedupConfig(), DedupConfig(min_jaccard=0.97)  # one edited word in ~100: J ~ 0.9
    chunks = write_chunks(texts, tmp_path / "filtered", 400)
    _, a = run_dedup(chunks, tmp_path / "a", tmp_path / "ca", loose, LocalExecutor(1, progress=False))
    _, b = run_dedup(chunks, tmp_path / "b", tmp_path / "cb", strict, LocalExecutor(1, progress=False))
    assert b["near"]["rejected_pairs"] > 0 and b["near"]["removed"] < a["near"]["removed"]
    assert set(np.load(tmp_path / "b" / "remove.npy").tolist()) <= set(np.load(tmp_path / "a" / "remove.npy").tolist())
    sig = np.concatenate([np.load(tmp_path / "b" / "signatures" / f"{k:05d}.npy") for k in range(len(chunks))])
    edges = np.load(tmp_path / "b" / "edges.npy")
    assert len(edges) and estimate_jaccard(sig[edges[:, 0]], sig[edges[:, 1]]).min() >= 0.97


def test_merge_of_sorted_runs_equals_one_sort(tmp_path):
    rng = np.random.default_rng(0)
    parts = [rng.integers(0, 30, size=(int(rng.integers(1, 200)), 3)).astype(np.uint64) for _ in range(9)]
    runs = [write_run(tmp_path / f"r{k}.npy", sort_records(p)) for k, p in enumerate(parts)]
    everything = sort_records(np.concatenate(parts))
    for buffer_bytes, fanin in [(24, 256), (500, 256), (1 << 20, 256), (500, 2), (24, 3)]:
        # from one record per run per read to all at once; fan-in 2-3: intermediate runs merged again
        np.testing.assert_array_equal(np.concatenate(list(merge_runs(runs, buffer_bytes, fanin=fanin))), everything)
        got = np.concatenate(list(merge_runs(runs, buffer_bytes, (7, 19), fanin)))
        np.testing.assert_array_equal(got, everything[(everything[:, 0] >= 7) & (everything[:, 0] < 19)])
    assert not list(tmp_path.glob(".merge_*"))  # the intermediate runs are gone
    ids = [write_run(tmp_path / f"ids{k}.npy", np.sort(p[:, :1], axis=0)) for k, p in enumerate(parts)]
    ref = np.sort(np.concatenate([p[:, 0] for p in parts]))
    np.testing.assert_array_equal(rows_in_range(ids, 5, 12), ref[(ref >= 5) & (ref < 12)])
    w = NpyWriter(tmp_path / "empty.npy", np.int64, 2)
    w.close()
    assert np.load(tmp_path / "empty.npy").shape == (0, 2)
    w = NpyWriter(tmp_path / "grow.npy", np.int64)
    for k in range(3):
        w.write(np.arange(k * 10, k * 10 + 10))
    w.close()
    np.testing.assert_array_equal(np.load(tmp_path / "grow.npy"), np.arange(30))


def test_ray_runs_every_stage_and_writes_the_same_files_as_local(tmp_path):
    pytest.importorskip("ray")
    from scratchlm.data.executors import RayExecutor
    from scratchlm.data.pipeline import PipelineConfig, run_pipeline
    from scratchlm.data.shards import write_shards_split
    from scratchlm.tokenizer import train_bpe_from_texts

    texts = planted_corpus(150_000, seed=1)
    (tmp_path / "in").mkdir()
    for k in range(3):
        (tmp_path / "in" / f"part{k}.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts[k::3]))
    tok = train_bpe_from_texts(texts[:200], vocab_size=400)
    tok.save(tmp_path / "tok")
    cfg = PipelineConfig(shard_docs=80)
    local = run_pipeline([str(tmp_path / "in")], tmp_path / "local", cfg, str(tmp_path / "tok"),
                         LocalExecutor(2, progress=False), progress=False)
    import signal

    before = signal.getsignal(signal.SIGTERM)
    ray_ex = RayExecutor(workers=2, progress=False)
    # ray.init installs a SIGTERM handler that calls sys.exit; the executor gives this process its own back
    assert signal.getsignal(signal.SIGTERM) is before
    try:
        rep = run_pipeline([str(tmp_path / "in")], tmp_path / "ray", cfg, str(tmp_path / "tok"), ray_ex, progress=False)
    finally:
        ray_ex.close()
    assert rep["executor"] == "ray" and rep["tokens"] == local["tokens"] and rep["dedup"]["near"]["removed"] > 0
    files = sorted(p.relative_to(tmp_path / "local") for p in (tmp_path / "local").rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "ray") for p in (tmp_path / "ray").rglob("*") if p.is_file())
    assert any(re.fullmatch(r"train_\d+\.bin", f.name) for f in files)
    for rel in files:
        if rel.name not in ("report.json", "manifest.json"):  # these name the executor and the run folder
            assert (tmp_path / "local" / rel).read_bytes() == (tmp_path / "ray" / rel).read_bytes(), rel
    # and the tokens are those of encoding the clean documents without any executor
    plain = write_shards_split(tmp_path / "plain", iter_clean_texts(local["clean_files"]), str(tmp_path / "tok"),
                               val_fraction=cfg.val_fraction, seed=cfg.seed, progress=False, num_workers=1)
    for entry in plain["shards"]["train"]:
        assert (tmp_path / "plain" / entry["bin"]).read_bytes() == (tmp_path / "ray" / entry["bin"]).read_bytes()


def test_tokenizer_batches_stay_full_when_train_and_val_interleave(tmp_path):
    """A batch was cut at every change of split: at a 10% val fraction that made ~6-document batches (one task and
    one lengths array each, so the tokenize stage ran at a third of the encoder's speed and its driver grew ~100
    bytes per document). Each split now fills its own batch; each split keeps its document order."""
    from scratchlm.data.shards import _batches, is_val_document, write_shards_split
    from scratchlm.tokenizer import train_bpe_from_texts

    docs = builtin_corpus(600_000)
    pairs = [("val" if is_val_document(d, 0.1) else "train", d) for d in docs]
    batches = list(_batches(pairs, 64))
    assert len(batches) <= len(docs) // 64 + 2
    for split in ("train", "val"):
        assert [t for s, b in batches if s == split for t in b] == [d for s, d in pairs if s == split]
    tok = train_bpe_from_texts(docs[:100], vocab_size=300)
    a = write_shards_split(tmp_path / "a", docs, tok, progress=False, num_workers=1, batch_size=64, shard_tokens=20_000)
    b = write_shards_split(tmp_path / "b", docs, tok, progress=False, num_workers=1, batch_size=7, shard_tokens=20_000)
    assert a["shards"] == b["shards"] and len(a["shards"]["train"]) > 3  # same files, byte for byte (sha256)
