"""TinyWorld as documents and as files: `iter_documents`, `synthesize`, `parse_size`.

File format (train.txt, val.txt): UTF-8, one document per line, documents separated by one blank line, so
`text.split("\\n\\n")` or "paragraph" splitting gives the documents back and no document contains a newline.
About 80% of documents are stories, 10% fact sheets, 10% arithmetic.

Determinism: everything is drawn from `random.Random(f"tinyworld:{seed}:{split}")` with `random()` only, whose
sequence Python guarantees across versions and platforms, so a seed gives the same bytes everywhere.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from scratchlm.data.tinyworld.arithmetic import arithmetic_document
from scratchlm.data.tinyworld.facts import fact_document
from scratchlm.data.tinyworld.stories import sample_story
from scratchlm.runs import atomic_write_json

VERSION = "1.0"  # bump when the generator's output changes for a given seed
STORY_SHARE, FACT_SHARE = 0.8, 0.1  # the rest is arithmetic
SPLITS = ("train", "val")


@dataclass
class Doc:
    text: str
    kind: str  # "story", "facts" or "arithmetic"
    keys: list  # the combinations it uses: ("story", hero, place, plot), ("fact", id, wording), ("sum", a, op, b)
    story: object = None  # the Story, for kind == "story" (its questions feed tasks.py)


def rng_for(seed: int, split: str, stream: str = "docs") -> random.Random:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use 'train' or 'val'")
    return random.Random(f"tinyworld:{seed}:{split}:{stream}")


def iter_records(split: str = "train", seed: int = 0) -> Iterator[Doc]:
    """An endless, deterministic stream of documents with their metadata."""
    rng = rng_for(seed, split)
    r = rng.random
    while True:
        u = r()
        if u < STORY_SHARE:
            s = sample_story(rng, split)
            yield Doc(s.text, "story", [("story", *s.key)], s)
        elif u < STORY_SHARE + FACT_SHARE:
            text, keys = fact_document(rng, split)
            yield Doc(text, "facts", keys)
        else:
            text, keys = arithmetic_document(rng, split)
            yield Doc(text, "arithmetic", keys)


def iter_documents(split: str = "train", seed: int = 0, max_docs: int | None = None,
                   max_bytes: int | None = None) -> Iterator[str]:
    """TinyWorld documents as strings, exactly as `synthesize` writes them to <split>.txt.

    Endless unless `max_docs` or `max_bytes` (UTF-8 bytes of text, separators excluded) is given. The stream is a
    prefix-stable function of (split, seed): asking for more documents never changes the first ones.
    """
    n = size = 0
    for doc in iter_records(split, seed):
        if (max_docs is not None and n >= max_docs) or (max_bytes is not None and size >= max_bytes):
            return
        yield doc.text
        n += 1
        size += len(doc.text)  # TinyWorld is ASCII: characters == bytes


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
          "t": 10**12, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_size(text: str | int) -> int:
    """'20MB' -> 20_000_000, '500KB' -> 500_000, '1GiB' -> 2**30, '1234' -> 1234 bytes (decimal units, as disks)."""
    if isinstance(text, int):
        if text <= 0:
            raise ValueError(f"size must be positive, got {text}")
        return text
    m = _SIZE.match(str(text))
    unit = (m.group(2) or "").lower() if m else None
    if m is None or unit not in _UNITS:
        raise ValueError(f"cannot read size {text!r}; write a number of bytes or use a unit: 500KB, 20MB, 1GB, 1GiB")
    n = int(float(m.group(1)) * _UNITS[unit])
    if n <= 0:
        raise ValueError(f"size must be positive, got {text!r}")
    return n


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_text(path: Path, split: str, seed: int, size_bytes: int, bar=None) -> dict:
    """Write documents until the file holds at least `size_bytes`; returns counts for the manifest."""
    counts = {"documents": 0, "story": 0, "facts": 0, "arithmetic": 0, "bytes": 0, "words": 0}
    chunk: list[str] = []
    written = 0
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for doc in iter_records(split, seed):
            if written >= size_bytes:
                break
            piece = doc.text + "\n\n"
            chunk.append(piece)
            written += len(piece)
            counts["documents"] += 1
            counts[doc.kind] += 1
            if len(chunk) >= 2048:
                f.write("".join(chunk))
                chunk.clear()
                if bar is not None:
                    bar.update(written - bar.n)
        f.write("".join(chunk))
    if bar is not None:
        bar.update(written - bar.n)
    counts["bytes"] = written
    return counts


def synthesize(out_dir: str | os.PathLike, size_bytes: int | str, seed: int = 0, *, val_fraction: float = 0.02,
               n_instructions: int | None = None, n_preferences: int | None = None, n_tasks: int | None = None,
               progress: bool | None = None) -> dict:
    """Write the TinyWorld corpus into `out_dir` and return its manifest (also saved as manifest.json).

    Files: train.txt and val.txt (`size_bytes` of text in all, `val_fraction` of it val), instructions.jsonl,
    preferences.jsonl, tasks.jsonl, tool_chats.jsonl, edits.jsonl (train) and *_val.jsonl twins (held-out),
    manifest.json (written last, so its presence marks a finished corpus). Record counts default to one
    instruction per 2 KB of text (200..10000), half as many preferences, tasks and tool conversations, twice as
    many edits (copying is learnt from many examples: 2,000 overfit within 1,000 SFT steps); val gets 1/10 of
    that (at least 20).
    Same arguments -> byte-identical files.
    """
    from scratchlm.data.tinyworld import tasks  # here, not at the top: tasks imports this module
    from scratchlm.data.tinyworld.edits import iter_edits
    from scratchlm.data.tinyworld.tool_chats import iter_tool_chats

    size = parse_size(size_bytes)
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "manifest.json").unlink(missing_ok=True)  # a stale manifest must not vouch for half-written files
    n_val_bytes = max(1, int(size * val_fraction))
    n_instr = n_instructions if n_instructions is not None else min(10000, max(200, size // 2000))
    n_pref = n_preferences if n_preferences is not None else max(100, n_instr // 2)
    n_task = n_tasks if n_tasks is not None else max(100, n_instr // 2)

    bar = None
    if progress or (progress is None and size > 4_000_000):
        from tqdm import tqdm

        bar = tqdm(total=size, unit="B", unit_scale=True, desc="tinyworld", leave=False)
    try:
        text_counts = {"train": write_text(out / "train.txt", "train", seed, size - n_val_bytes, bar)}
        text_counts["val"] = write_text(out / "val.txt", "val", seed, n_val_bytes, None)
        if bar is not None:
            bar.update(n_val_bytes)
    finally:
        if bar is not None:
            bar.close()

    jobs = []
    for split in SPLITS:
        scale = 1 if split == "train" else 0.1
        sfx = "" if split == "train" else "_val"
        for name, n, gen in (("instructions", n_instr, tasks.iter_instructions),
                             ("preferences", n_pref, tasks.iter_preferences),
                             ("tasks", n_task, tasks.iter_tasks), ("tool_chats", n_task, iter_tool_chats),
                             ("edits", 2 * n_instr, iter_edits)):
            jobs.append((f"{name}{sfx}.jsonl", gen(split, seed), max(20, int(n * scale))))
    bar = None
    if progress or (progress is None and size > 4_000_000):
        from tqdm import tqdm

        bar = tqdm(total=sum(j[2] for j in jobs), unit="rec", desc="tinyworld jsonl", leave=False)
    record_counts = {}
    for name, records, k in jobs:
        record_counts[name] = _write_jsonl(out / name, records, k, bar)
    if bar is not None:
        bar.close()

    files = {}
    for p in sorted(out.iterdir()):
        if p.name != "manifest.json" and p.suffix in (".txt", ".jsonl"):
            files[p.name] = {"bytes": p.stat().st_size, "sha256": _sha256(p)}
    for name, c in record_counts.items():
        files[name]["records"] = c
    for split in SPLITS:
        files[f"{split}.txt"].update({k: v for k, v in text_counts[split].items() if k != "bytes"})
    manifest = {
        "name": "tinyworld",
        "version": VERSION,
        "seed": seed,
        "size_bytes": size,
        "val_fraction": val_fraction,
        "format": "train.txt/val.txt: one document per line, documents separated by a blank line. "
                  "*.jsonl: one JSON object per line; instructions are Alpaca (instruction, input, output); "
                  "preferences add chosen/rejected; tasks add a checkable `answer` "
                  "(scratchlm.data.tinyworld.check_answer); tool_chats are OpenAI messages that call the "
                  "calculator (docs/tools.md); edits are Alpaca records whose output repeats the input, copied, "
                  "with one name changed or cut to the sentences about one child (`answer` is the exact reply; "
                  "docs/inference.md). "
                  "*_val.jsonl hold the held-out split.",
        "holdout": "val uses only reserved (hero, place, plot) triples, fact wordings and (a, op, b) sums; "
                   "train uses none of them (scratchlm/data/tinyworld/heldout.py)",
        "files": files,
    }
    atomic_write_json(out / "manifest.json", manifest)
    return manifest


def _write_jsonl(path: Path, records: Iterator[dict], n: int, bar=None) -> int:
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for i, rec in zip(range(n), records):
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
            if bar is not None and i % 256 == 255:
                bar.update(256)
    if bar is not None:
        bar.update(n % 256)
    return n
