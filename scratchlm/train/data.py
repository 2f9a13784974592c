"""The run's data: an existing shard folder, or text files tokenized into the run folder on first use.

    data.shards = "runs/data"        -> use those shards (the run keeps a pointer), copy their tokenizer
    data.train_text = "input.txt"    -> build tokenizer/ and data/ inside the run folder, once

The text route is how small experiments are one command: `scratchlm pretrain --config
configs/shakespeare_cpu.toml` trains the tokenizer, writes the shards and trains. A resumed run finds them
already there and reuses them, so the token ids cannot change under a checkpoint.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scratchlm.data.shards import open_shard, read_manifest, write_shards
from scratchlm.tokenizer import CharTokenizer, load_tokenizer, train_bpe_from_texts

from .config import DataConfig

log = logging.getLogger("scratchlm")


@dataclass
class RunData:
    """What the loop needs from the data stage."""

    shard_dir: Path
    tokenizer: object
    manifest: dict
    train_tokens: np.ndarray
    train_offsets: np.ndarray
    val_tokens: np.ndarray
    val_offsets: np.ndarray


def _read_text(path: str) -> str:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"data text file not found: {p} (check data.train_text / data.val_text)")
    return p.read_text(encoding="utf-8")


def _documents(text: str, separator: str) -> list[str]:
    if not separator:
        return [text]
    return [d for d in text.split(separator) if d.strip()]


def _build_tokenizer(dc: DataConfig, train_docs: list[str], val_docs: list[str]):
    kind = "bpe" if dc.tokenizer == "auto" else dc.tokenizer
    if kind == "char":
        # The vocabulary is every character of both splits (nanoGPT's shakespeare_char does the same): a char
        # missing from it could not be encoded at all, and knowing which characters exist is not learning.
        return CharTokenizer.train("".join(train_docs + val_docs), special_tokens=True)
    if kind == "bpe":
        return train_bpe_from_texts(train_docs, vocab_size=dc.vocab_size)  # merges from the train split only
    folder = Path(kind)
    if not folder.is_dir():
        raise FileNotFoundError(f'data.tokenizer "{kind}" is neither "char", "bpe" nor a tokenizer folder')
    return load_tokenizer(folder)


def prepare_data(dc: DataConfig, run_dir: str | Path, progress: bool = True) -> RunData:
    """Resolve the shards and the tokenizer for a run (building them from text the first time)."""
    run_dir = Path(run_dir)
    tok_dir = run_dir / "tokenizer"
    if dc.shards is not None:
        shard_dir = Path(dc.shards).resolve()
        manifest = read_manifest(shard_dir)
        src = Path(manifest.get("tokenizer", {}).get("path") or "") if dc.tokenizer == "auto" else Path(dc.tokenizer)
        if not src.is_dir():
            raise FileNotFoundError(f"tokenizer folder {src} of shards {shard_dir} not found; set data.tokenizer "
                                    "to the folder the shards were tokenized with")
        tokenizer = load_tokenizer(src)
        if not (tok_dir / "scratchlm_tokenizer.json").exists() and src.resolve() != tok_dir.resolve():
            shutil.copytree(src, tok_dir, dirs_exist_ok=True)  # later stages read the run's own copy
    else:
        shard_dir = run_dir / "data"
        if (shard_dir / "manifest.json").exists() and tok_dir.is_dir() and any(tok_dir.iterdir()):
            tokenizer = load_tokenizer(tok_dir)  # resumed (or re-run) run: reuse, ids must not change
        else:
            text = _read_text(dc.train_text)
            if dc.val_text:
                train_text, val_text = text, _read_text(dc.val_text)
            else:  # hold out the tail by characters: nanoGPT's Tiny Shakespeare split
                cut = int(len(text) * (1.0 - dc.val_fraction))
                train_text, val_text = text[:cut], text[cut:]
            train_docs, val_docs = _documents(train_text, dc.doc_separator), _documents(val_text, dc.doc_separator)
            tokenizer = _build_tokenizer(dc, train_docs, val_docs)
            tokenizer.save(tok_dir)
            tokenizer = load_tokenizer(tok_dir)  # the saved one, exactly as later stages will load it
            big = len(text) > 20_000_000
            write_shards(shard_dir, train_docs, val_docs, str(tok_dir), num_workers=None if big else 1,
                         source={"train_text": dc.train_text, "val_text": dc.val_text,
                                 "val_fraction": None if dc.val_text else dc.val_fraction},
                         progress=progress and big)
        manifest = read_manifest(shard_dir)
    if manifest["vocab_size"] != tokenizer.vocab_size:
        raise ValueError(f"shards {shard_dir} have vocab_size {manifest['vocab_size']} but the tokenizer has "
                         f"{tokenizer.vocab_size}; point data.tokenizer at the folder the shards were made with")
    train_tokens, train_offsets, _ = open_shard(shard_dir, "train")
    val_tokens, val_offsets, _ = open_shard(shard_dir, "val")
    if len(val_tokens) < 2:
        raise ValueError(f"shards {shard_dir} have no validation tokens; give data.val_text or data.val_fraction > 0")
    return RunData(shard_dir, tokenizer, manifest, train_tokens, train_offsets, val_tokens, val_offsets)


def token_byte_lengths(tokenizer) -> np.ndarray:
    """Bytes of UTF-8 text each token id stands for; 0 for special tokens (they are not text).

    Bits per byte = total nats over the text's tokens / (ln 2 * its bytes): a tokenizer-independent measure,
    so models with different vocabularies compare fairly.
    """
    specials = set(getattr(tokenizer, "special_tokens", {}).values())
    lengths = np.zeros(tokenizer.vocab_size, dtype=np.int64)
    for i in range(tokenizer.vocab_size):
        if i in specials:
            continue
        if hasattr(tokenizer, "id_to_bytes"):
            lengths[i] = len(tokenizer.id_to_bytes(i))
        else:
            lengths[i] = len(tokenizer.decode([i]).encode("utf-8"))
    return lengths
