"""External sort: sorted runs of uint64 records on disk, and their k-way merge read back in bounded blocks.

Why: deduplication has to bring equal keys together (exact hashes, LSH band keys, candidate pairs) across every
document of the corpus. A sort in memory holds all of them: 112 MinHash rows of a billion documents do not fit.
So each producer sorts only what it holds (one chunk of documents, or `limit` records) and writes a *run*; the
merge reads `block_rows` records of each run at a time and emits everything that no unread record can precede.
Memory is (runs x block) whatever the corpus size; the same design as datatrove's MinHash buckets and as every
database's sort-merge.

Records are (n, w) uint64 arrays ordered lexicographically (column 0 first). A run is a plain .npy file, so
`np.load(run)` shows it; the merge reads it with ordinary file reads, not a memory map, because pages of a memory
map count toward the reader's RSS for as long as they stay resident and reads through the page cache do not.
"""

from __future__ import annotations

import os
import shutil
import struct
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np

U64 = np.dtype("<u8")
MAX_FANIN = 256  # runs merged at once: beyond it, open files (ulimit -n is often 1024) and per-run blocks get small


def sort_records(rec: np.ndarray) -> np.ndarray:
    """(n, w) uint64 rows in lexicographic order (column 0 first)."""
    if len(rec) <= 1:
        return rec
    order = np.lexsort(rec.T[::-1])  # lexsort sorts by its last key first
    return rec[order]


# --------------------------------------------------------------------------------------------------
# writing: whole runs, or an .npy file whose length is known only at the end

def _npy_header(dtype: np.dtype, shape: tuple) -> bytes:
    """A version 1.0 .npy header whose length does not depend on shape[0] (padded to 20 digits), so a streamed
    file can write it first with 0 rows and rewrite it in place when the count is known."""
    rest = "".join(f" {d})" if i == len(shape) - 2 else f" {d}," for i, d in enumerate(shape[1:]))
    shape_str = f"({shape[0]:>20d}," + (rest or ")")
    text = "{'descr': %r, 'fortran_order': False, 'shape': %s, }" % (np.lib.format.dtype_to_descr(dtype), shape_str)
    pad = -(10 + len(text) + 1) % 64  # magic(6) + version(2) + length(2) + text + "\n", a multiple of 64
    body = (text + " " * pad + "\n").encode("latin1")
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(body)) + body


class NpyWriter:
    """Appends rows to an .npy file without holding them: written to a temporary name, renamed on close()."""

    def __init__(self, path: str | Path, dtype, width: int | None = None):
        self.path = Path(path)
        self.tmp = self.path.with_name(f".{self.path.name}.tmp")
        self.dtype, self.width, self.rows = np.dtype(dtype), width, 0
        self.f = open(self.tmp, "wb")
        self.f.write(self._header())

    def _header(self) -> bytes:
        return _npy_header(self.dtype, (self.rows,) if self.width is None else (self.rows, self.width))

    def write(self, rows: np.ndarray) -> None:
        rows = np.ascontiguousarray(rows, dtype=self.dtype)
        self.f.write(rows.tobytes())
        self.rows += len(rows)

    def close(self) -> Path:
        self.f.seek(0)
        self.f.write(self._header())
        self.f.close()
        os.replace(self.tmp, self.path)
        return self.path


def write_run(path: str | Path, rec: np.ndarray) -> str:
    """Write already-sorted records as one run."""
    w = NpyWriter(path, U64, rec.shape[1])
    w.write(rec)
    return str(w.close())


class RunWriter:
    """Collects records in any order and writes a sorted run each time `limit_rows` are held: prefix_000.npy, ..."""

    def __init__(self, prefix: str | Path, width: int, limit_rows: int):
        self.prefix, self.width, self.limit = str(prefix), width, max(1, int(limit_rows))
        self.parts: list[np.ndarray] = []
        self.held = 0
        self.files: list[str] = []
        self.rows = 0

    def add(self, rec: np.ndarray) -> None:
        if len(rec):
            self.parts.append(np.asarray(rec, dtype=U64).reshape(-1, self.width))
            self.held += len(rec)
            self.rows += len(rec)
            if self.held >= self.limit:
                self.flush()

    def flush(self) -> None:
        if self.held:
            rec = sort_records(np.concatenate(self.parts))
            self.files.append(write_run(f"{self.prefix}_{len(self.files):03d}.npy", rec))
            self.parts, self.held = [], 0

    def close(self) -> list[str]:
        self.flush()
        return self.files


# --------------------------------------------------------------------------------------------------
# reading

