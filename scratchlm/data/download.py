"""Download a pretraining corpus: FineWeb-Edu, FineWeb, any Hugging Face dataset, or a local mirror of one.

    scratchlm data download fineweb-edu --shards 4 --out data/fineweb-edu
    scratchlm data download hf:HuggingFaceFW/fineweb --pattern "sample/10BT/*.parquet" --shards 2 --out data/fw
    scratchlm data download /mnt/mirror/fineweb-edu --shards 4 --out data/fineweb-edu   # a copy on a shared disk

The folder it writes is what `scratchlm data prepare --input DIR` reads as it is: the dataset's own parquet files
under their repository paths, plus .download.json (source, revision, and size + SHA-256 of every file).

Downloads are resumable and verified. The file list is pinned to one revision of the repository (its commit),
so a resumed or repeated download gets the same bytes; each file is checked against the size and SHA-256 the
Hub records for it (Git LFS), and a file that does not match is deleted and named. Running the same command
again skips what is complete and continues what is not (huggingface_hub keeps partial files).

The only calls to the Hub are in HubRepo (list the files with their checksums, fetch one file); LocalRepo offers
the same two over a folder, for mirrors, and is how the tests run with no network.
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from scratchlm.runs import atomic_write_json, claim_out_dir

log = logging.getLogger("scratchlm")

MARK = ".download.json"  # hidden: `data prepare --input DIR` reads every data file in DIR, and this is not one

# name -> (repository, files): the 10B-token samples are the usual start (FineWeb-Edu: Penedo et al. 2024)
KNOWN = {
    "fineweb-edu": ("HuggingFaceFW/fineweb-edu", "sample/10BT/*.parquet"),
    "fineweb": ("HuggingFaceFW/fineweb", "sample/10BT/*.parquet"),
}


@dataclass
class RemoteFile:
    path: str  # inside the repository, "/"-separated
    size: int
    sha256: str | None  # None when the source records none (a small non-LFS file): size only


class HubRepo:
    """A dataset repository on the Hugging Face Hub, pinned to one commit."""

    def __init__(self, repo_id: str, revision: str | None = None):
        from huggingface_hub import HfApi

        self.api, self.repo_id = HfApi(), repo_id
        self.revision = self.api.dataset_info(repo_id, revision=revision).sha  # a branch name -> its commit
        self.name = f"hf:{repo_id}@{self.revision}"

    def list_files(self) -> list[RemoteFile]:
        from huggingface_hub.hf_api import RepoFile

        out = []
        for f in self.api.list_repo_tree(self.repo_id, recursive=True, revision=self.revision, repo_type="dataset"):
            if isinstance(f, RepoFile):
                out.append(RemoteFile(f.path, f.size, f.lfs.sha256 if f.lfs else None))
        return out

    def fetch(self, f: RemoteFile, out: Path) -> Path:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(self.repo_id, f.path, repo_type="dataset", revision=self.revision,
                                    local_dir=out))


class LocalRepo:
    """A folder laid out like a dataset repository (a mirror on a shared disk); its .download.json, if it has one
    (a folder this command wrote) supplies the checksums."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"{self.root} is not a folder; give a dataset name ({', '.join(KNOWN)}), "
                                    "hf:OWNER/NAME, or a local mirror folder")
        self.name, self.revision = str(self.root.resolve()), None

    def list_files(self) -> list[RemoteFile]:
        known = {}
        if (self.root / MARK).is_file():
            import json

            known = {f["path"]: f for f in json.loads((self.root / MARK).read_text())["files"]}
        out = []
        for p in sorted(self.root.rglob("*")):
            rel = p.relative_to(self.root).as_posix()
            if p.is_file() and rel != MARK and not any(part.startswith(".") for part in p.relative_to(self.root).parts):
                out.append(RemoteFile(rel, p.stat().st_size, known.get(rel, {}).get("sha256")))
        return out

    def fetch(self, f: RemoteFile, out: Path) -> Path:
        dest = out / f.path
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_name(dest.name + ".part")
        with open(self.root / f.path, "rb") as src, open(part, "ab") as dst:  # append: a resumed copy continues
            src.seek(part.stat().st_size)
            shutil.copyfileobj(src, dst, 1 << 22)
        part.replace(dest)
        return dest


def resolve_source(source: str, pattern: str | None, revision: str | None):
    """(repository, file pattern) for a dataset name, hf:OWNER/NAME, or a local folder."""
    if source in KNOWN:
        repo_id, default = KNOWN[source]
        return HubRepo(repo_id, revision), pattern or default
    if source.startswith("hf:"):
        if not pattern:
            raise ValueError(f"{source}: pass --pattern to say which files (e.g. \"data/*.parquet\"); a dataset "
                             "repository can be terabytes")
        return HubRepo(source[3:], revision), pattern
    return LocalRepo(source), pattern or "*.parquet"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def _complete(path: Path, f: RemoteFile) -> bool:
    return path.is_file() and path.stat().st_size == f.size and (f.sha256 is None or _sha256(path) == f.sha256)


def download(source: str, out: str | Path, shards: int | None = None, pattern: str | None = None,
             revision: str | None = None, progress: bool = True, overwrite: bool = False, repo=None) -> dict:
    """Fetch the first `shards` files matching `pattern` (all if None) into `out`; returns the dict written to .download.json."""
    if shards is not None and shards < 1:
        raise ValueError(f"--shards must be at least 1, got {shards}")
    repo, pattern = (repo, pattern) if repo is not None else resolve_source(source, pattern, revision)
    wanted = sorted((f for f in repo.list_files() if fnmatch.fnmatch(f.path, pattern)), key=lambda f: f.path)
    if not wanted:
        raise ValueError(f"no file of {repo.name} matches {pattern!r}; check --pattern")
    wanted = wanted[:shards] if shards else wanted
    # re-running continues (overwrite: starts over); a folder scratchlm did not create is refused
    out = claim_out_dir(out, overwrite=overwrite, resume=not overwrite, finished=None, kind="data download")
    from tqdm import tqdm

    total = sum(f.size for f in wanted)
    bar = tqdm(total=total, unit="B", unit_scale=True, desc="download", disable=not progress)
    fetched = 0
    for f in wanted:
        dest = out / f.path
        if not _complete(dest, f):
            path = Path(repo.fetch(f, out))
            if path.resolve() != dest.resolve():  # a fetcher that wrote elsewhere (it should not)
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(path, dest)
            if not _complete(dest, f):
                got = dest.stat().st_size if dest.exists() else 0
                dest.unlink(missing_ok=True)
                raise ValueError(f"{dest}: {'size' if got != f.size else 'SHA-256'} does not match the source "
                                 f"({got:,} bytes, expected {f.size:,}); deleted it: run the command again")
            fetched += 1
        bar.update(f.size)
    bar.close()
    # a source without checksums (a plain mirror): record ours, so this folder is a verified mirror from now on
    files = [f if f.sha256 else RemoteFile(f.path, f.size, _sha256(out / f.path)) for f in wanted]
    manifest = {"source": source, "repository": repo.name, "revision": repo.revision, "pattern": pattern,
                "files": [asdict(f) for f in files], "bytes": total}
    atomic_write_json(out / MARK, manifest)
    log.info("%s: %d files, %s bytes (%d downloaded, %d already there)", out, len(wanted), f"{total:,}", fetched,
             len(wanted) - fetched)
    return manifest
