"""Flags every stage shares, and the small helpers behind them."""

from __future__ import annotations

import argparse
import logging
import random
import sys
from pathlib import Path

log = logging.getLogger("scratchlm")


def add_common(parser: argparse.ArgumentParser, *, out: str | None = None, config: bool = False,
               overrides: bool = True, device: bool = True, seed: bool = True) -> None:
    """Add the shared flags. `out` is the default run folder (e.g. "runs/pretrain"); None = no --out flag.
    seed=False for a command with nothing random in it: a --seed it accepted and ignored would be a silent no-op."""
    g = parser.add_argument_group("common options")
    if out is not None:
        g.add_argument("--out", type=out_dir, default=Path(out), help=f"run folder to write (default: {out})")
        g.add_argument("--overwrite", action="store_true",
                       help="replace a finished run in --out (only a folder scratchlm created is ever deleted)")
    if config:
        g.add_argument("--config", type=Path, default=None, help="TOML config file (see configs/)")
    if overrides:
        g.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config value, e.g. --set train.lr=3e-4 (repeatable)")
    if seed:
        g.add_argument("--seed", type=int, default=None, help="random seed (default: from config, else 0)")
    if device:
        g.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"],
                       help="where to run (auto: cuda > mps > cpu)")
        g.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                       help="compute dtype (auto: bfloat16 where fast, else float32)")
    if config and device and overrides:  # the training commands: pretrain, sft, dpo, rl, reward
        g.add_argument("--wandb", metavar="PROJECT", action=_WandbProject, dest="overrides", default=argparse.SUPPRESS,
                       help="log metrics to this Weights & Biases project too (same as --set train.wandb_project="
                            "PROJECT; offline when there is no login or network, see train.wandb_mode)")
    g.add_argument("-v", "--verbose", action="count", default=0, help="more logging (and tracebacks)")
    g.add_argument("-q", "--quiet", action="count", default=0, help="less logging")


def add_renamed(parser, flag: str, *old: str, old_value: str | None = None, group=None, **kwargs) -> argparse.Action:
    """add_argument(flag, **kwargs), and its old spellings `old` kept working for one release. An old spelling is
    hidden from --help, sets what `flag` sets, and prints one line on stderr naming the new flag. Both spellings sit
    in one mutually exclusive group: passing both is an error, not "the last one wins", and a required flag is
    satisfied by either (argparse would not count the old spelling towards a required flag of its own).
    `old_value`: the old spellings were switches that now mean `flag old_value` (--int8 is --quant int8).
    `group`: an existing mutually exclusive group to add both into (argparse cannot nest one group in another), e.g.
    generate's required either-or of --prompt and --input."""
    if group is None:
        group = parser.add_mutually_exclusive_group(required=kwargs.pop("required", False))
    elif "required" in kwargs:
        raise TypeError("add_renamed: a flag in a given group is required through the group, not required=")
    new = group.add_argument(flag, **kwargs)
    for name in old:
        group.add_argument(name, action=_Renamed, new=new, dest=new.dest, value=old_value)
    return new


class _Renamed(argparse.Action):
    """The old spelling of a renamed flag: parses its values exactly as the new flag does, then lets it store them."""

    def __init__(self, option_strings, dest, new: argparse.Action, value: str | None = None, **_):
        if value is None:
            super().__init__(option_strings, dest, nargs=new.nargs, const=new.const, type=new.type,
                             choices=new.choices, default=argparse.SUPPRESS, metavar=new.metavar,
                             help=argparse.SUPPRESS)
        else:  # a switch standing for one value of the new flag
            super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        self.new, self.value = new, value

    def __call__(self, parser, namespace, values, option_string=None):
        flag = self.new.option_strings[0]
        if self.value is not None:
            flag, values = f"{flag} {self.value}", self.new.type(self.value) if self.new.type else self.value
        print(f"note: {option_string} is deprecated and will be removed in the next release; use {flag}",
              file=sys.stderr)
        self.new(parser, namespace, values, flag)


class _WandbProject(argparse.Action):
    """--wandb PROJECT is --set train.wandb_project=PROJECT, checked at once: asking for W&B where wandb is not
    installed stops before anything runs (the run would otherwise fail after its data and model were built)."""

    def __call__(self, parser, namespace, value, option_string=None):
        import importlib.util
        import json

        if not value.strip():
            raise argparse.ArgumentError(self, "is empty; name a W&B project, e.g. --wandb scratchlm")
        if importlib.util.find_spec("wandb") is None:
            raise argparse.ArgumentError(self, "wandb is not installed: pip install wandb (or pip install "
                                               "'scratchlm[track]')")
        overrides = list(getattr(namespace, "overrides", None) or [])
        setattr(namespace, "overrides", overrides + [f"train.wandb_project={json.dumps(value)}"])


def out_dir(text: str) -> Path:
    """argparse type of every --out folder: an empty string would mean the current folder."""
    if not text.strip():
        raise argparse.ArgumentTypeError("is empty; name the folder to write, e.g. --out runs/my_run")
    return Path(text)


def check_finite_args(args: argparse.Namespace) -> None:
    """Every float a user passes on the command line must be finite: argparse's float() accepts 'nan' and 'inf',
    which pass every range check (nan < 0 is False) and then poison a run. One check for every command."""
    import math

    for name, value in vars(args).items():
        values = value if isinstance(value, (list, tuple)) else [value]
        for v in values:
            if isinstance(v, float) and not math.isfinite(v):
                flag = "--" + name.replace("_", "-")
                raise ValueError(f"{flag} {v} is not a finite number; pass a real value (see --help for the range)")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % 2**32)
    except ImportError:  # pragma: no cover
        pass
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:  # pragma: no cover
        pass


def quiet_rank_fails(seconds: float = 5.0) -> int:
    """Exit code 2 for a rank other than 0 that failed a check every rank fails alike (rank 0 prints the one-line
    error). torchrun stops the other workers as soon as one exits, so a quiet rank that left at once could stop rank 0
    before it had printed (seen in CI under load); it waits a few seconds first, being about to fail anyway."""
    import time

    time.sleep(seconds)
    return 2
