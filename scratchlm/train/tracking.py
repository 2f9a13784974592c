"""Weights & Biases beside metrics.jsonl and TensorBoard, for pretraining and every post-training stage.

Every stage writes its metrics through one `MetricsLogger` (metrics.py); when the run's config sets
train.wandb_project (`--wandb PROJECT`), that logger hands each row here too, so no stage has W&B code of its own.
The resolved config (the run folder's config.toml) becomes wandb.config, and the charts are drawn against the
run's own `step` (one W&B history row per metrics.jsonl row), so W&B shows what metrics.jsonl holds.

Tracking must never get in the way of training:
- no W&B login or no network: the run is written offline under logs/wandb/ (train.wandb_mode = "auto"), and the
  end of the run prints the `wandb sync` command that uploads it later;
- no login prompt, ever: an interactive prompt would hang a batch job that has no terminal;
- under torchrun only rank 0 logs (every rank would otherwise open a run of its own);
- asked for but not installed: a one-line error naming `pip install wandb`, never a silent skip.
"""

from __future__ import annotations

import logging
import math
import netrc
import secrets
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from scratchlm.runs import atomic_write_text

log = logging.getLogger("scratchlm")

MODES = ("auto", "online", "offline")
INSTALL = "pip install wandb (or pip install 'scratchlm[track]')"
DEFAULT_HOST = "https://api.wandb.ai"


def is_rank_zero(env: dict | None = None) -> bool:
    """True in a plain run and in torchrun's rank 0. torchrun sets RANK in every process it starts."""
    env = os.environ if env is None else env
    return int(env.get("RANK", "0") or "0") == 0


def import_wandb():
    """The wandb module, or a one-line ValueError saying how to install it (the CLI prints it and exits 1)."""
    try:
        import wandb
    except ImportError:
        raise ValueError(f"train.wandb_project is set but wandb is not installed: {INSTALL}; or drop --wandb / "
                         "train.wandb_project") from None
    return wandb


def _host() -> str:
    return os.environ.get("WANDB_BASE_URL") or DEFAULT_HOST


def has_login() -> bool:
    """An API key in WANDB_API_KEY or in ~/.netrc (where `wandb login` writes it) for the W&B host."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators(urlparse(_host()).hostname or "") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def reachable(timeout: float = 3.0) -> bool:
    """Whether the W&B host accepts a TCP connection within `timeout` seconds (a machine with no network, or one
    behind a firewall, fails here at once instead of in wandb.init after its own, much longer, timeout)."""
    url = urlparse(_host())
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def choose_mode(mode: str) -> tuple[str, str]:
    """(the wandb mode to start in, why) for train.wandb_mode. WANDB_MODE in the environment wins over "auto"."""
    if mode not in MODES:
        raise ValueError(f"train.wandb_mode = {mode!r} is not one of {', '.join(MODES)}")
    env = os.environ.get("WANDB_MODE", "").strip().lower()
    if mode == "auto" and env in ("offline", "dryrun"):
        return "offline", f"WANDB_MODE={env}"
    if mode == "offline":
        return "offline", "train.wandb_mode = offline"
    asked = 'train.wandb_mode = "online"' if mode == "online" else ("WANDB_MODE=online" if env == "online" else "")
    if not has_login():
        if asked:  # wandb.init would ask for a key on a terminal and wait: an error instead
            raise ValueError(f"{asked} needs a W&B login: run `wandb login` or set WANDB_API_KEY, or use "
                             'train.wandb_mode = "offline"')
        return "offline", "no W&B login found: `wandb login` or WANDB_API_KEY makes it online"
    if asked:
        return "online", asked
    if mode == "auto" and not reachable():
        return "offline", f"{_host()} is not reachable"
    return "online", "logged in"


class WandbRun:
    """One W&B run that mirrors a MetricsLogger: `log` takes the same rows, `finish` says where an offline run is."""

    def __init__(self, run_dir: Path, project: str, config: dict, mode: str = "auto"):
        wandb = import_wandb()
        mode, why = choose_mode(mode)
        logs = run_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        # console="off": wandb would otherwise wrap stdout/stderr to capture them (the run's logs/ has them);
        # silent: its banner would interleave with the progress bar.
        settings = wandb.Settings(console="off", silent=True, init_timeout=60)
        # One W&B run per scratchlm run: its id is kept in logs/, so `--resume` continues the same W&B run (charts
        # go on from the checkpoint's step) instead of starting a second one. A fresh or --overwrite run has no
        # logs/ from before, so it gets a new id.
        id_file = logs / "wandb_run_id"
        resumed = id_file.is_file()
        run_id = id_file.read_text(encoding="utf-8").strip() if resumed else secrets.token_hex(6)
        if not resumed:
            atomic_write_text(id_file, run_id + "\n")
        kwargs = dict(project=project, name=run_dir.name, dir=str(logs), config=config, settings=settings,
                      id=run_id, resume="allow")
        try:
            self.run = wandb.init(mode=mode, **kwargs)
        except Exception as e:  # noqa: BLE001 - wandb's network errors have no common base class
            if why != "logged in":  # offline failed, or online was asked for: the user's to see
                raise
            log.warning("W&B: could not start an online run (%s); logging offline instead", str(e).splitlines()[0])
            mode, why = "offline", "the online start failed"
            self.run = wandb.init(mode="offline", **kwargs)
        self.mode = mode
        # x axis of every chart: the run's own step (metrics.jsonl's), not W&B's count of log calls
        self.run.define_metric("step")
        self.run.define_metric("*", step_metric="step")
        where = self.sync_dir() if mode == "offline" else self.run.get_url()
        log.info("W&B: %s run of project %r [%s]: %s", mode, project, why, where)

    def sync_dir(self) -> Path:
        """The folder of an offline run (logs/wandb/offline-run-...), which `wandb sync` uploads."""
        return Path(self.run.dir).parent  # run.dir is its files/ folder

    def log(self, step: int, scalars: dict[str, float]) -> None:
        self.run.log({"step": step, **{k: v for k, v in scalars.items() if math.isfinite(v)}})

    def finish(self) -> None:
        self.run.finish()
        if self.mode == "offline":
            log.info("W&B: offline run saved in %s; upload it with: wandb sync %s", self.sync_dir(), self.sync_dir())


def start_wandb(run_dir: str | Path, config: dict) -> WandbRun | None:
    """A WandbRun when config (the resolved run config, as a dict) sets train.wandb_project and this process is
    rank 0; else None."""
    train = config.get("train") or {}
    project = train.get("wandb_project") or ""
    if not project or not is_rank_zero():
        return None
    return WandbRun(Path(run_dir), project, config, train.get("wandb_mode", "auto"))
