"""Token shards: the hand-off from the data pipeline to pretraining.

On-disk format (format_version 1). A shard folder holds:

    train.bin          all training tokens, one flat array, native little-endian,
                       dtype uint16 when vocab_size <= 65536, else uint32 (raw bytes, no header:
                       np.memmap(path, dtype, mode="r") reads it)
    train.idx.npy      int64 array (n_docs,): start offset of each document in train.bin
    val.bin            the same for the validation split
    val.idx.npy
    manifest.json      {format_version, dtype, vocab_size, bos_id, eos_id,
                        n_tokens: {train, val}, n_docs: {train, val},
                        tokenizer: {path, sha256}, source, doc_boundary}

Document convention: every document is written as [bos_id] + tokens(document). No EOS is appended.
So train.bin[offsets[i]] == bos_id for every i, document i is tokens[offsets[i]:offsets[i+1]]
(the last runs to the end), and a document-aligned packer can start each window at a BOS. A model
still learns where a document ends: the next token after its last token is the next document's BOS.

The files are written atomically: tokens go to temporary names (".train.bin.tmp", ...), are renamed
into place when complete, and manifest.json is written last (also via a rename). A folder without a
manifest.json is incomplete and `open_shard` refuses it.

Encoding runs in a pool of worker processes; each worker gets the tokenizer once (by directory path,
loaded with scratchlm.tokenizer.load_tokenizer, or as a pickled object) and encodes batches of
documents into one flat array per batch, so only compact numpy buffers cross process boundaries.
Documents are streamed: at most a few batches per worker are in flight, whatever the corpus size.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import multiprocessing as mp
import os
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from scratchlm.runs import atomic_write, atomic_write_json

FORMAT_VERSION = 1
SPLITS = ("train", "val")
DOC_BOUNDARY = "bos_prefix"  # every document = [bos_id] + tokens; recorded in the manifest


class NoDocumentsError(ValueError):
    """Nothing to tokenize: an empty shard folder is not a result, so none is written."""


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 halves the disk and page-cache footprint for every vocabulary up to 65,536 tokens."""
    return np.dtype(np.uint16) if vocab_size <= 65536 else np.dtype(np.uint32)


# --------------------------------------------------------------------------------------------------
# encoding (runs in worker processes)

_WORKER_TOKENIZER = None


def _load(tokenizer):
    """A tokenizer object is used as is; a str/Path is a tokenizer folder to load."""
    if isinstance(tokenizer, (str, os.PathLike)):
        from scratchlm.tokenizer import load_tokenizer  # the tokenizer package imports nothing of ours

        return load_tokenizer(tokenizer)
    return tokenizer


def _init_worker(tokenizer) -> None:
    global _WORKER_TOKENIZER
    _WORKER_TOKENIZER = _load(tokenizer)


