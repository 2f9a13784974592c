"""`scratchlm data ...` end to end, with a stand-in tokenizer until scratchlm.tokenizer lands."""

import json

import numpy as np
import pytest

import scratchlm.data.shards as shards
from scratchlm.cli.data import register
from scratchlm.data.shards import open_shard, iter_documents


class ByteTokenizer:
    vocab_size, bos_id, eos_id = 259, 1, 2

    def encode(self, text):
        return [b + 3 for b in text.encode("utf-8")]


def run(argv):
    import argparse

    parser = argparse.ArgumentParser(prog="scratchlm")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.fixture
def fake_tokenizer(monkeypatch, tmp_path):
    tok_dir = tmp_path / "tok"
    tok_dir.mkdir()
    (tok_dir / "tokenizer.json").write_text("{}")
    real = shards._load
    monkeypatch.setattr(shards, "_load", lambda t: ByteTokenizer() if isinstance(t, str) else real(t))
    return tok_dir


def test_tokenize_jsonl_with_val_fraction(tmp_path, fake_tokenizer, capsys):
    src = tmp_path / "in.jsonl"
    docs = [f"doc number {i} " * 3 for i in range(200)]
    src.write_text("".join(json.dumps({"content": d}) + "\n" for d in docs))
    out = tmp_path / "shards"
    assert run(["data", "tokenize", "--tokenizer", str(fake_tokenizer), "--input", str(src), "--text-field", "content",
                "--out", str(out), "--val-fraction", "0.25", "--workers", "2", "-q"]) == 0
    got = []
    for split in ("train", "val"):
        tokens, offsets, m = open_shard(out, split)
        got += [bytes(int(i) - 3 for i in d[1:]).decode() for d in iter_documents(tokens, offsets)]
    assert sorted(got) == sorted(docs)
    assert 20 < m["n_docs"]["val"] < 80 and m["source"]["val_fraction"] == 0.25
    with pytest.raises(FileExistsError, match="--overwrite"):
        run(["data", "tokenize", "--tokenizer", str(fake_tokenizer), "--input", str(src), "--out", str(out)])


def test_tokenize_val_input_and_text_split(tmp_path, fake_tokenizer):
    (tmp_path / "a.txt").write_text("one\n\ntwo\nlines\n\n\nthree\n")
    (tmp_path / "v.txt").write_text("held out")
    out = tmp_path / "s"
    assert run(["data", "tokenize", "--tokenizer", str(fake_tokenizer), "--input", str(tmp_path / "a.txt"),
                "--val-input", str(tmp_path / "v.txt"), "--text-split", "paragraph", "--out", str(out), "-q"]) == 0
    t, o, m = open_shard(out, "train")
    assert m["n_docs"] == {"train": 3, "val": 1}
    assert bytes(int(i) - 3 for i in t[o[1] + 1 : o[2]]).decode() == "two\nlines"


def test_tokenize_with_the_real_bpe_tokenizer(tmp_path):
    tokenizer = pytest.importorskip("scratchlm.tokenizer")
    texts = [f"Once upon a time there was a cat number {i}. It liked fish and naps." for i in range(60)]
    tok = tokenizer.train_bpe_from_texts(texts, vocab_size=300)
    tok.save(tmp_path / "tok")
    src = tmp_path / "stories.jsonl"
    src.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    out = tmp_path / "shards"
    assert run(["data", "tokenize", "--tokenizer", str(tmp_path / "tok"), "--input", str(src), "--out", str(out),
                "--val-fraction", "0.2", "--workers", "2", "-q"]) == 0
    loaded = tokenizer.load_tokenizer(tmp_path / "tok")
    got = []
    for split in ("train", "val"):
        tokens, offsets, m = open_shard(out, split)
        assert np.all(tokens[offsets] == loaded.bos_id)
        got += [loaded.decode(d[1:].tolist()) for d in iter_documents(tokens, offsets)]
    assert sorted(got) == sorted(texts)
    assert m["vocab_size"] == loaded.vocab_size and m["dtype"] == "uint16" and m["tokenizer"]["sha256"]
