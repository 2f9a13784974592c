"""The settings of `scratchlm data toxicity score`, as a config like every other stage's (scratchlm/config.py).

A TOML file passed with --config and `--set KEY=VALUE` name these keys (`--set threshold=0.7`,
`--set toxicity_model=builtin`); the command's flags set the same keys, above the file and below --set. The files it
reads and writes (--input, --out) stay flags.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ToxicityScoreConfig:
    toxicity_model: str | None = None
    """builtin, profanity-check or a trained classifier folder; None: no classifier score."""
    toxic_words: str | None = None
    """A word list (one word a line) for density scores; None: none. At least one of the two is needed."""
    text_field: str = "text"
    """The record field holding the text."""
    label_field: str | None = None
    """A 0/1 label field: with it, precision and recall are printed."""
    threshold: float = field(default=0.5, metadata={"range": (0.0, 1.0)})
    """P(toxic) at which a document counts as toxic, for precision/recall."""
    max_density: float = field(default=0.01, metadata={"range": (0.0, 1.0)})
    """Toxic-word density (toxic words / words) at which a document counts as toxic, for precision/recall."""
