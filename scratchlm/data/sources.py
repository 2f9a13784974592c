"""Sources: turn paths (files, folders, globs, `hf:` dataset names) into a stream of documents.

This is the one reader: every command that reads text (`data prepare|filter|dedup|tokenize|toxicity`,
`tokenizer train|stats`) reads through it, so all accept the same formats and report faults the same way.

A document is a plain dict {"id": str, "text": str} (later stages add fields). Readers stream: a text or
JSONL file is read a line at a time, Parquet a record batch at a time, a Hugging Face dataset in streaming
mode, so memory stays bounded by the largest single document, which is itself capped (`max_doc_bytes`).

Formats are chosen by file name, after removing a compression suffix (.gz, .zst/.zstd):
  .jsonl .ndjson          one JSON object per line; the text is `text_field` (dotted path for nested keys;
                          "question,answer" reads two fields of each record as two documents)
  .json                   a list of objects (or strings); loaded whole, since JSON cannot be streamed by line
  .parquet                the `text_field` column (pyarrow)
  anything else           plain text, cut into documents by `text_split` (see SourceConfig)
  hf:NAME[:CONFIG]        a Hugging Face dataset (needs `pip install datasets`); NAME may be a local folder

Bad input never stops a run: a file that cannot be read (corrupt gzip, binary, undecodable JSON line,
over-long line, missing field) adds a Problem (path, line, what) to the caller's list and the reader moves on,
keeping every document read before the fault. Bytes that are not valid UTF-8 are decoded with "surrogateescape"
so that normalisation (normalize.py) can count them and then replace or drop them; consumers that need no
normalisation get them replaced by U+FFFD and counted (`read_sources(replace_invalid=True)`, SourceCorpus).

How plain text is cut into documents when it is a book lives in chapters.py; how a chat-shaped row (instruction,
conversation, preference) is read as text, in chat_rows.py.

SourceCorpus hands the same readers to the tokenizer's parallel chunk counter (scratchlm/tokenizer/corpus.py):
uncompressed text and JSONL are cut into ~1 MB byte ranges that worker processes parse side by side, everything
else is one task per file.
"""

from __future__ import annotations

import glob
import gzip
import io
import itertools
import json
import os
import re
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

from .chapters import chapter_documents
from .chat_rows import CHAT_KEYS, chat_text

TEXT_SUFFIXES = {".txt", ".text", ".md", ".rst", ".jsonl", ".ndjson", ".json", ".parquet", ""}
# source code, read as plain text, one document per file (text_split="auto"), and filtered with the `code` preset
CODE_SUFFIXES = {".py", ".pyi", ".c", ".h", ".cc", ".cpp", ".hpp", ".cu", ".cs", ".java", ".kt", ".scala", ".go",
                 ".rs", ".swift", ".js", ".jsx", ".ts", ".tsx", ".rb", ".php", ".pl", ".lua", ".r", ".jl", ".hs",
                 ".ml", ".ex", ".sh", ".bash", ".sql", ".html", ".css", ".scss", ".tex", ".toml", ".yaml", ".yml"}
COMPRESSION_SUFFIXES = {".gz", ".zst", ".zstd"}
SKIP_DIRS = {"node_modules", "__pycache__", "site-packages"}
"""Folders never searched for inputs (besides hidden ones such as .git/ and .venv/): installed or generated files."""


@dataclass
class SourceConfig:
    text_field: str = "text"
    """JSON/JSONL/Parquet/HF field that holds the text; dotted for nested keys ("meta.body"); several fields,
    comma-separated ("question,answer"), are read as separate documents."""
    text_split: str = "file"
    """How plain-text files are cut into documents: "file" (one document per file), "paragraph" (blank
    lines), "line", "chapter" (chapters, else blank-line paragraphs, joined to at least min_doc_chars), "auto"
    ("file" for source code, "chapter" for everything else), or any other string used as a literal separator
    (e.g. "<|endoftext|>")."""
    min_doc_chars: int = field(default=2000, metadata={"range": (1, None)})
    """text_split="chapter": paragraphs are joined until a document holds at least this many characters, so a
    novel becomes chapters (or ~2,000-character passages), not one giant document nor thousands of lines."""
    max_doc_bytes: int = 10_000_000
    """Documents (and lines) longer than this are reported and skipped: usually a minified dump or a binary
    blob, and they would blow the bounded-memory promise. 10 MB is above any real web page or book chapter."""
    hf_split: str = "train"
    """Split of a Hugging Face dataset (`hf:NAME` inputs)."""
    binary_sniff_bytes: int = 8192
    """A file whose first this-many (decompressed) bytes contain a NUL byte is treated as binary and skipped."""
    keep_record: bool = False
    """Give each document of a JSON/JSONL/Parquet/HF input its whole record (doc["record"]) and where it was
    (doc["where"], "file:line"): for readers that need another field too, such as a label."""
    split_long_files: bool = False
    """With text_split="file": cut a file over max_doc_bytes into pieces instead of skipping it. Pieces end after a
    newline followed by a printable character, where no BPE split pattern joins two chunks, so counting or encoding
    the pieces gives the tokens of the whole file. Tokenizer training and stats set it; documents stay whole
    elsewhere, since the filters judge whole documents."""


