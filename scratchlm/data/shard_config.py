"""The settings of `scratchlm data tokenize`, as a config like every other stage's (scratchlm/config.py).

A TOML file passed with --config and `--set KEY=VALUE` name these keys (`--set source.text_field=content`,
`--set val_fraction=0.05`); the command's flags set the same keys, above the file and below --set.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from scratchlm.data.sources import SourceConfig


@dataclass
class ShardConfig:
    source: SourceConfig = field(default_factory=SourceConfig)
    """How the inputs are read: text_field, text_split ("file" by default: one document per file), hf_split, ..."""
    val_fraction: float = field(default=0.1, metadata={"range": (0.0, 1.0)})
    """Fraction of documents sent to the val shards, chosen by a hash of each document's text. --val-input replaces
    the split, so with it any value other than this default is refused rather than ignored."""
    shard_tokens: int | str = "100M"
    """The most tokens in one shard file: 100M is 200 MB of uint16. A count or a string such as "5e6" or "200k"."""
    batch_size: int = field(default=256, metadata={"range": (1, None)})
    """Documents per encoding task sent to a worker."""
    seed: int = 0
    """Seed of the train/val hash: another seed sends other documents to val."""
