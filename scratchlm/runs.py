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

import glob
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


# ----------------------------------------------------------------------------- output folders we own
#
# `--overwrite` deletes a folder, so it must only ever delete one that scratchlm made. Every folder a command
# creates for its output gets OWNER_MARK at creation; a folder without it is never removed, and never written
# into unless it is empty. Some folders are refused outright (the current folder, its parents, the home folder):
# `--out .` or `--out ~` with --overwrite would otherwise take the user's files with them.

OWNER_MARK = ".scratchlm"


def owned(path: str | Path) -> bool:
    """Did scratchlm create this folder (it holds OWNER_MARK)?"""
    mark = Path(path) / OWNER_MARK
    try:
        return mark.is_file() and json.loads(mark.read_text(encoding="utf-8")).get("created_by") == "scratchlm"
    except (OSError, ValueError, AttributeError):
        return False


def folder_kind(path: str | Path) -> str | None:
    """The command whose output an owned folder holds ("pretrain", "data synth", ...), None if unrecorded."""
    try:
        kind = json.loads((Path(path) / OWNER_MARK).read_text(encoding="utf-8")).get("kind")
    except (OSError, ValueError, AttributeError):
        return None
    return kind if isinstance(kind, str) else None


def _holds(folder: Path, item: str | Path) -> bool:
    """Does `item` (a path, or a glob: its fixed part counts) lie in `folder` or is it `folder`?"""
    text = str(item)
    cut = min((text.index(c) for c in "*?[" if c in text), default=len(text))
    fixed = Path(text[:cut] or ".").expanduser().resolve()
    top = folder.resolve()
    return fixed == top or top in fixed.parents


def check_out_path(path: str | Path, flag: str = "--out") -> Path:
    """Refuse output paths that no command should write into or delete: empty, `.`, a parent of the current
    folder, the home folder, the filesystem root, or a symbolic link."""
    if path is None or not str(path).strip():
        raise ValueError(f"{flag} is empty; name the folder to write, e.g. {flag} runs/my_run")
    path = Path(str(path)).expanduser()
    if path.is_symlink():
        raise ValueError(f"{flag} {path} is a symbolic link; name the folder itself")
    real, cwd, home = path.resolve(), Path.cwd().resolve(), Path.home().resolve()
    if real == cwd or real in cwd.parents:
        raise ValueError(f"{flag} {path} is the current folder or one of its parents; name a new sub-folder, "
                         f"e.g. {flag} runs/my_run")
    if real == home or real == Path(real.anchor):
        raise ValueError(f"{flag} {path} is the home folder or the filesystem root; name a new sub-folder")
    return path


def remove_owned_dir(path: str | Path, flag: str = "--out") -> None:
    """Delete an output folder that scratchlm created, and nothing else.

    The folder is first renamed to a hidden sibling, then deleted: a kill in the middle leaves a hidden
    `.deleting_*` folder (never a half-deleted run under its real name)."""
    path = check_out_path(path, flag)
    if not path.exists():
        return
    if not path.is_dir():
        raise FileExistsError(f"{path} exists and is not a folder; choose another {flag}")
    if not owned(path):
        raise FileExistsError(f"{path} was not created by scratchlm (it has no {OWNER_MARK} file), so --overwrite "
                              f"will not delete it; remove it yourself or choose another {flag}")
    trash = path.with_name(f".deleting_{path.name}_{os.getpid()}")
    os.rename(path, trash)
    shutil.rmtree(trash)


def claim_out_dir(path: str | Path, overwrite: bool = False, resume: bool = False, finished: str | None = "DONE",
                  wipe: bool = True, flag: str = "--out", check_only: bool = False, kind: str | None = None,
                  inputs: tuple | list = ()) -> Path:
    """Make `path` this command's output folder: the one check every command's --out goes through.

    - a new or empty folder is created and marked as ours;
    - a non-empty folder that scratchlm did not create is refused (we would mix our files into the user's);
    - a folder holding a finished result (the file `finished`) is refused unless overwrite=True, which deletes
      the whole folder first (wipe=True) or lets the command replace its own files in it (wipe=False);
    - resume=True keeps what is there;
    - `kind` names the command (recorded in the mark): a non-empty folder holding another command's output is
      refused, --overwrite or not (`pretrain --out` on a `data synth` folder would delete the very text it reads);
    - `inputs` are the paths the command reads: one inside a folder that --overwrite would delete is refused.
    check_only=True runs every check and changes nothing (to fail before a long computation, not after)."""
    path = check_out_path(path, flag)
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"{path} exists and is not a folder; choose another {flag}")
    # (a run folder of an older scratchlm, without the mark, may still be resumed: resuming deletes nothing)
    legacy_run = resume and (path / "checkpoints").is_dir()
    if path.is_dir() and not owned(path) and any(path.iterdir()) and not legacy_run:
        raise FileExistsError(f"{path} is not empty and was not created by scratchlm (no {OWNER_MARK} file); "
                              f"choose a new or empty folder for {flag}")
    theirs = folder_kind(path) if path.is_dir() else None
    if kind and theirs and theirs != kind and any(p.name != OWNER_MARK for p in path.iterdir()):
        raise FileExistsError(f"{path} holds the output of `scratchlm {theirs}`, not of `scratchlm {kind}`; choose "
                              f"another {flag} (each command writes its own folder)")
    if overwrite and wipe and not resume and path.is_dir():
        for item in inputs:
            if item and _holds(path, item):
                raise ValueError(f"{item} is inside {flag} {path}, which --overwrite would delete before reading it; "
                                 f"choose another {flag}")
    if finished and (path / finished).exists() and not resume and not overwrite:
        raise FileExistsError(f"{path} is not empty: it holds a finished run ({finished}); pass --overwrite to "
                              f"replace it or choose another {flag}")
    if check_only:
        return path
    if path.parent.is_dir():  # a deletion that a kill interrupted (remove_owned_dir) is finished now
        for stale in path.parent.glob(f".deleting_{glob.escape(path.name)}_*"):
            if stale.is_dir() and owned(stale):
                shutil.rmtree(stale, ignore_errors=True)
    if path.is_dir() and overwrite and wipe and not resume and owned(path):
        remove_owned_dir(path, flag)
    new = not path.exists() or not any(path.iterdir())
    path.mkdir(parents=True, exist_ok=True)
    if new:
        atomic_write_json(path / OWNER_MARK, {"created_by": "scratchlm", **({"kind": kind} if kind else {}),
                                              "note": "scratchlm made this folder; --overwrite may delete it"})
    return path


