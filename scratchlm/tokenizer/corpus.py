"""Counting pre-tokenized chunks over a corpus, in parallel and in bounded memory.

BPE training only needs each distinct chunk ("word") and how often it occurs: ~8 MB of English has ~1.9M chunks
but only ~41k distinct ones. So files are cut into ~1 MB byte ranges, worker processes each read their own ranges,
run the split regex and return a Counter, and the parent adds the Counters up. The corpus itself is never held
in memory, only the word counts.

A text file is cut right after a newline that is followed by a printable ASCII character. Both split patterns
always end a chunk there, so the counts are exactly those of pre-tokenizing each whole file, whatever the number
of workers (a file without such newlines is read as one task). JSONL files are cut at line ends; each record's
text fields are separate documents.
Special-token strings (e.g. "<|endoftext|>") in the corpus are treated as document separators, never as text.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import regex

from .pretokenize import SPECIAL_TOKENS, special_splitter

TEXT_SUFFIXES = {".txt", ".text", ".md", ".rst"}
JSON_SUFFIXES = {".jsonl", ".json"}
BLOCK_BYTES = 1 << 20  # ~1 MB per task: enough tasks to balance workers, few enough to keep overhead small


def expand_inputs(inputs) -> list[Path]:
    """Files named directly, plus the .txt/.md/.jsonl/.json files found (recursively, sorted) under directories."""
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in TEXT_SUFFIXES | JSON_SUFFIXES
                           and not any(part.startswith(".") for part in f.relative_to(p).parts))
            if not found:
                raise FileNotFoundError(f"no .txt/.md/.jsonl/.json files under {p}; point --input at text files")
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"input {p} does not exist; pass existing files or directories")
    if not files:
        raise ValueError("no inputs given; pass at least one file or directory")
    return files


def _safe_cut(f, pos: int, size: int, any_newline: bool) -> int:
    """First offset >= pos just after a newline where a chunk boundary is certain (or the file size)."""
    f.seek(pos)
    while pos < size:
        buf = f.read(1 << 16)
        if not buf:
            break
        start = 0
        while True:
            i = buf.find(b"\n", start)
            if i < 0 or i + 1 >= len(buf):
                break
            nxt = buf[i + 1]
            if any_newline or 0x21 <= nxt <= 0x7E:  # printable ASCII: never part of a whitespace chunk
                return pos + i + 1
            start = i + 1
        # re-read the last byte with the next block so a "\n" at the edge is not missed
        pos += max(len(buf) - 1, 1)
        f.seek(pos)
    return size


def plan_tasks(files: list[Path], block_bytes: int = BLOCK_BYTES) -> list[tuple[str, int, int]]:
    """Cut every file into (path, start, end) byte ranges of about block_bytes."""
    tasks = []
    for path in files:
        size = path.stat().st_size
        if path.suffix.lower() == ".json":  # a JSON array cannot be cut; one task per file
            tasks.append((str(path), 0, size))
            continue
        any_newline = path.suffix.lower() == ".jsonl"
        with open(path, "rb") as f:
            start = 0
            while start < size:
                end = size if start + block_bytes >= size else _safe_cut(f, start + block_bytes, size, any_newline)
                tasks.append((str(path), start, end))
                start = end
    return tasks


def task_documents(path: str, start: int, end: int, fields: tuple[str, ...]):
    """The texts in one task's byte range: the raw text, or the chosen fields of each JSON record."""
    with open(path, "rb") as f:
        f.seek(start)
        data = f.read(end - start)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not valid UTF-8 (byte {start + e.start}); convert it to UTF-8 first") from None
    suffix = Path(path).suffix.lower()
    if suffix not in JSON_SUFFIXES:
        yield text
        return
    if suffix == ".json":
        records = json.loads(text)
        if isinstance(records, dict):
            records = [records]
    else:
        records = (json.loads(line) for line in text.splitlines() if line.strip())
    for rec in records:
        if isinstance(rec, str):
            yield rec
        elif isinstance(rec, dict):
            for field in fields:
                value = rec.get(field)
                if isinstance(value, str) and value:
                    yield value


def read_documents(inputs, fields=("text",)):
    """Yield every document of `inputs` (files or folders) one by one, in file order; memory stays bounded."""
    fields = (fields,) if isinstance(fields, str) else tuple(fields)
    for task in plan_tasks(expand_inputs(inputs)):
        yield from task_documents(*task, fields)


# Per-worker state, set once by _init_worker (or directly for in-process counting).
_PAT = None
_SPECIAL = None
_FIELDS: tuple[str, ...] = ("text",)


def _init_worker(pattern: str, fields: tuple[str, ...]) -> None:
    global _PAT, _SPECIAL, _FIELDS
    _PAT = regex.compile(pattern)
    _SPECIAL = special_splitter(SPECIAL_TOKENS)
    _FIELDS = fields


def _count_task(task) -> tuple[str, Counter, int, int]:
    path, start, end = task
    counts: Counter = Counter()
    n_docs = 0
    findall = _PAT.findall
    for doc in task_documents(path, start, end, _FIELDS):
        n_docs += 1
        parts = _SPECIAL.split(doc) if "<|" in doc else [doc]
        for i, part in enumerate(parts):
            if i % 2 == 0 and part:  # odd positions are the special tokens themselves
                counts.update(findall(part))
    return path, counts, n_docs, end - start


def count_words(inputs, pattern: str, fields=("text",), num_workers: int | None = None, progress: bool = True,
                block_bytes: int = BLOCK_BYTES) -> Counter:
    """Counter {chunk string: occurrences} over every document in `inputs` (files or directories)."""
    files = expand_inputs(inputs)
    fields = (fields,) if isinstance(fields, str) else tuple(fields)
    tasks = plan_tasks(files, block_bytes)
    total_bytes = sum(t[2] - t[1] for t in tasks)
    if num_workers is None:
        num_workers = os.cpu_count() or 1
    num_workers = max(1, min(num_workers, len(tasks)))

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total_bytes, unit="B", unit_scale=True, desc="count chunks", leave=False)
    totals: Counter = Counter()
    docs_per_file: dict[str, int] = {}

    def add(result):
        path, counts, n_docs, n_bytes = result
        totals.update(counts)  # Counter.update on an empty Counter is a plain dict copy
        docs_per_file[path] = docs_per_file.get(path, 0) + n_docs
        if bar is not None:
            bar.update(n_bytes)

    if num_workers == 1:
        _init_worker(pattern, fields)
        for task in tasks:
            add(_count_task(task))
    else:
        import multiprocessing as mp

        # fork starts workers in milliseconds; spawn (macOS/Windows default) re-imports us, also fine
        ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
        with ctx.Pool(num_workers, initializer=_init_worker, initargs=(pattern, fields)) as pool:
            for result in pool.imap_unordered(_count_task, tasks):
                add(result)
    if bar is not None:
        bar.close()
    for path in map(str, files):
        if path.endswith((".jsonl", ".json")) and docs_per_file.get(path, 0) == 0 and os.path.getsize(path) > 0:
            raise ValueError(f"no text found in {path} under field(s) {list(fields)}; choose the field with --field")
    return totals