@dataclass
class Problem:
    """One skipped input (or part of one), for the report."""

    path: str
    problem: str  # short code: binary, corrupt, too_long, bad_json, missing_field, empty, unreadable
    detail: str = ""
    line: int | None = None  # 1-based line of a JSONL/text file, when the fault has one

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        return f"{where}: {self.problem}" + (f" ({self.detail})" if self.detail else "")


@dataclass
class SourceStats:
    files: int = 0
    documents: int = 0
    bytes: int = 0
    invalid_utf8: int = 0
    """Bytes that were not UTF-8 and were replaced by U+FFFD (counted only when the reader replaces them)."""
    problems: list[Problem] = field(default_factory=list)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["problems"] = [asdict(p) for p in self.problems]
        return d

    def summary(self, problems: bool = True) -> str:
        """One line: what was read, replaced and skipped (the first few problems, each as path:line)."""
        from scratchlm.tokenizer.corpus import describe_report  # the same line the tokenizer prints

        return describe_report({**asdict(self), "problems": [str(p) for p in self.problems] if problems else []})


# --------------------------------------------------------------------------------------------------
# finding inputs

def _is_data_file(p: Path, root: Path) -> bool:
    parts = p.relative_to(root).parts
    if any(part.startswith(".") for part in parts) or SKIP_DIRS.intersection(parts[:-1]):  # .git/, .cache/, temp files
        return False
    return _suffix(str(p)) in TEXT_SUFFIXES | CODE_SUFFIXES


def _suffix(path: str) -> str:
    """The format suffix, under any compression suffix: "a.jsonl.gz" -> ".jsonl"."""
    p = Path(path)
    suffix = p.suffix.lower()
    return Path(p.stem).suffix.lower() if suffix in COMPRESSION_SUFFIXES else suffix


def is_code(path: str) -> bool:
    """Source code, by its file name (CODE_SUFFIXES)."""
    return not str(path).startswith("hf:") and _suffix(str(path)) in CODE_SUFFIXES


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
            found = sorted(str(f) for f in p.rglob("*") if f.is_file() and _is_data_file(f, p))
            if not found:
                raise FileNotFoundError(f"folder {item} holds no .txt/.md/.json/.jsonl/.parquet or source code files "
                                        "(optionally .gz/.zst)")
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


def format_of(path: str) -> str:
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
            problems.append(Problem(path, "too_long", f"{skipped:,} bytes > max_doc_bytes {cfg.max_doc_bytes:,}", n))
            continue
        yield n, line.rstrip(b"\r\n")


def _sniff_binary(f, cfg: SourceConfig) -> bool:
    head = f.peek(cfg.binary_sniff_bytes)[: cfg.binary_sniff_bytes] if hasattr(f, "peek") else b""
    return b"\0" in head


def _read_text(f, path: str, cfg: SourceConfig, problems: list[Problem]) -> Iterator[dict]:
    mode = cfg.text_split
    if mode == "auto":
        mode = "file" if is_code(path) else "chapter"
    if mode == "chapter":
        yield from _read_chapters(f, path, cfg, problems)
        return
    if mode == "file":
        data = f.read(cfg.max_doc_bytes + 1)
        if len(data) > cfg.max_doc_bytes:
            if cfg.split_long_files:
                yield from _pieces(f, data, path, cfg, problems)
                return
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
                    problems.append(Problem(path, "too_long", "paragraph over max_doc_bytes", n))
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


def _read_chapters(f, path: str, cfg: SourceConfig, problems: list[Problem]) -> Iterator[dict]:
    """text_split = "chapter": chapters, or paragraphs joined to min_doc_chars (chapters.py)."""
    docs = chapter_documents(_read_lines(f, path, cfg, problems), cfg.min_doc_chars, cfg.max_doc_bytes)
    for k, text in enumerate(docs):
        yield {"id": f"{path}:{k}", "text": _decode(text)}


