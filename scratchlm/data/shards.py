"""Token shards: the hand-off from the data pipeline to pretraining.

On-disk format (format_version 2). A shard folder holds each split as numbered shards of at most
`shard_tokens` tokens (default 100M: 200 MB of uint16, a few seconds to hash, copy or re-download):

    train_00000.bin        a run of whole documents, one flat array, native little-endian,
    train_00001.bin ...    dtype uint16 when vocab_size <= 65536, else uint32 (raw bytes, no header:
                           np.memmap(path, dtype, mode="r") reads it)
    train_00000.idx.npy    int64 array (n_docs,): start offset of each document in its shard
    val_00000.bin ...      the same for the validation split
    manifest.json          {format_version, dtype, vocab_size, bos_id, eos_id, doc_boundary,
                            n_tokens: {train, val}, n_docs: {train, val},   (totals over the shards)
                            shard_tokens, tokenizer: {path, sha256}, source,
                            shards: {train: [{bin, idx, n_tokens, n_docs, sha256, idx_sha256}, ...], val: [...]}}

A document never straddles two shards (a document longer than `shard_tokens` gets a shard of its own), so each
shard stands alone. Read as a whole, a split is its shards end to end: `open_shard(dir, split)` returns the tokens
as one array (a memmap for one shard, a ShardedTokens over several) with document offsets into that array, and
the loaders see the same tokens however the split was cut. A format-1 folder (one train.bin / val.bin per split,
no "shards" list) is read as a split of one shard.

Document convention: every document is written as [bos_id] + tokens(document). No EOS is appended.
So tokens[offsets[i]] == bos_id for every i, document i is tokens[offsets[i]:offsets[i+1]]
(the last runs to the end), and a document-aligned packer can start each window at a BOS. A model
still learns where a document ends: the next token after its last token is the next document's BOS.

Writing is streamed and bounded in memory: one shard file is open at a time, filled, fsync'ed, renamed into
place and hashed (SHA-256, computed as the bytes are written) before the next one starts. manifest.json is
removed first and written last (via a rename), so a folder without one is incomplete and `open_shard` refuses it;
`verify_shards` checks every file against its recorded SHA-256.

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
import re
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from scratchlm.runs import atomic_write, atomic_write_json
from scratchlm.tokenizer.base import default_signals

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)  # 1: one train.bin / val.bin per split
SPLITS = ("train", "val")
DEFAULT_SHARD_TOKENS = 100_000_000
SHARD_FILE = re.compile(r"^(train|val)(_\d{5})?\.(bin|idx\.npy)$")  # every name a shard writer may leave
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
    default_signals()  # a fork keeps the parent's signal handlers (see tokenizer.base.default_signals)
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


_LOADED: dict = {}  # per worker process: tokenizer folder -> loaded tokenizer


def encode_task(tokenizer, texts: list[str], dtype_name: str) -> tuple[np.ndarray, np.ndarray]:
    """One batch as an executor task (a Ray worker, a pool process): the folder is loaded once per process."""
    if isinstance(tokenizer, (str, os.PathLike)):
        tokenizer = _LOADED.get(str(tokenizer)) or _LOADED.setdefault(str(tokenizer), _load(tokenizer))
    return encode_documents(tokenizer, texts, np.dtype(dtype_name))


def _batches(items: Iterable[tuple[str, str]], batch_size: int) -> Iterator[tuple[str, list[str]]]:
    """Group (split, text) pairs into same-split batches; each split keeps its order. Empty texts are dropped.

    Each split fills its own batch: cutting one batch at every change of split gave ~6-document batches at a 10%
    val fraction (a task and a lengths array per 6 documents: a third of the encoder's speed, ~100 bytes per
    document held until the shard closed)."""
    pending: dict[str, list[str]] = {}
    for s, text in items:
        if not text:
            continue
        batch = pending.setdefault(s, [])
        batch.append(text)
        if len(batch) >= batch_size:
            yield s, batch
            pending[s] = []
    for s, batch in pending.items():
        if batch:
            yield s, batch


def _ordered_map(fn, batches, num_workers: int, tokenizer, dtype: np.dtype, executor=None):
    """Yield (split, n_texts, fn(batch)) in input order with a bounded number of batches in flight."""
    if executor is not None:  # the data pipeline's executor (local pool or Ray): same batches, same order
        meta: deque = deque()

        def tasks():
            for split, texts in batches:
                meta.append((split, len(texts)))
                yield tokenizer, texts, dtype.name

        for result in executor.imap(encode_task, tasks()):
            split, n = meta.popleft()
            yield split, n, result
        return
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


def _sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


class _SplitWriter:
    """One split as numbered shards of at most `shard_tokens` tokens. One file is open at a time: a shard is
    written, fsync'ed, renamed into place and its offsets saved before the next one starts, so memory holds one
    encoded batch and one shard's document lengths, whatever the corpus size."""

    def __init__(self, out: Path, split: str, dtype: np.dtype, shard_tokens: int):
        self.out, self.split, self.dtype, self.shard_tokens = out, split, dtype, shard_tokens
        self.entries: list[dict] = []  # closed shards, as manifest.json lists them
        self.created: list[Path] = []  # every file written, removed again if the run fails
        self.file = None
        self.n_docs = 0

    def _open(self) -> None:
        self.name = f"{self.split}_{len(self.entries):05d}"
        self.tmp = self.out / f".{self.name}.bin.tmp"
        self.created.append(self.tmp)
        self.file = open(self.tmp, "wb")
        self.hash, self.n_tokens, self.lengths = hashlib.sha256(), 0, []

    def _close(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        self.file = None
        lens = np.concatenate(self.lengths)
        offsets = np.zeros(len(lens), dtype=np.int64)
        np.cumsum(lens[:-1], out=offsets[1:])
        bin_path, idx_path = self.out / f"{self.name}.bin", self.out / f"{self.name}.idx.npy"
        os.replace(self.tmp, bin_path)
        self.created.append(bin_path)
        atomic_write(idx_path, lambda tmp: _save_npy(tmp, offsets))
        self.created.append(idx_path)
        self.entries.append({"bin": bin_path.name, "idx": idx_path.name, "n_tokens": self.n_tokens,
                             "n_docs": len(lens), "sha256": self.hash.hexdigest(),
                             "idx_sha256": _sha256_file(idx_path)})

    def add(self, flat: np.ndarray, lens: np.ndarray) -> None:
        """Append a batch of encoded documents (flat tokens, per-document lengths), cut at document boundaries."""
        ends = np.cumsum(lens)
        starts = ends - lens
        i = 0
        while i < len(lens):
            if self.file is None:
                self._open()
            # the documents from i on that still fit whole in this shard
            j = int(np.searchsorted(ends, starts[i] + self.shard_tokens - self.n_tokens, side="right"))
            if j == i:
                if self.n_tokens:  # the next document does not fit: it starts the next shard
                    self._close()
                    continue
                j = i + 1  # a document longer than a whole shard gets a shard of its own
            data = flat[starts[i] : ends[j - 1]].tobytes()
            self.file.write(data)
            self.hash.update(data)
            self.lengths.append(lens[i:j])
            self.n_tokens += int(ends[j - 1] - starts[i])
            self.n_docs += j - i
            i = j
            if self.n_tokens >= self.shard_tokens:
                self._close()

    def finish(self) -> list[dict]:
        if self.file is not None:
            self._close()
        return self.entries

    def abort(self) -> None:
        if self.file is not None:
            self.file.close()
        for p in self.created:
            p.unlink(missing_ok=True)


def _write_split_pairs(
    out_dir: str | os.PathLike,
    pairs: Iterable[tuple[str, str]],
    tokenizer,
    num_workers: int | None = None,
    batch_size: int = 256,
    source=None,
    progress: bool = True,
    shard_tokens: int = DEFAULT_SHARD_TOKENS,
    executor=None,
) -> dict:
    """Core writer: `pairs` yields (split, text) with split in {"train", "val"}, in any interleaving.
    executor: encode through an executor's imap (scratchlm.data.executors, e.g. Ray) instead of a local pool."""
    if isinstance(shard_tokens, bool) or not isinstance(shard_tokens, int) or shard_tokens < 1:
        raise ValueError(f"shard_tokens must be a positive number of tokens, got {shard_tokens!r}: e.g. 100000000")
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
    writers = {s: _SplitWriter(out, s, dtype, shard_tokens) for s in SPLITS}
    n_tokens = {s: 0 for s in SPLITS}

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(unit="doc", desc="tokenize", dynamic_ncols=True)
    try:
        stream = _batches(pairs, batch_size)
        # pass the path (cheap to send, loaded once per worker) when we were given one
        for split, n, (flat, lens) in _ordered_map(_encode_in_worker, stream, num_workers, tokenizer if isinstance(tokenizer, (str, os.PathLike)) else tok, dtype, executor):
            if split not in writers:
                raise ValueError(f"unknown split {split!r}; use one of {SPLITS}")
            writers[split].add(flat, lens)
            n_tokens[split] += int(flat.size)
            if bar is not None:
                bar.update(n)
                bar.set_postfix(tokens=f"{n_tokens['train'] + n_tokens['val']:,}", refresh=False)
        if not any(w.n_docs for w in writers.values()):
            raise NoDocumentsError("no document to tokenize: the input held no text (or only blank documents)")
        shards = {s: writers[s].finish() for s in SPLITS}
    except BaseException:
        for w in writers.values():
            w.abort()
        raise
    finally:
        if bar is not None:
            bar.close()

    manifest = {
        "format_version": FORMAT_VERSION,
        "dtype": dtype.name,
        "vocab_size": vocab_size,
        "bos_id": bos_id,
        "eos_id": None if eos_id is None else int(eos_id),
        "doc_boundary": DOC_BOUNDARY,
        "n_tokens": n_tokens,
        "n_docs": {s: writers[s].n_docs for s in SPLITS},
        "shard_tokens": shard_tokens,
        "tokenizer": tokenizer_fingerprint(tokenizer),
        "source": source,
        "shards": shards,
    }
    atomic_write_json(out / "manifest.json", manifest)
    # shards of an earlier, larger write (or its one-file layout) would only confuse a reader: remove them
    listed = {e[k] for entries in shards.values() for e in entries for k in ("bin", "idx")}
    for p in out.iterdir():
        if SHARD_FILE.match(p.name) and p.name not in listed:
            p.unlink()
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
    shard_tokens: int = DEFAULT_SHARD_TOKENS,
) -> dict:
    """Tokenize two streams of documents into train/val shards in `out_dir`; returns the manifest.

    tokenizer: a tokenizer folder (loaded with scratchlm.tokenizer.load_tokenizer, once per worker) or
        an object with .encode(text) (and optionally .encode_batch(texts)), .bos_id, .eos_id, .vocab_size.
    num_workers: encoding processes; None = min(8, CPUs); 0 or 1 encodes in this process.
    source: anything JSON-serialisable describing where the text came from (recorded in the manifest).
    shard_tokens: the most tokens in one shard file (train_00000.bin, train_00001.bin, ...).
    Empty documents are skipped; with no document at all, NoDocumentsError is raised and nothing is written.
    Output is identical for any num_workers / batch_size.
    """
    pairs = _chain(("train", documents_train), ("val", documents_val))
    return _write_split_pairs(out_dir, pairs, tokenizer, num_workers, batch_size, source, progress, shard_tokens)


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
    if manifest.get("format_version") not in READABLE_VERSIONS:
        raise ValueError(
            f"{path} has format_version {manifest.get('format_version')}, this scratchlm reads "
            f"{' and '.join(map(str, READABLE_VERSIONS))}: re-run `scratchlm data tokenize`"
        )
    return manifest


