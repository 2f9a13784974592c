"""The settings of `scratchlm data synth`, as a config like every other stage's (scratchlm/config.py).

A TOML file passed with --config and `--set KEY=VALUE` name these keys (`--set size=5MB`, `--set instructions=500`);
the command's flags set the same keys, above the file and below --set. The folder it writes (--out) stays a flag.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SynthConfig:
    size: str | int = "20MB"
    """Text to write, train + val: a number of bytes, or with a unit: 500KB, 20MB, 1GB, 1GiB."""
    val_fraction: float = field(default=0.02, metadata={"range": (0.0, 1.0)})
    """Share of `size` that goes to val.txt; strictly between 0 and 1 (the generator refuses 0 and 1)."""
    instructions: int | None = field(default=None, metadata={"range": (1, None)})
    """Train instruction records; None: one per KB of text, 200..20000. Val gets a tenth."""
    preferences: int | None = field(default=None, metadata={"range": (1, None)})
    """Train preference pairs; None: half of `instructions`."""
    tasks: int | None = field(default=None, metadata={"range": (1, None)})
    """Train verifiable tasks; None: half of `instructions`."""
    seed: int = 0
    """The same seed and size give byte-identical files."""
