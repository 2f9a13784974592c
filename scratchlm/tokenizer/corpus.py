"""Counting pre-tokenized chunks over a corpus, in parallel and in bounded memory.

BPE training only needs each distinct chunk ("word") and how often it occurs: ~8 MB of English has ~1.9M chunks
but only ~41k distinct ones. So the corpus is cut into tasks of ~1 MB, worker processes each read their own tasks,
run the split regex and return a Counter, and the parent adds the Counters up. The corpus itself is never held
in memory, only the word counts.

A plain file is cut right after a newline that is followed by a printable ASCII character (`next_cut`). Both split
patterns always end a chunk there, so the counts are exactly those of pre-tokenizing each whole file, whatever the
number of workers (a file without such newlines is read as one task).
Special-token strings (e.g. "<|endoftext|>") in the corpus are treated as document separators, never as text.

What a task is and how its bytes become documents is the corpus's business, not the counter's. A corpus is any
object with two methods:

    tasks(block_bytes) -> [(path, start, end, ...)]   the work, planned in the parent; end - start drives the
                                                       progress bar
    read(task, report) -> iterator of str              the documents of one task, run in a worker; it adds what it
                                                       saw to `report` (files, documents, bytes, invalid_utf8: ints;
                                                       problems: one line each, "path:line: what")

TextFiles, below, reads plain UTF-8 text files: all this package can read by itself, since it imports nothing else
of scratchlm. Every other format (JSONL fields, .gz/.zst, Parquet, folders of them) is read by
scratchlm.data.sources.SourceCorpus, the reader every `scratchlm` command shares, with the same byte-range fast path
for uncompressed text and JSONL.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path

import regex

from .base import default_signals, finishing
from .pretokenize import SPECIAL_TOKENS, special_splitter

TEXT_SUFFIXES = {".txt", ".text", ".md", ".rst"}
BLOCK_BYTES = 1 << 20  # ~1 MB per task: enough tasks to balance workers, few enough to keep overhead small
MAX_PROBLEMS = 50  # problem lines kept in a report; the count of the rest is kept too


def next_cut(buf: bytes, start: int = 0, any_newline: bool = False) -> int:
    """Index just after the first newline at or after `start` where no split pattern can join across, or -1.

    That is a newline followed by printable ASCII (never part of a whitespace chunk); with any_newline, every
    newline (JSON Lines: each line is a record). The byte after the newline must be in `buf`.
    """
    while True:
        i = buf.find(b"\n", start)
        if i < 0 or i + 1 >= len(buf):
            return -1
        if any_newline or 0x21 <= buf[i + 1] <= 0x7E:
            return i + 1
        start = i + 1


def _safe_cut(f, pos: int, size: int, any_newline: bool) -> int:
    """First offset >= pos just after a newline where a chunk boundary is certain (or the file size)."""
    f.seek(pos)
    while pos < size:
        buf = f.read(1 << 16)
        if not buf:
            break
        i = next_cut(buf, 0, any_newline)
        if i >= 0:
            return pos + i
        # re-read the last byte with the next block so a "\n" at the edge is not missed
        pos += max(len(buf) - 1, 1)
        f.seek(pos)
    return size


def plan_ranges(path, block_bytes: int = BLOCK_BYTES, any_newline: bool = False) -> list[tuple[int, int]]:
    """Cut one uncompressed file into (start, end) byte ranges of about block_bytes, at safe cuts."""
    size = os.path.getsize(path)
    ranges = []
    with open(path, "rb") as f:
        start = 0
        while start < size:
            end = size if start + block_bytes >= size else _safe_cut(f, start + block_bytes, size, any_newline)
            ranges.append((start, end))
            start = end
    return ranges


def plan_tasks(files, block_bytes: int = BLOCK_BYTES) -> list[tuple[str, int, int]]:
    """Cut every plain text file into (path, start, end) byte ranges of about block_bytes."""
    return [(str(p), s, e) for p in files for s, e in plan_ranges(p, block_bytes)]


def decode_utf8(data: bytes) -> tuple[str, int]:
    """Bytes -> (text, number of bytes that were not UTF-8, each replaced by U+FFFD)."""
    try:
        return data.decode("utf-8"), 0
    except UnicodeDecodeError:
        text = data.decode("utf-8", "surrogateescape")  # one lone surrogate per bad byte: countable
        return re.subn("[\udc80-\udcff]", "\ufffd", text)


def new_report() -> dict:
    return {"files": 0, "documents": 0, "bytes": 0, "invalid_utf8": 0, "problems": [], "more_problems": 0}


def merge_report(into: dict, part: dict) -> None:
    for k, v in part.items():
        if k == "problems":
            room = MAX_PROBLEMS - len(into["problems"])
            into["problems"] += v[:room]
            into["more_problems"] += max(0, len(v) - room)
        else:
            into[k] = into.get(k, 0) + v


def describe_report(report: dict) -> str:
    """One line: what was read, what was replaced, what was skipped and why."""
    s = (f"read {report['files']:,} file(s), {report['documents']:,} document(s), {report['bytes']:,} bytes")
    if report.get("invalid_utf8"):
        s += f"; {report['invalid_utf8']:,} invalid UTF-8 byte(s) replaced by U+FFFD"
    problems = report.get("problems", [])
    if problems:
        more = report.get("more_problems", 0)
        s += "; skipped: " + "; ".join(problems[:5])
        if len(problems) + more > 5:
            s += f" (and {len(problems) + more - 5:,} more)"
    return s


class TextFiles:
    """Plain UTF-8 text files, and the .txt/.md/.text/.rst files found (recursively, sorted) under folders.

    Bytes that are not UTF-8 are replaced by U+FFFD and counted. For JSONL, JSON, Parquet or compressed files use
    scratchlm.data.sources.SourceCorpus (or `scratchlm tokenizer train`, which does).
    """

    def __init__(self, inputs):
        if isinstance(inputs, (str, os.PathLike)):
            inputs = [inputs]
        files: list[Path] = []
        for item in inputs:
            p = Path(item)
            if p.is_dir():
                found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in TEXT_SUFFIXES
                               and not any(part.startswith(".") for part in f.relative_to(p).parts))
                if not found:
                    raise FileNotFoundError(f"no .txt/.md files under {p}; point the input at text files")
                files.extend(found)
            elif p.is_file():
                if p.suffix.lower() not in TEXT_SUFFIXES:
                    raise ValueError(f"{p} is not a plain text file (.txt/.md): read JSONL, JSON, Parquet and .gz/.zst "
                                     "with scratchlm.data.sources.SourceCorpus or `scratchlm tokenizer train`")
                files.append(p)
            else:
                raise FileNotFoundError(f"input {p} does not exist; pass existing files or directories")
        if not files:
            raise ValueError("no inputs given; pass at least one file or directory")
        self.paths = [str(f) for f in files]

    def tasks(self, block_bytes: int = BLOCK_BYTES) -> list[tuple[str, int, int]]:
        return plan_tasks(self.paths, block_bytes)

    def read(self, task, report: dict):
        path, start, end = task
        with open(path, "rb") as f:
            f.seek(start)
            data = f.read(end - start)
        report["files"] += start == 0
        text, bad = decode_utf8(data)
        report["invalid_utf8"] += bad
        if text:
            report["documents"] += 1
            report["bytes"] += len(data)
            yield text


def as_corpus(inputs):
    """A corpus object as is; paths (files, folders) as TextFiles."""
    return inputs if hasattr(inputs, "tasks") and hasattr(inputs, "read") else TextFiles(inputs)


# Per-worker state, set once by _init_worker (or directly for in-process counting).
_PAT = None
_SPECIAL = None
_CORPUS = None


def _init_worker(pattern: str, corpus) -> None:
    global _PAT, _SPECIAL, _CORPUS
    _PAT = regex.compile(pattern)
    _SPECIAL = special_splitter(SPECIAL_TOKENS)
    _CORPUS = corpus


def _init_pool_worker(pattern: str, corpus) -> None:
    default_signals()  # a fork keeps the parent's signal handlers: see base.default_signals
    _init_worker(pattern, corpus)


def _count_task(task) -> tuple[Counter, dict, int]:
    counts: Counter = Counter()
    report = new_report()
    findall = _PAT.findall
    for doc in _CORPUS.read(task, report):
        parts = _SPECIAL.split(doc) if "<|" in doc else [doc]
        for i, part in enumerate(parts):
            if i % 2 == 0 and part:  # odd positions are the special tokens themselves
                counts.update(findall(part))
    return counts, report, task[2] - task[1]


def count_words(inputs, pattern: str, num_workers: int | None = None, progress: bool = True,
                block_bytes: int = BLOCK_BYTES, report: dict | None = None) -> Counter:
    """Counter {chunk string: occurrences} over every document of `inputs` (a corpus, or plain text files/folders).

    report: a dict (see new_report) that receives what was read, replaced and skipped.
    """
    corpus = as_corpus(inputs)
    tasks = corpus.tasks(block_bytes)
    total_bytes = sum(t[2] - t[1] for t in tasks)
    if num_workers is None:
        num_workers = os.cpu_count() or 1
    num_workers = max(1, min(num_workers, len(tasks)))
    if report is None:
        report = new_report()
    for k, v in new_report().items():
        report.setdefault(k, v)

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total_bytes, unit="B", unit_scale=True, desc="count chunks", leave=False)
    totals: Counter = Counter()

    def add(result):
        counts, part, n_bytes = result
        totals.update(counts)  # Counter.update on an empty Counter is a plain dict copy
        merge_report(report, part)
        if bar is not None:
            bar.update(n_bytes)

    if num_workers == 1:
        _init_worker(pattern, corpus)
        for task in tasks:
            add(_count_task(task))
    else:
        import multiprocessing as mp

        # fork starts workers in milliseconds; spawn (macOS/Windows default) re-imports us and pickles the corpus
        ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
        pool = ctx.Pool(num_workers, initializer=_init_pool_worker, initargs=(pattern, corpus))
        with finishing(pool):
            for result in pool.imap_unordered(_count_task, tasks):
                add(result)
    if bar is not None:
        bar.close()
    report["problems"].sort()  # workers finish in any order; the report should not
    return totals
