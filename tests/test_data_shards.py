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


# ---------------------------------------------------------------------------------------------- shards that scale

def _sha256(path):
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_shards_are_bounded_whole_documents_with_checksums(tmp_path):
    from scratchlm.data.shards import ShardedTokens, verify_shards

    tok = ByteTokenizer()
    m = write_shards(tmp_path / "many", DOCS, DOCS[:60], tok, num_workers=2, batch_size=9, progress=False,
                     shard_tokens=500)
    one = write_shards(tmp_path / "one", DOCS, DOCS[:60], tok, num_workers=1, progress=False)
    assert m["n_tokens"] == one["n_tokens"] and m["n_docs"] == one["n_docs"] and m["shard_tokens"] == 500
    entries = m["shards"]["train"]
    assert len(entries) > 10 and len(m["shards"]["val"]) > 1 and len(one["shards"]["train"]) == 1
    assert [e["bin"] for e in entries] == [f"train_{k:05d}.bin" for k in range(len(entries))]
    assert sum(e["n_tokens"] for e in entries) == m["n_tokens"]["train"]
    assert sum(e["n_docs"] for e in entries) == m["n_docs"]["train"]
    for e in entries + m["shards"]["val"]:
        path = tmp_path / "many" / e["bin"]
        assert e["n_tokens"] <= 500 and path.stat().st_size == 2 * e["n_tokens"]
        assert e["sha256"] == _sha256(path) and e["idx_sha256"] == _sha256(tmp_path / "many" / e["idx"])
        shard, offsets = np.fromfile(path, np.uint16), np.load(tmp_path / "many" / e["idx"])
        assert offsets[0] == 0 and np.all(shard[offsets] == tok.bos_id) and len(offsets) == e["n_docs"]
    # full: the next document would not have fitted (documents are never cut)
    lengths = [len(d.encode()) + 1 for d in DOCS if d]
    assert entries[0]["n_tokens"] + lengths[entries[0]["n_docs"]] > 500
    # read back: the same tokens and document offsets as one big shard
    for split in ("train", "val"):
        tokens, offsets, _ = open_shard(tmp_path / "many", split)
        flat, flat_offsets, _ = open_shard(tmp_path / "one", split)
        assert isinstance(tokens, ShardedTokens) and len(tokens) == len(flat)
        assert np.array_equal(tokens[0 : len(tokens)], flat) and np.array_equal(offsets, flat_offsets)
    assert verify_shards(tmp_path / "many") == sum(
        p.stat().st_size for p in (tmp_path / "many").iterdir() if p.name != "manifest.json")
    # one flipped byte: the sizes still match, the checksum names the file
    damaged = tmp_path / "many" / "train_00003.bin"
    data = bytearray(damaged.read_bytes())
    data[10] ^= 1
    damaged.write_bytes(bytes(data))
    open_shard(tmp_path / "many", "train")
    with pytest.raises(ValueError, match="train_00003.bin does not match the SHA-256") as e:
        verify_shards(tmp_path / "many")
    assert "\n" not in str(e.value)


def test_a_document_longer_than_a_shard_gets_one_of_its_own(tmp_path):
    m = write_shards(tmp_path, ["ab", "x" * 50, "cd", "ef"], [], ByteTokenizer(), num_workers=1, progress=False,
                     shard_tokens=8)
    assert [(e["n_tokens"], e["n_docs"]) for e in m["shards"]["train"]] == [(3, 1), (51, 1), (6, 2)]
    assert m["shards"]["val"] == [] and m["n_tokens"]["val"] == 0
    tokens, offsets, _ = open_shard(tmp_path, "train")
    assert [ByteTokenizer().decode(d[1:].tolist()) for d in iter_documents(tokens, offsets)] == \
        ["ab", "x" * 50, "cd", "ef"]
    empty, eoff, _ = open_shard(tmp_path, "val")
    assert len(empty) == 0 and len(eoff) == 0


def test_rewriting_with_fewer_shards_leaves_no_stale_files(tmp_path):
    tok = ByteTokenizer()
    write_shards(tmp_path, DOCS, DOCS[:50], tok, num_workers=1, progress=False, shard_tokens=300)
    (tmp_path / "notes.txt").write_text("mine")  # not a shard name: left alone
    m = write_shards(tmp_path, DOCS[:20], DOCS[:5], tok, num_workers=1, progress=False, shard_tokens=300)
    listed = {e[k] for s in ("train", "val") for e in m["shards"][s] for k in ("bin", "idx")}
    assert {p.name for p in tmp_path.iterdir()} == listed | {"manifest.json", "notes.txt"}


def test_a_format_1_folder_still_reads(tmp_path):
    """Folders written before shards were numbered (one train.bin / val.bin, no checksums) read as one shard."""
    from scratchlm.data.shards import verify_shards

    tok = ByteTokenizer()
    m = write_shards(tmp_path, DOCS, DOCS[:30], tok, num_workers=1, progress=False)
    for split in ("train", "val"):
        (tmp_path / f"{split}_00000.bin").rename(tmp_path / f"{split}.bin")
        (tmp_path / f"{split}_00000.idx.npy").rename(tmp_path / f"{split}.idx.npy")
    old = {k: v for k, v in m.items() if k not in ("shards", "shard_tokens")}
    (tmp_path / "manifest.json").write_text(json.dumps({**old, "format_version": 1}))
    tokens, offsets, _ = open_shard(tmp_path, "train")
    assert isinstance(tokens, np.memmap) and len(offsets) == len(DOCS) - 1
    assert [tok.decode(d[1:].tolist()) for d in iter_documents(tokens, offsets)] == [d for d in DOCS if d]
    assert verify_shards(tmp_path) == 0  # nothing recorded to check against


def test_sharded_tokens_index_like_one_array():
    from scratchlm.data.shards import ShardedTokens

    rng = np.random.default_rng(0)
    parts = [rng.integers(0, 60000, n).astype(np.uint16) for n in (5, 1, 17, 3, 40)]
    flat = np.concatenate(parts)
    st = ShardedTokens(parts)
    assert len(st) == len(flat) == 66 and st.dtype == np.uint16
    for a in range(0, 66, 3):
        for b in range(a, 67, 5):
            assert np.array_equal(st[a:b], flat[a:b])
    assert st[-1] == flat[-1] and st[5] == flat[5] and np.array_equal(st[:], flat)
    idx = rng.integers(0, 66, (7, 9))
    assert np.array_equal(st[idx], flat[idx])
    starts = np.array([0, 4, 5, 6, 20, 24, 50, 56])  # inside shards and across one or several boundaries
    assert np.array_equal(st.windows(starts, 10), flat[starts[:, None] + np.arange(10)])
    assert st.locate(5) == (1, 0) and st.locate(6) == (2, 0) and st.locate(65) == (4, 39)
    for bad in (66, -67):
        with pytest.raises(IndexError):
            st[bad]
    with pytest.raises(IndexError):
        st.windows(np.array([60]), 10)
