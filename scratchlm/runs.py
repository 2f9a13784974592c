"""Run folders and crash-safe file writes.

Every stage writes into a run folder (see ARCHITECTURE.md):

    runs/<name>/config.toml  tokenizer/  data/  checkpoints/  metrics.jsonl  plots/  logs/  DONE

Stages chain by pointing at an earlier run. `DONE` is written last, so a folder without it is an unfinished
(possibly resumable) run, and a folder with it is refused as an output unless the user says --overwrite.

Every file that matters is written atomically: to a temporary file in the same directory, flushed and fsynced,
then renamed over the target (rename is atomic on POSIX), then the directory is fsynced. A kill at any moment
leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

RUN_SUBDIRS = ("tokenizer", "data", "checkpoints", "plots", "logs")
CKPT_RE = re.compile(r"^step_(\d+)$")


# ----------------------------------------------------------------------------- atomic writes

def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some filesystems do not allow opening directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | Path, write: Callable[[str], None]) -> Path:
    """Call `write(tmp_path)` to produce the file, then move it into place atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def append_jsonl(path: str | Path, obj: dict) -> None:
    """Append one JSON line; flushed so a crash loses at most the line being written."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(obj) + "\n")
        f.flush()


def read_jsonl(path: str | Path) -> list[dict]:
    """Read a JSONL file, skipping a torn last line left by a crash."""
    rows = []
    path = Path(path)
    if not path.exists():
        return rows
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


# ----------------------------------------------------------------------------- run folders

def default_run_dir(stage: str) -> Path:
    return Path("runs") / stage


def is_done(run_dir: str | Path) -> bool:
    return (Path(run_dir) / "DONE").exists()


def mark_done(run_dir: str | Path, summary: dict | None = None) -> None:
    atomic_write_json(Path(run_dir) / "DONE", summary or {})


def prepare_run_dir(run_dir: str | Path, overwrite: bool = False, resume: bool = False) -> Path:
    """Create the run folder layout. A finished run is only replaced with overwrite=True."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise FileExistsError(f"{run_dir} exists and is not a directory; choose another --out")
    if is_done(run_dir) and not resume:
        if not overwrite:
            raise FileExistsError(f"{run_dir} holds a finished run; pass --overwrite to replace it or choose another --out")
        shutil.rmtree(run_dir)
    elif run_dir.exists() and overwrite and not resume:
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    for sub in RUN_SUBDIRS:
        (run_dir / sub).mkdir(exist_ok=True)
    return run_dir


def require_run(run_dir: str | Path, what: str = "run") -> Path:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{what} folder not found: {run_dir} (run the earlier stage first, or check --run)")
    return run_dir


# ----------------------------------------------------------------------------- checkpoints

def checkpoint_dir(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"step_{step:07d}"


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints (those with model.safetensors), oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = CKPT_RE.match(p.name)
        if m and p.is_dir() and (p / "model.safetensors").exists():
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def latest_checkpoint(run_dir: str | Path) -> Path:
    ckpts = list_checkpoints(run_dir)
    if not ckpts:
        raise FileNotFoundError(f"no checkpoint in {Path(run_dir) / 'checkpoints'}; train this run first")
    return ckpts[-1]


def best_checkpoint(run_dir: str | Path) -> Path:
    """The checkpoint named in checkpoints/best.json, else the latest one."""
    marker = Path(run_dir) / "checkpoints" / "best.json"
    if marker.exists():
        try:
            p = Path(run_dir) / "checkpoints" / json.loads(marker.read_text())["checkpoint"]
            if (p / "model.safetensors").exists():
                return p
        except (json.JSONDecodeError, KeyError):
            pass
    return latest_checkpoint(run_dir)


def resolve_checkpoint(path: str | Path) -> Path:
    """Accept a run folder or a checkpoint folder; return the checkpoint folder."""
    path = Path(path)
    if (path / "model.safetensors").exists():
        return path
    return best_checkpoint(require_run(path))


def _dedup_shared(state: dict) -> dict:
    # Tied weights (embedding == output head) are one tensor under two names; safetensors refuses shared
    # storage, so keep the first name only. Loading restores the tie because the module shares the Parameter.
    seen: dict[tuple, str] = {}
    out = {}
    for name, t in state.items():
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.dtype)
        if t.numel() and key in seen:
            continue
        seen[key] = name
        out[name] = t.detach().contiguous().cpu()
    return out


def save_model(ckpt_dir: str | Path, model: Any, model_config: dict, extra_meta: dict | None = None) -> Path:
    """Write model.safetensors and config.json (the ModelConfig dict) into ckpt_dir, each atomically."""
    from safetensors.torch import save_file

    ckpt_dir = Path(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    state = model if isinstance(model, dict) else model.state_dict()
    state = _dedup_shared(state)
    metadata = {"format": "pt", "producer": "scratchlm"}
    atomic_write(ckpt_dir / "model.safetensors", lambda tmp: save_file(state, tmp, metadata=metadata))
    atomic_write_json(ckpt_dir / "config.json", model_config)
    if extra_meta is not None:
        atomic_write_json(ckpt_dir / "meta.json", extra_meta)
    return ckpt_dir


def load_model_state(ckpt_dir: str | Path) -> tuple[dict, dict]:
    """Return (model config dict, state dict) from a checkpoint folder, with clear errors when damaged."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    ckpt_dir = Path(ckpt_dir)
    weights, cfg = ckpt_dir / "model.safetensors", ckpt_dir / "config.json"
    if not weights.exists() or not cfg.exists():
        raise FileNotFoundError(f"{ckpt_dir} is not a checkpoint (needs model.safetensors and config.json)")
    try:
        config = json.loads(cfg.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{cfg} is corrupt ({e}); use an earlier checkpoint") from None
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"{weights} is corrupt ({e}); use an earlier checkpoint") from None
    return config, state


def load_state_into(model: Any, state: dict) -> None:
    """load_state_dict that tolerates the tied-weight name dropped by save_model."""
    missing, unexpected = model.load_state_dict(state, strict=False)
    params = dict(model.named_parameters(remove_duplicate=False))
    really_missing = []
    for name in missing:
        # a name is fine if it aliases a parameter that was loaded under another name
        p = params.get(name)
        if p is None or not any(p is params.get(n) for n in state):
            really_missing.append(name)
    if really_missing or unexpected:
        raise ValueError(
            f"checkpoint does not match the model: missing {really_missing[:5]}, unexpected {list(unexpected)[:5]}; "
            "check that the run's config.json matches the model"
        )
