"""Sources: turn paths (files, folders, globs, `hf:` dataset names) into a stream of documents.

A document is a plain dict {"id": str, "text": str} (later stages add fields). Readers stream: a text or
JSONL file is read a line at a time, Parquet a record batch at a time, a Hugging Face dataset in streaming
mode, so memory stays bounded by the largest single document, which is itself capped (`max_doc_bytes`).

Formats are chosen by file name, after removing a compression suffix (.gz, .zst/.zstd):
  .jsonl .ndjson          one JSON object per line; the text is `text_field` (dotted path for nested keys)
  .json                   a list of objects (or strings); loaded whole, since JSON cannot be streamed by line
  .parquet                the `text_field` column (pyarrow)
  anything else           plain text, cut into documents by `text_split` (see SourceConfig)
  hf:NAME[:CONFIG]        a Hugging Face dataset (needs `pip install datasets`); NAME may be a local folder

Bad input never stops a run: a file that cannot be read (corrupt gzip, binary, undecodable JSON line,
over-long line, missing field) adds a Problem to the caller's list and the reader moves on, keeping every
document read before the fault. Bytes that are not valid UTF-8 are decoded with "surrogateescape" so that
normalisation (normalize.py) can count them and then replace or drop them.
"""

from __future__ import annotations

import glob
import gzip
import io
import json
import os
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

TEXT_SUFFIXES = {".txt", ".text", ".md", ".rst", ".jsonl", ".ndjson", ".json", ".parquet", ""}
COMPRESSION_SUFFIXES = {".gz", ".zst", ".zstd"}


@dataclass
class SourceConfig:
    text_field: str = "text"
    """JSON/JSONL/Parquet/HF field that holds the text; dotted for nested keys ("meta.body")."""
    text_split: str = "file"
    """How plain-text files are cut into documents: "file" (one document per file), "paragraph" (blank
    lines), "line", or any other string used as a literal separator (e.g. "<|endoftext|>")."""
    max_doc_bytes: int = 10_000_000
    """Documents (and lines) longer than this are reported and skipped: usually a minified dump or a binary
    blob, and they would blow the bounded-memory promise. 10 MB is above any real web page or book chapter."""
    hf_split: str = "train"
    """Split of a Hugging Face dataset (`hf:NAME` inputs)."""
    binary_sniff_bytes: int = 8192
    """A file whose first this-many (decompressed) bytes contain a NUL byte is treated as binary and skipped."""


@dataclass
class Problem:
    """One skipped input (or part of one), for the report."""

    path: str
    problem: str  # short code: binary, corrupt, too_long, bad_json, missing_field, empty, unreadable
    detail: str = ""


@dataclass
class SourceStats:
    files: int = 0
    documents: int = 0
    bytes: int = 0
    problems: list[Problem] = field(default_factory=list)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["problems"] = [asdict(p) for p in self.problems]
        return d


# --------------------------------------------------------------------------------------------------
# finding inputs

def _is_data_file(p: Path) -> bool:
    name = p.name
    if name.startswith("."):
        return False
    suffix = p.suffix.lower()
    if suffix in COMPRESSION_SUFFIXES:
        suffix = Path(p.stem).suffix.lower()
    return suffix in TEXT_SUFFIXES


def expand_inputs(inputs: list[str]) -> list[str]:
    """Files, folders (searched recursively for data files) and globs -> sorted, de-duplicated paths.

    `hf:` names pass through unchanged. Raises FileNotFoundError naming the input that matched nothing.
    """
    out: list[str] = []
    for item in inputs:
        item = str(item)
        if item.startswith("hf:"):
            out.append(item)
            continue
        p = Path(item)
        if p.is_file():
            out.append(str(p))
        elif p.is_dir():
            found = sorted(str(f) for f in p.rglob("*") if f.is_file() and _is_data_file(f))
            if not found:
                raise FileNotFoundError(f"folder {item} holds no .txt/.json/.jsonl/.parquet files (optionally .gz/.zst)")
            out.extend(found)
        else:
            matches = sorted(m for m in glob.glob(item, recursive=True) if Path(m).is_file())
            if not matches:
                raise FileNotFoundError(f"input {item} does not exist and matches no files: check the path or glob")
            out.extend(matches)
    seen: set[str] = set()
    return [x for x in out if not (x in seen or seen.add(x))]


# --------------------------------------------------------------------------------------------------
# opening (decompression)

def open_binary(path: str) -> io.BufferedIOBase:
    """Open a file for reading bytes, decompressing .gz / .zst transparently."""
    suffix = Path(path).suffix.lower()
    if suffix == ".gz":
        return gzip.open(path, "rb")
    if suffix in (".zst", ".zstd"):
        import zstandard  # plumbing only; an optional dependency (scratchlm[data])

        raw = open(path, "rb")
        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(raw, closefd=True))
    return open(path, "rb")