def encode_documents(tokenizer, texts: list[str], dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """Encode a batch: returns (flat tokens with a BOS before each document, per-document lengths).

    The lengths include the BOS, so np.cumsum(lengths) gives the next offsets.
    """
    if hasattr(tokenizer, "encode_batch"):
        if "num_workers" in inspect.signature(tokenizer.encode_batch).parameters:
            encoded = tokenizer.encode_batch(texts, num_workers=1)  # we are the parallelism: no pool inside a worker
        else:
            encoded = tokenizer.encode_batch(texts)
    else:
        encoded = [tokenizer.encode(t) for t in texts]
    lengths = np.fromiter((len(ids) + 1 for ids in encoded), dtype=np.int64, count=len(encoded))
    flat = np.empty(int(lengths.sum()), dtype=dtype)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    flat[starts] = tokenizer.bos_id
    limit = np.iinfo(dtype).max
    for start, ids in zip(starts, encoded):
        if len(ids):
            arr = np.asarray(ids, dtype=np.int64)
            if arr.max() > limit or arr.min() < 0:
                raise ValueError(
                    f"token id {int(arr.max())} does not fit {dtype.name}; the tokenizer's vocab_size "
                    f"({tokenizer.vocab_size}) is smaller than its largest id: fix the tokenizer"
                )
            flat[start + 1 : start + 1 + len(arr)] = arr
    return flat, lengths


def _encode_in_worker(texts: list[str], dtype_name: str) -> tuple[np.ndarray, np.ndarray]:
    return encode_documents(_WORKER_TOKENIZER, texts, np.dtype(dtype_name))


def _batches(items: Iterable[tuple[str, str]], batch_size: int) -> Iterator[tuple[str, list[str]]]:
    """Group (split, text) pairs into same-split batches, in order. Empty texts are dropped."""
    split, batch = None, []
    for s, text in items:
        if not text:
            continue
        if s != split and batch:
            yield split, batch
            batch = []
        split = s
        batch.append(text)
        if len(batch) >= batch_size:
            yield split, batch
            batch = []
    if batch:
        yield split, batch


def _ordered_map(fn, batches, num_workers: int, tokenizer, dtype: np.dtype):
    """Yield (split, n_texts, fn(batch)) in input order with a bounded number of batches in flight."""
    if num_workers <= 1:
        tok = _load(tokenizer)
        for split, texts in batches:
            yield split, len(texts), encode_documents(tok, texts, dtype)
        return
    # fork: the workers inherit the tokenizer without pickling it (and test doubles need no import path)
    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else None
    with ProcessPoolExecutor(num_workers, mp_context=ctx, initializer=_init_worker, initargs=(tokenizer,)) as pool:
        pending: deque = deque()
        for split, texts in batches:
            pending.append((split, len(texts), pool.submit(fn, texts, dtype.name)))
            if len(pending) >= 2 * num_workers:  # bounded memory: wait for the oldest batch
                s, n, fut = pending.popleft()
                yield s, n, fut.result()
        while pending:
            s, n, fut = pending.popleft()
            yield s, n, fut.result()


# --------------------------------------------------------------------------------------------------
# writing

def tokenizer_fingerprint(tokenizer) -> dict:
    """{path, sha256}: the folder and a hash of its files, or (for an object) of its behaviour on a probe."""
    h = hashlib.sha256()
    if isinstance(tokenizer, (str, os.PathLike)):
        folder = Path(tokenizer)
        for f in sorted(p for p in folder.rglob("*") if p.is_file()):
            h.update(f.relative_to(folder).as_posix().encode())
            h.update(f.read_bytes())
        return {"path": str(folder.resolve()), "sha256": h.hexdigest()}
    probe = "The quick brown fox jumps over the lazy dog. 1234 — ünïcödé\n\tdone."
    ids = list(tokenizer.encode(probe))
    h.update(json.dumps([type(tokenizer).__name__, tokenizer.vocab_size, tokenizer.bos_id, ids]).encode())
    return {"path": getattr(tokenizer, "path", None) and str(tokenizer.path), "sha256": h.hexdigest()}


def _save_npy(path: str, array: np.ndarray) -> None:
    with open(path, "wb") as f:  # a file object: np.save(path) would append ".npy" to the temp name
        np.save(f, array)


def _write_split_pairs(
    out_dir: str | os.PathLike,
    pairs: Iterable[tuple[str, str]],
    tokenizer,
    num_workers: int | None = None,
    batch_size: int = 256,
    source=None,
    progress: bool = True,
) -> dict:
    """Core writer: `pairs` yields (split, text) with split in {"train", "val"}, in any interleaving."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = _load(tokenizer)  # in this process too: for vocab_size/bos_id and the fingerprint
    vocab_size, bos_id = int(tok.vocab_size), int(tok.bos_id)
    eos_id = getattr(tok, "eos_id", None)
    dtype = token_dtype(vocab_size)
    if not 0 <= bos_id < vocab_size:
        raise ValueError(f"tokenizer bos_id {bos_id} is outside its vocabulary of {vocab_size}: fix the tokenizer")
    if num_workers is None:
        num_workers = min(8, os.cpu_count() or 1)

    # an old manifest would describe files we are about to replace: remove it first
    (out / "manifest.json").unlink(missing_ok=True)
    tmp_bin = {s: out / f".{s}.bin.tmp" for s in SPLITS}
    files = {s: open(tmp_bin[s], "wb") for s in SPLITS}
    lengths: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    n_tokens = {s: 0 for s in SPLITS}

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(unit="doc", desc="tokenize", dynamic_ncols=True)
    try:
        stream = _batches(pairs, batch_size)
        # pass the path (cheap to send, loaded once per worker) when we were given one
        for split, n, (flat, lens) in _ordered_map(_encode_in_worker, stream, num_workers, tokenizer if isinstance(tokenizer, (str, os.PathLike)) else tok, dtype):
            if split not in files:
                raise ValueError(f"unknown split {split!r}; use one of {SPLITS}")
            files[split].write(flat.tobytes())
            lengths[split].append(lens)
            n_tokens[split] += int(flat.size)
            if bar is not None:
                bar.update(n)
                bar.set_postfix(tokens=f"{n_tokens['train'] + n_tokens['val']:,}", refresh=False)
        if not any(lengths.values()):
            raise NoDocumentsError("no document to tokenize: the input held no text (or only blank documents)")
    except BaseException:
        for f in files.values():
            f.close()
        for p in tmp_bin.values():
            p.unlink(missing_ok=True)
        raise
    finally:
        if bar is not None:
            bar.close()

    n_docs = {}
    for s in SPLITS:
        files[s].flush()
        os.fsync(files[s].fileno())
        files[s].close()
        lens = np.concatenate(lengths[s]) if lengths[s] else np.zeros(0, np.int64)
        offsets = np.zeros(len(lens), dtype=np.int64)
        np.cumsum(lens[:-1], out=offsets[1:])
        n_docs[s] = int(len(lens))
        os.replace(tmp_bin[s], out / f"{s}.bin")
        atomic_write(out / f"{s}.idx.npy", lambda tmp, a=offsets: _save_npy(tmp, a))

    manifest = {
        "format_version": FORMAT_VERSION,
        "dtype": dtype.name,
        "vocab_size": vocab_size,
        "bos_id": bos_id,
        "eos_id": None if eos_id is None else int(eos_id),
        "doc_boundary": DOC_BOUNDARY,
        "n_tokens": n_tokens,
        "n_docs": n_docs,
        "tokenizer": tokenizer_fingerprint(tokenizer),
        "source": source,
    }
    atomic_write_json(out / "manifest.json", manifest)
    return manifest


def write_shards(
    out_dir: str | os.PathLike,
    documents_train: Iterable[str],
    documents_val: Iterable[str],
    tokenizer,
    num_workers: int | None = None,
    batch_size: int = 256,
    source=None,
    progress: bool = True,
) -> dict:
    """Tokenize two streams of documents into train/val shards in `out_dir`; returns the manifest.

    tokenizer: a tokenizer folder (loaded with scratchlm.tokenizer.load_tokenizer, once per worker) or
        an object with .encode(text) (and optionally .encode_batch(texts)), .bos_id, .eos_id, .vocab_size.
    num_workers: encoding processes; None = min(8, CPUs); 0 or 1 encodes in this process.
    source: anything JSON-serialisable describing where the text came from (recorded in the manifest).
    Empty documents are skipped; with no document at all, NoDocumentsError is raised and nothing is written.
    Output is identical for any num_workers / batch_size.
    """
    pairs = _chain(("train", documents_train), ("val", documents_val))
    return _write_split_pairs(out_dir, pairs, tokenizer, num_workers, batch_size, source, progress)


def _chain(*named):
    for split, docs in named:
        for d in docs:
            yield split, d


def is_val_document(text: str, val_fraction: float, seed: int = 0) -> bool:
    """Deterministic split by content hash: order-independent, and exact duplicates share a split (no leak)."""
    if val_fraction <= 0:
        return False
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8, key=str(seed).encode()).digest()
    return int.from_bytes(digest, "little") / 2.0**64 < val_fraction


def write_shards_split(
    out_dir: str | os.PathLike,
    documents: Iterable[str],
    tokenizer,
    val_fraction: float = 0.1,
    seed: int = 0,
    **kwargs,
) -> dict:
    """One pass over `documents`, each sent to val with probability `val_fraction` (by hash, see above)."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}: pass e.g. --val-fraction 0.1")
    pairs = (("val" if is_val_document(d, val_fraction, seed) else "train", d) for d in documents)
    return _write_split_pairs(out_dir, pairs, tokenizer, **kwargs)


