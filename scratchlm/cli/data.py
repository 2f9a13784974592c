"""`scratchlm data ...`: the data pipeline's commands (prepare, filter, dedup, toxicity, tokenize, synth, download).

Heavy or optional libraries (pyarrow, zstandard, ray, datasets) are imported inside handlers, so the CLI starts fast.
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


def _add_source_flags(p: argparse.ArgumentParser, presets: bool = False) -> None:
    g = p.add_argument_group("input")
    g.add_argument("--input", "-i", nargs="+", required=True, metavar="PATH",
                   help="files, folders or globs (.txt .md .json .jsonl .parquet, optionally .gz/.zst, and source code), "
                        "or hf:NAME[:CONFIG]")
    g.add_argument("--text-field", default="text", help="JSON/Parquet/HF field holding the text (default: text; rows "
                                                         "without it in a chat shape are read as their conversation)")
    splits = '"file" (one document per file), "paragraph", "line", "chapter" (chapters or paragraphs joined to 2,000+ chars)'
    if presets:
        g.add_argument("--text-split", default=None,
                       help=f"plain text: {splits}, or a separator such as \"<|endoftext|>\" (default: the preset's; "
                            "auto = chapter for text, file for source code)")
        g.add_argument("--preset", default=None, metavar="NAME",
                       help="filter settings for the kind of text: web, books (= prose), code, chat, none, or auto "
                            "(default: each file by what it holds: plain text -> books, source code -> code, chat rows "
                            "-> chat, other rows -> web); any threshold can still be --set")
    else:
        g.add_argument("--text-split", default="file", help=f"plain text: {splits} (default: file), or a separator "
                                                            "such as \"<|endoftext|>\"")
    g.add_argument("--hf-split", default="train", help="split of hf: datasets (default: train)")


def _add_executor_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("execution")
    g.add_argument("--workers", type=int, default=None, help="worker processes (default: number of CPUs, at most 8)")
    g.add_argument("--executor", choices=["local", "ray"], default="local",
                   help="local process pool (default) or Ray (pip install 'ray[data]')")
    g.add_argument("--ray-address", default=None, help="Ray cluster to join, e.g. ray://head:10001 (default: start a local one)")


def _check_out(out: Path, overwrite: bool, marker: str, kind: str) -> None:
    """--out must be new, empty or ours (scratchlm.runs.claim_out_dir); a finished result needs --overwrite,
    which lets the command replace its own files (the folder is not deleted: inputs may live beside them)."""
    from scratchlm.runs import claim_out_dir

    claim_out_dir(out, overwrite=overwrite, finished=marker, wipe=False, kind=kind)


# --------------------------------------------------------------------------------------------------
# tokenize

TOKENIZE_EXAMPLES = """\
examples:
  # 10% of the stories (chosen by a hash of each document) go to the val shards
  scratchlm data tokenize --tokenizer runs/tok/tokenizer --input stories.txt --text-split paragraph --out runs/data
  # explicit validation files, JSONL input with a "content" field
  scratchlm data tokenize --tokenizer runs/tok/tokenizer --input train/*.jsonl.gz --val-input val.jsonl \\
      --text-field content --out runs/data

output: runs/data/train_00000.bin, train_00001.bin, ... (each at most --shard-tokens tokens), val_00000.bin, ...,
        a .idx.npy of document offsets beside each, manifest.json with every file's SHA-256 (scratchlm/data/shards.py)
"""


def _texts(inputs, cfg, stats):
    """The texts of `inputs`, invalid UTF-8 replaced by U+FFFD and counted in `stats`."""
    from scratchlm.data.sources import read_sources

    for d in read_sources(inputs, cfg, stats, replace_invalid=True):
        yield d["text"]


def _token_count(text: str, flag: str) -> int:
    """"100M", "2k", "5e6" -> a whole number >= 1 (parsed here: the planner's parser would import torch, which
    costs every tokenizer worker ~150 MB)."""
    import math
    import re

    m = re.fullmatch(r"\s*([0-9.]+(?:e[+-]?[0-9]+)?)\s*([kmb]?)\s*", str(text).lower())
    value = float(m.group(1)) * {"": 1, "k": 1e3, "m": 1e6, "b": 1e9}[m.group(2)] if m else math.nan
    if not (math.isfinite(value) and value >= 1):
        raise ValueError(f"{flag} {text!r} is not a number of tokens >= 1; write e.g. 100M, 5e6 or 200k")
    return int(value)


def _shard_config(args):
    """The resolved settings (scratchlm/data/shard_config.py): defaults <- --config <- the flags given <- --set."""
    from scratchlm.config import load_config
    from scratchlm.data.shard_config import ShardConfig

    source = {"text_field": args.text_field, "text_split": args.text_split, "hf_split": args.hf_split}
    given = {"source": {k: v for k, v in source.items() if v is not None}, "val_fraction": args.val_fraction,
             "shard_tokens": args.shard_tokens, "batch_size": args.batch_size, "seed": args.seed}
    cfg = load_config(ShardConfig, args.config, args.overrides,
                      flags={k: v for k, v in given.items() if v is not None})
    if args.val_input and cfg.val_fraction != ShardConfig().val_fraction:
        raise ValueError("--val-input is the val split, so a val_fraction cannot apply; drop --val-fraction "
                         "(val_fraction) or --val-input")
    return cfg


def _tokenize(args) -> int:
    from scratchlm.data.shards import NoDocumentsError, write_shards, write_shards_split
    from scratchlm.data.sources import SourceStats

    tok_dir = Path(args.tokenizer)
    if not tok_dir.is_dir():
        raise FileNotFoundError(f"--tokenizer {tok_dir} is not a folder; train one with `scratchlm tokenizer train`")
    settings = _shard_config(args)
    _check_out(args.out, args.overwrite, "manifest.json", "data tokenize")
    cfg = settings.source
    stats = SourceStats()
    source = {"inputs": [str(p) for p in args.input], "val_inputs": [str(p) for p in args.val_input or []],
              "val_fraction": None if args.val_input else settings.val_fraction, "seed": settings.seed}
    shard_tokens = _token_count(settings.shard_tokens, "--shard-tokens")
    kw = dict(num_workers=args.workers, batch_size=settings.batch_size, source=source, progress=not args.quiet,
              shard_tokens=shard_tokens)
    try:
        if args.val_input:  # one SourceStats for both: the summary counts every file read
            manifest = write_shards(args.out, _texts(args.input, cfg, stats), _texts(args.val_input, cfg, stats),
                                    str(tok_dir), **kw)
        else:
            manifest = write_shards_split(args.out, _texts(args.input, cfg, stats), str(tok_dir),
                                          val_fraction=settings.val_fraction, seed=settings.seed, **kw)
    except NoDocumentsError:
        raise NoDocumentsError(f"0 tokens to write, nothing written: {stats.summary()}") from None
    for p in stats.problems:
        print(f"skipped {p}", file=sys.stderr)
    if not args.quiet:
        print(stats.summary(problems=False))
    n_tok, n_doc = manifest["n_tokens"], manifest["n_docs"]
    n_sh = {s: f"{len(manifest['shards'][s])} shard" + "s" * (len(manifest["shards"][s]) != 1) for s in n_tok}
    print(f"wrote {args.out}: train {n_doc['train']:,} docs / {n_tok['train']:,} tokens in {n_sh['train']}, "
          f"val {n_doc['val']:,} docs / {n_tok['val']:,} tokens in {n_sh['val']} ({manifest['dtype']})")
    if n_doc["val"] == 0 and not args.val_input and settings.val_fraction > 0:
        print("warning: no document landed in val; raise --val-fraction or pass --val-input", file=sys.stderr)
    if n_doc["train"] == 0:
        print("warning: no document landed in train; lower --val-fraction or give more documents", file=sys.stderr)
    return 0


def _register_tokenize(sub) -> None:
    p = sub.add_parser("tokenize", help="tokenize documents into train/val token shards",
                       description="Encode documents with a trained tokenizer into flat train/val token shards "
                                   "(each document = BOS + tokens), in parallel.",
                       epilog=TOKENIZE_EXAMPLES, formatter_class=RAW)
    p.add_argument("--tokenizer", required=True, metavar="DIR", help="tokenizer folder (from `scratchlm tokenizer train`)")
    _add_source_flags(p)
    # every setting is also a config key (scratchlm/data/shard_config.py): defaults <- --config <- these flags <- --set,
    # so the flags default to None ("not given") and the defaults live in one place, the dataclass
    p.set_defaults(text_field=None, text_split=None, hf_split=None)
    g = p.add_argument_group("validation split")
    g.add_argument("--val-fraction", type=float, default=None,
                   help="fraction of documents sent to val, chosen by content hash (default: 0.1)")
    g.add_argument("--val-input", nargs="+", metavar="PATH", default=None,
                   help="use these inputs as the val split instead of --val-fraction")
    p.add_argument("--workers", type=int, default=None, help="encoding processes (default: CPUs, at most 8)")
    p.add_argument("--batch-size", type=int, default=None, help="documents per encoding task (default: 256)")
    p.add_argument("--shard-tokens", default=None, metavar="N",
                   help="the most tokens in one shard file, e.g. 100M (default; 200 MB of uint16) or 5e6")
    add_common(p, out="runs/data", config=True, device=False)
    p.set_defaults(func=_tokenize)


# --------------------------------------------------------------------------------------------------
# prepare / filter / dedup: the pipeline, whole or in parts

def _plan(args):
    """Each input's settings (data.pipeline.Plan): its preset <- --config <- --set <- the flags; printed."""
    from scratchlm.data.pipeline import plan_inputs

    source = {"text_field": args.text_field, "hf_split": args.hf_split}
    if args.text_split is not None:
        source["text_split"] = args.text_split
    plan = plan_inputs(args.input, args.preset, getattr(args, "config", None), args.overrides, source)
    for cfg in plan.configs.values():
        if getattr(args, "toxic_words", None):
            cfg.toxicity.word_list = str(args.toxic_words)
        if getattr(args, "toxicity_model", None):
            cfg.toxicity.classifier = None if args.toxicity_model == "none" else str(args.toxicity_model)
        if getattr(args, "val_fraction", None) is not None:
            cfg.val_fraction = args.val_fraction
        if args.seed is not None:
            cfg.seed = args.seed
    if not args.quiet:
        print("\n".join(plan.describe()))
    return plan


def _prepare_out(out: Path, overwrite: bool) -> None:
    import shutil

    _check_out(out, overwrite, "report.json", "data prepare/filter/dedup")
    for sub in ("work", "clean"):  # stale chunks of an earlier run would be read as input
        if (out / sub).is_dir():
            shutil.rmtree(out / sub)
    (out / "report.json").unlink(missing_ok=True)


def _executor(args):
    from scratchlm.data.executors import make_executor

    return make_executor(args.executor, args.workers, args.ray_address, progress=not args.quiet)


def _finish(report: dict, out: Path, quiet: int) -> int:
    from scratchlm.data.pipeline import check_not_empty, format_report

    if not quiet:
        print(format_report(report))
    for w in report.get("warnings", []) if report["docs_out"] else []:  # keeping nothing is an error, said below
        print(w, file=sys.stderr)
    check_not_empty(report, out / "report.json")  # keeping 0 documents exits 2 with what removed them
    print(f"report: {out / 'report.json'}")
    return 0


def _prepare(args) -> int:
    from scratchlm.data.pipeline import EmptyOutputError, format_report, run_pipeline

    plan = _plan(args)
    if args.tokenizer is not None and not Path(args.tokenizer).is_dir():
        raise FileNotFoundError(f"--tokenizer {args.tokenizer} is not a folder; train one with `scratchlm tokenizer train`")
    _prepare_out(args.out, args.overwrite)
    ex = _executor(args)
    try:
        report = run_pipeline(args.input, args.out, plan, args.tokenizer, ex, progress=not args.quiet)
    except EmptyOutputError as e:  # the table first: it shows what each filter removed, with examples
        if not args.quiet:
            print(format_report(e.report))
        raise
    finally:
        ex.close()
    return _finish(report, args.out, args.quiet)


def _filter(args) -> int:
    from dataclasses import asdict

    from scratchlm.data.pipeline import add_filter_summary, report_warnings, run_filters
    from scratchlm.runs import atomic_write_json

    plan = _plan(args)
    _prepare_out(args.out, args.overwrite)
    ex = _executor(args)
    try:
        chunks, st = run_filters(args.input, args.out / "clean", plan, ex, args.tokenizer)
    finally:
        ex.close()
    report = {"inputs": args.input, "docs_in": st["docs_in"], "bytes_in": st["bytes_in"], "docs_out": st["docs_out"],
              "bytes_out": st["bytes_out"], "removed": st["removed"], "c4_lines_removed": st["c4_lines_removed"],
              "normalize": st["normalize"], "problems": st["problems"], "dedup": {},
              "clean_files": [c for c, _ in chunks], "config": asdict(plan.main)}
    add_filter_summary(report, st, plan.configs)
    report["warnings"] = report_warnings(report)
    atomic_write_json(args.out / "report.json", report)
    return _finish(report, args.out, args.quiet)


def _dedup(args) -> int:
    from dataclasses import asdict

    from scratchlm.data.pipeline import add_filter_summary, report_warnings, run_dedup, run_filters
    from scratchlm.runs import atomic_write_json

    plan = _plan(args)
    for c in plan.configs.values():  # dedup only: read (cut as the preset cuts) + normalise, no quality filters
        c.filters, c.c4_clean_lines, c.toxicity.classifier = [], False, None
    cfg = plan.main
    _prepare_out(args.out, args.overwrite)
    ex = _executor(args)
    try:
        chunks, st = run_filters(args.input, args.out / "work" / "filtered", plan, ex)
        clean, d = run_dedup(chunks, args.out / "work", args.out / "clean", cfg.dedup, ex)
    finally:
        ex.close()
    removed = dict(st["removed"])
    if d["exact_removed"]:
        removed["exact_duplicate"] = {"docs": d["exact_removed"], "bytes": None, "examples": []}
    if d["near"] and d["near"]["removed"]:
        removed["near_duplicate"] = {"docs": d["near"]["removed"], "bytes": None, "examples": []}
    report = {"inputs": args.input, "docs_in": st["docs_in"], "bytes_in": st["bytes_in"], "docs_out": d["docs_out"],
              "bytes_out": d["bytes_out"], "removed": removed, "normalize": st["normalize"], "problems": st["problems"],
              "dedup": d, "clean_files": [c for c, _ in clean], "config": asdict(cfg)}
    add_filter_summary(report, st, plan.configs)
    report["warnings"] = report_warnings(report)
    atomic_write_json(args.out / "report.json", report)
    return _finish(report, args.out, args.quiet)


PREPARE_EXAMPLES = """\
examples:
  # everything: read, normalise, filter, dedup, tokenize into runs/data/{train,val}.bin
  scratchlm data prepare --input raw/ --tokenizer runs/tok/tokenizer --out runs/data
  # your own text, no flags: a novel is cut into chapters and filtered as prose (preset books), a repository's
  # source files as code, a chat export's rows as chat (never web-filtered); the choice is printed first
  scratchlm data prepare --input book.txt notes/ my_repo/ chats.jsonl --out runs/mine
  # a web crawl's rows get the web preset (Gopher + C4 + FineWeb); name the preset to override the guess
  scratchlm data prepare --input fineweb/*.parquet --out runs/web
  scratchlm data prepare --input essays.jsonl --preset books --set quality.min_words=5 --out runs/essays
  # one document per blank-line paragraph, a toxicity word list, looser Gopher length limits
  scratchlm data prepare --input books/*.txt --text-split paragraph --toxic-words ldnoobw_en.txt \\
      --set quality.min_words=20 --out runs/books
  # the same stage code on a Ray cluster (OUT must be on a filesystem every node sees)
  scratchlm data prepare --input /nfs/crawl/*.jsonl.zst --executor ray --ray-address head:6379 --out /nfs/clean

presets: web (Gopher + C4 + FineWeb, as published), books/prose (Gopher loosened for prose and notes, C4's
lorem-ipsum rule), code (long lines, few alphanumerics, generated files), chat (no filter), none (no filter).
The table at the end shows what each filter removed (documents, bytes, two examples); a warning names the filter
and the --set that loosens it when more than half of the bytes went.

output: OUT/clean/*.jsonl, OUT/report.json (+ OUT/train.bin, val.bin, manifest.json with --tokenizer),
        OUT/work/ (filtered chunks, signatures, buckets, clusters.jsonl)
"""

FILTER_EXAMPLES = """\
examples:
  scratchlm data filter --input crawl.jsonl.gz --out runs/filtered
  scratchlm data filter --input novel.txt --out runs/novel                      # preset books, chapters
  scratchlm data filter --input novel.txt --preset web --text-split paragraph --out runs/novel_web
  scratchlm data filter --input raw.jsonl --set filters=gopher_quality,c4 --set quality.min_words=20 --out runs/f
  scratchlm data filter --input raw.parquet --toxic-words words.txt --toxicity-model runs/tox --out runs/f

output: OUT/clean/*.jsonl ({"id", "text"}), OUT/report.json (removals per filter with examples)
"""

DEDUP_EXAMPLES = """\
examples:
  scratchlm data dedup --input runs/filtered/clean/ --out runs/dedup
  scratchlm data dedup --input docs.jsonl --set dedup.minhash.bands=20 --set dedup.minhash.rows=5 --out runs/d

output: OUT/clean/*.jsonl, OUT/report.json, OUT/work/signatures/*.npy, OUT/work/buckets/band_*.npy,
        OUT/work/clusters.jsonl (one line per duplicate cluster), OUT/work/remove.npy
"""


def _register_pipeline(sub) -> None:
    specs = [
        ("prepare", _prepare, PREPARE_EXAMPLES, "runs/data", "run the whole pipeline: raw text to token shards",
         "Read, normalise, quality- and toxicity-filter, deduplicate (exact + MinHash LSH) and, with --tokenizer, "
         "tokenize into train/val shards. Prints and writes a report of every removal."),
        ("filter", _filter, FILTER_EXAMPLES, "runs/filtered", "normalise and quality/toxicity-filter documents",
         "Normalise documents and apply the Gopher, C4, FineWeb, token-ratio and toxicity filters; writes the "
         "survivors as JSONL and a report."),
        ("dedup", _dedup, DEDUP_EXAMPLES, "runs/dedup", "remove exact and near-duplicate documents",
         "Exact dedup (hash of normalised text) then MinHash LSH (word 5-grams, 14 bands x 8 rows) with union-find "
         "clusters; one document kept per cluster."),
    ]
    for name, fn, examples, out, help_, desc in specs:
        p = sub.add_parser(name, help=help_, description=desc, epilog=examples, formatter_class=RAW)
        _add_source_flags(p, presets=True)
        if name != "dedup":
            g = p.add_argument_group("filters")
            g.add_argument("--tokenizer", metavar="DIR", default=None,
                           help="tokenizer folder: enables the token-to-word ratio filter" +
                                (" and writes token shards" if name == "prepare" else ""))
            g.add_argument("--toxic-words", metavar="FILE", default=None, help="word list (one term per line) for toxicity density")
            g.add_argument("--toxicity-model", metavar="NAME", default=None,
                           help="toxicity classifier for every input: builtin (shipped; on in the web preset), "
                                "profanity-check (pip install 'scratchlm[toxicity]'), a folder from `data toxicity "
                                "train|distill`, or none")
        if name == "prepare":
            p.add_argument("--val-fraction", type=float, default=None, help="fraction of documents in val.bin (default 0.1)")
        _add_executor_flags(p)
        add_common(p, out=out, config=True, device=False)
        p.set_defaults(func=fn)


# --------------------------------------------------------------------------------------------------
# toxicity train | score

def _read_labelled(paths, text_field: str, label_field: str | None):
    """(texts, labels or None) from JSON/JSONL/Parquet records, read by the reader every command shares."""
    from scratchlm.data.sources import Problem, SourceConfig, SourceStats, read_sources

    stats = SourceStats()
    cfg = SourceConfig(text_field=text_field, keep_record=label_field is not None)
    texts, labels, unlabelled = [], [], 0
    for d in read_sources(paths, cfg, stats, replace_invalid=True):
        if label_field is not None:
            record = d.get("record")
            if not isinstance(record, dict) or label_field not in record:
                unlabelled += 1
                if unlabelled <= 5:  # a file without the field would otherwise print one line per record
                    where = d.get("where") or d["id"]
                    stats.problems.append(Problem(where, "missing_field", f"no label field {label_field!r} "
                                                  "(choose one with --label-field)"))
                continue
            labels.append(_label(record[label_field], d["where"]))
        texts.append(d["text"])
    if unlabelled > 5:
        stats.problems.append(Problem(", ".join(map(str, paths)), "missing_field",
                                      f"{unlabelled - 5:,} more records without {label_field!r}"))
    for p in stats.problems:
        print(f"skipped {p}", file=sys.stderr)
    if stats.invalid_utf8:
        print(f"{stats.invalid_utf8:,} invalid UTF-8 byte(s) replaced by U+FFFD", file=sys.stderr)
    return texts, (labels if label_field is not None else None)


def _label(v, where: str = "") -> int:
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, (int, float)) and v in (0, 1):
        return int(v)
    s = str(v).strip().lower()
    if s in ("1", "true", "toxic", "yes", "pos", "positive"):
        return 1
    if s in ("0", "false", "clean", "no", "neg", "negative", "non-toxic", "nontoxic"):
        return 0
    raise ValueError(f"{where}: label {v!r} is not 0/1 (or true/false, toxic/clean): fix the --label-field values")


def _print_metrics(title: str, m: dict) -> None:
    print(f"{title}: n={m['n']:,} positives={m['positives']:,} threshold={m['threshold']:.2f}  "
          f"precision={m['precision']:.3f} recall={m['recall']:.3f} f1={m['f1']:.3f} accuracy={m['accuracy']:.3f}")


def _tox_train(args) -> int:
    import numpy as np

    from scratchlm.config import load_config
    from scratchlm.data.shards import is_val_document
    from scratchlm.data.toxicity import ClassifierConfig, ToxicityClassifier, precision_recall
    from scratchlm.runs import atomic_write_json

    _check_out(args.out, args.overwrite, "classifier.json", "data toxicity")
    cfg = load_config(ClassifierConfig, args.config, args.overrides)
    texts, labels = _read_labelled(args.input, args.text_field, args.label_field)
    if len(texts) < 10:
        raise ValueError(f"only {len(texts)} labelled documents found; toxicity training needs at least 10")
    held = np.array([is_val_document(t, args.holdout, args.seed or 0) for t in texts])
    y = np.asarray(labels)
    tr = ~held
    clf = ToxicityClassifier(cfg)
    losses = clf.fit([t for t, h in zip(texts, held) if not h], y[tr], progress=not args.quiet)
    metrics = {"train_loss": losses[-1], "n_train": int(tr.sum()), "n_heldout": int(held.sum())}
    if held.any():
        m = precision_recall(clf.predict_proba([t for t, h in zip(texts, held) if h]), y[held], args.threshold)
        metrics["heldout"] = m
        _print_metrics("held-out", m)
    clf.save(args.out)
    atomic_write_json(args.out / "metrics.json", metrics)
    print(f"saved {args.out} (train loss {losses[-1]:.4f} on {int(tr.sum()):,} documents)")
    return 0


def _tox_score_config(args):
    """The resolved settings (scratchlm/data/toxicity_score_config.py): defaults <- --config <- flags given <- --set."""
    from scratchlm.config import load_config
    from scratchlm.data.toxicity_score_config import ToxicityScoreConfig

    given = {k: getattr(args, k) for k in ("toxicity_model", "toxic_words", "text_field", "label_field", "threshold",
                                           "max_density")}
    return load_config(ToxicityScoreConfig, args.config, args.overrides,
                       flags={k: v for k, v in given.items() if v is not None})


def _tox_score(args) -> int:
    import numpy as np

    from scratchlm.data.toxicity import WordListScorer, load_classifier, precision_recall
    from scratchlm.runs import atomic_write_text

    cfg = _tox_score_config(args)
    if cfg.toxicity_model is None and cfg.toxic_words is None:
        raise ValueError("give --toxicity-model NAME (builtin, profanity-check or a classifier folder) and/or "
                         "--toxic-words FILE (a word list)")
    clf = load_classifier(cfg.toxicity_model) if cfg.toxicity_model else None
    words = WordListScorer.from_file(cfg.toxic_words) if cfg.toxic_words else None
    texts, labels = _read_labelled(args.input, cfg.text_field, cfg.label_field)
    scores = clf.predict_proba(texts) if clf else None
    lines = []
    for i, t in enumerate(texts):
        rec = {"text": t}
        if scores is not None:
            rec["toxicity"] = round(float(scores[i]), 6)
        if words is not None:
            rec["toxic_word_density"] = round(words.density(t), 6)
        if labels is not None:
            rec["label"] = labels[i]
        lines.append(json.dumps(rec, ensure_ascii=False) + "\n")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, "".join(lines))
    if labels is not None:
        if scores is not None:
            _print_metrics("classifier", precision_recall(scores, labels, cfg.threshold))
        if words is not None:
            dens = np.array([words.density(t) for t in texts])
            _print_metrics("word list", precision_recall(dens, labels, max(cfg.max_density, 1e-12)))
    print(f"wrote {len(texts):,} scored documents to {args.out}")
    return 0


def _tox_distill(args) -> int:
    from scratchlm import __version__
    from scratchlm.config import load_config
    from scratchlm.data.shards import is_val_document
    from scratchlm.data.sources import SourceConfig, read_sources
    from scratchlm.data.toxicity import ClassifierConfig, ProfanityCheck, agreement, distill, text_pieces

    _check_out(args.out, args.overwrite, "classifier.json", "data toxicity")
    # word unigrams, as the backend's TF-IDF: agreement on held-out pieces, kappa 0.80 (1- and 2-grams: 0.56);
    # soft labels unweighted (match the backend's probabilities); an L2 of 1e-4 kept a word seen in two probes at 0
    cfg = load_config(ClassifierConfig, args.config, args.overrides,
                      defaults={"ngram": 1, "balance": False, "l2": 1e-7, "epochs": 600})
    if args.per_word < 0 or not 0 <= args.holdout < 1:
        raise ValueError("--per-word must be 0 or more and --holdout in [0, 1)")
    teacher = ProfanityCheck()  # before reading: a missing backend is said at once

    def pieces(inputs):  # comment-sized pieces, each once; a hash holds out the same ones on every run
        out = dict.fromkeys(p for d in read_sources(inputs, SourceConfig(text_split="paragraph"), replace_invalid=True)
                            for p in text_pieces(d["text"]))
        return ([p for p in out if not is_val_document(p, args.holdout, args.seed or 0)],
                [p for p in out if is_val_document(p, args.holdout, args.seed or 0)])

    train, test = pieces(args.input)
    clean = pieces(args.clean)[0] if args.clean else []
    if len(train) + len(test) < 100:
        raise ValueError(f"only {len(train) + len(test)} text pieces of 3-200 words found in --input; distillation "
                         "needs thousands (sentences, comments, chat turns)")
    clf, info = distill(train, teacher, cfg, clean, per_word=args.per_word, seed=args.seed or 0,
                        progress=not args.quiet)
    about = {"teacher": "alt-profanity-check " + _version("alt-profanity-check"), "inputs": [str(i) for i in args.input],
             "clean_inputs": [str(i) for i in args.clean or []], "scratchlm": __version__, **info,
             "heldout_pieces": len(test)}
    if test:
        a = agreement(clf.predict_proba(test) >= 0.5, teacher.predict_proba(test) >= 0.5)
        about["heldout_agreement"] = a
        lo, hi = a["agreement_ci"]
        print(f"held-out: n={a['n']:,} agreement={a['agreement']:.4f} (95% {lo:.4f}-{hi:.4f}) "
              f"kappa={a['kappa']:.3f} ours positive={a['positive_a']:,} backend positive={a['positive_b']:,}")
    clf.save(args.out, about)
    print(f"saved {args.out} ({info['texts']:,} texts + {info['probes']:,} probes, {info['teacher_positive']:,} toxic "
          f"by the backend; {info['clean']:,} clean texts)")
    return 0


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "?"


TOX_EXAMPLES = """\
examples:
  # train on labelled JSONL ({"text": ..., "label": 0/1}); 20% held out for precision/recall
  scratchlm data toxicity train --input labelled.jsonl --label-field label --out runs/tox
  # score documents; with --label-field, precision and recall are printed too
  scratchlm data toxicity score --toxicity-model runs/tox --input docs.jsonl --out runs/tox/scores.jsonl
  scratchlm data toxicity score --toxic-words ldnoobw_en.txt --input test.jsonl --label-field label --out s.jsonl
  scratchlm data toxicity score --toxicity-model builtin --input docs.jsonl --out s.jsonl   # the shipped one
  # learn alt-profanity-check's P(toxic) (pip install 'scratchlm[toxicity]') on any text: how builtin was made
  scratchlm data toxicity distill --input hh-rlhf.jsonl --clean books/ --out runs/tox_distilled
"""


def _register_toxicity(sub) -> None:
    p = sub.add_parser("toxicity", help="train or apply a toxicity classifier / word list",
                       description="A hashed n-gram logistic-regression classifier and word-list density scores.",
                       epilog=TOX_EXAMPLES, formatter_class=RAW)
    tsub = p.add_subparsers(dest="toxicity_command", metavar="COMMAND")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])
    for name in ("train", "score", "distill"):
        q = tsub.add_parser(name, help=f"{name} the toxicity classifier", epilog=TOX_EXAMPLES, formatter_class=RAW,
                            description={"train": "Train on labelled JSON/JSONL/Parquet.",
                                         "score": "Score documents; print precision/recall when labels are given.",
                                         "distill": "Train on the alt-profanity-check backend's P(toxic) for the "
                                                    "paragraphs (chat turns) of any text, plus a probe of every "
                                                    "word the backend knows; print agreement on held-out pieces."
                                         }[name])
        q.add_argument("--input", "-i", nargs="+", required=True, metavar="PATH", help="JSON/JSONL/Parquet files")
        q.add_argument("--text-field", default="text", help="field holding the text (default: text)")
        q.add_argument("--threshold", type=float, default=0.5, help="P(toxic) at which a document counts as toxic")
        if name == "distill":
            q.add_argument("--holdout", type=float, default=0.2, help="fraction of pieces held out (default 0.2)")
            q.add_argument("--per-word", type=int, default=2, help="probe texts per backend word (default 2)")
            q.add_argument("--clean", nargs="+", default=None, metavar="PATH",
                           help="curated text (books, stories) labelled non-toxic whatever the backend says")
            add_common(q, out="runs/toxicity", config=True, device=False)
            q.set_defaults(func=_tox_distill)
        elif name == "train":
            q.add_argument("--label-field", default="label", help="0/1 label field (default: label)")
            q.add_argument("--holdout", type=float, default=0.2, help="fraction held out for precision/recall (default 0.2)")
            add_common(q, out="runs/toxicity", config=True, device=False)
            q.set_defaults(func=_tox_train)
        else:
            q.add_argument("--label-field", default=None, help="0/1 label field: print precision/recall")
            add_renamed(q, "--toxicity-model", "--model", metavar="NAME", default=None,
                        help="builtin, profanity-check or a trained classifier folder")
            q.add_argument("--toxic-words", metavar="FILE", default=None, help="word list for density scores")
            q.add_argument("--max-density", type=float, default=None,
                           help="word-list density counted as toxic (default: 0.01)")
            q.add_argument("--out", type=Path, default=Path("scores.jsonl"), help="scored JSONL to write")
            # every setting is also a config key (data/toxicity_score_config.py): defaults <- --config <- these flags
            # <- --set, so the flags default to None ("not given") and the defaults live in the dataclass
            q.set_defaults(text_field=None, threshold=None)
            add_common(q, out=None, config=True, device=False, seed=False)
            q.set_defaults(func=_tox_score)


# --------------------------------------------------------------------------------------------------

DATA_EXAMPLES = """\
examples:
  scratchlm data prepare --input raw/ --tokenizer runs/tok/tokenizer --out runs/data
  scratchlm data filter --input raw.jsonl --out runs/filtered
  scratchlm data dedup --input runs/filtered/clean/ --out runs/dedup
  scratchlm data tokenize --tokenizer runs/tok/tokenizer --input clean.jsonl --out runs/data
"""


def register(subparsers) -> None:
    p = subparsers.add_parser("data", help="ingest, filter, deduplicate and tokenize text",
                              description="The data pipeline: sources -> normalise -> quality and toxicity filters "
                                          "-> exact and MinHash dedup -> token shards.",
                              epilog=DATA_EXAMPLES, formatter_class=RAW)
    sub = p.add_subparsers(dest="data_command", metavar="COMMAND")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])
    _register_pipeline(sub)
    _register_toxicity(sub)
    _register_tokenize(sub)
    try:  # TinyWorld's `data synth`, when that module exists
        from scratchlm.cli.data_synth import add_synth_parser
    except ModuleNotFoundError as e:
        if e.name != "scratchlm.cli.data_synth":
            raise
    else:
        add_synth_parser(sub)
    from scratchlm.cli.data_download import add_download_parser

    add_download_parser(sub)