def _format_of(path: str) -> str:
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix in COMPRESSION_SUFFIXES:
        suffix = Path(p.stem).suffix.lower()
    return {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".parquet": "parquet"}.get(suffix, "text")


def _get_field(record, dotted: str):
    value = record
    for key in dotted.split("."):
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


READ_ERRORS = (OSError, EOFError, zlib.error, ValueError, RuntimeError)  # gzip/zstd/arrow corruption surfaces as these


def _decode(b: bytes) -> str:
    return b.decode("utf-8", errors="surrogateescape")


# --------------------------------------------------------------------------------------------------
# readers: each yields documents and appends Problems; none raises on bad data

def _read_lines(f, path: str, cfg: SourceConfig, problems: list[Problem]) -> Iterator[tuple[int, bytes]]:
    """(line_number, line bytes without newline); lines over max_doc_bytes are skipped in chunks, not loaded."""
    n = 0
    while True:
        line = f.readline(cfg.max_doc_bytes + 1)
        if not line:
            return
        n += 1
        if len(line) > cfg.max_doc_bytes and not line.endswith(b"\n"):
            skipped = len(line)
            while line and not line.endswith(b"\n"):  # drain the rest of this line without keeping it
                line = f.readline(1 << 20)
                skipped += len(line)
            problems.append(Problem(path, "too_long", f"line {n}: {skipped:,} bytes > max_doc_bytes {cfg.max_doc_bytes:,}"))
            continue
        yield n, line.rstrip(b"\r\n")


def _sniff_binary(f, cfg: SourceConfig) -> bool:
    head = f.peek(cfg.binary_sniff_bytes)[: cfg.binary_sniff_bytes] if hasattr(f, "peek") else b""
    return b"\0" in head


def _read_text(f, path: str, cfg: SourceConfig, problems: list[Problem]) -> Iterator[dict]:
    mode = cfg.text_split
    if mode == "file":
        data = f.read(cfg.max_doc_bytes + 1)
        if len(data) > cfg.max_doc_bytes:
            problems.append(Problem(path, "too_long", f"file is over max_doc_bytes {cfg.max_doc_bytes:,}; "
                                    "use text_split=paragraph/line to cut it"))
            return
        if data.strip():
            yield {"id": f"{path}:0", "text": _decode(data)}
        return
    if mode in ("line", "paragraph"):
        para: list[bytes] = []
        size, k = 0, 0
        for n, line in _read_lines(f, path, cfg, problems):
            if mode == "line":
                if line.strip():
                    yield {"id": f"{path}:{n}", "text": _decode(line)}
                continue
            if line.strip():
                para.append(line)
                size += len(line) + 1
                if size > cfg.max_doc_bytes:
                    problems.append(Problem(path, "too_long", f"paragraph ending at line {n} is over max_doc_bytes"))
                    para, size = [], 0
            elif para:
                yield {"id": f"{path}:{k}", "text": _decode(b"\n".join(para))}
                para, size, k = [], 0, k + 1
        if para:
            yield {"id": f"{path}:{k}", "text": _decode(b"\n".join(para))}
        return
    # a literal separator such as <|endoftext|>: read in chunks, cut on it, never hold more than one document
    sep = mode.encode("utf-8")
    buf, k = b"", 0
    while True:
        chunk = f.read(1 << 20)
        buf += chunk
        while True:
            i = buf.find(sep)
            if i < 0:
                break
            doc, buf = buf[:i], buf[i + len(sep):]
            if doc.strip():
                yield {"id": f"{path}:{k}", "text": _decode(doc.strip(b"\r\n"))}
                k += 1
        if len(buf) > cfg.max_doc_bytes:
            problems.append(Problem(path, "too_long", f"document {k} is over max_doc_bytes; skipped"))
            buf = b""
            # keep reading: the rest of this document is dropped up to the next separator
            while chunk:
                chunk = f.read(1 << 20)
                i = chunk.find(sep)
                if i >= 0:
                    buf = chunk[i + len(sep):]
                    break
        if not chunk:
            break
    if buf.strip():
        yield {"id": f"{path}:{k}", "text": _decode(buf.strip(b"\r\n"))}


def _record_text(record, path: str, where: str, cfg: SourceConfig, problems: list[Problem]) -> str | None:
    text = record if isinstance(record, str) else _get_field(record, cfg.text_field)
    if not isinstance(text, str):
        problems.append(Problem(path, "missing_field", f"{where}: no string field {cfg.text_field!r} "
                                "(choose one with --text-field)"))
        return None
    return text


def _read_jsonl(f, path: str, cfg: SourceConfig, problems: list[Problem]) -> Iterator[dict]:
    bad = 0
    for n, line in _read_lines(f, path, cfg, problems):
        if not line.strip():
            continue
        try:
            record = json.loads(_decode(line))
        except ValueError as e:
            bad += 1
            if bad <= 5:  # one problem per bad line would flood the report on a non-JSON file
                problems.append(Problem(path, "bad_json", f"line {n}: {e}"))
            continue
        text = _record_text(record, path, f"line {n}", cfg, problems)
        if text is not None:
            yield {"id": record.get("id", f"{path}:{n}") if isinstance(record, dict) else f"{path}:{n}", "text": text}
    if bad > 5:
        problems.append(Problem(path, "bad_json", f"{bad - 5} more lines that are not JSON"))