class RunReader:
    """Reads rows [lo, hi) of a run .npy in blocks of `block_rows` with plain file reads."""

    def __init__(self, path: str | Path, block_rows: int, key_range: tuple[int, int | None] | None = None):
        self.f = open(path, "rb")
        version = np.lib.format.read_magic(self.f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(self.f)
        if dtype not in (U64, np.dtype("<i8")) or fortran or len(shape) not in (1, 2):
            raise ValueError(f"{path} is not a run of 64-bit records (dtype {dtype}, shape {shape}): delete the work "
                             "folder and re-run")
        self.n, self.width = shape[0], (shape[1] if len(shape) == 2 else 1)  # a 1-D array is one column
        self.signed = dtype.kind == "i"  # non-negative ids saved as int64 read the same as uint64
        self.start = self.f.tell()
        self.block = max(1, int(block_rows))
        self.pos, self.end = 0, self.n
        if key_range is not None:  # rows whose first column lies in [lo, hi): two binary searches
            lo, hi = key_range
            self.pos = self._first_row_ge(lo)
            self.end = self.n if hi is None else self._first_row_ge(hi)

    def _key(self, row: int) -> int:
        self.f.seek(self.start + row * self.width * 8)
        return int.from_bytes(self.f.read(8), "little", signed=self.signed)

    def _first_row_ge(self, value: int) -> int:
        lo, hi = 0, self.n
        while lo < hi:
            mid = (lo + hi) // 2
            if self._key(mid) < value:
                lo = mid + 1
            else:
                hi = mid
        return lo

    @property
    def exhausted(self) -> bool:
        return self.pos >= self.end

    def read(self) -> np.ndarray:
        """The next block: (rows, width) uint64, empty when the range is exhausted."""
        rows = min(self.block, self.end - self.pos)
        self.f.seek(self.start + self.pos * self.width * 8)
        rec = np.fromfile(self.f, dtype=U64, count=rows * self.width).reshape(rows, self.width)
        if len(rec) != rows:
            raise ValueError(f"{self.f.name} is truncated: delete the work folder and re-run")
        self.pos += rows
        return rec

    def close(self) -> None:
        self.f.close()


def _count_le(cols: list[np.ndarray], bound: tuple[int, ...]) -> int:
    """How many rows of a sorted block (as contiguous columns) are <= bound, by binary search column by column."""
    first = cols[0]
    if first[0] > bound[0]:  # the common cases first: nothing, or everything, can go
        return 0
    if first[-1] < bound[0]:
        return len(first)
    lo, hi = 0, len(first)
    for c, col in enumerate(cols):
        v = np.uint64(bound[c])
        lo, hi = lo + int(np.searchsorted(col[lo:hi], v, "left")), lo + int(np.searchsorted(col[lo:hi], v, "right"))
        if lo == hi:  # nothing equal on this column: the rows before lo are the ones below the bound
            return lo
    return hi


def merge_runs(paths: list[str], buffer_bytes: int = 128 << 20, key_range: tuple[int, int | None] | None = None,
               fanin: int = MAX_FANIN) -> Iterator[np.ndarray]:
    """Yield the records of sorted runs as (n, w) batches that together are in lexicographic order.

    Each run is read `buffer_bytes / len(paths)` at a time. After every read, the rows that are <= the smallest
    last-read row of the runs still being read can go: nothing unread can sort before them. Each round empties at
    least one run's block, so the loop ends; memory is the blocks plus one merged batch.
    key_range=(lo, hi) merges only the records whose first column lies in [lo, hi) (hi None: no upper limit), so
    several workers can share one merge. More than `fanin` runs are merged in groups into intermediate runs first
    (one more pass over the data), so a corpus of any number of chunks keeps the open files and the memory bounded.
    """
    paths = [p for p in paths if p]
    if not paths:
        return
    if len(paths) > fanin:
        yield from _merge_cascade(paths, buffer_bytes, key_range, fanin)
        return
    width = None
    readers = []
    for p in paths:
        r = RunReader(p, 1, key_range)
        width = width or r.width
        if r.width != width:
            raise ValueError(f"{p} has {r.width} columns, the other runs {width}: delete the work folder and re-run")
        readers.append(r)
    block = max(1, buffer_bytes // (8 * width * len(readers)))
    bufs: list[list[np.ndarray] | None] = [None] * len(readers)
    try:
        for r in readers:
            r.block = block
        while True:
            for i, r in enumerate(readers):  # refill every emptied block
                if (bufs[i] is None or len(bufs[i][0]) == 0) and not r.exhausted:
                    rec = r.read()
                    bufs[i] = [np.ascontiguousarray(rec[:, c]) for c in range(width)]
            live = [i for i, b in enumerate(bufs) if b is not None and len(b[0])]
            if not live:
                return
            reading = [i for i in live if not readers[i].exhausted]
            if reading:
                bound = min(tuple(int(c[-1]) for c in bufs[i]) for i in reading)
                takes = [(i, _count_le(bufs[i], bound)) for i in live]
            else:  # every run is in memory: all of it can go
                takes = [(i, len(bufs[i][0])) for i in live]
            parts = [np.stack([c[:k] for c in bufs[i]], axis=1) for i, k in takes if k]
            for i, k in takes:
                bufs[i] = [c[k:] for c in bufs[i]]
            yield sort_records(np.concatenate(parts))
    finally:
        for r in readers:
            r.close()


def _merge_cascade(paths: list[str], buffer_bytes: int, key_range, fanin: int) -> Iterator[np.ndarray]:
    reader = RunReader(paths[0], 1)
    width = reader.width
    reader.close()
    tmp = Path(tempfile.mkdtemp(prefix=".merge_", dir=Path(paths[0]).parent))
    try:
        level = []
        for g in range(0, len(paths), fanin):
            w = NpyWriter(tmp / f"{g // fanin:05d}.npy", U64, width)
            for rec in merge_runs(paths[g : g + fanin], buffer_bytes, key_range, fanin):
                w.write(rec)
            level.append(str(w.close()))
        yield from merge_runs(level, buffer_bytes, None, fanin)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def rows_in_range(paths: list[str], lo: int, hi: int) -> np.ndarray:
    """The sorted values in [lo, hi) of several sorted 1-column runs (e.g. document ids to remove from one chunk)."""
    out = []
    for p in paths:
        r = RunReader(p, 1 << 30, (lo, hi))
        try:
            out.append(r.read()[:, 0])
        finally:
            r.close()
    return np.sort(np.concatenate(out)) if out else np.zeros(0, dtype=U64)
