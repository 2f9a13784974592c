"""The run's data: an existing shard folder, or text files tokenized into the run folder on first use.

    data.shards = "runs/data"        -> use those shards (the run keeps a pointer), copy their tokenizer
    [data.mix]                       -> several shard folders at fixed weights (one tokenizer, checked)
    web = {shards = "runs/web", weight = 0.7}
    data.train_text = "input.txt"    -> build tokenizer/ and data/ inside the run folder, once

The text route is how small experiments are one command: `scratchlm pretrain --config
configs/shakespeare_cpu.toml` trains the tokenizer, writes the shards and trains. A resumed run finds them
already there and reuses them, so the token ids cannot change under a checkpoint.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scratchlm.data.shards import ShardedTokens, open_shard, read_manifest, verify_shards, write_shards
from scratchlm.tokenizer import CharTokenizer, load_tokenizer, train_bpe_from_texts

from .config import DataConfig

log = logging.getLogger("scratchlm")


@dataclass
class RunData:
    """What the loop needs from the data stage. For a mixture, `mix` holds one RunData per source and the
    train/val arrays here are all sources end to end (validation reads them so); shard_dir and manifest are the
    first source's."""

    shard_dir: Path
    tokenizer: object
    manifest: dict
    train_tokens: np.ndarray
    train_offsets: np.ndarray
    val_tokens: np.ndarray
    val_offsets: np.ndarray
    mix: dict[str, RunData] | None = None
    weights: dict[str, float] | None = None  # normalised: they sum to 1


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


def _shards_tokenizer(dc: DataConfig, shard_dir: Path, manifest: dict, tok_dir: Path):
    """The tokenizer of existing shards (data.tokenizer, or the folder their manifest names), copied into the run."""
    src = Path(manifest.get("tokenizer", {}).get("path") or "") if dc.tokenizer == "auto" else Path(dc.tokenizer)
    if not src.is_dir():
        raise FileNotFoundError(f"tokenizer folder {src} of shards {shard_dir} not found; set data.tokenizer "
                                "to the folder the shards were tokenized with")
    tokenizer = load_tokenizer(src)
    if not (tok_dir / "scratchlm_tokenizer.json").exists() and src.resolve() != tok_dir.resolve():
        shutil.copytree(src, tok_dir, dirs_exist_ok=True)  # later stages read the run's own copy
    return tokenizer


def _verify(folders: list[Path]) -> None:
    t0, n = time.perf_counter(), 0
    for folder in folders:
        n += verify_shards(folder)
    if n:
        log.info("shards: %.1f MB checked against their SHA-256 in %.1f s", n / 1e6, time.perf_counter() - t0)


def _end_to_end(arrays: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Several (tokens, offsets) read as one: their shard files end to end, offsets shifted to match."""
    parts, names, offsets, pos = [], [], [], 0
    for tokens, offs in arrays:
        if isinstance(tokens, ShardedTokens):
            parts += tokens.parts
            names += tokens.names
        elif len(tokens):
            parts.append(tokens)
            names.append(f"shard {len(parts) - 1}")
        offsets.append(np.asarray(offs, dtype=np.int64) + pos)
        pos += len(tokens)
    tokens = parts[0] if len(parts) == 1 else ShardedTokens(parts, names) if parts else arrays[0][0]
    return tokens, np.concatenate(offsets)


def _prepare_mix(dc: DataConfig, tok_dir: Path, verify: bool) -> RunData:
    """data.mix: every folder opened and checked to share one tokenizer; the weights normalised."""
    sources, first = {}, None
    for name, entry in dc.mix.items():
        shard_dir = Path(entry["shards"]).resolve()
        try:
            manifest = read_manifest(shard_dir)
        except (FileNotFoundError, ValueError) as e:
            raise type(e)(f"data.mix.{name}: {e}") from None
        if first is None:
            first = (name, shard_dir, manifest)
        else:  # one vocabulary: a token id must mean the same text in every source
            a, b = first[2].get("tokenizer") or {}, manifest.get("tokenizer") or {}
            if a.get("sha256") != b.get("sha256") or first[2]["vocab_size"] != manifest["vocab_size"]:
                raise ValueError(
                    f"data.mix: {first[0]} ({first[1]}) and {name} ({shard_dir}) were tokenized with different "
                    f"tokenizers ({a.get('path')}, sha256 {str(a.get('sha256'))[:12]} vs {b.get('path')}, sha256 "
                    f"{str(b.get('sha256'))[:12]}); re-tokenize one with the other's tokenizer")
        train = open_shard(shard_dir, "train")[:2]
        val = open_shard(shard_dir, "val")[:2]
        sources[name] = RunData(shard_dir, None, manifest, *train, *val)
    _, dir0, manifest0 = first
    tokenizer = _shards_tokenizer(dc, dir0, manifest0, tok_dir)
    if manifest0["vocab_size"] != tokenizer.vocab_size:
        raise ValueError(f"shards {dir0} have vocab_size {manifest0['vocab_size']} but the tokenizer has "
                         f"{tokenizer.vocab_size}; point data.tokenizer at the folder the shards were made with")
    if verify and dc.verify:
        _verify([s.shard_dir for s in sources.values()])
    for src in sources.values():
        src.tokenizer = tokenizer
    total = math.fsum(float(e["weight"]) for e in dc.mix.values())
    weights = {name: float(e["weight"]) / total for name, e in dc.mix.items()}
    if abs(total - 1.0) > 1e-9:
        log.info("note: data.mix weights sum to %g, not 1; training uses them as proportions: %s", total,
                 ", ".join(f"{n} {w:.4g}" for n, w in weights.items()))
    train_tokens, train_offsets = _end_to_end([(s.train_tokens, s.train_offsets) for s in sources.values()])
    val_tokens, val_offsets = _end_to_end([(s.val_tokens, s.val_offsets) for s in sources.values()])
    if len(val_tokens) < 2:
        raise ValueError(f"no data.mix folder has validation tokens ({', '.join(map(str, dc.mix))}); re-tokenize "
                         "one with --val-fraction > 0")
    return RunData(dir0, tokenizer, manifest0, train_tokens, train_offsets, val_tokens, val_offsets,
                   mix=sources, weights=weights)


def prepare_data(dc: DataConfig, run_dir: str | Path, progress: bool = True, verify: bool = True) -> RunData:
    """Resolve the shards and the tokenizer for a run (building them from text the first time).

    verify: check existing shards against their manifests' SHA-256 (when data.verify is on too); ranks other
    than 0 pass False, rank 0 has checked them."""
    run_dir = Path(run_dir)
    tok_dir = run_dir / "tokenizer"
    if dc.mix:
        return _prepare_mix(dc, tok_dir, verify)
    if dc.shards is not None:
        shard_dir = Path(dc.shards).resolve()
        manifest = read_manifest(shard_dir)
        tokenizer = _shards_tokenizer(dc, shard_dir, manifest, tok_dir)
        if verify and dc.verify:
            _verify([shard_dir])
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