def shard_entries(manifest: dict, split: str) -> list[dict]:
    """The shard files of a split, in order: [{bin, idx, n_tokens, n_docs, sha256?, idx_sha256?}, ...].
    A format-1 folder holds one file per split (train.bin, train.idx.npy) and no checksums."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")
    if "shards" in manifest:
        return manifest["shards"][split]
    return [{"bin": f"{split}.bin", "idx": f"{split}.idx.npy", "n_tokens": manifest["n_tokens"][split],
             "n_docs": manifest["n_docs"][split]}]


class ShardedTokens:
    """The shard files of one split read as one array, end to end, each memory-mapped.

    len(), slices (`t[a:b]`) and `windows(starts, length)` work across shard boundaries: a read that spans two
    shards is copied together from both, one that does not is a view of one memmap. Code written for one flat
    token array (the loaders, eval windows, iter_documents) reads any number of shards unchanged, and sees exactly
    the tokens one big file would hold. Nothing is read into memory until it is indexed.
    """

    def __init__(self, parts: list[np.ndarray], names: list[str] | None = None):
        if not parts:
            raise ValueError("ShardedTokens needs at least one shard")
        self.parts, self.names = parts, names or [f"shard {k}" for k in range(len(parts))]
        self.bounds = np.cumsum([0] + [len(p) for p in parts])  # shard k holds positions [bounds[k], bounds[k+1])
        self.dtype = parts[0].dtype

    def __len__(self) -> int:
        return int(self.bounds[-1])

    @property
    def shape(self) -> tuple[int]:
        return (len(self),)

    def locate(self, pos: int) -> tuple[int, int]:
        """(shard index, offset inside that shard) of global position `pos`."""
        k = int(np.searchsorted(self.bounds, pos, side="right")) - 1
        return k, int(pos - self.bounds[k])

    def _read(self, start: int, n: int) -> np.ndarray:
        k, local = self.locate(start)
        if local + n <= len(self.parts[k]):
            return self.parts[k][local : local + n]
        pieces = []
        while n > 0:
            take = min(n, len(self.parts[k]) - local)
            pieces.append(self.parts[k][local : local + take])
            n, k, local = n - take, k + 1, 0
        return np.concatenate(pieces)

    def __getitem__(self, key):
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if step != 1:
                raise IndexError("ShardedTokens slices take step 1")
            return self._read(start, stop - start) if stop > start else np.zeros(0, self.dtype)
        if isinstance(key, (int, np.integer)):
            pos = int(key) + (len(self) if key < 0 else 0)
            if not 0 <= pos < len(self):
                raise IndexError(f"index {int(key)} is out of range for {len(self)} tokens")
            k, local = self.locate(pos)
            return self.parts[k][local]
        idx = np.asarray(key)  # integer arrays: gathered shard by shard
        if idx.dtype.kind not in "iu":
            raise IndexError(f"ShardedTokens takes ints, slices and integer arrays, not {idx.dtype}")
        flat = idx.ravel()
        if flat.size and (flat.min() < 0 or flat.max() >= len(self)):
            raise IndexError(f"index out of range for {len(self)} tokens")
        shard = np.searchsorted(self.bounds, flat, side="right") - 1
        out = np.empty(flat.shape, self.dtype)
        for k in np.unique(shard):
            m = shard == k
            out[m] = self.parts[k][flat[m] - self.bounds[k]]
        return out.reshape(idx.shape)

    def windows(self, starts: np.ndarray, length: int) -> np.ndarray:
        """self[s : s + length] for each s in `starts`: (len(starts), length). Windows inside one shard are gathered
        from its memmap in one indexing operation per shard; the few that cross a boundary are read piece by piece."""
        starts = np.asarray(starts, dtype=np.int64)
        out = np.empty((len(starts), length), self.dtype)
        if not len(starts):
            return out
        if starts.min() < 0 or starts.max() + length > len(self):
            raise IndexError(f"a window of {length} tokens runs past the end of {len(self)} tokens")
        first = np.searchsorted(self.bounds, starts, side="right") - 1
        last = np.searchsorted(self.bounds, starts + length - 1, side="right") - 1
        inside = first == last
        for k in np.unique(first[inside]):
            rows = np.flatnonzero(inside & (first == k))
            local = starts[rows] - self.bounds[k]
            out[rows] = self.parts[k][local[:, None] + np.arange(length)]
        for r in np.flatnonzero(~inside):
            out[r] = self._read(int(starts[r]), length)
        return out


def open_shard(shard_dir: str | os.PathLike, split: str) -> tuple[np.ndarray, np.ndarray, dict]:
    """Return (tokens, doc_offsets, manifest) for one split, however many shard files hold it.

    tokens: the split's shards end to end: a read-only np.memmap of manifest["dtype"] when one file holds it, a
        ShardedTokens over several, a plain empty array for an empty split (an empty file cannot be mapped).
    doc_offsets: int64 (n_docs,), positions in `tokens`: tokens[doc_offsets[i]] is the BOS of document i.
    Every file's size is checked against the manifest (cheap); `verify_shards` checks their contents.
    """
    d = Path(shard_dir)
    manifest = read_manifest(d)
    dtype = np.dtype(manifest["dtype"])
    parts, names, offsets, pos = [], [], [], 0
    for entry in shard_entries(manifest, split):
        bin_path, idx_path, n = d / entry["bin"], d / entry["idx"], entry["n_tokens"]
        if not bin_path.is_file() or not idx_path.is_file():
            raise ValueError(f"{bin_path if not bin_path.is_file() else idx_path} is missing: the folder is "
                             "half-copied; copy it again or re-run `scratchlm data tokenize`")
        size = bin_path.stat().st_size
        if size != n * dtype.itemsize:
            raise ValueError(
                f"{bin_path} holds {size} bytes but manifest.json says {n} {dtype.name} tokens: the folder is "
                "corrupt or half-copied; re-run `scratchlm data tokenize`"
            )
        off = np.load(idx_path)
        if len(off) != entry["n_docs"]:
            raise ValueError(f"{idx_path} has {len(off)} documents, manifest says {entry['n_docs']}: "
                             "re-run `scratchlm data tokenize`")
        if n:
            parts.append(np.memmap(bin_path, dtype=dtype, mode="r"))
            names.append(entry["bin"])
        offsets.append(off.astype(np.int64) + pos)
        pos += n
    if not parts:
        tokens = np.zeros(0, dtype=dtype)
    else:
        tokens = parts[0] if len(parts) == 1 else ShardedTokens(parts, names)
    offsets = np.concatenate(offsets) if offsets else np.zeros(0, dtype=np.int64)
    return tokens, offsets, manifest


def verify_shards(shard_dir: str | os.PathLike) -> int:
    """Check every shard file against the SHA-256 in manifest.json; returns the bytes read.

    A damaged or replaced file is a ValueError naming it. A format-1 folder records no checksums: only its sizes
    are checked (by open_shard), and 0 is returned.
    """
    d = Path(shard_dir)
    manifest = read_manifest(d)
    checked = 0
    for split in SPLITS:
        for entry in shard_entries(manifest, split):
            for key, digest in (("bin", "sha256"), ("idx", "idx_sha256")):
                if digest not in entry:
                    continue
                path = d / entry[key]
                if not path.is_file():
                    raise ValueError(f"{path} is missing: the folder is half-copied; copy it again or re-run "
                                     "`scratchlm data tokenize`")
                if _sha256_file(path) != entry[digest]:
                    raise ValueError(f"{path} does not match the SHA-256 in {d / 'manifest.json'}: the file is "
                                     "damaged; copy it again or re-run `scratchlm data tokenize`")
                checked += path.stat().st_size
    return checked


def iter_documents(tokens: np.ndarray, offsets: np.ndarray) -> Iterator[np.ndarray]:
    """Yield each document's tokens (BOS included): a view of its shard (a document never spans two)."""
    ends = np.append(offsets[1:], len(tokens))
    for start, end in zip(offsets, ends):
        yield tokens[start:end]