def _pieces(f, buf: bytes, path: str, cfg: SourceConfig, problems: list[Problem]) -> Iterator[dict]:
    """A long text file in pieces of about max_doc_bytes / 2, each cut where no split pattern joins two chunks."""
    from scratchlm.tokenizer.corpus import next_cut

    size, k = max(cfg.max_doc_bytes // 2, 1), 0
    while buf:
        cut = next_cut(buf, size)
        while cut < 0:
            more = f.read(size)
            if not more:
                cut = len(buf)
                break
            buf += more
            cut = next_cut(buf, size)
            if cut < 0 and len(buf) > 2 * cfg.max_doc_bytes:  # no newline to cut at: a blob, not text
                problems.append(Problem(path, "too_long", f"piece {k} has no line break in {len(buf):,} bytes; skipped "
                                        "the rest of the file"))
                return
        if buf[:cut].strip():
            yield {"id": f"{path}:{k}", "text": _decode(buf[:cut])}
            k += 1
        buf = buf[cut:]


def _record_texts(record, path: str, where: str, cfg: SourceConfig, problems: list[Problem],
                  line: int | None = None) -> list[tuple[str, str]]:
    """[(field, text)] of one record: a bare string is its own text; otherwise each of the text fields present."""
    if isinstance(record, str):
        return [("", record)]
    names = [f.strip() for f in cfg.text_field.split(",") if f.strip()]
    found = [(name, t) for name in names if isinstance(t := _get_field(record, name), str)]
    if not found and names == ["text"] and (chat := chat_text(record)) is not None:
        return [("", chat)]  # no "text", but a conversation: its turns are the text
    if not found:
        problems.append(Problem(path, "missing_field", f"{where}no string field {cfg.text_field!r} "
                                "(choose one with --text-field)", line))
    return found


def _docs(texts: list[tuple[str, str]], rid, record, where: str, cfg: SourceConfig) -> Iterator[dict]:
    for name, text in texts:
        doc = {"id": f"{rid}:{name}" if len(texts) > 1 else rid, "text": text}
        if cfg.keep_record:
            doc["record"], doc["where"] = record, where
        yield doc


def _read_jsonl(f, path: str, cfg: SourceConfig, problems: list[Problem]) -> Iterator[dict]:
    for n, line in _read_lines(f, path, cfg, problems):
        if not line.strip():
            continue
        try:
            record = json.loads(_decode(line))
        except (ValueError, RecursionError) as e:  # RecursionError: nesting deeper than Python's stack
            why = f"{e.msg} at column {e.colno}" if isinstance(e, json.JSONDecodeError) else "nested too deeply"
            problems.append(Problem(path, "bad_json", why, n))
            continue
        rid = record.get("id", f"{path}:{n}") if isinstance(record, dict) else f"{path}:{n}"
        yield from _docs(_record_texts(record, path, "", cfg, problems, n), rid, record, f"{path}:{n}", cfg)


class _Capped:
    """One input's problems, at most `limit` of each kind and a count of the rest: a file that is not JSON, or a
    wrong --text-field, would otherwise add a problem per line (millions, in memory and in the report)."""

    def __init__(self, into: list[Problem], path: str, limit: int = 5):
        self.into, self.path, self.limit = into, path, limit
        self.seen: dict[str, int] = {}

    def append(self, p: Problem) -> None:
        n = self.seen[p.problem] = self.seen.get(p.problem, 0) + 1
        if n <= self.limit:
            self.into.append(p)

    def close(self) -> None:
        for kind, n in self.seen.items():
            if n > self.limit:
                self.into.append(Problem(self.path, kind, f"{n - self.limit:,} more like this"))


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
        texts = _record_texts(record, path, f"record {i}: ", cfg, problems)
        yield from _docs(texts, f"{path}:{i}", record, f"{path}: record {i}", cfg)


def _read_parquet(path: str, cfg: SourceConfig, problems: list[Problem]) -> Iterator[dict]:
    import pyarrow.parquet as pq  # plumbing only

    if Path(path).suffix.lower() in COMPRESSION_SUFFIXES:  # Parquet needs seeks: decompress into memory (rare:
        with open_binary(path) as f:                      # Parquet compresses its own pages)
            pf = pq.ParquetFile(io.BytesIO(f.read()))
    else:
        pf = pq.ParquetFile(path)
    names = [f.strip() for f in cfg.text_field.split(",") if f.strip()]
    tops = list(dict.fromkeys(n.split(".")[0] for n in names))
    missing = [t for t in tops if t not in pf.schema_arrow.names]
    if missing and names == ["text"] and CHAT_KEYS.intersection(pf.schema_arrow.names):
        missing, tops = [], None  # a chat dataset: read whole rows, chat_text makes their text
    if missing:
        problems.append(Problem(path, "missing_field", f"no column {missing[0]!r} (columns: "
                                f"{', '.join(pf.schema_arrow.names)}); choose one with --text-field"))
        return
    i = 0
    columns = None if cfg.keep_record or tops is None else tops
    for batch in pf.iter_batches(batch_size=1024, columns=columns):  # bounded memory: one record batch at a time
        for record in batch.to_pylist():
            texts = _record_texts(record, path, f"row {i}: ", cfg, problems)
            yield from _docs(texts, f"{path}:{i}", record, f"{path}: row {i}", cfg)
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
        texts = _record_texts(record, name, f"row {i}: ", cfg, problems)
        yield from _docs(texts, f"{name}:{i}", record, f"{name}: row {i}", cfg)


def read_source(path: str, cfg: SourceConfig | None = None, problems: list[Problem] | None = None) -> Iterator[dict]:
    """Stream the documents of one input (a file path or `hf:` name). Faults go to `problems`, never raised."""
    cfg = cfg or SourceConfig()
    capped = _Capped(problems if problems is not None else [], path)
    try:
        yield from _read_one(path, cfg, capped)
    finally:
        capped.close()


def _read_one(path: str, cfg: SourceConfig, problems) -> Iterator[dict]:
    if path.startswith("hf:"):
        yield from read_hf(path, cfg, problems)
        return
    fmt = format_of(path)
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
            if not f.peek(1):  # a valid archive of nothing
                problems.append(Problem(path, "empty", "no bytes after decompression"))
                return
            reader = {"jsonl": _read_jsonl, "json": _read_json, "text": _read_text}[fmt]
            yield from reader(f, path, cfg, problems)
    except READ_ERRORS as e:
        # corrupt archives fail mid-stream: documents yielded before the fault are kept
        problems.append(Problem(path, "corrupt", f"{type(e).__name__}: {e}"))


def input_kind(path: str, cfg: SourceConfig | None = None, sample: int = 20) -> str:
    """What one input holds, to pick a filter preset: "code" (a source file), "text" (any other plain-text file),
    "chat" (JSON/JSONL/Parquet rows in a chat shape, see chat_text) or "rows" (other rows, and hf: datasets).
    Decided by the file name and, for rows, the first `sample` records."""
    if str(path).startswith("hf:"):
        return "rows"
    if is_code(path):
        return "code"
    if format_of(path) == "text":
        return "text"
    cfg = cfg or SourceConfig()
    if format_of(path) == "parquet" and Path(path).suffix.lower() not in COMPRESSION_SUFFIXES:
        try:  # the schema says it, without reading a row group (FineWeb's are ~100 MB)
            import pyarrow.parquet as pq

            names = pq.ParquetFile(path).schema_arrow.names
        except (ImportError, *READ_ERRORS):
            return "rows"  # the reader reports it
        field_there = cfg.text_field.split(",")[0].split(".")[0].strip() in names
        return "chat" if not field_there and CHAT_KEYS.intersection(names) else "rows"
    from dataclasses import replace

    chat = rows = 0
    for doc in itertools.islice(read_source(path, replace(cfg, keep_record=True), []), sample):
        record = doc.get("record")
        is_chat = isinstance(record, dict) and _get_field(record, cfg.text_field) is None and chat_text(record) is not None
        chat += is_chat
        rows += not is_chat
    return "chat" if chat > rows else "rows"


_LONE_SURROGATES = re.compile("[\ud800-\udfff]")  # undecodable bytes (surrogateescape) or broken JSON escapes


def valid_utf8(text: str) -> tuple[str, int, int]:
    """(text with lone surrogates replaced by U+FFFD, how many were replaced, its UTF-8 size in bytes)."""
    try:
        return text, 0, len(text.encode("utf-8"))  # the common case: one encode, no scan
    except UnicodeEncodeError:
        text, bad = _LONE_SURROGATES.subn("\ufffd", text)
        return text, bad, len(text.encode("utf-8"))


def read_sources(inputs: list[str], cfg: SourceConfig | None = None, stats: SourceStats | None = None,
                 progress: bool = False, replace_invalid: bool = False) -> Iterator[dict]:
    """All documents of all inputs, in order. Expands folders/globs; counts files, documents and bytes.

    replace_invalid: replace bytes that were not UTF-8 by U+FFFD and count them in stats.invalid_utf8 (for
    consumers that skip normalisation, such as tokenizing); otherwise they stay as lone surrogates.
    """
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
                text, bad, size = valid_utf8(doc["text"])
                if replace_invalid:
                    doc["text"] = text
                    stats.invalid_utf8 += bad
                stats.documents += 1
                stats.bytes += size
                if bar is not None:
                    bar.update(1)
                yield doc
    finally:
        if bar is not None:
            bar.close()


# --------------------------------------------------------------------------------------------------
# the parallel fast path, for the tokenizer

def read_range(path: str, start: int, end: int, cfg: SourceConfig | None = None,
               problems: list[Problem] | None = None) -> Iterator[dict]:
    """Documents of bytes [start, end) of an uncompressed text or JSONL file; the range must start at a line start.

    Parsed by the same readers as read_source. Problem lines count from the top of the file; document ids count
    lines from the start of the range.
    """
    cfg = cfg or SourceConfig()
    problems = problems if problems is not None else []
    first = len(problems)
    capped = _Capped(problems, path)
    try:
        with open(path, "rb") as f:
            f.seek(start)
            data = f.read(end - start)
        reader = _read_jsonl if format_of(path) == "jsonl" else _read_text
        yield from reader(io.BufferedReader(io.BytesIO(data)), path, cfg, capped)
    except READ_ERRORS as e:
        problems.append(Problem(path, "unreadable", f"bytes {start}..{end}: {type(e).__name__}: {e}"))
    finally:
        capped.close()
    if start and any(p.line for p in problems[first:]):  # rare: count the lines above the range only now
        base = 0
        with open(path, "rb") as f:
            while f.tell() < start and (block := f.read(min(1 << 20, start - f.tell()))):
                base += block.count(b"\n")
        for p in problems[first:]:
            if p.line:
                p.line += base


class SourceCorpus:
    """`inputs` as a corpus for the tokenizer's parallel chunk counter (scratchlm.tokenizer.corpus.count_words).

    Uncompressed text and JSONL files are cut into ~1 MB byte ranges at safe cuts, which worker processes read side
    by side (the fast path that makes BPE training on 8 MB take under 2 s); every other input (.gz/.zst, .json,
    Parquet, hf:, and plain text split by paragraph or separator) is one task. Both go through the readers above;
    invalid UTF-8 is replaced by U+FFFD and counted in the report.
    """

    def __init__(self, inputs, cfg: SourceConfig | None = None):
        self.cfg = cfg or SourceConfig()
        self.paths = expand_inputs([str(i) for i in ([inputs] if isinstance(inputs, (str, os.PathLike)) else inputs)])

    def _rangeable(self, path: str) -> bool:
        if path.startswith("hf:") or Path(path).suffix.lower() in COMPRESSION_SUFFIXES:
            return False
        fmt = format_of(path)
        if fmt != "jsonl" and not (fmt == "text" and self.cfg.text_split in ("file", "line")):
            return False
        try:  # empty and binary files go the slow way, which reports them
            with open(path, "rb") as f:
                head = f.read(self.cfg.binary_sniff_bytes)
        except OSError:
            return False
        return bool(head) and b"\0" not in head

    def tasks(self, block_bytes: int = 1 << 20) -> list[tuple[str, int, int, bool]]:
        """(path, start, end, ranged): a byte range of a plain file, or (path, 0, size, False) for a whole input."""
        from scratchlm.tokenizer.corpus import plan_ranges

        tasks = []
        for path in self.paths:
            if self._rangeable(path):
                jsonl = format_of(path) == "jsonl"
                tasks += [(path, s, e, True) for s, e in plan_ranges(path, block_bytes, any_newline=jsonl)]
            else:
                size = os.path.getsize(path) if os.path.isfile(path) else 0
                tasks.append((path, 0, size, False))
        return tasks

    def read(self, task, report: dict) -> Iterator[str]:
        """The texts of one task (in a worker); counts and problems go into `report` (the tokenizer's format)."""
        path, start, end, ranged = task
        problems: list[Problem] = []
        docs = read_range(path, start, end, self.cfg, problems) if ranged else read_source(path, self.cfg, problems)
        whole_file = ranged and format_of(path) == "text" and self.cfg.text_split == "file"
        report["files"] += start == 0
        for doc in docs:
            text, bad, size = valid_utf8(doc["text"])
            report["documents"] += start == 0 if whole_file else 1  # a file's ranges are one document
            report["bytes"] += size
            report["invalid_utf8"] += bad
            yield text
        report["problems"] += [str(p) for p in problems]