def prepare_run_dir(run_dir: str | Path, overwrite: bool = False, resume: bool = False, kind: str | None = None,
                    inputs: tuple | list = ()) -> Path:
    """Create the run folder layout. A finished run is only replaced with overwrite=True (and only if we made it);
    kind and inputs: as in claim_out_dir."""
    run_dir = claim_out_dir(run_dir, overwrite=overwrite, resume=resume, kind=kind, inputs=inputs)
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


# ----------------------------------------------------------------------------- checkpoint integrity
#
# A flipped bit inside a tensor still parses as a valid safetensors file: only a checksum notices. Every
# checkpoint folder carries manifest.json with the size and SHA-256 of each of its files, written when the
# checkpoint is complete; every load checks the files it reads against it (~1 s per GB).

MANIFEST = "manifest.json"


def _sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def write_manifest(folder: str | Path, paths: list[str] | None = None) -> None:
    """Record size and SHA-256 of every file under `folder` (or add/refresh just `paths`, files or sub-folders)."""
    folder = Path(folder)
    entries = {}
    if paths is not None and (folder / MANIFEST).exists():
        entries = json.loads((folder / MANIFEST).read_text())["files"]
    roots = [folder / p for p in paths] if paths is not None else [folder]
    for root in roots:
        for f in ([root] if root.is_file() else sorted(q for q in root.rglob("*") if q.is_file())):
            rel = f.relative_to(folder).as_posix()
            if rel != MANIFEST:
                entries[rel] = {"bytes": f.stat().st_size, "sha256": _sha256(f)}
    atomic_write_json(folder / MANIFEST, {"format": "scratchlm-manifest-1", "files": dict(sorted(entries.items()))})


def verify_checkpoint(folder: str | Path, names: list[str] | None = None, require: bool = False) -> bool:
    """Check the files `names` (files or sub-folders; None = all) of a checkpoint against its manifest.

    Raises ValueError naming the first file that is missing, truncated or changed. A folder without a manifest
    (written by an older scratchlm, or by hand) is not verified: returns False, or raises if require=True.
    A name that the manifest does not list is an error (it was written after the manifest: not complete)."""
    folder = Path(folder)
    try:
        files = json.loads((folder / MANIFEST).read_text())["files"]
    except FileNotFoundError:
        if require:
            raise ValueError(f"{folder} has no {MANIFEST}: it cannot be verified; use a checkpoint this version "
                             "of scratchlm wrote") from None
        for name in names or []:  # unverifiable, but at least present
            if not (folder / name).exists():
                raise ValueError(f"{folder / name} is missing; use an earlier checkpoint") from None
        return False
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{folder / MANIFEST} is corrupt ({e}); use an earlier checkpoint") from None
    wanted = list(files) if names is None else []
    for name in names or []:
        under = [rel for rel in files if rel == name or rel.startswith(name.rstrip("/") + "/")]
        if not under:
            raise ValueError(f"{folder / name} is not in {MANIFEST} (the checkpoint was not completely written); "
                             "use an earlier checkpoint")
        wanted += under
    for rel in wanted:
        f, entry = folder / rel, files[rel]
        if not f.is_file():
            raise ValueError(f"{f} is missing (listed in {MANIFEST}); use an earlier checkpoint")
        if f.stat().st_size != entry["bytes"] or _sha256(f) != entry["sha256"]:
            raise ValueError(f"{f} is corrupt: its checksum does not match {MANIFEST}; use an earlier checkpoint")
    return True


def save_model(ckpt_dir: str | Path, model: Any, model_config: dict, extra_meta: dict | None = None,
               manifest: bool = True) -> Path:
    """Write model.safetensors and config.json (the ModelConfig dict) into ckpt_dir, each atomically, then the
    manifest of the folder (manifest=False: the caller adds files and writes it once at the end)."""
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
    if manifest:
        write_manifest(ckpt_dir)
    return ckpt_dir


def load_model_state(ckpt_dir: str | Path, verify: bool = True) -> tuple[dict, dict]:
    """Return (model config dict, state dict) from a checkpoint folder, with clear errors when damaged.
    verify=False skips the checksums (the caller has just verified the whole folder)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    ckpt_dir = Path(ckpt_dir)
    weights, cfg = ckpt_dir / "model.safetensors", ckpt_dir / "config.json"
    if not weights.exists() or not cfg.exists():
        raise FileNotFoundError(f"{ckpt_dir} is not a checkpoint (needs model.safetensors and config.json)")
    if verify:
        verify_checkpoint(ckpt_dir, ["config.json", "model.safetensors"])
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
