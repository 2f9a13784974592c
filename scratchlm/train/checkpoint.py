"""Checkpoints that survive any crash, and resume a run exactly.

    checkpoints/step_0000500/
        model.safetensors   the weights (scratchlm.runs.save_model; what later stages load)
        config.json         the ModelConfig dict, so the model can be rebuilt without the run's config
        state.pt            optimizer, step, tokens seen, loader position, RNG states, counters
        meta.json           step, losses, time: small and human-readable
        manifest.json       size and SHA-256 of every file above, checked on every load
    checkpoints/best.json   {"checkpoint": "step_0000500", "val_loss": ...}

Nothing here is ever unpickled: state.pt holds only tensors and plain values (RNG states included) and is
read with torch.load(weights_only=True), so a crafted checkpoint someone sends cannot run code on --resume.

Atomicity: a checkpoint is written into a hidden temporary folder (.tmp_step_0000500) and renamed to its
final name only when every file in it is complete and fsynced. A kill at any moment leaves either no
step_0000500 or a complete one; the previous checkpoints are untouched until the new one exists, and are
only then pruned to the last `keep_last` (plus the best), each renamed to a hidden .del_ name before it is
deleted, so a kill mid-prune never leaves a half-deleted step_ folder (the hidden ones are cleaned at start).
--resume takes the newest checkpoint whose files match their manifest, saying so when it skips one.

Exact resume needs everything that influences the next step: weights, optimizer moments, the step counter
(the schedule is a pure function of it), the loader position, and every random generator (Python, NumPy,
torch CPU and CUDA) for dropout. With those restored, a resumed run repeats the uninterrupted one bit for bit
on CPU (and on GPU with train.deterministic = true).
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from scratchlm.runs import (_fsync_dir, atomic_write_json, checkpoint_dir, list_checkpoints, load_model_state,
                            load_state_into, save_model, verify_checkpoint, write_manifest)

log = logging.getLogger("scratchlm")


def rng_state() -> dict:
    """Every random generator's state as tensors and plain values (what weights_only=True loads)."""
    version, key, gauss = random.getstate()
    name, np_key, pos, has_gauss, cached = np.random.get_state()
    state = {"python": {"version": version, "key": torch.tensor(key, dtype=torch.int64), "gauss": gauss},
             "numpy": {"name": name, "key": torch.from_numpy(np_key.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached": float(cached)},
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    py, nps = state["python"], state["numpy"]
    random.setstate((py["version"], tuple(py["key"].tolist()), py["gauss"]))
    np.random.set_state((nps["name"], nps["key"].numpy().astype(np.uint32), nps["pos"], nps["has_gauss"],
                         nps["cached"]))
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
        save_model(tmp, model, model_config, extra_meta=meta, manifest=False)
        torch.save(train_state, tmp / "state.pt")
        write_manifest(tmp)
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
            # rename first (atomic), then delete: a kill mid-delete leaves a hidden .del_ folder, which the next
            # start removes, never a half-deleted step_ folder that looks like a checkpoint
            trash = p.with_name(f".del_{p.name}")
            if trash.exists():
                shutil.rmtree(trash)
            os.rename(p, trash)
            _fsync_dir(p.parent)
            shutil.rmtree(trash, ignore_errors=True)


def clean_partial(run_dir: str | Path) -> None:
    """Remove what a kill during a save or a prune left: half-written and half-deleted checkpoint folders."""
    root = Path(run_dir) / "checkpoints"
    if root.is_dir():
        for p in root.iterdir():
            if p.is_dir() and p.name.startswith((".tmp_", ".old_", ".del_")):
                shutil.rmtree(p, ignore_errors=True)


def load_train_state(ckpt: str | Path, map_location: str = "cpu", verify: bool = True) -> dict[str, Any]:
    """state.pt of a checkpoint: checked against the manifest, then loaded with weights_only=True (tensors and
    plain values only: a crafted file cannot run code). Every failure is a one-line ValueError."""
    path = Path(ckpt) / "state.pt"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: {ckpt} holds weights only and cannot resume training; "
                                "start a new run from it instead")
    if verify:
        verify_checkpoint(ckpt, ["state.pt"])
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        refused = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        if refused:  # a well-formed pickle that wants to build an arbitrary object (or call a function)
            raise ValueError(f"{path} holds Python objects ({refused.group(1)}), not just tensors and plain values; "
                             "scratchlm never unpickles those (a crafted file could run code): resume from a "
                             "checkpoint this version of scratchlm wrote") from None
        raise ValueError(f"{path} is corrupt (not a tensor archive scratchlm reads); resume from an earlier "
                         "checkpoint") from None
    except Exception as e:  # noqa: BLE001 - torch.load raises many types for a damaged file; all mean the same
        raise ValueError(f"{path} is corrupt ({type(e).__name__}: {_first_line(e)}); resume from an earlier "
                         "checkpoint") from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:160]


def resume_checkpoint(run_dir: str | Path, require: tuple[str, ...] = ("state.pt",)) -> Path | None:
    """The newest checkpoint of run_dir that verifies against its manifest and holds `require`; None if the run
    has no checkpoint. Skipped (damaged or incomplete) checkpoints are logged; if none verifies, ValueError."""
    ckpts = list_checkpoints(run_dir)
    problems = []
    for ckpt in reversed(ckpts):
        try:
            verify_checkpoint(ckpt, list(require))
            verify_checkpoint(ckpt)  # and every other file (a legacy checkpoint without a manifest passes)
        except ValueError as e:
            problems.append(str(e))
            log.warning("resume: skipping %s: %s", ckpt.name, e)
            continue
        if problems:
            log.warning("resume: resuming from %s, the newest checkpoint that verifies (%d newer skipped)",
                        ckpt.name, len(problems))
        return ckpt
    if ckpts:
        raise ValueError(f"no checkpoint in {Path(run_dir) / 'checkpoints'} verifies ({problems[0]}); start over "
                         "with --overwrite")
    return None


def load_checkpoint(ckpt: str | Path, model: torch.nn.Module, map_location: str = "cpu",
                    verify: bool = True) -> dict[str, Any]:
    """Load weights into `model`; return the training state (state.pt) for the caller to apply."""
    ckpt = Path(ckpt)
    _, state = load_model_state(ckpt, verify=verify)
    load_state_into(model, state)
    return load_train_state(ckpt, map_location, verify=verify)


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
