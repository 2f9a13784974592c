"""The whole data pipeline: read -> normalise -> filter (quality, toxicity) -> exact dedup -> MinHash dedup
-> clean JSONL -> token shards, with a report of everything removed and why.

Every step is a map over shards, hash ranges or bands run by an executor (local processes or Ray), plus one
reduce (union-find over the documents that have a near-duplicate); dedup spills to sorted runs on disk, so memory
does not grow with the corpus (dedup.py). Work files live under OUT/work/, the surviving documents under OUT/clean/,
the report in OUT/report.json, and with a tokenizer the token shards in OUT/ (train.bin, val.bin, manifest.json).

    OUT/work/filtered/SSSSS_CCC.jsonl   survivors of the filters; one input file -> one or more chunks
    OUT/work/exact/K.npy                 sorted (hash, doc) run per chunk; exact/removed_PP_RRR.npy: later copies
    OUT/work/signatures/K.npy            MinHash signatures per chunk
    OUT/work/buckets/band_BB/K.npy       sorted (band key, doc) run per band and chunk
    OUT/work/pairs/band_BB_RRR.npy       LSH candidate pairs per band, sorted runs; edges.npy: each pair once
    OUT/work/clusters.npy, remove.npy, clusters.jsonl
    OUT/clean/K.jsonl                    the final documents {"id", "text"}
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from scratchlm.data.dedup import EXACT_PARTS, DedupConfig, band_pairs, cluster_pairs, exact_duplicates, exact_hash_shard, \
    largest_clusters, signature_shard, write_kept
from scratchlm.data.normalize import NormalizeConfig, NormalizeStats, normalize_text
from scratchlm.data.quality import QUALITY_FILTERS, Parsed, QualityConfig, c4_clean_lines, token_word_ratio
from scratchlm.data.sources import SourceConfig, format_of, expand_inputs, read_source
from scratchlm.data.toxicity import ToxicityClassifier, ToxicityConfig, WordListScorer
from scratchlm.runs import atomic_write_json, atomic_write_text


@dataclass
class PipelineConfig:
    source: SourceConfig = field(default_factory=SourceConfig)
    normalize: NormalizeConfig = field(default_factory=NormalizeConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    filters: list[str] = field(default_factory=lambda: list(QUALITY_FILTERS))
    """Document-level quality filters to run, in order: gopher_quality, gopher_repetition, c4, fineweb."""
    c4_clean_lines: bool = True
    """Remove C4's boilerplate lines (javascript, cookie policy, < 3 words) before the document filters."""
    toxicity: ToxicityConfig = field(default_factory=ToxicityConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    shard_docs: int = 50_000
    """Documents per work chunk: the unit of parallelism after the first stage."""
    val_fraction: float = 0.1
    """Fraction of documents (by content hash) in val.bin when tokenizing."""
    seed: int = 0
    """Seed of the train/val split hash."""
    examples_per_reason: int = 3
    """Removed documents shown in the report for each reason (first 300 characters each)."""


# --------------------------------------------------------------------------------------------------
# stage 1: read + normalise + filter one input (runs in a worker)

_CACHE: dict = {}  # per worker process: loaded tokenizer, word list, classifier


def _cached(kind: str, path: str | None):
    if path is None:
        return None
    key = (kind, str(path))
    if key not in _CACHE:
        if kind == "tokenizer":
            from scratchlm.tokenizer import load_tokenizer

            _CACHE[key] = load_tokenizer(path)
        elif kind == "words":
            _CACHE[key] = WordListScorer.from_file(path)
        else:
            _CACHE[key] = ToxicityClassifier.load(path)
    return _CACHE[key]


def document_reason(text: str, cfg: PipelineConfig, tokenizer=None, words=None, classifier=None) -> str | None:
    """Why this (normalised, cleaned) document is dropped, or None to keep it. The filter chain in one place."""
    if not text.strip():
        return "empty"
    doc = Parsed(text)
    for name in cfg.filters:
        if name not in QUALITY_FILTERS:
            raise ValueError(f"unknown filter {name!r}: choose from {', '.join(QUALITY_FILTERS)}")
        reason = QUALITY_FILTERS[name](doc, cfg.quality)
        if reason:
            return reason
    if token_word_ratio(doc, cfg.quality, tokenizer):
        return "token_word_ratio"
    if words is not None and words.density(text) > cfg.toxicity.max_word_density:
        return "toxic_words"
    if classifier is not None and classifier.predict_proba([text])[0] >= cfg.toxicity.classifier_threshold:
        return "toxic_classifier"
    return None


def _bump(stats: dict, reason: str, text: str, n_examples: int) -> None:
    r = stats["removed"].setdefault(reason, {"docs": 0, "bytes": 0, "examples": []})
    r["docs"] += 1
    r["bytes"] += len(text.encode("utf-8", "surrogatepass"))
    if len(r["examples"]) < n_examples:
        r["examples"].append(text[:300])


def filter_input(path: str, index: int, out_dir: str, cfg: PipelineConfig, tokenizer_dir: str | None = None) -> dict:
    """Read one input, normalise and filter its documents, write the survivors in chunks of cfg.shard_docs."""
    tokenizer = _cached("tokenizer", tokenizer_dir)
    words = _cached("words", cfg.toxicity.word_list)
    classifier = _cached("classifier", cfg.toxicity.classifier)
    problems: list = []
    norm = NormalizeStats()
    stats = {"input": path, "docs_in": 0, "bytes_in": 0, "docs_out": 0, "bytes_out": 0, "c4_lines_removed": 0,
             "removed": {}, "outputs": []}
    chunk: list[str] = []

    def flush():
        out = Path(out_dir) / f"{index:05d}_{len(stats['outputs']):03d}.jsonl"
        atomic_write_text(out, "".join(chunk))
        stats["outputs"].append([str(out), len(chunk)])
        chunk.clear()

    for doc in read_source(path, cfg.source, problems):
        raw = doc["text"]
        stats["docs_in"] += 1
        stats["bytes_in"] += len(raw.encode("utf-8", "surrogatepass"))  # JSON "\\ud800" escapes are lone surrogates too
        text = normalize_text(raw, cfg.normalize, norm)
        if cfg.c4_clean_lines and "c4" in cfg.filters:
            text, n_lines = c4_clean_lines(text, cfg.quality)
            stats["c4_lines_removed"] += n_lines
        reason = document_reason(text, cfg, tokenizer, words, classifier)
        if reason:
            _bump(stats, reason, text or raw, cfg.examples_per_reason)
            continue
        stats["docs_out"] += 1
        stats["bytes_out"] += len(text.encode("utf-8"))
        chunk.append(json.dumps({"id": str(doc["id"]), "text": text}, ensure_ascii=False) + "\n")
        if len(chunk) >= cfg.shard_docs:
            flush()
    if chunk or not stats["outputs"]:
        flush()
    stats["problems"] = [asdict(p) for p in problems]
    stats["normalize"] = asdict(norm)
    return stats


# --------------------------------------------------------------------------------------------------
# the chain

def _merge_filter_stats(all_stats: list[dict], n_examples: int) -> dict:
    merged = {"docs_in": 0, "bytes_in": 0, "docs_out": 0, "bytes_out": 0, "c4_lines_removed": 0, "removed": {},
              "problems": [], "normalize": {}}
    for s in all_stats:
        for k in ("docs_in", "bytes_in", "docs_out", "bytes_out", "c4_lines_removed"):
            merged[k] += s[k]
        for reason, r in s["removed"].items():
            m = merged["removed"].setdefault(reason, {"docs": 0, "bytes": 0, "examples": []})
            m["docs"] += r["docs"]
            m["bytes"] += r["bytes"]
            m["examples"] = (m["examples"] + r["examples"])[:n_examples]
        merged["problems"] += s["problems"]
        for k, v in s["normalize"].items():
            merged["normalize"][k] = merged["normalize"].get(k, 0) + v
    return merged


def run_filters(inputs: list[str], out_dir: str | Path, cfg: PipelineConfig, executor, tokenizer_dir=None) -> tuple[list, dict]:
    """Stage 1 over all inputs. Returns ([(chunk path, n docs)], merged stats)."""
    paths = expand_inputs(inputs)
    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    tasks = [(p, i, str(d), cfg, tokenizer_dir) for i, p in enumerate(paths)]
    stats = executor.map(filter_input, tasks, desc="filter")
    chunks = [tuple(o) for s in stats for o in s["outputs"]]
    return chunks, _merge_filter_stats(stats, cfg.examples_per_reason)


def run_dedup(chunks: list[tuple[str, int]], work: str | Path, out_dir: str | Path, cfg: DedupConfig, executor) -> tuple[list, dict]:
    """Exact then near dedup over JSONL chunks; writes the survivors to out_dir. Returns (outputs, stats).

    Every step is a map over chunks, hash ranges or bands whose records go through sorted runs on disk (dedup.py),
    so no process holds the whole corpus's hashes, signatures or pairs; only the union-find holds the documents
    that have a near-duplicate.
    """
    work, out = Path(work), Path(out_dir)
    for sub in ("exact", "signatures", "buckets", "pairs"):
        (work / sub).mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    counts = [n for _, n in chunks]
    offsets = [0] + np.cumsum(counts).astype(int).tolist()
    n_docs = offsets[-1]
    buf = cfg.buffer_bytes
    stats: dict = {"docs_in": n_docs, "exact_removed": 0, "near": None}
    removed_files: list[str] = []  # sorted runs of removed document ids, exact then near
    if cfg.exact and n_docs:
        runs = executor.map(exact_hash_shard, [(c, offsets[k], str(work / "exact" / f"{k:05d}.npy"))
                                               for k, (c, _) in enumerate(chunks)], desc="exact hashes")
        parts = executor.map(exact_duplicates, [(runs, p, EXACT_PARTS, str(work / "exact" / f"removed_{p:02d}"), buf)
                                                for p in range(EXACT_PARTS)], desc="exact dedup")
        removed_files += [f for p in parts for f in p["files"]]
        stats["exact_removed"] = sum(p["removed"] for p in parts)
    if cfg.near and n_docs:
        mh = cfg.minhash
        sig_files = [str(work / "signatures" / f"{k:05d}.npy") for k in range(len(chunks))]
        band_runs = executor.map(signature_shard, [(c, offsets[k], removed_files, sig_files[k], str(work / "buckets"), k, mh)
                                                   for k, (c, _) in enumerate(chunks)], desc="minhash")
        pairs = executor.map(band_pairs, [([r[b] for r in band_runs], str(work / "pairs" / f"band_{b:02d}"), buf,
                                           cfg.min_jaccard, sig_files, offsets) for b in range(mh.bands)], desc="lsh")
        names = [Path(c).name for c, _ in chunks]
        pair_files = [f for p in pairs for f in p["files"]]
        # one task, so on Ray the reduce runs on the cluster too (a local executor runs a single task in-process)
        stats["near"] = executor.map(cluster_pairs, [(pair_files, n_docs, str(work), names, offsets, buf)],
                                     desc="clusters")[0]
        stats["near"]["candidate_pairs"] = sum(p["pairs"] for p in pairs)
        if cfg.min_jaccard > 0:
            stats["near"]["rejected_pairs"] = sum(p["rejected"] for p in pairs)
        removed_files.append(str(work / "remove.npy"))
    outs = [str(out / f"{k:05d}.jsonl") for k in range(len(chunks))]
    kept = executor.map(write_kept, [(c, offsets[k], n, removed_files, o) for k, ((c, n), o) in enumerate(zip(chunks, outs))],
                        desc="write")
    stats["docs_out"] = sum(k["docs_out"] for k in kept)
    stats["bytes_out"] = sum(k["bytes_out"] for k in kept)
    stats["largest_clusters"] = _largest_clusters(work / "clusters.jsonl", chunks) if cfg.near and n_docs else []
    return [(o, k["docs_out"]) for o, k in zip(outs, kept)], stats


def _largest_clusters(path: Path, chunks, top: int = 5) -> list[dict]:
    """The biggest duplicate clusters with a snippet of their first two members, for the report."""
    by_name = {Path(c).name: c for c, _ in chunks}
    out = []
    for c in largest_clusters(path, top):
        snippets = []
        for name, row in c["refs"][:2]:
            with open(by_name[name], encoding="utf-8") as f:
                for i, line in enumerate(f):
                    if i == row:
                        snippets.append(json.loads(line)["text"][:200])
                        break
        out.append({"size": c["size"], "members": c["refs"][:10], "examples": snippets})
    return out


def iter_clean_texts(files: list[str]):
    for path in files:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    yield json.loads(line)["text"]


def run_pipeline(inputs: list[str], out_dir: str | Path, cfg: PipelineConfig | None = None, tokenizer_dir: str | None = None,
                 executor=None, progress: bool = True) -> dict:
    """The whole chain; returns the report (also written to OUT/report.json)."""
    from scratchlm.data.executors import LocalExecutor

    cfg = cfg or PipelineConfig()
    executor = executor or LocalExecutor(progress=progress)
    out = Path(out_dir)
    work = out / "work"
    chunks, fstats = run_filters(inputs, work / "filtered", cfg, executor, tokenizer_dir)
    clean, dstats = run_dedup(chunks, work, out / "clean", cfg.dedup, executor)
    report = {
        "inputs": [str(i) for i in inputs],
        "executor": getattr(executor, "name", type(executor).__name__),
        "docs_in": fstats["docs_in"], "bytes_in": fstats["bytes_in"],
        "docs_out": dstats["docs_out"], "bytes_out": dstats["bytes_out"],
        "removed": fstats["removed"],
        "c4_lines_removed": fstats["c4_lines_removed"],
        "normalize": fstats["normalize"],
        "problems": fstats["problems"],
        "dedup": dstats,
        "clean_files": [c for c, _ in clean],
        "config": asdict(cfg),
    }
    if dstats["exact_removed"]:
        report["removed"]["exact_duplicate"] = {"docs": dstats["exact_removed"], "bytes": None, "examples": []}
    if dstats["near"] and dstats["near"]["removed"]:
        report["removed"]["near_duplicate"] = {"docs": dstats["near"]["removed"], "bytes": None,
                                               "examples": [c["examples"][0] for c in dstats["largest_clusters"] if c["examples"]]}
    if not report["docs_out"]:  # never tokenize nothing and call it done: say what removed everything
        atomic_write_json(out / "report.json", report)
        raise EmptyOutputError(report, out / "report.json")
    if tokenizer_dir is not None:
        from scratchlm.data.shards import write_shards_split

        manifest = write_shards_split(out, iter_clean_texts([c for c, _ in clean]), str(tokenizer_dir),
                                      val_fraction=cfg.val_fraction, seed=cfg.seed, progress=progress,
                                      num_workers=getattr(executor, "workers", None), executor=executor,
                                      source={"pipeline": str(out / "report.json"), "inputs": report["inputs"]})
        report["tokens"] = {"n_tokens": manifest["n_tokens"], "n_docs": manifest["n_docs"], "dtype": manifest["dtype"]}
    atomic_write_json(out / "report.json", report)
    return report


# what to loosen when one reason removed everything: the config key behind each common reason
KNOBS = {
    "gopher_word_count": "quality.min_words", "gopher_mean_word_length": "quality.min_mean_word_length",
    "gopher_symbol_ratio": "quality.max_symbol_word_ratio", "gopher_alpha_words": "quality.min_alpha_words_ratio",
    "gopher_stop_words": "quality.min_stop_words", "c4_min_sentences": "quality.c4_min_sentences",
    "fineweb_line_punct": "quality.min_line_punct_ratio", "fineweb_short_lines": "quality.max_short_line_ratio",
    "token_word_ratio": "quality.max_tokens_per_word", "toxic_words": "toxicity.max_word_density",
    "toxic_classifier": "toxicity.classifier_threshold",
}
STEPS = [("gopher", "quality filter (gopher)"), ("c4", "quality filter (c4)"), ("fineweb", "quality filter (fineweb)"),
         ("token_word_ratio", "token-ratio filter"), ("toxic", "toxicity filter"), ("exact_duplicate", "exact dedup"),
         ("near_duplicate", "near dedup"), ("empty", "normalisation (empty text)")]


def empty_output_message(report: dict) -> str:
    """One line for a run that kept nothing: which step removed how many documents, and what to loosen."""
    n_in = report["docs_in"]
    if not n_in:
        problems = [f"{p['path']}" + (f":{p['line']}" if p.get("line") else "") + f": {p['problem']}"
                    for p in report.get("problems", [])]
        why = ("; ".join(problems[:5]) + (f" (and {len(problems) - 5} more)" if len(problems) > 5 else "")
               if problems else "every file was blank")
        return (f"0 documents read from {len(report['inputs'])} input(s): {why}; check --input, --text-field "
                "and the formats (.txt .md .jsonl .json .parquet, optionally .gz/.zst)")
    by_step: dict[str, list] = {}
    for reason, r in sorted(report["removed"].items(), key=lambda kv: -kv[1]["docs"]):
        step = next((name for prefix, name in STEPS if reason.startswith(prefix)), reason)
        by_step.setdefault(step, []).append((reason, r["docs"]))
    parts = [f"{step} removed {sum(n for _, n in rs):,}" + (f" ({', '.join(f'{r} {n:,}' for r, n in rs)})"
                                                            if len(rs) > 1 or rs[0][0] != step else "")
             for step, rs in by_step.items()]
    top = max(report["removed"], key=lambda k: report["removed"][k]["docs"]) if report["removed"] else None
    cfg = report.get("config", {})
    hints = []
    if top in KNOBS:
        hints.append(f"loosen with --set {KNOBS[top]}=...")
    rest = [f for f in cfg.get("filters", []) if f != _filter_of(top or "")]
    if _filter_of(top or "") and rest:
        hints.append(f"skip that filter with --set filters={','.join(rest)}")
    if cfg.get("source", {}).get("text_split") == "file" and any(
            format_of(str(i)) == "text" and not str(i).startswith("hf:") for i in report.get("inputs", [])):
        hints.append("use --text-split paragraph (a whole file is judged as one document)")
    return f"0 of {n_in:,} documents kept: {', '.join(parts)}" + ("; " + "; or ".join(hints) if hints else "")


def _filter_of(reason: str) -> str | None:
    """The filter in QUALITY_FILTERS that gives this reason code."""
    if reason.startswith("gopher_dup"):
        return "gopher_repetition"
    for prefix, name in (("gopher_", "gopher_quality"), ("c4_", "c4"), ("fineweb_", "fineweb")):
        if reason.startswith(prefix):
            return name
    return None


class EmptyOutputError(ValueError):
    """Raised when the filters and dedup keep no document: an empty output is not a result."""

    def __init__(self, report: dict, report_path=None):
        self.report = report
        where = f" (report: {report_path})" if report_path else ""
        super().__init__(empty_output_message(report) + where)


def check_not_empty(report: dict, report_path=None) -> None:
    if not report["docs_out"]:
        raise EmptyOutputError(report, report_path)


def format_report(report: dict) -> str:
    """The report as a plain-text table: what went in, what each filter removed, what came out."""
    n_in, b_in = report["docs_in"], report["bytes_in"]
    lines = [f"{'':28s}{'documents':>12s}{'%':>8s}{'MB':>10s}",
             f"{'input':28s}{n_in:12,d}{100.0:8.1f}{b_in / 1e6:10.2f}"]
    for reason, r in sorted(report["removed"].items(), key=lambda kv: -kv[1]["docs"]):
        mb = f"{r['bytes'] / 1e6:10.2f}" if r.get("bytes") is not None else f"{'':>10s}"
        lines.append(f"  - {reason:24s}{r['docs']:12,d}{100 * r['docs'] / max(n_in, 1):8.1f}{mb}")
    lines.append(f"{'output':28s}{report['docs_out']:12,d}{100 * report['docs_out'] / max(n_in, 1):8.1f}"
                 f"{report['bytes_out'] / 1e6:10.2f}")
    near = report["dedup"].get("near")
    if near:
        lines.append(f"duplicate clusters: {near['clusters']:,} (largest {near['largest']}), "
                     f"{near['removed']:,} near-duplicates removed; exact duplicates removed: {report['dedup']['exact_removed']:,}")
    nz = report.get("normalize", {})
    if nz.get("invalid_utf8_chars"):
        lines.append(f"invalid UTF-8: {nz['invalid_utf8_chars']:,} bytes in {nz['documents_with_invalid_utf8']:,} documents (replaced)")
    if report.get("c4_lines_removed"):
        lines.append(f"C4 line cleaning removed {report['c4_lines_removed']:,} lines")
    for p in report.get("problems", []):
        where = p["path"] + (f":{p['line']}" if p.get("line") else "")
        lines.append(f"skipped {where}: {p['problem']} ({p['detail'][:120]})")
    if "tokens" in report:
        t = report["tokens"]
        lines.append(f"tokens: train {t['n_tokens']['train']:,} ({t['n_docs']['train']:,} docs), "
                     f"val {t['n_tokens']['val']:,} ({t['n_docs']['val']:,} docs), {t['dtype']}")
    return "\n".join(lines)

