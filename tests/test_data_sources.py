"""Sources and normalisation: every format, compression, and bad inputs reported and skipped, never fatal."""

import gzip
import json
from pathlib import Path

import pytest

from scratchlm.data.normalize import NormalizeStats, normalize_text
from scratchlm.data.sources import SourceConfig, SourceStats, expand_inputs, read_source, read_sources

from conftest import shared_path

RECORDS = [{"id": f"r{i}", "text": f"document {i} says hello", "meta": {"body": f"nested {i}"}} for i in range(50)]


def jsonl_bytes(records=RECORDS):
    return "".join(json.dumps(r) + "\n" for r in records).encode()


def texts(path, **kw):
    problems = []
    docs = list(read_source(str(path), SourceConfig(**kw), problems))
    return [d["text"] for d in docs], problems


def test_plain_text_split_modes(tmp_path):
    f = tmp_path / "a.txt"
    f.write_bytes(b"first para\nline two\n\n\nsecond para\r\n\r\nthird<|endoftext|>fourth\n")
    assert texts(f)[0] == ["first para\nline two\n\n\nsecond para\r\n\r\nthird<|endoftext|>fourth\n"]
    assert texts(f, text_split="paragraph")[0] == ["first para\nline two", "second para", "third<|endoftext|>fourth"]
    assert texts(f, text_split="line")[0] == ["first para", "line two", "second para", "third<|endoftext|>fourth"]
    got, _ = texts(f, text_split="<|endoftext|>")
    assert len(got) == 2 and got[1] == "fourth"


def test_endoftext_separated_stories():
    f = shared_path("tinystories/tinystories_sample_cs336.txt")
    got, problems = texts(f, text_split="<|endoftext|>")
    assert len(got) == f.read_text().count("<|endoftext|>") + (not f.read_text().rstrip().endswith("<|endoftext|>"))
    assert not problems and all("<|endoftext|>" not in t for t in got)


def test_jsonl_json_fields_and_bad_records(tmp_path):
    f = tmp_path / "a.jsonl"
    lines = jsonl_bytes().splitlines(keepends=True)
    f.write_bytes(b"".join(lines[:10]) + b"{not json\n" + b'{"other": 1}\n' + b"".join(lines[10:]))
    got, problems = texts(f)
    assert got == [r["text"] for r in RECORDS]
    assert sorted(p.problem for p in problems) == ["bad_json", "missing_field"]
    assert texts(f, text_field="meta.body")[0] == [r["meta"]["body"] for r in RECORDS]
    j = tmp_path / "b.json"
    j.write_text(json.dumps(RECORDS))
    assert texts(j)[0] == [r["text"] for r in RECORDS]
    # ids from the record are kept
    assert next(read_source(str(f)))["id"] == "r0"


def test_compressed_and_parquet_inputs_match_plain(tmp_path):
    zstandard = pytest.importorskip("zstandard")
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    (tmp_path / "p.jsonl").write_bytes(jsonl_bytes())
    (tmp_path / "p.jsonl.gz").write_bytes(gzip.compress(jsonl_bytes()))
    (tmp_path / "p.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(jsonl_bytes()))
    pq.write_table(pa.table({"text": [r["text"] for r in RECORDS], "n": list(range(50))}), tmp_path / "p.parquet",
                   row_group_size=7)
    expect = [r["text"] for r in RECORDS]
    for name in ["p.jsonl", "p.jsonl.gz", "p.jsonl.zst", "p.parquet"]:
        got, problems = texts(tmp_path / name)
        assert got == expect and not problems, name
    _, problems = texts(tmp_path / "p.parquet", text_field="body")
    assert problems[0].problem == "missing_field" and "columns: text, n" in problems[0].detail


def test_bad_inputs_are_reported_and_skipped(tmp_path):
    good = tmp_path / "good.jsonl"
    good_texts = [f"good document {i}" for i in range(30)]
    good.write_bytes(jsonl_bytes([{"text": t} for t in good_texts]))
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "binary.txt").write_bytes(bytes(range(256)) * 100)
    (tmp_path / "fake.jsonl.gz").write_bytes(b"this is not gzip at all")
    truncated = gzip.compress(jsonl_bytes(RECORDS * 40))
    (tmp_path / "truncated.jsonl.gz").write_bytes(truncated[: len(truncated) // 2])
    # a 50 MB single line between two good lines
    with open(tmp_path / "huge.jsonl", "wb") as f:
        f.write(b'{"text": "before"}\n')
        f.write(b'{"text": "' + b"x" * 50_000_000 + b'"}\n')
        f.write(b'{"text": "after"}\n')
    stats = SourceStats()
    docs = list(read_sources([str(tmp_path)], SourceConfig(), stats))
    got = [d["text"] for d in docs]
    kinds = {Path(p.path).name: p.problem for p in stats.problems}
    assert kinds == {"empty.txt": "empty", "binary.txt": "binary", "fake.jsonl.gz": "corrupt",
                     "truncated.jsonl.gz": "corrupt", "huge.jsonl": "too_long"}
    assert [t for t in got if t.startswith("good")] == good_texts  # every document of the good file
    assert "before" in got and "after" in got
    n_truncated = sum(1 for t in got if t.startswith("document"))
    assert 0 < n_truncated < 2000  # what was readable before the fault is kept


def test_expand_inputs(tmp_path):
    (tmp_path / "d").mkdir()
    for n in ["a.txt", "b.jsonl.gz", "c.bin", ".hidden.txt"]:
        (tmp_path / "d" / n).write_text("x")
    assert [Path(p).name for p in expand_inputs([str(tmp_path / "d")])] == ["a.txt", "b.jsonl.gz"]
    assert [Path(p).name for p in expand_inputs([str(tmp_path / "d" / "*.txt")])] == ["a.txt"]
    assert expand_inputs(["hf:some/dataset"]) == ["hf:some/dataset"]
    with pytest.raises(FileNotFoundError, match="matches no files"):
        expand_inputs([str(tmp_path / "nope*.txt")])


def test_hugging_face_dataset_from_a_local_folder(tmp_path):
    pytest.importorskip("datasets")
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "train.jsonl").write_bytes(jsonl_bytes())
    got, problems = texts(f"hf:{tmp_path / 'ds'}")
    assert got == [r["text"] for r in RECORDS] and not problems


def test_normalisation():
    st = NormalizeStats()
    raw = "  Caf\u0065\u0301 \u00a0 au\tlait \r\n\r\n\r\n\r\nbad\udcff byte\x00 here  \n"
    out = normalize_text(raw, stats=st)
    assert out == "Café au lait\n\nbad\ufffd byte here"
    assert st.invalid_utf8_chars == 1 and st.documents_with_invalid_utf8 == 1 and st.control_chars == 1
    from scratchlm.data.normalize import NormalizeConfig

    assert normalize_text("a\udcffb", NormalizeConfig(invalid_utf8="drop")) == "ab"
    assert normalize_text("    indented code\n    kept", NormalizeConfig()) == "indented code\n    kept"


def test_invalid_utf8_bytes_survive_reading_and_are_counted(tmp_path):
    f = tmp_path / "latin1.txt"
    f.write_bytes("caf\xe9 cr\xe8me".encode("latin-1"))
    (doc,), _ = texts(f)
    st = NormalizeStats()
    assert normalize_text(doc, stats=st) == "caf\ufffd cr\ufffdme" and st.invalid_utf8_chars == 2
