"""`scratchlm tokenizer train|encode|decode|stats`: train a byte-level BPE tokenizer and use it from the shell.

Kept light on purpose: nothing heavy is imported here, so `scratchlm tokenizer train` is timed (and feels) like a
small program rather than like importing torch.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from scratchlm.cli.common import add_common, add_renamed

log = logging.getLogger("scratchlm")
RAW = argparse.RawDescriptionHelpFormatter

TRAIN_EXAMPLES = """\
examples:
  # 8k-token BPE on the shared corpora (GPT-4 split pattern), written to runs/tok/tokenizer/
  scratchlm tokenizer train --input ../shared/data/tinystories ../shared/data/gutenberg \\
      ../shared/data/tinyshakespeare --vocab-size 8192 --out runs/tok
  # JSONL records, two fields per record, single-digit numbers, GPT-2's split pattern
  scratchlm tokenizer train --input data.jsonl --text-field question --text-field answer --digits 1 --pattern gpt2 \\
      --vocab-size 16384 --out runs/tok16k
  # the classic char-level Tiny Shakespeare vocabulary (65 symbols)
  scratchlm tokenizer train --char --input ../shared/data/tinyshakespeare/input.txt --out runs/shakespeare_char

The folder gets scratchlm_tokenizer.json (config + merges), ranks.tiktoken, and the Hugging Face files
tokenizer.json, tokenizer_config.json and special_tokens_map.json (AutoTokenizer.from_pretrained works on it).
Special tokens take the last 8 ids: <|endoftext|> = vocab_size-8, <|bos|>, <|pad|>, <|im_start|>, <|im_end|>,
<|reserved_0..2|>.
"""

ENCODE_EXAMPLES = """\
examples:
  echo "Hello world" | scratchlm tokenizer encode --tokenizer runs/tok
  echo "Hello world" | scratchlm tokenizer encode --tokenizer runs/tok --json --tokens
  scratchlm tokenizer encode --tokenizer runs/tok --allow-special < chat.txt   # <|im_start|> etc. become ids
"""

DECODE_EXAMPLES = """\
examples:
  echo "15496 995" | scratchlm tokenizer decode --tokenizer runs/tok
  echo "Hello" | scratchlm tokenizer encode --tokenizer runs/tok | scratchlm tokenizer decode --tokenizer runs/tok
  echo "[15496, 995]" | scratchlm tokenizer decode --tokenizer runs/tok --json
"""

STATS_EXAMPLES = """\
examples:
  scratchlm tokenizer stats --tokenizer runs/tok --input ../shared/data/tinystories/tinystories_val_head.txt
  scratchlm tokenizer stats --tokenizer runs/tok --input ../shared/data/gsm8k/test.jsonl --text-field question --json
