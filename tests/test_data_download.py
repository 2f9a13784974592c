"""Issue 18.3: `scratchlm data download`: resumable, verified, and its folder is what `data prepare` reads.

No network here: the Hub is replaced by a local folder laid out like a dataset repository (LocalRepo, the same
two operations as HubRepo: list files with their checksums, fetch one), holding parquet files in FineWeb-Edu's
schema. A fake repository that serves wrong bytes stands in for a damaged transfer."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from scratchlm.cli.main import main  # noqa: E402
from scratchlm.data.download import MARK, LocalRepo, RemoteFile, download  # noqa: E402


def _cli(*args) -> int:
    return main([str(a) for a in args])


def _fineweb_like(path: Path, n: int, seed: int) -> None:
    """A parquet file with FineWeb-Edu's columns and web-like English documents (distinct, long enough to keep)."""
    from scratchlm.data.tinyworld import iter_documents

    docs = []
    for i, doc in enumerate(iter_documents("train", seed=seed)):
        if i == n:
            break
        docs.append(doc)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({
        "text": docs, "id": [f"<urn:uuid:{seed}-{i}>" for i in range(n)], "dump": ["CC-MAIN-2024-10"] * n,
        "url": [f"https://example.org/{seed}/{i}" for i in range(n)], "language": ["en"] * n,
        "language_score": [0.95] * n, "token_count": [len(d.split()) for d in docs], "score": [3.1] * n,
        "int_score": [3] * n}), path)


@pytest.fixture
def mirror(tmp_path) -> Path:
    root = tmp_path / "mirror"
    for k in range(3):
        _fineweb_like(root / "sample" / "10BT" / f"00{k}_00000.parquet", 40, seed=k)
    (root / "README.md").write_text("dataset card")
    return root


def test_download_takes_the_first_shards_and_records_their_checksums(mirror, tmp_path):
    out = tmp_path / "fwe"
    assert _cli("data", "download", mirror, "--pattern", "sample/10BT/*.parquet", "--shards", "2", "--out", out,
                "-q") == 0
    got = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.parquet"))
    assert got == ["sample/10BT/000_00000.parquet", "sample/10BT/001_00000.parquet"]
    m = json.loads((out / MARK).read_text())
    for f in m["files"]:
        data = (out / f["path"]).read_bytes()
        assert (mirror / f["path"]).read_bytes() == data and f["size"] == len(data)
    assert m["bytes"] == sum(f["size"] for f in m["files"]) and m["revision"] is None  # a mirror has no commit


def test_a_rerun_resumes_and_skips_what_is_complete(mirror, tmp_path, monkeypatch):
    out = tmp_path / "fwe"
    download(str(mirror), out, shards=1, progress=False)
    first = out / "sample/10BT/000_00000.parquet"
    # a kill in the middle of the second file left part of it
    src = (mirror / "sample/10BT/001_00000.parquet").read_bytes()
    partial = out / "sample/10BT/001_00000.parquet.part"
    partial.write_bytes(src[: len(src) // 3])
    fetched = []
    real_fetch = LocalRepo.fetch
    monkeypatch.setattr(LocalRepo, "fetch", lambda self, f, o: fetched.append(f.path) or real_fetch(self, f, o))
    download(str(mirror), out, shards=3, progress=False)
    assert fetched == ["sample/10BT/001_00000.parquet", "sample/10BT/002_00000.parquet"]  # not the complete one
    assert (out / "sample/10BT/001_00000.parquet").read_bytes() == src and not partial.exists()
    assert first.read_bytes() == (mirror / "sample/10BT/000_00000.parquet").read_bytes()


class _DamagedHub:
    """A repository whose record says one SHA-256 and whose transfer delivers other bytes."""

    name, revision = "hf:test/damaged@abc123", "abc123"

    def __init__(self, good: bytes):
        self.good = good

    def list_files(self):
        return [RemoteFile("data/a.parquet", len(self.good), hashlib.sha256(self.good).hexdigest())]

    def fetch(self, f, out):
        p = out / f.path
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(bytes(b ^ 1 for b in self.good))  # same size, other bytes
        return p


def test_bytes_that_do_not_match_the_recorded_sha256_are_deleted_and_named(tmp_path):
    with pytest.raises(ValueError, match=r"a.parquet: SHA-256 does not match the source .* run the command again"):
        download("hf:test/damaged", tmp_path / "out", repo=_DamagedHub(b"x" * 1000), pattern="data/*",
                 progress=False)
    assert not (tmp_path / "out" / "data" / "a.parquet").exists()


def test_a_mirror_written_by_download_supplies_its_checksums(mirror, tmp_path):
    first = tmp_path / "first"
    download(str(mirror), first, progress=False)
    files = LocalRepo(first).list_files()
    assert files and all(f.sha256 and len(f.sha256) == 64 for f in files)  # from its .download.json


def test_bad_sources_are_one_line_errors(tmp_path, capsys, mirror):
    assert _cli("data", "download", tmp_path / "nowhere", "--out", tmp_path / "o") == 2
    assert "is not a folder" in capsys.readouterr().err
    assert _cli("data", "download", mirror, "--pattern", "*.csv", "--out", tmp_path / "o") == 2
    assert "no file of" in capsys.readouterr().err
    assert _cli("data", "download", "hf:someone/something", "--out", tmp_path / "o") == 2
    assert "pass --pattern" in capsys.readouterr().err
    assert _cli("data", "download", mirror, "--shards", "0", "--out", tmp_path / "o") == 2
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "mine.txt").write_text("x")
    assert _cli("data", "download", mirror, "--out", notes) == 2  # never into a folder we did not create
    assert "not created by scratchlm" in capsys.readouterr().err and (notes / "mine.txt").exists()


def test_data_prepare_reads_the_downloaded_folder_as_it_is(mirror, tmp_path):
    out = tmp_path / "fwe"
    download(str(mirror), out, shards=2, progress=False)
    assert _cli("data", "prepare", "--input", out, "--out", tmp_path / "prep", "-q") == 0
    report = json.loads((tmp_path / "prep" / "report.json").read_text())
    text = json.dumps(report)
    assert "download.json" not in text  # the record of the download is not read as data
    kept = sum(1 for f in (tmp_path / "prep" / "clean").glob("*.jsonl") for _ in f.open())
    assert kept > 0 and list(report["presets"]) == ["web"]  # rows with a text field: the web filters
