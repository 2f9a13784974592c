"""Token shards: format, round trip, determinism across workers, atomicity, the val split."""

import json

import numpy as np
import pytest

from scratchlm.data.shards import (
    encode_documents,
    is_val_document,
    iter_documents,
    open_shard,
    read_manifest,
    write_shards,
    write_shards_split,
)


class ByteTokenizer:
    """A stand-in with the scratchlm tokenizer's interface: ids = bytes + offset (specials below)."""

    def __init__(self, vocab_size=259, offset=3):
        self.vocab_size, self.offset = vocab_size, offset
        self.pad_id, self.bos_id, self.eos_id = 0, 1, 2

    def encode(self, text):
        return [b + self.offset for b in text.encode("utf-8")]

    def encode_batch(self, texts):
        return [self.encode(t) for t in texts]

    def decode(self, ids):
        return bytes(i - self.offset for i in ids if i >= self.offset).decode("utf-8")


DOCS = [f"document {i}: " + "héllo wörld " * (i % 7) for i in range(300)] + ["", "last"]


def test_round_trip_bos_prefix_and_offsets(tmp_path):
    tok = ByteTokenizer()
    m = write_shards(tmp_path, DOCS[:250], DOCS[250:], tok, num_workers=1, batch_size=16, progress=False)
    assert m["dtype"] == "uint16" and m["bos_id"] == 1 and m["doc_boundary"] == "bos_prefix"
    tokens, offsets, m2 = open_shard(tmp_path, "train")
    assert m2 == m and isinstance(tokens, np.memmap)
    assert len(offsets) == 250 and np.all(tokens[offsets] == tok.bos_id)
    decoded = [tok.decode(d[1:].tolist()) for d in iter_documents(tokens, offsets)]
    assert decoded == DOCS[:250]
    vtok, voff, _ = open_shard(tmp_path, "val")
    # the empty document is skipped, the others are kept in order
    assert [tok.decode(d[1:].tolist()) for d in iter_documents(vtok, voff)] == [d for d in DOCS[250:] if d]
    assert m["n_tokens"]["train"] == sum(len(d.encode()) + 1 for d in DOCS[:250])
    assert m["n_docs"] == {"train": 250, "val": len(DOCS) - 251}
    assert json.loads((tmp_path / "manifest.json").read_text()) == m


def test_parallel_output_is_byte_identical(tmp_path):
    tok = ByteTokenizer()
    write_shards(tmp_path / "a", DOCS, DOCS[:40], tok, num_workers=1, batch_size=7, progress=False,
                 shard_tokens=1000)
    write_shards(tmp_path / "b", DOCS, DOCS[:40], tok, num_workers=2, batch_size=5, progress=False,
                 shard_tokens=1000)
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert "train_00003.bin" in names and "val_00000.idx.npy" in names
    assert names == sorted(p.name for p in (tmp_path / "b").iterdir())
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert not list((tmp_path / "b").glob(".*tmp*"))  # no temporary files left behind


def test_uint32_for_large_vocab(tmp_path):
    tok = ByteTokenizer(vocab_size=70_000, offset=65_600)
    m = write_shards(tmp_path, ["abc"], [], tok, num_workers=1, progress=False)
    tokens, offsets, _ = open_shard(tmp_path, "train")
    assert m["dtype"] == "uint32" and tokens.dtype == np.uint32
    assert tokens.tolist() == [1, 65_600 + 97, 65_600 + 98, 65_600 + 99]
    empty, eoff, _ = open_shard(tmp_path, "val")
    assert len(empty) == 0 and len(eoff) == 0


def test_id_out_of_range_is_a_clear_error():
    tok = ByteTokenizer(vocab_size=259, offset=65_500)  # ids overflow uint16
    with pytest.raises(ValueError, match="does not fit uint16"):
        encode_documents(tok, ["zz"], np.dtype(np.uint16))


def test_incomplete_or_corrupt_folder_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a complete token-shard folder"):
        read_manifest(tmp_path)
    write_shards(tmp_path, ["abc", "de"], ["f"], ByteTokenizer(), num_workers=1, progress=False)
    with open(tmp_path / "train_00000.bin", "ab") as f:
        f.write(b"\0\0")
    with pytest.raises(ValueError, match="corrupt or half-copied"):
        open_shard(tmp_path, "train")


def test_failure_leaves_no_manifest(tmp_path):
    tok = ByteTokenizer()
    write_shards(tmp_path, ["abc"], ["d"], tok, num_workers=1, progress=False)

    def exploding():
        yield "fine"
        raise RuntimeError("source broke")

    with pytest.raises(RuntimeError):
        write_shards(tmp_path, exploding(), [], tok, num_workers=1, progress=False)
    assert not (tmp_path / "manifest.json").exists()  # the stale manifest was removed first
    assert not list(tmp_path.glob(".*tmp*"))


def test_hash_split_is_deterministic_and_about_right(tmp_path):
    docs = [f"story number {i}" for i in range(4000)]
    flags = [is_val_document(d, 0.1) for d in docs]
    assert flags == [is_val_document(d, 0.1) for d in docs]
    assert 0.08 < np.mean(flags) < 0.12
    assert [is_val_document(d, 0.1, seed=1) for d in docs] != flags
    m = write_shards_split(tmp_path, docs[:500] + docs[:10], ByteTokenizer(), val_fraction=0.2,
                           num_workers=1, progress=False)
    expected_val = sum(is_val_document(d, 0.2) for d in docs[:500] + docs[:10])
    assert m["n_docs"]["val"] == expected_val and m["n_docs"]["train"] == 510 - expected_val
