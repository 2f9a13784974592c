"""Python syntax highlighting for the guide's snippets, with the standard library's tokenizer.

Each token becomes a <span class="..."> (k keyword, s string, c comment, n number, f defined name, b builtin,
d decorator); everything between tokens (spaces, line breaks) is copied unchanged, so the HTML text is exactly
the source. Code that does not tokenize (never expected: it comes from our own files) is shown plain.
"""

from __future__ import annotations

import builtins
import html
import io
import keyword
import tokenize

BUILTINS = frozenset(n for n in dir(builtins) if not n.startswith("_")) - {"copyright", "credits", "license"}


def _offsets(code: str) -> list[int]:
    """Character offset of the start of each line (1-based line numbers index it directly)."""
    out, pos = [0, 0], 0
    for line in code.splitlines(keepends=True):
        pos += len(line)
        out.append(pos)
    return out


def highlight_python(code: str) -> str:
    starts = _offsets(code)
    out, pos, prev = [], 0, None
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(code).readline))
    except (tokenize.TokenError, SyntaxError, IndentationError):
        return html.escape(code)
    for tok in tokens:
        if tok.type in (tokenize.ENDMARKER, tokenize.DEDENT, tokenize.INDENT) or not tok.string:
            continue
        a = starts[tok.start[0]] + tok.start[1]
        b = starts[tok.end[0]] + tok.end[1]
        if a < pos:  # never expected; keep the text intact rather than duplicate it
            continue
        out.append(html.escape(code[pos:a]))
        text = html.escape(code[a:b])
        cls = None
        if tok.type == tokenize.NAME:
            if keyword.iskeyword(tok.string) or tok.string in ("self", "cls"):
                cls = "k"
            elif prev is not None and prev.string in ("def", "class"):
                cls = "f"
            elif prev is not None and prev.string == "@":
                cls = "d"
            elif tok.string in BUILTINS:
                cls = "b"
        elif tok.type == tokenize.STRING:
            cls = "s"
        elif tok.type == tokenize.COMMENT:
            cls = "c"
        elif tok.type == tokenize.NUMBER:
            cls = "n"
        elif tok.type == tokenize.OP and tok.string == "@" and (prev is None or prev.type in (
                tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT)):
            cls = "d"
        # f-strings (3.12+) arrive as FSTRING_START/MIDDLE/END tokens: colour them as strings too.
        if tokenize.tok_name.get(tok.type, "").startswith("FSTRING"):
            cls = "s"
        out.append(f'<span class="{cls}">{text}</span>' if cls else text)
        pos = b
        if tok.type not in (tokenize.NL, tokenize.COMMENT):
            prev = tok
    out.append(html.escape(code[pos:]))
    return "".join(out)
