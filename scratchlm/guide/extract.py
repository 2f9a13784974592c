"""The guide's code snippets: real source of this package, found by qualified name when the guide is built.

A stage names what it shows ("scratchlm.model.attention.Attention.forward"); `extract` reads the module's file
with `ast` (no import, so building the guide does not load torch) and cuts out exactly that definition, with its
decorators. A renamed or deleted function raises LookupError, and the guide's tests build every stage, so the
book cannot drift from the code.
"""

from __future__ import annotations

import ast
import functools
import textwrap
from dataclasses import dataclass
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[1]  # .../scratchlm


@dataclass(frozen=True)
class Snippet:
    qualname: str   # scratchlm.model.attention.Attention.forward
    path: str       # scratchlm/model/attention.py (relative to the repository)
    start: int      # first line (1-based, decorators included)
    end: int        # last line
    kind: str       # "def", "class" or "assign"
    code: str       # dedented source

    @property
    def location(self) -> str:
        return f"{self.path}:{self.start}-{self.end}"


def module_file(parts: list[str]) -> Path | None:
    """scratchlm.a.b -> scratchlm/a/b.py (or b/__init__.py); None when no such file."""
    base = PACKAGE_ROOT.joinpath(*parts[1:])
    for cand in (base.with_suffix(".py"), base / "__init__.py"):
        if cand.is_file():
            return cand
    return None


@functools.lru_cache(maxsize=None)
def _parse(path: Path) -> tuple[ast.Module, list[str]]:
    text = path.read_text(encoding="utf-8")
    return ast.parse(text, filename=str(path)), text.splitlines()


def _find(body: list[ast.stmt], name: str) -> ast.stmt | None:
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == name:
            return node
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                return node
    return None


def extract(qualname: str) -> Snippet:
    """The source of one function, method, class or module-level constant, by dotted name."""
    parts = qualname.split(".")
    if parts[0] != "scratchlm":
        raise LookupError(f"{qualname}: the guide shows only scratchlm's own code (scratchlm.<module>.<name>)")
    # The longest prefix that is a module file; the rest are names inside it.
    for cut in range(len(parts) - 1, 0, -1):
        path = module_file(parts[:cut])
        if path is not None:
            break
    else:
        raise LookupError(f"{qualname}: no module file for it under {PACKAGE_ROOT}")
    tree, lines = _parse(path)
    node: ast.AST = tree
    for name in parts[cut:]:
        found = _find(getattr(node, "body", []), name)
        if found is None:
            raise LookupError(f"{qualname}: {name!r} not found in {path.relative_to(PACKAGE_ROOT.parent)}; "
                              "was it renamed? update the guide's stage list (scratchlm/guide/stages.py)")
        node = found
    if node is tree:
        raise LookupError(f"{qualname} is a module; name a function or class inside it")
    start = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
    end = node.end_lineno
    code = textwrap.dedent("\n".join(lines[start - 1:end]))
    kind = "class" if isinstance(node, ast.ClassDef) else "def" if isinstance(
        node, (ast.FunctionDef, ast.AsyncFunctionDef)) else "assign"
    return Snippet(qualname, str(path.relative_to(PACKAGE_ROOT.parent)), start, end, kind, code)
