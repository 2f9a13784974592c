"""Deduplication as file-to-file stages, so each step can run on a different worker or machine.

Exact: a 128-bit hash of each document's text after normalisation, lowercasing and whitespace folding; every copy
after the first is removed. Near: MinHash LSH (minhash.py), one document kept per cluster.

Stages (each a plain function of paths; an executor maps them over shards or bands, see executors.py):

  exact_hash_shard(shard.jsonl, exact/K.npy)           map over shards: (n, 2) uint64 hashes
  exact_duplicates([exact/*.npy]) -> mask              reduce: True for every later copy
  signature_shard(shard.jsonl, signatures/K.npy, cfg)  map over shards: (n, num_perm) uint32 MinHash signatures
  bucket_bands([signatures/*.npy], bands, active.npy, buckets/band_BB.npy, cfg)
                                                       map over bands: (E, 2) int64 candidate edges per band
  cluster_documents([buckets/*.npy], n, out_dir)       reduce: union-find -> clusters.npy, clusters.jsonl, remove.npy
  write_kept(shard.jsonl, offset, remove.npy, out.jsonl) map over shards: the survivors

Documents are numbered globally in shard order (shard 0's rows, then shard 1's, ...), which every stage derives
from the shard list, so no stage needs another's in-memory state.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from scratchlm.data.minhash import MinHashConfig, band_keys, bucket_edges, cluster_labels, duplicates_to_remove, \
    minhash_signatures, unique_edges, MAX_SIG
from scratchlm.runs import atomic_write, atomic_write_text

_WS = re.compile(r"\s+")


@dataclass
class DedupConfig:
    exact: bool = True
    """Remove exact duplicates (after normalisation, case and whitespace folding) first; cheap and certain."""
    near: bool = True
    """Remove near-duplicates with MinHash LSH."""
    minhash: MinHashConfig = field(default_factory=MinHashConfig)
    """Shingle size, bands and rows (defaults as FineWeb: 5-grams, 14 x 8)."""


def save_npy(path: str | Path, array: np.ndarray) -> None:
    def write(tmp):
        with open(tmp, "wb") as f:
            np.save(f, array)

    atomic_write(path, write)


def read_jsonl_texts(path: str | Path) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f if line.strip()]


# --------------------------------------------------------------------------------------------------
# exact

def exact_key(text: str) -> bytes:
    """16-byte blake2b of the text, lowercased with whitespace folded (so re-wrapped copies match too)."""
    canon = _WS.sub(" ", text.lower()).strip()
    return hashlib.blake2b(canon.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def exact_hash_shard(shard: str, out: str) -> int:
    texts = read_jsonl_texts(shard)
    keys = np.frombuffer(b"".join(exact_key(t) for t in texts), dtype=np.uint64).reshape(len(texts), 2)
    save_npy(out, keys)
    return len(texts)


def exact_duplicates(hash_files: list[str]) -> np.ndarray:
    """(N,) bool over all shards' documents in order: True for every copy after the first."""
    keys = [np.load(f) for f in hash_files]
    allk = np.concatenate(keys) if keys else np.zeros((0, 2), np.uint64)
    if len(allk) == 0:
        return np.zeros(0, dtype=bool)
    _, first = np.unique(np.ascontiguousarray(allk).view("V16").ravel(), return_index=True)
    dup = np.ones(len(allk), dtype=bool)
    dup[first] = False  # np.unique's index is the first occurrence
    return dup


# --------------------------------------------------------------------------------------------------
# near: signatures -> buckets -> clusters

def signature_shard(shard: str, out: str, cfg: MinHashConfig) -> int:
    sig = minhash_signatures(read_jsonl_texts(shard), cfg)
    save_npy(out, sig)
    return len(sig)


def load_signatures(sig_files: list[str]) -> np.ndarray:
    sigs = [np.load(f, mmap_mode="r") for f in sig_files]
    return np.concatenate(sigs) if sigs else np.zeros((0, 0), np.uint32)


def bucket_bands(sig_files: list[str], bands: list[int], active_file: str | None, out: str, cfg: MinHashConfig) -> int:
    """Candidate edges of the given bands (a worker can own a subset of bands). Returns the number of edges."""
    sig = load_signatures(sig_files)
    active = ~(sig == MAX_SIG).all(axis=1)  # documents without a single word never match
    if active_file is not None:
        active &= np.load(active_file)
    keys = band_keys(sig, cfg.bands, cfg.rows)  # (N, bands)
    edges = [bucket_edges(keys[:, b], active) for b in bands]
    e = unique_edges(np.concatenate(edges)) if edges else np.zeros((0, 2), np.int64)
    save_npy(out, e)
    return len(e)


def cluster_documents(edge_files: list[str], n_docs: int, out_dir: str, doc_refs: list[tuple[str, int]] | None = None) -> dict:
    """Union-find over all candidate edges; writes clusters.npy (cluster id per document = its smallest member),
    remove.npy (documents to drop: all but the smallest of each cluster) and clusters.jsonl (clusters of 2+)."""
    out = Path(out_dir)
    edges = [np.load(f) for f in edge_files]
    e = unique_edges(np.concatenate(edges)) if edges else np.zeros((0, 2), np.int64)
    labels = cluster_labels(n_docs, e)
    remove = duplicates_to_remove(labels)
    save_npy(out / "clusters.npy", labels)
    save_npy(out / "remove.npy", remove)
    ids, sizes = np.unique(labels, return_counts=True)
    multi = ids[sizes > 1]
    members = {}
    if len(multi):
        in_multi = np.isin(labels, multi)
        for doc in np.flatnonzero(in_multi).tolist():
            members.setdefault(int(labels[doc]), []).append(doc)
    lines = []
    for root, docs in sorted(members.items()):
        rec = {"cluster": root, "size": len(docs), "kept": root, "members": docs}
        if doc_refs is not None:
            rec["refs"] = [list(doc_refs[d]) for d in docs]
        lines.append(json.dumps(rec))
    atomic_write_text(out / "clusters.jsonl", "".join(line + "\n" for line in lines))
    return {"edges": int(len(e)), "clusters": int(len(multi)), "removed": int(len(remove)),
            "largest": int(sizes.max()) if len(sizes) else 0}


def write_kept(shard: str, offset: int, remove_file: str, out: str) -> dict:
    """Copy the shard's documents whose global index (offset + row) is not in remove.npy."""
    remove = np.load(remove_file)
    lo, hi = np.searchsorted(remove, [offset, offset + 10**12])
    drop = set((remove[lo:hi] - offset).tolist())
    n_in = n_out = bytes_out = 0
    lines = []
    with open(shard, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            if n_in not in drop:
                lines.append(line if line.endswith("\n") else line + "\n")
                n_out += 1
                bytes_out += len(json.loads(line)["text"].encode("utf-8", "surrogatepass"))
            n_in += 1
    atomic_write_text(out, "".join(lines))
    return {"docs_in": n_in, "docs_out": n_out, "bytes_out": bytes_out}
