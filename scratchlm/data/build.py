"""Your text to token shards in one call: the data stage of `scratchlm pretrain --input FILES`.

    build_corpus(["books/", "notes/"], "runs/mine")   # -> runs/mine/data/ (shards) and runs/mine/tokenizer/

The same three stages a user runs by hand (README, "A walk through the stages"), in the run folder:

    data prepare      each input gets the filter preset for what it holds (books, code, chat, web), then exact and
                      MinHash dedup; the report (RUN/data/prepared/report.json) says what was removed and why
    tokenizer train   byte-level BPE on the cleaned documents, vocabulary ~sqrt(bytes) (see default_vocab_size)
    data tokenize     the cleaned documents into numbered shards, 10% of documents (by hash) held out for val

A run that finds RUN/data/manifest.json reuses it: a resumed run must see the same token ids.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

log = logging.getLogger("scratchlm")


def default_vocab_size(n_bytes: int) -> int:
    """A BPE vocabulary for n_bytes of text: ~sqrt(bytes), a power of two in [512, 32768] (1 MB -> 1,024,
    10 MB -> 4,096, 100 MB -> 8,192, 1 GB -> 32,768). Too large a vocabulary for little text leaves most tokens
    seen a handful of times, too few to learn their embeddings; at a GB the gain in compression flattens out."""
    if n_bytes <= 0:
        return 512
    return int(min(32768, max(512, 2 ** round(math.log2(math.sqrt(n_bytes))))))


def corpus_ready(run_dir: str | Path) -> bool:
    run = Path(run_dir)
    return (run / "data" / "manifest.json").is_file() and (run / "tokenizer" / "scratchlm_tokenizer.json").is_file()


def build_corpus(inputs: list[str], run_dir: str | Path, vocab_size: int | None = None, progress: bool = True,
                 executor=None) -> dict:
    """Prepare, tokenize and shard `inputs` inside run_dir; returns {"shards", "tokenizer", "vocab_size", ...}."""
    from scratchlm.data.pipeline import format_report, iter_clean_texts, plan_inputs, run_pipeline
    from scratchlm.data.shards import read_manifest, write_shards_split
    from scratchlm.data.sources import SourceCorpus
    from scratchlm.tokenizer import train_bpe

    run = Path(run_dir)
    shards, tok_dir, prepared = run / "data", run / "tokenizer", run / "data" / "prepared"
    if corpus_ready(run):
        m = read_manifest(shards)
        log.info("data: reusing %s (%s train tokens)", shards, f"{m['n_tokens']['train']:,}")
        return {"shards": shards, "tokenizer": tok_dir, "vocab_size": m["vocab_size"], "reused": True}
    plan = plan_inputs([str(i) for i in inputs])
    if progress:
        print("\n".join(plan.describe()))
    report = run_pipeline([str(i) for i in inputs], prepared, plan, executor=executor, progress=progress)
    if progress:
        print(format_report(report))
    clean = report["clean_files"]
    vocab = vocab_size or default_vocab_size(report["bytes_out"])
    tok = train_bpe(SourceCorpus(clean), vocab_size=vocab, progress=progress)
    tok.save(tok_dir)
    manifest = write_shards_split(shards, iter_clean_texts(clean), str(tok_dir), val_fraction=0.1,
                                  seed=plan.main.seed, progress=progress,
                                  source={"inputs": [str(i) for i in inputs], "report": str(prepared / "report.json")})
    return {"shards": shards, "tokenizer": tok_dir, "vocab_size": tok.vocab_size, "reused": False,
            "n_tokens": manifest["n_tokens"], "report": report}
