"""Deduplication as file-to-file stages, so each step can run on a different worker or machine, in bounded memory.

Exact: a 128-bit hash of each document's text after normalisation, lowercasing and whitespace folding; every copy
after the first is removed. Near: MinHash LSH (minhash.py), one document kept per cluster.

No stage holds an index of the whole corpus. Equal keys are brought together by external sorting (external_sort.py,
the design of datatrove's MinHash dedup): each chunk writes its records as a sorted run, and a k-way merge reads the
runs back a block at a time. Memory per worker is about DedupConfig.buffer_mb plus one chunk of documents, however
many documents there are; the union-find holds only the documents that have a near-duplicate.

Stages (each a plain function of paths; an executor maps them over chunks, hash ranges or bands, see executors.py):

  exact_hash_shard(chunk, offset, exact/K.npy)           map over chunks: sorted run of (hash hi, hash lo, doc)
  exact_duplicates(runs, part, parts, exact/removed_PP)  map over hash ranges: every later copy, as sorted id runs
  signature_shard(chunk, offset, removed, signatures/K.npy, buckets/, K, cfg)
                                                         map over chunks: (n, 112) uint32 signatures, and per band
                                                         a sorted run of (band key, doc) in buckets/band_BB/K.npy
  band_pairs(buckets/band_BB/*.npy, pairs/band_BB)       map over bands: merge the runs, link each bucket member to
                                                         its first member, write the pairs as sorted runs
  cluster_pairs(pairs/*.npy, n, work/, names, offsets)   reduce: unique edges -> edges.npy; union-find over the
                                                         documents in them -> clusters.npy, clusters.jsonl, remove.npy
  write_kept(chunk, offset, n, [removed runs], out)     map over chunks: the survivors

Documents are numbered globally in chunk order (chunk 0's rows, then chunk 1's, ...), which every stage derives
from the chunk list, so no stage needs another's in-memory state. The removals are exactly those of sorting every
document in memory (tests/test_data_dedup_disk.py checks it against that reference).
"""

from __future__ import annotations

import hashlib
import heapq
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from scratchlm.data.external_sort import NpyWriter, RunReader, RunWriter, merge_runs, rows_in_range, sort_records, \
    write_run
from scratchlm.data.minhash import MAX_SIG, MinHashConfig, band_keys, find_roots, minhash_signatures, \
    sorted_bucket_pairs, union_pairs
from scratchlm.runs import atomic_write

_WS = re.compile(r"\s+")
EXACT_PARTS = 8  # hash ranges of the exact-dedup merge: up to 8 workers share it


@dataclass
class DedupConfig:
    exact: bool = True
    """Remove exact duplicates (after normalisation, case and whitespace folding) first; cheap and certain."""
    near: bool = True
    """Remove near-duplicates with MinHash LSH."""
    minhash: MinHashConfig = field(default_factory=MinHashConfig)
    """Shingle size, bands and rows (defaults as FineWeb: 5-grams, 14 x 8)."""
    min_jaccard: float = 0.0
    """Drop an LSH candidate pair whose MinHash Jaccard estimate (all 112 rows) is below this; 0 keeps every
    candidate, as FineWeb does. 0.7 removes the rare pairs that share one band by chance."""
    buffer_mb: float = 128.0
    """Sort and merge buffers per dedup worker: records held before a sorted run is written, and the blocks the
    merge reads from its runs. Peak memory of a worker is about 3x this plus one chunk of documents."""

    @property
    def buffer_bytes(self) -> int:
        return max(64, int(self.buffer_mb * 2**20))


def save_npy(path: str | Path, array: np.ndarray) -> None:
    def write(tmp):
        with open(tmp, "wb") as f:
            np.save(f, array)

    atomic_write(path, write)


def read_jsonl_texts(path: str | Path) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f if line.strip()]


def _doc_column(offset: int, n: int) -> np.ndarray:
    return np.arange(offset, offset + n, dtype=np.uint64)


# --------------------------------------------------------------------------------------------------
# exact

