"""Checkpoints that survive any crash, and resume a run exactly.

    checkpoints/step_0000500/
        model.safetensors   the weights (scratchlm.runs.save_model; what later stages load)
        config.json         the ModelConfig dict, so the model can be rebuilt without the run's config
        state.pt            optimizer, step, tokens seen, loader position, RNG states, counters
        meta.json           step, losses, time: small and human-readable
    checkpoints/best.json   {"checkpoint": "step_0000500", "val_loss": ...}

Atomicity: a checkpoint is written into a hidden temporary folder (.tmp_step_0000500) and renamed to its
final name only when every file in it is complete and fsynced. A kill at any moment leaves either no
step_0000500 or a complete one; the previous checkpoints are untouched until the new one exists, and are
only then pruned to the last `keep_last` (plus the best).

Exact resume needs everything that influences the next step: weights, optimizer moments, the step counter
(the schedule is a pure function of it), the loader position, and every random generator (Python, NumPy,
torch CPU and CUDA) for dropout. With those restored, a resumed run repeats the uninterrupted one bit for bit
on CPU (and on GPU with train.deterministic = true).
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from scratchlm.runs import (_fsync_dir, atomic_write_json, checkpoint_dir, list_checkpoints, load_model_state,
                            load_state_into, save_model)


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _fsync_tree(folder: Path) -> None:
    for p in folder.iterdir():
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
        elif p.is_dir():  # a distributed checkpoint's dcp/ shards
            _fsync_tree(p)
    _fsync_dir(folder)


def save_checkpoint(run_dir: str | Path, step: int, model: torch.nn.Module, model_config: dict, train_state: dict,
                    meta: dict | None = None, keep_last: int = 2) -> Path:
    """Write checkpoints/step_{step:07d} atomically, then prune old ones (the best is always kept)."""
    final = checkpoint_dir(run_dir, step)
    tmp = final.parent / f".tmp_{final.name}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        meta = {"step": step, **(meta or {})}
        save_model(tmp, model, model_config, extra_meta=meta)
        torch.save(train_state, tmp / "state.pt")
        publish_checkpoint(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    prune_checkpoints(run_dir, keep_last)
    return final


def publish_checkpoint(tmp: Path, final: Path) -> None:
    """fsync every file of the finished folder `tmp` and rename it to `final` (replacing an older one as a whole)."""
    _fsync_tree(tmp)
    if final.exists():  # re-saving the same step (e.g. after a resume): replace it as a whole
        old = final.parent / f".old_{final.name}"
        if old.exists():
            shutil.rmtree(old)
        os.rename(final, old)
        os.rename(tmp, final)
        shutil.rmtree(old)
    else:
        os.rename(tmp, final)
    _fsync_dir(final.parent)


def mark_best(run_dir: str | Path, ckpt: Path, val_loss: float) -> None:
    atomic_write_json(Path(run_dir) / "checkpoints" / "best.json", {"checkpoint": ckpt.name, "val_loss": val_loss})


def read_best(run_dir: str | Path) -> dict | None:
    path = Path(run_dir) / "checkpoints" / "best.json"
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def prune_checkpoints(run_dir: str | Path, keep_last: int) -> None:
    ckpts = list_checkpoints(run_dir)
    best = read_best(run_dir)
    keep = {p.name for p in ckpts[-keep_last:]} | ({best["checkpoint"]} if best else set())
    for p in ckpts:
        if p.name not in keep:
            shutil.rmtree(p, ignore_errors=True)


def clean_partial(run_dir: str | Path) -> None:
    """Remove half-written checkpoint folders left by a kill during a save."""
    root = Path(run_dir) / "checkpoints"
    if root.is_dir():
        for p in root.iterdir():
            if p.is_dir() and p.name.startswith((".tmp_", ".old_")):
                shutil.rmtree(p, ignore_errors=True)


def load_checkpoint(ckpt: str | Path, model: torch.nn.Module, map_location: str = "cpu") -> dict[str, Any]:
    """Load weights into `model`; return the training state (state.pt) for the caller to apply."""
    ckpt = Path(ckpt)
    _, state = load_model_state(ckpt)
    load_state_into(model, state)
    state_path = ckpt / "state.pt"
    if not state_path.exists():
        raise FileNotFoundError(f"{state_path} is missing: {ckpt} holds weights only and cannot resume training; "
                                "start a new run from it instead")
    # weights_only=False: the state holds Python and NumPy RNG tuples; we wrote this file ourselves
    return torch.load(state_path, map_location=map_location, weights_only=False)


def load_model(ckpt_or_run: str | Path, device: str = "cpu") -> tuple[torch.nn.Module, dict]:
    """A model from a checkpoint folder or a run folder (its best checkpoint): (Transformer in eval mode, meta)."""
    from scratchlm.model import ModelConfig, Transformer
    from scratchlm.runs import resolve_checkpoint

    ckpt = resolve_checkpoint(ckpt_or_run)
    config, state = load_model_state(ckpt)
    model = Transformer(ModelConfig.from_dict(config))
    load_state_into(model, state)
    meta_path = ckpt / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    meta["checkpoint"] = str(ckpt)
    return model.to(device).eval(), meta