def _read_json(f, path: str, cfg: SourceConfig, problems: list[Problem]) -> Iterator[dict]:
    data = f.read(cfg.max_doc_bytes * 10 + 1)  # a whole-file format: cap it at 10 documents' worth
    if len(data) > cfg.max_doc_bytes * 10:
        problems.append(Problem(path, "too_long", "JSON file too large to load whole; convert it to JSONL"))
        return
    try:
        obj = json.loads(_decode(data))
    except ValueError:
        # many ".json" files are really JSON Lines
        yield from _read_jsonl(io.BufferedReader(io.BytesIO(data)), path, cfg, problems)
        return
    records = obj if isinstance(obj, list) else [obj]
    for i, record in enumerate(records):
        text = _record_text(record, path, f"record {i}", cfg, problems)
        if text is not None:
            yield {"id": f"{path}:{i}", "text": text}


def _read_parquet(path: str, cfg: SourceConfig, problems: list[Problem]) -> Iterator[dict]:
    import pyarrow.parquet as pq  # plumbing only

    pf = pq.ParquetFile(path)
    top = cfg.text_field.split(".")[0]
    if top not in pf.schema_arrow.names:
        problems.append(Problem(path, "missing_field", f"no column {top!r} (columns: {', '.join(pf.schema_arrow.names)}); "
                                "choose one with --text-field"))
        return
    i = 0
    for batch in pf.iter_batches(batch_size=1024, columns=[top]):  # bounded memory: one record batch at a time
        for value in batch.column(0).to_pylist():
            if "." in cfg.text_field:
                value = _get_field({top: value}, cfg.text_field)
            if isinstance(value, str):
                yield {"id": f"{path}:{i}", "text": value}
            else:
                problems.append(Problem(path, "missing_field", f"row {i}: {cfg.text_field!r} is not a string"))
            i += 1


def read_hf(name: str, cfg: SourceConfig, problems: list[Problem]) -> Iterator[dict]:
    """`hf:NAME[:CONFIG]`: a Hugging Face dataset in streaming mode (NAME may be a hub id or a local folder)."""
    try:
        import datasets
    except ImportError:
        raise ValueError(f"{name} needs the Hugging Face `datasets` package: pip install datasets") from None
    spec = name[3:]
    repo, _, config = spec.partition(":") if not os.path.exists(spec) else (spec, "", "")
    ds = datasets.load_dataset(repo, config or None, split=cfg.hf_split, streaming=True)
    for i, record in enumerate(ds):
        text = _record_text(record, name, f"row {i}", cfg, problems)
        if text is not None:
            yield {"id": f"{name}:{i}", "text": text}


def read_source(path: str, cfg: SourceConfig | None = None, problems: list[Problem] | None = None) -> Iterator[dict]:
    """Stream the documents of one input (a file path or `hf:` name). Faults go to `problems`, never raised."""
    cfg = cfg or SourceConfig()
    problems = problems if problems is not None else []
    if path.startswith("hf:"):
        yield from read_hf(path, cfg, problems)
        return
    fmt = _format_of(path)
    try:
        if os.path.getsize(path) == 0:
            problems.append(Problem(path, "empty", "file is empty"))
            return
        if fmt == "parquet":
            yield from _read_parquet(path, cfg, problems)
            return
        with open_binary(path) as f:
            if not hasattr(f, "peek"):
                f = io.BufferedReader(f)
            if _sniff_binary(f, cfg):
                problems.append(Problem(path, "binary", f"NUL byte in the first {cfg.binary_sniff_bytes} bytes; not text"))
                return
            reader = {"jsonl": _read_jsonl, "json": _read_json, "text": _read_text}[fmt]
            yield from reader(f, path, cfg, problems)
    except READ_ERRORS as e:
        # corrupt archives fail mid-stream: documents yielded before the fault are kept
        problems.append(Problem(path, "corrupt", f"{type(e).__name__}: {e}"))


def read_sources(inputs: list[str], cfg: SourceConfig | None = None, stats: SourceStats | None = None,
                 progress: bool = False) -> Iterator[dict]:
    """All documents of all inputs, in order. Expands folders/globs; counts files, documents and bytes."""
    stats = stats if stats is not None else SourceStats()
    paths = expand_inputs(inputs)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(unit="doc", desc="read", dynamic_ncols=True)
    try:
        for path in paths:
            stats.files += 1
            for doc in read_source(path, cfg, stats.problems):
                stats.documents += 1
                stats.bytes += len(doc["text"].encode("utf-8", "surrogateescape"))
                if bar is not None:
                    bar.update(1)
                yield doc
    finally:
        if bar is not None:
            bar.close()
