"""Imports point one way (ARCHITECTURE.md): a stage may use the stages below it, never those above it.

The table below is the architecture; this test keeps the code honest to it.
"""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "scratchlm"
SHARED = {"config", "runs", "device", "stats"}  # top-level infrastructure modules

# stage -> the stages it may import (transitively closed by hand); shared infrastructure is allowed to all but
# tokenizer/ and model/, which import nothing of ours so they can be lifted out on their own.
BELOW = {
    "tokenizer": set(),
    "model": set(),
    "data": {"tokenizer"},
    "inference": {"model", "tokenizer"},
    "distributed": {"model"},
    "plan": {"model"},
    "train": {"data", "model", "tokenizer", "distributed", "inference", "plan"},
    "posttrain": {"train", "data", "model", "tokenizer", "distributed", "inference", "plan"},
    "eval": {"train", "data", "model", "tokenizer", "distributed", "inference", "plan"},
    "guide": {"posttrain", "eval", "train", "data", "model", "tokenizer", "distributed", "inference", "plan"},
    "cli": {"guide", "posttrain", "eval", "train", "data", "model", "tokenizer", "distributed", "inference", "plan"},
}


def _our_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    pkg_parts = path.relative_to(PKG.parent).with_suffix("").parts  # ('scratchlm', 'train', 'loop')
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = list(pkg_parts[:-node.level]) if node.level <= len(pkg_parts) - 1 else []
                names = [".".join(base + ([node.module] if node.module else []))]
            else:
                names = [node.module or ""]
        else:
            continue
        for n in names:
            parts = n.split(".")
            if parts[0] == "scratchlm" and len(parts) > 1:
                found.add(parts[1])
    return found


def test_stage_folders_exist():
    for stage in BELOW:
        assert (PKG / stage / "__init__.py").is_file(), stage


def test_imports_point_one_way():
    problems = []
    for stage, allowed in BELOW.items():
        ok = allowed | {stage}
        if stage not in ("tokenizer", "model"):
            ok |= SHARED
        for f in sorted((PKG / stage).rglob("*.py")):
            bad = _our_imports(f) - ok
            if bad:
                problems.append(f"{f.relative_to(PKG.parent)} imports {sorted(bad)}")
    for name in SHARED:
        f = PKG / f"{name}.py"
        if f.exists():
            bad = _our_imports(f) - SHARED - {"model", "tokenizer"}
            if bad:
                problems.append(f"{f.relative_to(PKG.parent)} imports {sorted(bad)}")
    assert not problems, "\n".join(problems)