# --------------------------------------------------------------------------------------------------
# reading

def read_manifest(shard_dir: str | os.PathLike) -> dict:
    path = Path(shard_dir) / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: {shard_dir} is not a complete token-shard folder; "
            "write one with `scratchlm data tokenize` or `scratchlm data prepare`"
        )
    manifest = json.loads(path.read_text())
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{path} has format_version {manifest.get('format_version')}, this scratchlm reads "
            f"{FORMAT_VERSION}: re-run `scratchlm data tokenize`"
        )
    return manifest


def open_shard(shard_dir: str | os.PathLike, split: str) -> tuple[np.ndarray, np.ndarray, dict]:
    """Return (tokens, doc_offsets, manifest) for one split.

    tokens: read-only np.memmap (n_tokens,) of manifest["dtype"] (a plain empty array for an empty split,
        since an empty file cannot be memory-mapped); doc_offsets: int64 (n_docs,), tokens[doc_offsets[i]] is
        the BOS of document i.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")
    d = Path(shard_dir)
    manifest = read_manifest(d)
    dtype = np.dtype(manifest["dtype"])
    bin_path = d / f"{split}.bin"
    n = manifest["n_tokens"][split]
    size = bin_path.stat().st_size if bin_path.exists() else -1
    if size != n * dtype.itemsize:
        raise ValueError(
            f"{bin_path} holds {size} bytes but manifest.json says {n} {dtype.name} tokens: the folder is "
            "corrupt or half-copied; re-run `scratchlm data tokenize`"
        )
    tokens = np.memmap(bin_path, dtype=dtype, mode="r") if n else np.zeros(0, dtype=dtype)
    offsets = np.load(d / f"{split}.idx.npy")
    if len(offsets) != manifest["n_docs"][split]:
        raise ValueError(f"{d / f'{split}.idx.npy'} has {len(offsets)} documents, manifest says "
                         f"{manifest['n_docs'][split]}: re-run `scratchlm data tokenize`")
    return tokens, offsets, manifest


def iter_documents(tokens: np.ndarray, offsets: np.ndarray) -> Iterator[np.ndarray]:
    """Yield each document's tokens (BOS included) as a view."""
    ends = np.append(offsets[1:], len(tokens))
    for start, end in zip(offsets, ends):
        yield tokens[start:end]
