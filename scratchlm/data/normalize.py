"""Normalisation: make text canonical before anything compares, filters or hashes it.

Order matters:
1. Invalid UTF-8. Readers decode bytes with "surrogateescape", so every byte that was not valid UTF-8 is a lone
   surrogate U+DC80..U+DCFF here (JSON's "\\ud800" escapes give other lone surrogates). They are counted, then
   replaced by U+FFFD (default, so a reader sees where text was damaged) or dropped.
2. Unicode NFC: "é" typed as e + combining acute and as one code point become the same string, so exact dedup
   and word filters see them as equal. (NFKC would also fold "ﬁ" to "fi" and full-width digits, but it changes
   meaning, e.g. superscripts; FineWeb and Dolma keep NFC.)
3. Control characters (Unicode category Cc, except tab and newline) are removed; CRLF and lone CR become LF.
4. Whitespace: Unicode spaces (NBSP, thin space, ...) become " ", runs of spaces/tabs inside a line collapse to
   one (leading indentation is kept), trailing
   spaces are stripped from each line, 3+ newlines become 2 (paragraphs survive), the document is stripped.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

# lone surrogates: bytes that were not UTF-8 (surrogateescape) or broken JSON escapes
_SURROGATES = re.compile("[\ud800-\udfff]")
# C0/C1 controls except \t and \n (\r is handled first), plus DEL; also zero-width and BOM characters
_CONTROLS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b\u200e\u200f\u2028\u2029\ufeff]")
_UNICODE_SPACES = re.compile("[\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]")
_SPACE_RUNS = re.compile("(?<=\\S)(?:[ \t]{2,}|\t)")  # inside a line only: leading indentation (code, verse) is kept
_TRAILING = re.compile("[ \t]+(?=\n|$)")
_MANY_NEWLINES = re.compile("\n{3,}")


@dataclass
class NormalizeConfig:
    invalid_utf8: str = "replace"
    """"replace" invalid bytes with U+FFFD (default: visible and countable) or "drop" them."""
    unicode_form: str = "NFC"
    """Unicode normal form: NFC (default, as FineWeb/Dolma), NFKC, or "none"."""
    collapse_whitespace: bool = True
    """Collapse space runs, strip trailing spaces, limit blank lines to one."""


@dataclass
class NormalizeStats:
    documents: int = 0
    changed: int = 0
    invalid_utf8_chars: int = 0
    """Lone surrogates found (one per invalid byte)."""
    documents_with_invalid_utf8: int = 0
    control_chars: int = 0


def normalize_text(text: str, cfg: NormalizeConfig | None = None, stats: NormalizeStats | None = None) -> str:
    """Return the normalised text; counts what was fixed into `stats` when given."""
    cfg = cfg or NormalizeConfig()
    original = text
    n_bad = len(_SURROGATES.findall(text))
    if n_bad:
        text = _SURROGATES.sub("\ufffd" if cfg.invalid_utf8 == "replace" else "", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    n_ctrl = len(_CONTROLS.findall(text))
    if n_ctrl:
        text = _CONTROLS.sub("", text)
    if cfg.unicode_form != "none":
        text = unicodedata.normalize(cfg.unicode_form, text)
    if cfg.collapse_whitespace:
        text = _UNICODE_SPACES.sub(" ", text)
        text = _SPACE_RUNS.sub(" ", text)
        text = _TRAILING.sub("", text)
        text = _MANY_NEWLINES.sub("\n\n", text)
        text = text.strip()
    if stats is not None:
        stats.documents += 1
        stats.changed += text != original
        stats.invalid_utf8_chars += n_bad
        stats.documents_with_invalid_utf8 += n_bad > 0
        stats.control_chars += n_ctrl
    return text


def to_valid_utf8(text: str) -> str:
    """Just step 1 (replace): for consumers such as tokenizers that need encodable text and nothing else."""
    return _SURROGATES.sub("\ufffd", text)
