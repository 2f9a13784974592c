"""Issue 17, points 8 and 9: bad data in, a clear answer out.

8. Output that is empty is not success: a data command that keeps 0 documents, `data tokenize` with 0 tokens and
   `tokenizer train` on a corpus with no text exit non-zero with one line saying what was read and what removed it.
9. One reader for every command: the same formats everywhere (.txt .md .jsonl .json .parquet, each optionally
   .gz/.zst, and folders of them), invalid UTF-8 replaced and counted, every parse error names file:line.

Every command runs through the `scratchlm` entry point, so exit codes are what a user sees.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

from scratchlm.cli.main import main
from scratchlm.tokenizer import load_tokenizer

# ~12 kB of varied English: enough pairs for a 300-token vocabulary, small enough to train in a blink
WORDS = ("the cat sat on a mat while her old dog slept by the warm fire and the rain fell over green hills "
         "where children played with kites and sang songs about rivers stars bread and small brave foxes").split()
DOCS = [" ".join(WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(40 + i % 9)) + "." for i in range(60)]
TEXT = "\n\n".join(DOCS) + "\n"


def scratchlm(*args: str) -> subprocess.CompletedProcess:
    """The real command in a fresh process: exit code, stdout and stderr (logging included) as a user sees them."""
    return subprocess.run([sys.executable, "-m", "scratchlm.cli.main", *args], capture_output=True, text=True)


def compress(path: Path, data: bytes, kind: str) -> Path:
    if kind == "":
        path.write_bytes(data)
        return path
    out = path.with_name(path.name + kind)
    if kind == ".gz":
        out.write_bytes(gzip.compress(data))
    else:
        import zstandard

        out.write_bytes(zstandard.ZstdCompressor().compress(data))
    return out


def write_format(folder: Path, fmt: str, kind: str = "") -> Path:
    """DOCS as one file of the given format, optionally compressed."""
    folder.mkdir(parents=True, exist_ok=True)
    if fmt in (".txt", ".md"):
        data = TEXT.encode()
    elif fmt == ".jsonl":
        data = "".join(json.dumps({"text": d}) + "\n" for d in DOCS).encode()
    elif fmt == ".json":
        data = json.dumps([{"text": d} for d in DOCS]).encode()
    else:
        import io

        import pyarrow as pa
        import pyarrow.parquet as pq

        buf = io.BytesIO()
        pq.write_table(pa.table({"text": DOCS}), buf)
        data = buf.getvalue()
    return compress(folder / f"docs{fmt}", data, kind)


def train(inputs, out: Path, *extra: str) -> int:
    return main(["tokenizer", "train", "--input", *map(str, inputs), "--vocab-size", "300", "--workers", "1",
                 "--out", str(out), "-q", *extra])


# ---------------------------------------------------------------------------------------------------- point 9


def test_tokenizer_train_reads_gz_and_zst_like_data_prepare(tmp_path):
    plain = train([write_format(tmp_path / "plain", ".txt")], tmp_path / "tok_plain")
    assert plain == 0
    want = load_tokenizer(tmp_path / "tok_plain").merges
    for kind in (".gz", ".zst"):
        f = write_format(tmp_path / kind.strip("."), ".txt", kind)
        assert train([f], tmp_path / f"tok{kind}") == 0, kind
        assert load_tokenizer(tmp_path / f"tok{kind}").merges == want, kind  # same text, same merges


def test_truncated_and_long_archives_are_read_as_far_as_they_go(tmp_path):
    cut = tmp_path / "cut.jsonl.gz"  # a download that stopped half way: the records before the cut are used
    packed = gzip.compress("".join(json.dumps({"text": d}) + "\n" for d in DOCS * 20).encode())
    cut.write_bytes(packed[: len(packed) // 2])
    r = scratchlm("tokenizer", "train", "--input", str(cut), "--vocab-size", "300", "--out", str(tmp_path / "tok"))
    assert r.returncode == 0, r.stderr
    assert f"skipped {cut}: corrupt (EOFError" in r.stderr
    assert 0 < json.loads((tmp_path / "tok" / "DONE").read_text())["read"]["documents"] < 20 * len(DOCS)

    # a compressed file longer than one document (10 MB by default; 2 kB here) is read in pieces cut where no split
    # pattern joins two chunks, so the counts are those of the whole file, as for the same file uncompressed
    from scratchlm.data.sources import SourceConfig, SourceCorpus
    from scratchlm.tokenizer import build_pattern
    from scratchlm.tokenizer.corpus import count_words

    plain = write_format(tmp_path / "p", ".txt")
    packed = write_format(tmp_path / "z", ".txt", ".gz")
    pieces = SourceCorpus([packed], SourceConfig(max_doc_bytes=2000, split_long_files=True))
    whole = count_words([plain], build_pattern("gpt4"), num_workers=1, progress=False)
    assert count_words(pieces, build_pattern("gpt4"), num_workers=1, progress=False) == whole


FORMATS = [(fmt, kind) for fmt in (".txt", ".md", ".jsonl", ".json", ".parquet") for kind in ("", ".gz", ".zst")]


def test_every_text_command_accepts_the_same_formats(tmp_path, capsys):
    """15 inputs (5 formats x plain/.gz/.zst) through tokenizer train, tokenizer stats and data tokenize, plus a
    folder holding all of them: the data commands and the tokenizer commands read the same files the same way."""
    assert train([write_format(tmp_path / "ref", ".txt")], tmp_path / "tok") == 0
    tok = load_tokenizer(tmp_path / "tok")
    want_tokens = sum(len(tok.encode(d)) for d in DOCS)
    everything = tmp_path / "all"
    for fmt, kind in FORMATS:
        name = f"{fmt}{kind}"
        f = write_format(tmp_path / name.strip("."), fmt, kind)
        write_format(everything / name.strip("."), fmt, kind)
        assert train([f], tmp_path / f"t{name}") == 0, name
        capsys.readouterr()
        assert main(["tokenizer", "stats", "-t", str(tmp_path / "tok"), "-i", str(f), "--json"]) == 0, name
        st = json.loads(capsys.readouterr().out)
        if fmt in (".txt", ".md"):  # one document: the file as written
            assert st["tokens"] == len(tok.encode(TEXT)), name
        else:
            assert st["tokens"] == want_tokens, name
        assert main(["data", "tokenize", "--tokenizer", str(tmp_path / "tok" / "tokenizer"), "--input", str(f),
                     "--text-split", "paragraph", "--val-fraction", "0", "--workers", "1",
                     "--out", str(tmp_path / f"s{name}"), "-q"]) == 0, name
        manifest = json.loads((tmp_path / f"s{name}" / "manifest.json").read_text())
        assert manifest["n_docs"]["train"] == len(DOCS), name
    assert train([everything], tmp_path / "t_all") == 0
    assert load_tokenizer(tmp_path / "t_all").vocab_size == 300


def test_invalid_utf8_is_replaced_and_counted(tmp_path, capsys):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes(TEXT.encode() + "caf\xe9 cr\xe8me br\xfbl\xe9e\n".encode("latin-1"))  # 4 bytes that are not UTF-8
    lone = tmp_path / "lone.jsonl"  # a JSON escape of a lone surrogate cannot be encoded as UTF-8 either
    lone.write_text("".join(json.dumps({"text": d}) + "\n" for d in DOCS) + '{"text": "half an emoji \\ud83d"}\n')

    r = scratchlm("tokenizer", "train", "--input", str(bad), "--vocab-size", "300", "--out", str(tmp_path / "tok"))
    assert r.returncode == 0, r.stderr
    assert "4 invalid UTF-8 byte(s) replaced by U+FFFD" in r.stderr
    assert json.loads((tmp_path / "tok" / "DONE").read_text())["read"]["invalid_utf8"] == 4
    assert train([lone], tmp_path / "tok2") == 0
    assert json.loads((tmp_path / "tok2" / "DONE").read_text())["read"]["invalid_utf8"] == 1

    assert main(["tokenizer", "stats", "-t", str(tmp_path / "tok"), "-i", str(bad), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["invalid_utf8"] == 4
    for f in (bad, lone):
        assert main(["data", "tokenize", "--tokenizer", str(tmp_path / "tok" / "tokenizer"), "--input", str(f),
                     "--workers", "1", "--out", str(tmp_path / f"s_{f.stem}")]) == 0
        out = capsys.readouterr().out
        assert f"{4 if f == bad else 1} invalid UTF-8 byte(s) replaced by U+FFFD" in out
    assert main(["data", "filter", "--input", str(lone), "--set", "filters=[]", "--workers", "1",
                 "--out", str(tmp_path / "f")]) == 0
    assert "invalid UTF-8: 1 bytes" in capsys.readouterr().out


def test_malformed_jsonl_names_file_and_line(tmp_path, capsys):
    f = tmp_path / "broken.jsonl"
    lines = [json.dumps({"text": d}) for d in DOCS]
    lines[2] = '{"text": "unterminated'  # line 3
    lines[40] = json.dumps({"body": "no text field"})  # line 41
    f.write_text("\n".join(lines) + "\n" + "[" * 100_000 + "\n")  # line 61: deeper than Python's stack

    r = scratchlm("tokenizer", "train", "--input", str(f), "--vocab-size", "300", "--out", str(tmp_path / "tok"))
    assert r.returncode == 0, r.stderr  # the good lines are used; the bad ones are named
    assert f"{f}:3: bad_json" in r.stderr and f"{f}:41: missing_field" in r.stderr
    assert f"{f}:61: bad_json (nested too deeply)" in r.stderr

    prose = tmp_path / "prose.jsonl"  # not JSON at all: five lines are named, the rest counted, not listed
    prose.write_text(TEXT * 10)
    r = scratchlm("tokenizer", "train", "--input", str(prose), "--vocab-size", "300", "--out", str(tmp_path / "t2"))
    assert r.returncode == 2 and r.stderr.count("bad_json") <= 6 and "more like this" in r.stderr

    # the same lines in a file big enough to be cut into byte ranges: the line numbers still count from the top
    big = tmp_path / "big.jsonl"
    big.write_text(("\n".join(lines[:40] + lines[41:] + [lines[0]]) + "\n") * 40)  # 60 lines, one bad, 40 times
    from scratchlm.data.sources import SourceCorpus
    from scratchlm.tokenizer.corpus import count_words, new_report

    report = new_report()
    count_words(SourceCorpus([big]), r"\w+", num_workers=2, progress=False, block_bytes=4096, report=report)
    bad_lines = sorted(int(p.split(":")[1]) for p in report["problems"] if ": bad_json" in p)
    assert bad_lines == [3 + 60 * k for k in range(40)]

    assert main(["tokenizer", "stats", "-t", str(tmp_path / "tok"), "-i", str(f)]) == 0
    assert f"{f}:3: bad_json" in capsys.readouterr().err
    assert main(["data", "tokenize", "--tokenizer", str(tmp_path / "tok" / "tokenizer"), "--input", str(f),
                 "--workers", "1", "--out", str(tmp_path / "s"), "-q"]) == 0
    err = capsys.readouterr().err
    assert f"{f}:3: bad_json" in err and f"{f}:41: missing_field" in err
    assert main(["data", "filter", "--input", str(f), "--set", "filters=[]", "--workers", "1",
                 "--out", str(tmp_path / "f")]) == 0
    assert f"skipped {f}:3: bad_json" in capsys.readouterr().out


def test_toxicity_labels_are_read_by_the_shared_reader(tmp_path, capsys):
    lines = [json.dumps({"text": d, "label": i % 2}) for i, d in enumerate(DOCS[:20])]
    lines[2] = "{broken"  # line 3
    lines[5] = json.dumps({"text": "no label here"})  # line 6
    f = compress(tmp_path / "labelled.jsonl", ("\n".join(lines) + "\n").encode(), ".gz")
    words = tmp_path / "words.txt"
    words.write_text("fox\n")
    assert main(["data", "toxicity", "score", "--toxic-words", str(words), "--input", str(f), "--label-field", "label",
                 "--out", str(tmp_path / "s.jsonl")]) == 0
    err = capsys.readouterr().err
    assert f"{f}:3: bad_json" in err and f"{f}:6: missing_field" in err
    assert len((tmp_path / "s.jsonl").read_text().splitlines()) == 18

    bad = tmp_path / "bad_label.jsonl"
    bad.write_text(json.dumps({"text": "a", "label": 0}) + "\n" + json.dumps({"text": "b", "label": "maybe"}) + "\n")
    assert main(["data", "toxicity", "train", "--input", str(bad), "--out", str(tmp_path / "m")]) == 2
    assert f"{bad}:2: label 'maybe' is not 0/1" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------- point 8


def test_data_prepare_keeping_nothing_exits_nonzero(tmp_path, capsys):
    f = tmp_path / "short.jsonl"  # 20 documents of 3 words: Gopher's 50-word minimum removes every one
    f.write_text("".join(json.dumps({"text": f"hello world {i}"}) + "\n" for i in range(20)))
    for command in ("prepare", "filter"):
        code = main(["data", command, "--input", str(f), "--workers", "1", "--out", str(tmp_path / command), "-q"])
        err = capsys.readouterr().err.strip()
        assert code == 2, command
        assert len(err.splitlines()) == 1 and err.startswith("error: 0 of 20 documents kept: quality filter (gopher)")
        assert "--set quality.min_words=" in err
        assert not (tmp_path / command / "manifest.json").exists()  # nothing downstream reads an empty result
        assert json.loads((tmp_path / command / "report.json").read_text())["docs_out"] == 0  # the why is kept

    book = tmp_path / "book.txt"  # read whole (--text-split file), a text file is one document, judged as one
    book.write_text("The same line again.\n" * 200)
    assert main(["data", "prepare", "--input", str(book), "--text-split", "file", "--workers", "1",
                 "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "0 of 1 documents kept" in err and "--text-split paragraph" in err


def test_data_commands_reading_no_document_exit_nonzero(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "empty.txt").write_bytes(b"")
    (tmp_path / "in" / "blob.txt").write_bytes(b"\x00\x01binary")
    (tmp_path / "in" / "blank.txt").write_text("   \n\n  \n")
    for command in ("prepare", "filter", "dedup"):
        assert main(["data", command, "--input", str(tmp_path / "in"), "--workers", "1",
                     "--out", str(tmp_path / command)]) == 2, command
        err = capsys.readouterr().err
        assert "0 documents read from 1 input(s)" in err and "empty.txt: empty" in err and "blob.txt: binary" in err


def test_data_tokenize_with_zero_tokens_exits_nonzero(tmp_path, capsys):
    assert train([write_format(tmp_path / "ref", ".txt")], tmp_path / "tok") == 0
    blank = tmp_path / "blank.jsonl"
    blank.write_text(json.dumps({"text": ""}) + "\n" + json.dumps({"text": ""}) + "\n")
    code = main(["data", "tokenize", "--tokenizer", str(tmp_path / "tok" / "tokenizer"), "--input", str(blank),
                 "--workers", "1", "--out", str(tmp_path / "s")])
    assert code == 2
    assert "0 tokens to write, nothing written: read 1 file(s), 2 document(s)" in capsys.readouterr().err
    assert not (tmp_path / "s" / "manifest.json").exists() and not list((tmp_path / "s").glob("*.bin"))


NO_TEXT = [  # (file, content, what the error must say): 8 corpora that hold no text to train on
    ("empty.txt", b"", "empty.txt: empty"),
    ("blank.txt", b"  \n\n\t\n", "0 document(s)"),
    ("specials.txt", b"<|endoftext|><|endoftext|>", "1 document(s)"),
    ("nofield.jsonl", b'{"body": "text under another name"}\n', "nofield.jsonl:1: missing_field"),
    ("notjson.jsonl", b"this is not json\n", "notjson.jsonl:1: bad_json"),
    ("binary.txt.gz", gzip.compress(b"\x00" * 100), "binary.txt.gz: binary"),
    ("corrupt.txt.gz", b"\x1f\x8b\x08garbage", "corrupt.txt.gz: corrupt"),
    ("nothing.txt.gz", gzip.compress(b""), "nothing.txt.gz: empty"),
]


@pytest.mark.parametrize("name,content,why", NO_TEXT, ids=[c[0] for c in NO_TEXT])
def test_tokenizer_train_on_empty_corpus_exits_nonzero(tmp_path, name, content, why):
    f = tmp_path / name
    f.write_bytes(content)
    r = scratchlm("tokenizer", "train", "--input", str(f), "--vocab-size", "300", "--out", str(tmp_path / "tok"))
    assert r.returncode == 2, r.stderr
    err = r.stderr.strip().splitlines()[-1]
    assert err.startswith("error: no text to train on: read 1 file(s)") and why in err
    assert not (tmp_path / "tok").exists()  # a failed run leaves nothing behind


def test_tokenizer_train_that_learns_no_merge_exits_nonzero(tmp_path, capsys):
    f = tmp_path / "letters.txt"
    f.write_text("a\nb\nc\nd\n")  # every chunk is one byte: no pair to merge
    assert train([f], tmp_path / "tok") == 2
    assert "no merge could be learned" in capsys.readouterr().err
    assert train([write_format(tmp_path / "ok", ".txt")], tmp_path / "tok2", "--min-frequency", "100000") == 2
    assert "lower --min-frequency" in capsys.readouterr().err
    assert main(["tokenizer", "train", "--char", "--input", str(tmp_path / "nothing.txt"), "--out",
                 str(tmp_path / "c")]) == 2  # a missing input stays a one-line error
    (tmp_path / "blank.txt").write_text("")
    assert main(["tokenizer", "train", "--char", "--input", str(tmp_path / "blank.txt"), "--out",
                 str(tmp_path / "c"), "-q"]) == 2
    assert "no text to train on" in capsys.readouterr().err


def test_tokenizer_stats_on_empty_input_exits_nonzero(tmp_path, capsys):
    assert train([write_format(tmp_path / "ref", ".txt")], tmp_path / "tok") == 0
    (tmp_path / "empty.jsonl").write_text("")
    assert main(["tokenizer", "stats", "-t", str(tmp_path / "tok"), "-i", str(tmp_path / "empty.jsonl")]) == 2
    assert "no text to measure: read 1 file(s), 0 document(s)" in capsys.readouterr().err


def test_eval_bpb_text_is_read_by_the_shared_reader(tmp_path, capsys):
    """`eval --task bpb --text` took only plain UTF-8: one bad byte or a .gz file was a decode error without a name."""
    import torch

    from scratchlm.model import ModelConfig, Transformer
    from scratchlm.runs import checkpoint_dir, save_model
    from scratchlm.tokenizer import train_bpe_from_texts

    run = tmp_path / "run"
    tok = train_bpe_from_texts([TEXT], vocab_size=300)
    tok.save(run / "tokenizer")
    torch.manual_seed(0)
    model = Transformer(ModelConfig.from_preset("llama-tiny", vocab_size=tok.vocab_size))
    save_model(checkpoint_dir(run, 1), model, model.config.to_dict())

    sample = DOCS[0] + "\n"
    plain = tmp_path / "t.txt"
    plain.write_text(sample)
    bad = compress(tmp_path / "bad.txt", sample.encode() + b"caf\xe9\n", ".gz")
    results = []
    for f in (plain, bad):
        assert main(["eval", "--run", str(run), "--task", "bpb", "--text", str(f), "--device", "cpu", "--json"]) == 0
        results.append(json.loads(capsys.readouterr().out.strip().splitlines()[-1]))
    assert results[0]["invalid_utf8"] == 0 and results[0]["bytes"] == len(sample.encode())
    assert results[1]["invalid_utf8"] == 1 and results[1]["bytes"] == len((sample + "caf\ufffd\n").encode())
    (tmp_path / "empty.txt").write_text("")
    assert main(["eval", "--run", str(run), "--task", "bpb", "--text", str(tmp_path / "empty.txt")]) == 2
    assert "holds no text to score" in capsys.readouterr().err


def test_post_training_data_reads_gz_zst_and_invalid_utf8_like_every_command(tmp_path, caplog):
    # sft / dpo / rl --data go through the same opener: compressed files load, a bad byte is replaced and counted
    from scratchlm.posttrain.formats import load_sft

    rows = [{"instruction": f"Say {i}", "input": "", "output": f"It is {i}."} for i in range(3)]
    text = "".join(json.dumps(r) + "\n" for r in rows)
    (tmp_path / "a.jsonl.gz").write_bytes(gzip.compress(text.encode()))
    assert len(load_sft(tmp_path / "a.jsonl.gz")) == 3
    bad = text.replace("It is 1.", "It is \udcff1.").encode("utf-8", errors="surrogateescape")
    (tmp_path / "b.jsonl").write_bytes(bad)
    with caplog.at_level("WARNING", logger="scratchlm"):
        chats = load_sft(tmp_path / "b.jsonl")
    assert "\ufffd" in chats[1][-1]["content"] and "1 invalid UTF-8" in caplog.text
    (tmp_path / "c.jsonl.gz").write_bytes(gzip.compress(text.encode())[:-12])  # truncated archive
    with pytest.raises(ValueError, match="c.jsonl.gz cannot be read"):
        load_sft(tmp_path / "c.jsonl.gz")
