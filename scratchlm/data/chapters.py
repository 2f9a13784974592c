"""How a book becomes documents: chapters where it has chapter headings, else paragraphs joined to a minimum length.

A novel read as one document is too long to dedup or filter sensibly, and read as paragraphs it is thousands of
fragments that web filters judge as junk (too few words, no stop words). So `text_split = "chapter"` (the books
preset's split) cuts plain text at chapter headings, or joins blank-line paragraphs until a document holds
`min_doc_chars`. sources.py feeds it the lines of a file; it works on bytes and never holds the file whole.
"""

from __future__ import annotations

import itertools
import re
from typing import Iterator

# A chapter heading: the first line of a paragraph such as "CHAPTER I.", "Chapter 3", "CHAPTER 1. Loomings.",
# "BOOK THE FIRST", "Letter 4", "PART II", a bare "IV." or "12", or a Markdown "#"/"##" heading
_NUMBER = (r"(?:\d{1,4}|[ivxlcdm]{1,8}|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|the\s+\w+|"
           r"first|second|third|fourth|fifth|sixth|seventh|eighth|ninth|tenth|last)")
_HEADING = re.compile(r"(?:(?:chapter|book|part|volume|act|scene|canto|stave|letter|section)\s+" + _NUMBER
                      + r"\b.{0,70}|(?:[ivxlc]{1,8}|\d{1,3})\.?|#{1,2}\s.{1,100}|(?:prologue|epilogue|preface)\W{0,2})",
                      re.IGNORECASE)
LOOKAHEAD_BYTES = 4 << 20
"""chapter_documents reads this much of a file ahead to decide how to cut it (chapters or not, paragraphs or
lines), so memory stays bounded however long the file."""


def is_heading(line: str) -> bool:
    return _HEADING.fullmatch(line.strip()) is not None


def chapter_documents(lines: Iterator[tuple[int, bytes]], min_chars: int, max_bytes: int) -> Iterator[bytes]:
    """Documents of at least min_chars from (line number, line) items: chapters where the text has chapter
    headings, else blank-line paragraphs joined in order (lines, for text that has no blank line at all). A short
    last piece joins the document before it. The first LOOKAHEAD_BYTES decide which, so a file is never held whole;
    no document grows past max_bytes."""
    lines = iter(lines)
    ahead, size = [], 0
    for item in lines:
        ahead.append(item)
        size += len(item[1]) + 1
        if size >= LOOKAHEAD_BYTES:
            break
    by_line = len(ahead) > 1 and all(line.strip() for _, line in ahead)  # no blank line: a line is a paragraph
    chapters = sum(map(starts_chapter, paragraphs(ahead, by_line, max_bytes))) >= 2
    limit = max(min_chars, 1)
    ready, doc, size = None, [], 0
    for para in paragraphs(itertools.chain(ahead, lines), by_line, max_bytes):
        full = size >= limit and (not chapters or starts_chapter(para))
        if doc and (full or size + len(para) > max_bytes):
            if ready is not None:
                yield ready
            ready, doc, size = b"\n\n".join(doc), [], 0
        doc.append(para)
        size += len(para) + 2
    tail = b"\n\n".join(doc)
    if ready is not None and size < limit and len(ready) + size <= max_bytes:
        ready, tail = ready + b"\n\n" + tail, b""  # a short last piece belongs to the document before it
    for text in (ready, tail):
        if text is not None and text.strip():
            yield text


def starts_chapter(para: bytes) -> bool:
    return is_heading(para.split(b"\n", 1)[0].decode("utf-8", errors="replace"))


def paragraphs(lines, by_line: bool, max_bytes: int) -> Iterator[bytes]:
    """Blank-line-separated paragraphs of (n, line) items (each non-blank line, when by_line); a paragraph is cut
    at a line once it reaches max_bytes, so none is held whole however long."""
    para: list[bytes] = []
    size = 0
    for _, line in lines:
        if line.strip() and not by_line:
            if para and size + len(line) > max_bytes:
                yield b"\n".join(para)
                para, size = [], 0
            para.append(line)
            size += len(line) + 1
            continue
        if para:
            yield b"\n".join(para)
            para, size = [], 0
        if by_line and line.strip():
            yield line
    if para:
        yield b"\n".join(para)