"""


def register(subparsers) -> None:
    p = subparsers.add_parser("tokenizer", help="train / use a byte-level BPE tokenizer",
                              description="Train a byte-level BPE (or char) tokenizer and use it from the shell.",
                              epilog=TRAIN_EXAMPLES, formatter_class=RAW)
    sub = p.add_subparsers(dest="tokenizer_command", metavar="SUBCOMMAND")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])

    t = sub.add_parser("train", help="train a tokenizer on files, folders or JSONL fields",
                       description="Train byte-level BPE: count pre-tokenized chunks in parallel, then merge "
                                   "incrementally (deterministic: ties go to the smallest pair of ids).",
                       epilog=TRAIN_EXAMPLES, formatter_class=RAW)
    # every setting is also a config key (scratchlm/tokenizer/config.py): defaults <- --config <- these flags <- --set,
    # so the flags default to None ("not given") and the defaults live in one place, the dataclass
    t.add_argument("--input", "-i", nargs="+", default=None, metavar="PATH",
                   help="files, folders or globs: .txt .md .jsonl .json .parquet, each optionally .gz/.zst "
                        "(the formats `scratchlm data` reads; required unless the --config lists inputs)")
    t.add_argument("--vocab-size", type=int, default=None,
                   help="total ids incl. 256 bytes and 8 special tokens (default: 8192)")
    t.add_argument("--pattern", default=None, help='split pattern: "gpt4" (default), "gpt2", or a regex')
    t.add_argument("--digits", type=int, default=None, help="max digits per chunk (default: pattern's; 1 = single)")
    add_renamed(t, "--text-field", "--field", action="append", default=None, metavar="NAME",
                help="JSON/JSONL/Parquet field holding text (repeatable; default: text)")
    t.add_argument("--workers", type=int, default=None, help="processes for chunk counting (default: all CPUs)")
    t.add_argument("--min-frequency", type=int, default=None, help="stop when the best pair is rarer (default: 1)")
    t.add_argument("--chat-template", type=Path, default=None, metavar="FILE",
                   help="Jinja chat template to put in tokenizer_config.json")
    t.add_argument("--char", action="store_true", help="char-level vocabulary instead of BPE")
    t.add_argument("--char-specials", action="store_true", help="with --char: add the 8 special tokens")
    add_common(t, out="runs/tokenizer", config=True, device=False)
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("encode", help="text on stdin -> token ids on stdout",
                       description="Encode stdin (or --prompt). Special-token strings stay text unless "
                                   "--allow-special.",
                       epilog=ENCODE_EXAMPLES, formatter_class=RAW)
    e.add_argument("--tokenizer", "-t", type=Path, required=True, help="tokenizer folder (or run folder)")
    add_renamed(e, "--prompt", "--text", default=None, metavar="TEXT", help="text to encode instead of stdin")
    e.add_argument("--json", action="store_true", help="print a JSON list (with --tokens: objects)")
    e.add_argument("--tokens", action="store_true", help="also show each token's text")
    e.add_argument("--allow-special", action="store_true", help="recognise <|endoftext|>, <|im_start|>, ...")
    e.set_defaults(func=cmd_encode)

    d = sub.add_parser("decode", help="token ids on stdin -> text on stdout",
                       description="Decode ids (whitespace/comma separated, or a JSON list with --json).",
                       epilog=DECODE_EXAMPLES, formatter_class=RAW)
    d.add_argument("--tokenizer", "-t", type=Path, required=True, help="tokenizer folder (or run folder)")
    d.add_argument("--ids", default=None, help="ids to decode instead of stdin")
    d.add_argument("--json", action="store_true", help="stdin is a JSON list of ids (or of lists)")
    d.add_argument("--strict", action="store_true", help="fail on invalid UTF-8 / unknown ids instead of U+FFFD")
    d.set_defaults(func=cmd_decode)

    s = sub.add_parser("stats", help="bytes per token, vocab usage, longest tokens on some text",
                       description="Measure a tokenizer on text: compression and which tokens get used.",
                       epilog=STATS_EXAMPLES, formatter_class=RAW)
    s.add_argument("--tokenizer", "-t", type=Path, required=True, help="tokenizer folder (or run folder)")
    s.add_argument("--input", "-i", nargs="+", required=True, metavar="PATH",
                   help="files, folders or globs to measure on (same formats as train)")
    add_renamed(s, "--text-field", "--field", action="append", default=None, metavar="NAME",
                help="JSON/JSONL/Parquet text field (repeatable; default: text)")
    s.add_argument("--top", type=int, default=15, help="how many tokens to list (default: 15)")
    s.add_argument("--json", action="store_true", help="print the figures as JSON")
    s.set_defaults(func=cmd_stats)


# ------------------------------------------------------------------------------------------------ train


def train_config(args):
    """The resolved settings (scratchlm/tokenizer/config.py): defaults <- --config <- the flags given <- --set."""
    from scratchlm.config import load_config
    from scratchlm.tokenizer.config import TokenizerRunConfig, TokenizerTrainConfig

    given = {"inputs": args.input, "vocab_size": args.vocab_size, "pattern": args.pattern, "digits": args.digits,
             "fields": args.text_field, "min_frequency": args.min_frequency,
             "chat_template": None if args.chat_template is None else str(args.chat_template),
             "kind": "char" if args.char else None, "char_specials": True if args.char_specials else None}
    flags = {"tokenizer": {k: [str(x) for x in v] if isinstance(v, list) else v
                           for k, v in given.items() if v is not None}}
    cfg = load_config(TokenizerRunConfig, args.config, args.overrides, flags=flags).tokenizer
    if not cfg.inputs:
        raise ValueError("nothing to train on: pass --input PATH (or list tokenizer.inputs in the --config file)")
    if cfg.kind == "char" and cfg.vocab_size != TokenizerTrainConfig().vocab_size:
        raise ValueError(f"a char vocabulary holds the text's characters, it cannot be sized to {cfg.vocab_size}; "
                         "drop --vocab-size (tokenizer.vocab_size) or train BPE")
    if cfg.char_specials and cfg.kind != "char":
        raise ValueError("--char-specials (tokenizer.char_specials) needs --char; BPE always has the 8 special tokens")
    return cfg


def cmd_train(args) -> int:
    import dataclasses
    import time

    from scratchlm import runs
    from scratchlm.config import save_config
    from scratchlm.tokenizer import CharTokenizer, train_bpe
    from scratchlm.tokenizer.config import TokenizerRunConfig
    from scratchlm.tokenizer.corpus import describe_report, new_report

    cfg = train_config(args)
    chat_template = None
    if cfg.chat_template is not None:
        if not Path(cfg.chat_template).is_file():
            raise FileNotFoundError(f"chat template {cfg.chat_template} not found; pass a Jinja file")
        chat_template = Path(cfg.chat_template).read_text(encoding="utf-8")
    corpus = _corpus(cfg.inputs, tuple(cfg.fields))  # fail on a bad path before touching --out
    files = corpus.paths
    runs.claim_out_dir(args.out, overwrite=args.overwrite, check_only=True, kind="tokenizer train",  # fail
                       inputs=list(cfg.inputs))                                                  # early
    progress = args.quiet == 0
    t0 = time.perf_counter()
    report = new_report()
    if cfg.kind == "char":
        chars: set[str] = set()
        for task in corpus.tasks():
            for doc in corpus.read(task, report):
                chars.update(doc)
        if not chars:
            raise ValueError(f"no text to train on: {describe_report(report)}")
        tok = CharTokenizer.train("".join(sorted(chars)), special_tokens=cfg.char_specials)
    else:  # raises (exit 2) when nothing was read or no pair repeats: a bytes-only vocabulary is not a result
        tok = train_bpe(corpus, cfg.vocab_size, pattern=cfg.pattern, digits=cfg.digits, num_workers=args.workers,
                        min_frequency=cfg.min_frequency, progress=progress, report=report)
    seconds = time.perf_counter() - t0
    for line in report["problems"]:
        log.warning("skipped %s", line)
    log.info("%s", describe_report({**report, "problems": []}))
    out = runs.prepare_run_dir(args.out, overwrite=args.overwrite, kind="tokenizer train",  # only now: a failed
                               inputs=list(cfg.inputs))                                 # run leaves nothing
    tok.save(out / "tokenizer", chat_template=chat_template)
    # the settings as resolved, with the files actually read: `--config RUN/config.toml` trains the same tokenizer
    save_config(TokenizerRunConfig(dataclasses.replace(cfg, inputs=[str(f) for f in files])), out / "config.toml")
    read = {k: report[k] for k in ("files", "documents", "bytes", "invalid_utf8")}
    read["skipped"] = len(report["problems"]) + report["more_problems"]
    runs.mark_done(out, {"vocab_size": tok.vocab_size, "seconds": round(seconds, 3), "read": read})
    if cfg.kind != "char" and tok.vocab_size < cfg.vocab_size:
        log.warning("warning: the corpus ran out of pairs after %d merges: vocab_size is %d, not the %d asked for; "
                    "give more text for a larger vocabulary", len(tok.merges), tok.vocab_size, cfg.vocab_size)
    log.info("trained %r in %.2f s -> %s", tok, seconds, out / "tokenizer")
    return 0


def _corpus(inputs, fields):
    """The reader every command shares (scratchlm/data/sources.py): .txt .md .jsonl .json .parquet, each optionally
    .gz/.zst, and folders of them. Long plain files are read in pieces: counts and tokens are the same."""
    from scratchlm.data.sources import SourceConfig, SourceCorpus

    return SourceCorpus(inputs, SourceConfig(text_field=",".join(fields), split_long_files=True))


# ------------------------------------------------------------------------------------------------ encode / decode


def _load(path: Path):
    from scratchlm.tokenizer import load_tokenizer

    return load_tokenizer(path)


def cmd_encode(args) -> int:
    tok = _load(args.tokenizer)
    text = args.prompt if args.prompt is not None else sys.stdin.buffer.read().decode("utf-8", errors="replace")
    ids = tok.encode(text, allowed_special="all" if args.allow_special else frozenset())
    if args.tokens:
        pieces = [tok.decode([i]) for i in ids]
        if args.json:
            print(json.dumps([{"id": i, "token": p} for i, p in zip(ids, pieces)], ensure_ascii=False))
        else:
            print("\n".join(f"{i}\t{p!r}" for i, p in zip(ids, pieces)))
    elif args.json:
        print(json.dumps(ids))
    else:
        print(" ".join(map(str, ids)))
    return 0


def cmd_decode(args) -> int:
    tok = _load(args.tokenizer)
    raw = args.ids if args.ids is not None else sys.stdin.read()
    try:
        if args.json:
            data = json.loads(raw)
            seqs = data if data and isinstance(data[0], list) else [data]
        else:
            seqs = [[int(x) for x in raw.replace(",", " ").split()]]
    except (ValueError, IndexError, TypeError):
        raise ValueError("could not parse token ids; give integers separated by spaces (or a JSON list with "
                         "--json)") from None
    errors = "strict" if args.strict else "replace"
    # exactly the decoded text (no newline added), so `encode | decode` gives back the input byte for byte
    text = "\n".join(tok.decode(ids, errors=errors) for ids in seqs)
    sys.stdout.flush()
    sys.stdout.buffer.write(text.encode("utf-8"))
    sys.stdout.buffer.flush()
    return 0


# ------------------------------------------------------------------------------------------------ stats


def token_stats(tok, texts, top: int = 15) -> dict:
    """Compression and vocabulary usage of `tok` over `texts`."""
    from collections import Counter

    counts: Counter = Counter()
    n_bytes = n_chars = n_tokens = 0
    for text in texts:
        ids = tok.encode(text)
        counts.update(ids)
        n_bytes += len(text.encode("utf-8"))
        n_chars += len(text)
        n_tokens += len(ids)
    vocab = tok.vocab_size
    n_special = len(tok.special_tokens)
    size = getattr(tok, "id_to_bytes", lambda i: tok.decode([i]))  # bytes for BPE, chars for char
    longest = sorted(range(vocab - n_special), key=lambda i: (-len(size(i)), i))[:top]
    return {
        "bytes": n_bytes,
        "chars": n_chars,
        "tokens": n_tokens,
        "bytes_per_token": n_bytes / max(n_tokens, 1),
        "chars_per_token": n_chars / max(n_tokens, 1),
        "vocab_size": vocab,
        "vocab_used": len(counts),
        "vocab_used_fraction": len(counts) / max(vocab - n_special, 1),
        "most_common": [{"id": i, "token": tok.decode([i]), "count": c} for i, c in counts.most_common(top)],
        "longest": [{"id": i, "token": tok.decode([i])} for i in longest],
    }


def cmd_stats(args) -> int:
    from scratchlm.tokenizer.corpus import describe_report, new_report

    tok = _load(args.tokenizer)
    corpus = _corpus(args.input, tuple(args.text_field or ["text"]))
    report = new_report()
    st = token_stats(tok, (doc for task in corpus.tasks() for doc in corpus.read(task, report)), args.top)
    for line in report["problems"]:
        print(f"skipped {line}", file=sys.stderr)
    if not st["bytes"]:
        raise ValueError(f"no text to measure: {describe_report(report)}")
    st["invalid_utf8"] = report["invalid_utf8"]
    if args.json:
        print(json.dumps(st, ensure_ascii=False, indent=1))
        return 0
    print(f"text:        {st['bytes']:,} bytes, {st['chars']:,} chars -> {st['tokens']:,} tokens"
          + (f" ({st['invalid_utf8']:,} invalid UTF-8 bytes replaced by U+FFFD)" if st["invalid_utf8"] else ""))
    print(f"compression: {st['bytes_per_token']:.3f} bytes/token, {st['chars_per_token']:.3f} chars/token")
    print(f"vocab used:  {st['vocab_used']:,} of {st['vocab_size']:,} ids ({st['vocab_used_fraction']:.1%} of the "
          f"non-special ones)")
    print("most common: " + "  ".join(f"{t['token']!r}x{t['count']}" for t in st["most_common"]))
    print("longest:     " + "  ".join(f"{t['token']!r}" for t in st["longest"]))
    return 0