def exact_key(text: str) -> bytes:
    """16-byte blake2b of the text, lowercased with whitespace folded (so re-wrapped copies match too)."""
    canon = _WS.sub(" ", text.lower()).strip()
    return hashlib.blake2b(canon.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def exact_hash_shard(shard: str, offset: int, out: str) -> str:
    """Sorted run of (hash, hash, global doc) for one chunk; '' for a chunk without documents."""
    texts = read_jsonl_texts(shard)
    if not texts:
        return ""
    keys = np.frombuffer(b"".join(exact_key(t) for t in texts), dtype=np.uint64).reshape(len(texts), 2)
    return write_run(out, sort_records(np.column_stack([keys, _doc_column(offset, len(texts))])))


def hash_range(part: int, parts: int) -> tuple[int, int | None]:
    """[lo, hi) of the first 64-bit key column for one of `parts` equal ranges (hi None: to the end)."""
    return part * (2**64 // parts), (None if part == parts - 1 else (part + 1) * (2**64 // parts))


def exact_duplicates(run_files: list[str], part: int, parts: int, prefix: str, buffer_bytes: int = 128 << 20) -> dict:
    """Merge one hash range of every chunk's run; every document after the first of equal hashes is a duplicate.
    Writes their ids as sorted runs prefix_RRR.npy; returns {"files", "removed"}."""
    out = RunWriter(prefix, 1, buffer_bytes // 16)
    last = None  # (hi, lo) hash of the previous batch's last row: a group can span two batches
    for rec in merge_runs(run_files, buffer_bytes // 2, hash_range(part, parts)):
        same = np.zeros(len(rec), dtype=bool)
        same[1:] = (rec[1:, 0] == rec[:-1, 0]) & (rec[1:, 1] == rec[:-1, 1])
        same[0] = last == (int(rec[0, 0]), int(rec[0, 1]))
        out.add(rec[same, 2:3])  # sorted by doc inside a group, so the kept first copy is the smallest index
        last = (int(rec[-1, 0]), int(rec[-1, 1]))
    return {"files": out.close(), "removed": out.rows}


# --------------------------------------------------------------------------------------------------
# near: signatures -> per-band sorted runs -> pairs -> clusters

def signature_shard(shard: str, offset: int, removed_files: list[str], out: str, bucket_dir: str, index: int,
                    cfg: MinHashConfig) -> list[str]:
    """Signatures of one chunk, and for each band a sorted run of (band key, global doc) over the documents that
    take part: not an exact duplicate, at least one word. Returns the band runs ('' where no document takes part)."""
    texts = read_jsonl_texts(shard)
    sig = minhash_signatures(texts, cfg)
    save_npy(out, sig)
    active = ~(sig == MAX_SIG).all(axis=1)  # documents without a single word never match
    active[(rows_in_range(removed_files, offset, offset + len(texts)) - np.uint64(offset)).astype(np.int64)] = False
    idx = np.flatnonzero(active)
    keys = band_keys(sig[idx], cfg.bands, cfg.rows)  # (n_active, bands)
    runs = []
    for b in range(cfg.bands):
        if not len(idx):
            runs.append("")
            continue
        order = np.argsort(keys[:, b], kind="stable")  # stable: ties stay in document order, as (key, doc) sorts
        band = Path(bucket_dir) / f"band_{b:02d}"
        band.mkdir(parents=True, exist_ok=True)
        runs.append(write_run(band / f"{index:05d}.npy",
                              np.column_stack([keys[order, b], (idx[order] + offset).astype(np.uint64)])))
    return runs


def _signature_rows(sig_files: list[str], offsets: np.ndarray, docs: np.ndarray) -> np.ndarray:
    """Signatures of arbitrary documents, read from their chunks' files (a fresh memory map per batch: the pages
    read are released when it goes)."""
    chunk = np.searchsorted(offsets, docs, side="right") - 1
    rows = None
    for c in np.unique(chunk):
        sig = np.load(sig_files[c], mmap_mode="r")
        sel = chunk == c
        rows = np.empty((len(docs), sig.shape[1]), np.uint32) if rows is None else rows
        rows[sel] = sig[docs[sel] - offsets[c]]
        del sig
    return rows


def band_pairs(run_files: list[str], prefix: str, buffer_bytes: int = 128 << 20, min_jaccard: float = 0.0,
               sig_files: list[str] | None = None, offsets: list[int] | None = None) -> dict:
    """Candidate pairs of one band: merge the chunks' (key, doc) runs and link each bucket member to its bucket's
    first document; with min_jaccard, keep only pairs whose signatures agree on that fraction of rows.
    Writes sorted runs prefix_RRR.npy of (first, other); returns {"files", "pairs", "rejected"}."""
    out = RunWriter(prefix, 2, buffer_bytes // 32)
    carry, rejected = None, 0
    offs = np.asarray(offsets, dtype=np.int64) if offsets is not None else None
    for rec in merge_runs(run_files, buffer_bytes // 2):
        pairs, carry = sorted_bucket_pairs(rec, carry)
        if min_jaccard > 0 and len(pairs):
            p = pairs.astype(np.int64)
            est = (_signature_rows(sig_files, offs, p[:, 0]) == _signature_rows(sig_files, offs, p[:, 1])).mean(axis=1)
            rejected += int((est < min_jaccard).sum())
            pairs = pairs[est >= min_jaccard]
        out.add(pairs)
    return {"files": out.close(), "pairs": out.rows, "rejected": rejected}


def cluster_pairs(pair_files: list[str], n_docs: int, out_dir: str, chunk_names: list[str] | None = None,
                  offsets: list[int] | None = None, buffer_bytes: int = 128 << 20) -> dict:
    """Connected components of the candidate pairs of every band, held in memory only for the documents in a pair.

    1. Merge the pair runs; equal neighbours are the same edge found by two bands: edges.npy gets each edge once,
       and the ids of the documents in any edge are collected (sorted, unique).
    2. Union-find over those documents (numbered 0..M-1 in id order), edges.npy read back a block at a time.
    3. Each cluster's smallest document is kept: remove.npy (sorted ids of the others), clusters.npy (cluster id =
       smallest member, per document, written in blocks), clusters.jsonl (one line per cluster of 2+).
    """
    out = Path(out_dir)
    edges = NpyWriter(out / "edges.npy", np.int64, 2)
    involved: list[np.ndarray] = []
    held, last = 0, None
    for rec in merge_runs(pair_files, buffer_bytes // 2):
        fresh = np.ones(len(rec), dtype=bool)
        fresh[1:] = (rec[1:] != rec[:-1]).any(axis=1)
        fresh[0] = last != (int(rec[0, 0]), int(rec[0, 1]))
        last = (int(rec[-1, 0]), int(rec[-1, 1]))
        edges.write(rec[fresh].astype(np.int64))
        involved.append(np.unique(rec[fresh]))
        held += len(involved[-1])
        if held > buffer_bytes // 16:  # keep the id list near its unique size
            involved = [np.unique(np.concatenate(involved))]
            held = len(involved[0])
    edges.close()
    docs = np.unique(np.concatenate(involved)).astype(np.int64) if involved else np.zeros(0, np.int64)
    m = len(docs)

    parent = np.arange(m, dtype=np.int64)
    reader = RunReader(out / "edges.npy", max(1, buffer_bytes // 32))
    try:
        while not reader.exhausted:
            e = reader.read().astype(np.int64)
            union_pairs(parent, np.searchsorted(docs, e[:, 0]), np.searchsorted(docs, e[:, 1]))
    finally:
        reader.close()
    root = docs[find_roots(parent, np.arange(m))]  # (M,) smallest member of each document's cluster
    del parent
    remove = docs[root != docs]
    save_npy(out / "remove.npy", remove)

    labels = NpyWriter(out / "clusters.npy", np.int64)
    step = 1 << 20
    for lo in range(0, n_docs, step):
        hi = min(lo + step, n_docs)
        lab = np.arange(lo, hi, dtype=np.int64)
        a, b = np.searchsorted(docs, [lo, hi])
        lab[docs[a:b] - lo] = root[a:b]
        labels.write(lab)
    labels.close()

    order = np.lexsort((docs, root))  # by cluster, members in id order
    members, roots = docs[order], root[order]
    starts = np.flatnonzero(np.r_[True, roots[1:] != roots[:-1]]) if m else np.zeros(0, np.int64)
    ends = np.r_[starts[1:], m].astype(np.int64)
    offs = np.asarray(offsets if offsets is not None else [0], dtype=np.int64)
    tmp = out / ".clusters.jsonl.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for s, e in zip(starts.tolist(), ends.tolist()):
            ids = members[s:e].tolist()
            rec = {"cluster": ids[0], "size": len(ids), "kept": ids[0], "members": ids}
            if chunk_names is not None:
                chunk = np.searchsorted(offs, members[s:e], side="right") - 1
                rec["refs"] = [[chunk_names[c], d - int(offs[c])] for c, d in zip(chunk.tolist(), ids)]
            f.write(json.dumps(rec) + "\n")
    os.replace(tmp, out / "clusters.jsonl")
    sizes = ends - starts
    return {"edges": int(edges.rows), "clusters": int(len(starts)), "removed": int(len(remove)),
            "largest": int(sizes.max()) if len(sizes) else int(n_docs > 0), "documents_in_pairs": int(m)}


def largest_clusters(path: str | Path, top: int = 5) -> list[dict]:
    """The `top` biggest clusters of clusters.jsonl, read a line at a time (the file can be large)."""
    best: list = []
    if not Path(path).exists():
        return []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f):
            if line.strip():
                c = json.loads(line)
                item = (c["size"], -i, c)  # ties: the earlier cluster (smaller id) wins, as a stable sort would
                if len(best) < top:
                    heapq.heappush(best, item)
                elif item[:2] > best[0][:2]:
                    heapq.heapreplace(best, item)
    return [c for _, _, c in sorted(best, key=lambda t: (-t[0], -t[1]))]


def write_kept(shard: str, offset: int, n: int, removed_files: list[str], out: str) -> dict:
    """Copy the chunk's n documents whose global index (offset + row) is in none of the sorted removal runs."""
    drop = set((rows_in_range(removed_files, offset, offset + n) - np.uint64(offset)).tolist())
    n_in = n_out = bytes_out = 0
    tmp = Path(out).with_name(f".{Path(out).name}.tmp")
    with open(shard, encoding="utf-8") as f, open(tmp, "w", encoding="utf-8") as g:
        for line in f:
            if not line.strip():
                continue
            if n_in not in drop:
                g.write(line if line.endswith("\n") else line + "\n")
                n_out += 1
                bytes_out += len(json.loads(line)["text"].encode("utf-8", "surrogatepass"))
            n_in += 1
    os.replace(tmp, out)
    return {"docs_in": n_in, "docs_out": n_out, "bytes_out": bytes_out}
