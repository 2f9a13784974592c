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
from scratchlm.config import apply_overrides, load_config, load_toml
from scratchlm.data.quality import PRESETS, QUALITY_FILTERS, Parsed, QualityConfig, c4_clean_lines, get_preset, \
    token_word_ratio
from scratchlm.data.sources import SourceConfig, format_of, expand_inputs, input_kind, is_code, read_source
from scratchlm.data.toxicity import ToxicityConfig, WordListScorer, load_classifier
from scratchlm.runs import atomic_write_json, atomic_write_text


@dataclass
class PipelineConfig:
    preset: str = "web"
    """The filter preset these settings start from (quality.PRESETS): web, books (or prose), code, chat, none, or
    auto (`data prepare`'s default: each input file gets the preset for what it holds, KIND_PRESETS). A preset sets
    filters, c4_clean_lines, quality.*, source.text_split and normalize.collapse_whitespace, and any of them can
    still be --set. The dataclass defaults are the web preset; preset_config() and plan_inputs() apply the others."""
    source: SourceConfig = field(default_factory=SourceConfig)
    normalize: NormalizeConfig = field(default_factory=NormalizeConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    filters: list[str] = field(default_factory=lambda: list(PRESETS["web"].filters))
    """Document-level quality filters to run, in order: gopher_quality, gopher_repetition, c4, fineweb, code."""
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
# presets: the settings for each kind of input

KIND_PRESETS = {"text": "books", "code": "code", "chat": "chat", "rows": "web"}
"""The preset "auto" gives each kind of input (sources.input_kind): plain text is taken for prose, rows of a
dataset with a text field (.jsonl, .parquet, hf:) for web pages, as FineWeb's and C4's are."""
KIND_NAMES = {"text": "plain text", "code": "source code", "chat": "chat-shaped rows", "rows": "rows with a text field"}


def preset_values(name: str) -> dict:
    """A preset (quality.PRESETS) as config values: the defaults that a TOML file and --set then override."""
    key, p = get_preset(name)
    return {"preset": key, "filters": list(p.filters), "c4_clean_lines": p.c4_clean_lines, "quality": dict(p.quality),
            "source": {"text_split": p.text_split}, "normalize": {"collapse_whitespace": p.collapse_whitespace},
            "toxicity": dict(p.toxicity)}


def preset_config(name: str, config: str | Path | None = None, overrides: list[str] | None = None) -> PipelineConfig:
    """PipelineConfig of a named preset <- a TOML file <- --set overrides."""
    cfg = load_config(PipelineConfig, config, overrides, defaults=preset_values(name))
    cfg.preset = get_preset(name)[0]
    return cfg


@dataclass
class Plan:
    """Which settings filter which input: one PipelineConfig per preset in use, and each input file's preset."""

    configs: dict[str, PipelineConfig]
    files: dict[str, str]
    """Input file -> preset name."""
    chosen_by: str = ""
    """"" when each file's preset was chosen by what it holds (auto), else what named it ("--preset books")."""
    kinds: dict[str, str] = field(default_factory=dict)
    """Input file -> what it holds (sources.input_kind), when auto chose by it."""

    @property
    def main(self) -> PipelineConfig:
        """The settings no preset changes (dedup, val split, seed, chunking) are read from this one."""
        return next(iter(self.configs.values()))

    def for_file(self, path: str) -> PipelineConfig:
        return self.configs[self.files[path]] if path in self.files else self.main

    def describe(self) -> list[str]:
        """One line per preset in use: its name, why it was chosen, and how its inputs are cut into documents."""
        lines = []
        for name, cfg in self.configs.items():
            files = [f for f, n in self.files.items() if n == name]
            shapes = sorted({_shape(f) for f in files}, key=list(KIND_NAMES).index)
            kinds = sorted({self.kinds.get(f, _shape(f)) for f in files}, key=list(KIND_NAMES).index)
            why = self.chosen_by or "auto: " + " and ".join(KIND_NAMES[k] for k in kinds)
            splits = list(dict.fromkeys(_split_words(cfg.source, s) for s in shapes))
            lines.append(f"preset {name} ({why}, {len(files):,} file{'s' * (len(files) != 1)}), "
                         f"split: {'; '.join(splits) or _split_words(cfg.source, 'text')}")
        if not self.chosen_by:
            lines.append(f"  (choose with --preset {'|'.join(PRESETS)} and --text-split file|paragraph|line|chapter)")
        return lines


def _shape(path: str) -> str:
    """"code", "text" or "rows": what decides how an input is cut into documents."""
    if is_code(path):
        return "code"
    return "text" if format_of(path) == "text" and not str(path).startswith("hf:") else "rows"


def _split_words(source: SourceConfig, shape: str) -> str:
    if shape == "rows":
        return "one document per row"
    split = source.text_split
    if split == "auto":
        split = "file" if shape == "code" else "chapter"
    return {"file": "one document per file", "paragraph": "one document per blank-line paragraph",
            "line": "one document per line",
            "chapter": f"chapters or blank-line paragraphs, joined to >= {source.min_doc_chars:,} chars",
            }.get(split, f"documents separated by {split!r}")


def plan_inputs(inputs: list[str], preset: str | None = None, config: str | Path | None = None,
                overrides: list[str] | None = None, source: dict | None = None) -> Plan:
    """The settings for each input: a preset's values <- the TOML `config` <- `overrides` (--set) <- `source`
    (SourceConfig fields given as flags, e.g. text_split). The preset is `preset` (--preset), else the config's
    `preset` key, else "auto": each file gets the preset for what it holds (KIND_PRESETS, sources.input_kind)."""
    data = apply_overrides(load_toml(config) if config else {}, overrides or [], PipelineConfig)
    name = preset or data.get("preset") or "auto"
    if name == "auto":
        chosen_by = ""
    elif preset:
        chosen_by = f"--preset {preset}"
    elif "preset" in apply_overrides({}, overrides or [], PipelineConfig):
        chosen_by = f"--set preset={name}"
    else:
        chosen_by = f"preset = {name!r} in {config}"
    paths = expand_inputs(inputs)
    if name == "auto":
        sniff = SourceConfig(text_field=(source or {}).get("text_field", data.get("source", {}).get("text_field", "text")))
        kinds = {p: input_kind(p, sniff) for p in paths}
        files = {p: KIND_PRESETS[k] for p, k in kinds.items()}
    else:
        kinds, files = {}, {p: get_preset(name)[0] for p in paths}
    configs = {}
    for n in dict.fromkeys(files.values()) or [get_preset("web" if name == "auto" else name)[0]]:
        configs[n] = cfg = preset_config(n, config, overrides)
        for k, v in (source or {}).items():
            setattr(cfg.source, k, v)
    return Plan(configs, files, chosen_by, kinds)


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
            _CACHE[key] = load_classifier(path)
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
    stats = {"input": path, "preset": cfg.preset, "docs_in": 0, "bytes_in": 0, "docs_out": 0, "bytes_out": 0,
             "c4_lines_removed": 0, "removed": {}, "outputs": [], "toxicity_scored": 0}
    chunk: list[str] = []
    pending: list[tuple[str, str]] = []  # (id, text) past every filter but the classifier, scored in batches

    def flush():
        out = Path(out_dir) / f"{index:05d}_{len(stats['outputs']):03d}.jsonl"
        atomic_write_text(out, "".join(chunk))
        stats["outputs"].append([str(out), len(chunk)])
        chunk.clear()

    def keep(doc_id: str, text: str):
        stats["docs_out"] += 1
        stats["bytes_out"] += len(text.encode("utf-8"))
        chunk.append(json.dumps({"id": doc_id, "text": text}, ensure_ascii=False) + "\n")
        if len(chunk) >= cfg.shard_docs:
            flush()

    def score_pending():
        # in batches: one call per document costs alt-profanity-check 5 ms (200 documents/s), a batch 0.04 ms
        scores = classifier.predict_proba([t for _, t in pending])
        stats["toxicity_scored"] += len(pending)
        for (doc_id, text), p in zip(pending, scores):
            if p >= cfg.toxicity.classifier_threshold:
                _bump(stats, "toxic_classifier", text, cfg.examples_per_reason)
            else:
                keep(doc_id, text)
        pending.clear()

    for doc in read_source(path, cfg.source, problems):
        raw = doc["text"]
        stats["docs_in"] += 1
        stats["bytes_in"] += len(raw.encode("utf-8", "surrogatepass"))  # JSON "\\ud800" escapes are lone surrogates too
        text = normalize_text(raw, cfg.normalize, norm)
        if cfg.c4_clean_lines and "c4" in cfg.filters:
            text, n_lines = c4_clean_lines(text, cfg.quality)
            stats["c4_lines_removed"] += n_lines
        reason = document_reason(text, cfg, tokenizer, words)  # the classifier, last, is applied below
        if reason:
            _bump(stats, reason, text or raw, cfg.examples_per_reason)
        elif classifier is None:
            keep(str(doc["id"]), text)
        else:
            pending.append((str(doc["id"]), text))
            if len(pending) >= 256 or sum(len(t) for _, t in pending) > 4_000_000:  # memory: 256 short or a few long
                score_pending()
    if pending:
        score_pending()
    if chunk or not stats["outputs"]:
        flush()
    stats["problems"] = [asdict(p) for p in problems]
    stats["normalize"] = asdict(norm)
    return stats


# --------------------------------------------------------------------------------------------------
# the chain

def _merge_filter_stats(all_stats: list[dict], n_examples: int) -> dict:
    merged = {"docs_in": 0, "bytes_in": 0, "docs_out": 0, "bytes_out": 0, "c4_lines_removed": 0, "removed": {},
              "problems": [], "normalize": {}, "presets": {}, "whole_text_files": 0, "toxicity_scored": 0}
    for s in all_stats:
        p = merged["presets"].setdefault(s["preset"], {"files": 0, "docs_in": 0, "bytes_in": 0, "docs_out": 0,
                                                       "bytes_out": 0})
        p["files"] += 1
        for k in ("docs_in", "bytes_in", "docs_out", "bytes_out"):
            p[k] += s[k]
        # a plain-text file read as one document is judged whole: the empty-output hint suggests cutting it
        merged["whole_text_files"] += s["docs_in"] == 1 and _shape(s["input"]) == "text"
        for k in ("docs_in", "bytes_in", "docs_out", "bytes_out", "c4_lines_removed", "toxicity_scored"):
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


def run_filters(inputs: list[str], out_dir: str | Path, cfg: PipelineConfig | Plan, executor,
                tokenizer_dir=None) -> tuple[list, dict]:
    """Stage 1 over all inputs, each with its own settings when `cfg` is a Plan. Returns ([(chunk path, n docs)],
    merged stats)."""
    paths = expand_inputs(inputs)
    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    config_for = cfg.for_file if isinstance(cfg, Plan) else lambda p: cfg
    for name in {config_for(p).toxicity.classifier for p in paths} - {None}:
        _cached("classifier", name)  # a missing backend or folder fails here, once; forked workers inherit the model
    tasks = [(p, i, str(d), config_for(p), tokenizer_dir) for i, p in enumerate(paths)]
    stats = executor.map(filter_input, tasks, desc="filter")
    chunks = [tuple(o) for s in stats for o in s["outputs"]]
    main = cfg.main if isinstance(cfg, Plan) else cfg
    return chunks, _merge_filter_stats(stats, main.examples_per_reason)


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


def run_pipeline(inputs: list[str], out_dir: str | Path, cfg: PipelineConfig | Plan | None = None,
                 tokenizer_dir: str | None = None, executor=None, progress: bool = True) -> dict:
    """The whole chain; returns the report (also written to OUT/report.json). `cfg` is one PipelineConfig for every
    input (default: the web preset) or a Plan from plan_inputs, which gives each input its preset."""
    from scratchlm.data.executors import LocalExecutor

    plan = cfg if isinstance(cfg, Plan) else None
    cfg = plan.main if plan else (cfg or PipelineConfig())
    executor = executor or LocalExecutor(progress=progress)
    out = Path(out_dir)
    work = out / "work"
    chunks, fstats = run_filters(inputs, work / "filtered", plan or cfg, executor, tokenizer_dir)
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
    add_filter_summary(report, fstats, plan.configs if plan else {cfg.preset: cfg})
    if dstats["exact_removed"]:
        report["removed"]["exact_duplicate"] = {"docs": dstats["exact_removed"], "bytes": None, "examples": []}
    if dstats["near"] and dstats["near"]["removed"]:
        report["removed"]["near_duplicate"] = {"docs": dstats["near"]["removed"], "bytes": None,
                                               "examples": [c["examples"][0] for c in dstats["largest_clusters"] if c["examples"]]}
    report["warnings"] = report_warnings(report)
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


# what to loosen when a reason removed much or everything: the config key behind each reason
KNOBS = {
    "gopher_word_count": "quality.min_words", "gopher_mean_word_length": "quality.min_mean_word_length",
    "gopher_symbol_ratio": "quality.max_symbol_word_ratio", "gopher_alpha_words": "quality.min_alpha_words_ratio",
    "gopher_stop_words": "quality.min_stop_words", "gopher_bullet_lines": "quality.max_bullet_lines_ratio",
    "gopher_ellipsis_lines": "quality.max_ellipsis_lines_ratio", "gopher_dup_line_frac": "quality.max_dup_line_frac",
    "gopher_dup_para_frac": "quality.max_dup_para_frac", "gopher_dup_line_char_frac": "quality.max_dup_line_char_frac",
    "gopher_dup_para_char_frac": "quality.max_dup_para_char_frac", "gopher_top_": "quality.max_top_ngram_char_frac",
    "gopher_dup_": "quality.max_dup_ngram_char_frac", "c4_min_sentences": "quality.c4_min_sentences",
    "c4_curly_brace": "quality.c4_drop_curly_brace", "fineweb_line_punct": "quality.min_line_punct_ratio",
    "fineweb_short_lines": "quality.max_short_line_ratio", "fineweb_dup_line_chars": "quality.max_dup_line_chars_ratio",
    "fineweb_newlines_per_word": "quality.max_newlines_per_word", "code_max_line_length": "quality.code_max_line_length",
    "code_mean_line_length": "quality.code_max_mean_line_length", "code_alnum_frac": "quality.code_min_alnum_frac",
    "code_generated": "quality.code_drop_generated", "token_word_ratio": "quality.max_tokens_per_word",
    "toxic_words": "toxicity.max_word_density", "toxic_classifier": "toxicity.classifier_threshold",
    "exact_duplicate": "dedup.exact", "near_duplicate": "dedup.near",
}
STEPS = [("gopher", "quality filter (gopher)"), ("c4", "quality filter (c4)"), ("fineweb", "quality filter (fineweb)"),
         ("code", "quality filter (code)"), ("token_word_ratio", "token-ratio filter"), ("toxic", "toxicity filter"),
         ("exact_duplicate", "exact dedup"), ("near_duplicate", "near dedup"), ("empty", "normalisation (empty text)")]
# what each reason means, in words; {names} are the thresholds of the run (QualityConfig and ToxicityConfig fields)
REASONS = {
    "gopher_word_count": "fewer than {min_words:,} or more than {max_words:,} words",
    "gopher_mean_word_length": "mean word length outside {min_mean_word_length:g}-{max_mean_word_length:g} characters",
    "gopher_symbol_ratio": "more than {max_symbol_word_ratio:g} '#' or '...' per word",
    "gopher_bullet_lines": "more than {max_bullet_lines_ratio:.0%} of lines start with a bullet",
    "gopher_ellipsis_lines": "more than {max_ellipsis_lines_ratio:.0%} of lines end in '...'",
    "gopher_alpha_words": "under {min_alpha_words_ratio:.0%} of words hold a letter",
    "gopher_stop_words": "fewer than {min_stop_words} of: the, be, to, of, and, that, have, with",
    "gopher_dup_line_frac": "over {max_dup_line_frac:.0%} of lines repeat an earlier line",
    "gopher_dup_para_frac": "over {max_dup_para_frac:.0%} of paragraphs repeat an earlier one",
    "gopher_dup_line_char_frac": "repeated lines hold over {max_dup_line_char_frac:.0%} of the characters",
    "gopher_dup_para_char_frac": "repeated paragraphs hold over {max_dup_para_char_frac:.0%} of the characters",
    "gopher_top_": "one {n}-word phrase, repeated, covers over {limit:.0%} of the text",
    "gopher_dup_": "repeated {n}-word phrases cover over {limit:.0%} of the text",
    "c4_lorem_ipsum": "placeholder text (lorem ipsum)",
    "c4_curly_brace": "contains '{{' (C4's rule against code)",
    "c4_min_sentences": "fewer than {c4_min_sentences} sentences",
    "fineweb_empty": "no line of text",
    "fineweb_line_punct": "at most {min_line_punct_ratio:.0%} of lines end in . ! ? (menus; also hard-wrapped prose)",
    "fineweb_short_lines": "{max_short_line_ratio:.0%} or more of lines are {short_line_length} characters or shorter",
    "fineweb_dup_line_chars": "duplicated lines hold {max_dup_line_chars_ratio:.0%} or more of the characters",
    "fineweb_newlines_per_word": "more than {max_newlines_per_word:g} line breaks per word (lists)",
    "code_max_line_length": "a line longer than {code_max_line_length:,} characters (minified code or data)",
    "code_mean_line_length": "lines longer than {code_max_mean_line_length:g} characters on average",
    "code_alnum_frac": "under {code_min_alnum_frac:.0%} letters and digits",
    "code_generated": "says in its first lines it was generated",
    "token_word_ratio": "more than {max_tokens_per_word:g} tokens per word (hex, base64, mojibake)",
    "toxic_words": "more than {max_word_density:g} listed words per word",
    "toxic_classifier": "toxicity classifier {classifier} gives P(toxic) of {classifier_threshold:g} or more",
    "exact_duplicate": "the same text as an earlier document (case and spacing ignored)",
    "near_duplicate": "a near-copy of an earlier document (MinHash LSH)",
    "empty": "no text left after normalisation",
}
GROUPS = [("gopher_dup_", "Gopher repetition"), ("gopher_top_", "Gopher repetition"), ("gopher_", "Gopher quality"),
          ("c4_", "C4"), ("fineweb_", "FineWeb"), ("code_", "code"), ("token_word_ratio", "token ratio"),
          ("toxic", "toxicity"), ("exact_duplicate", "duplicates"), ("near_duplicate", "duplicates")]


def filter_group(reason: str) -> str:
    """The filter a reason code belongs to, as the report names it."""
    return next((name for prefix, name in GROUPS if reason.startswith(prefix)), reason)


def describe_reason(reason: str, config: dict) -> str:
    """A reason code in words, with the run's thresholds (`config`: the PipelineConfig as a dict)."""
    values = {**config.get("quality", {}), **config.get("toxicity", {})}
    for prefix, key in (("gopher_top_", "max_top_ngram_char_frac"), ("gopher_dup_", "max_dup_ngram_char_frac")):
        if reason.startswith(prefix) and reason.endswith("gram") and reason[len(prefix):-4].isdigit():
            n = int(reason[len(prefix):-4])
            limit = dict((int(a), b) for a, b in values.get(key, ())).get(n, float("nan"))
            return REASONS[prefix].format(n=n, limit=limit)
    try:
        return REASONS[reason].format(**values) if reason in REASONS else reason
    except (KeyError, ValueError, IndexError):  # a report from an older version, or hand-edited
        return REASONS[reason].split("{")[0].strip() or reason


def _config_for(reason: str, report: dict) -> dict:
    """The settings (as a dict) of the first preset in the run that applies the filter behind `reason`."""
    flt = _filter_of(reason)
    for p in (report.get("presets") or {}).values():
        c = p.get("config")
        if c and (flt is None or flt in c.get("filters", [])):
            return c
    return report.get("config") or {}


def _config_for(reason: str, report: dict) -> dict:
    """The settings (as a dict) of the first preset in the run that applies the filter behind `reason`."""
    flt = _filter_of(reason)
    for p in (report.get("presets") or {}).values():
        c = p.get("config")
        if c and (flt is None or flt in c.get("filters", [])):
            return c
    return report.get("config") or {}


def _knob(reason: str) -> str | None:
    return KNOBS.get(reason) or next((k for p, k in KNOBS.items() if p.endswith("_") and reason.startswith(p)), None)


def add_filter_summary(report: dict, fstats: dict, configs: dict) -> None:
    """What the filters kept, per preset, before dedup: the report's preset table and the bytes dedup removed."""
    report["docs_filtered"], report["bytes_filtered"] = fstats["docs_out"], fstats["bytes_out"]
    report["whole_text_files"] = fstats.get("whole_text_files", 0)
    report["presets"] = {name: {**counts, "config": asdict(configs[name]) if name in configs else None}
                         for name, counts in fstats.get("presets", {}).items()}
    classifiers = sorted({str(c.toxicity.classifier) for n, c in configs.items() if n in fstats.get("presets", {})
                          and c.toxicity.classifier is not None})
    if classifiers:  # which classifier judged how many documents, removed or not
        report["toxicity"] = {"classifiers": classifiers, "scored": fstats.get("toxicity_scored", 0),
                              "removed": fstats["removed"].get("toxic_classifier", {}).get("docs", 0)}


def _groups(report: dict) -> list[tuple[str, int, int | None, list]]:
    """(filter, documents, bytes or None, [(reason, removal)]) per filter, most bytes first."""
    groups: dict[str, list] = {}
    for reason, r in sorted(report["removed"].items(), key=lambda kv: (-(kv[1]["bytes"] or 0), -kv[1]["docs"])):
        groups.setdefault(filter_group(reason), []).append((reason, r))
    out = []
    for name, items in groups.items():
        b = sum(r["bytes"] or 0 for _, r in items)
        if name == "duplicates" and "bytes_filtered" in report:  # dedup counts documents; the bytes are the difference
            b = report["bytes_filtered"] - report["bytes_out"]
        out.append((name, sum(r["docs"] for _, r in items), b if b or name != "duplicates" else None, items))
    return sorted(out, key=lambda g: (-(g[2] or 0), -g[1]))


def report_warnings(report: dict) -> list[str]:
    """A warning when the filters and dedup removed more than half of the bytes: which filter, and what to loosen."""
    b_in = report["bytes_in"]
    groups = _groups(report)
    removed = sum(g[2] or 0 for g in groups)
    if not b_in or removed <= b_in / 2 or not groups:
        return []
    name, _, b, items = groups[0]
    reason, r = max(items, key=lambda kv: kv[1]["bytes"] or 0)
    knob = _knob(reason)
    how = []
    if knob and knob.startswith("dedup."):
        how.append(f"keep duplicates with --set {knob}=false")
    elif knob:
        how.append(f"loosen it with --set {knob}=..." if not knob.endswith(("_drop_curly_brace", "_drop_generated"))
                   else f"turn it off with --set {knob}=false")
    config, flt = _config_for(reason, report), _filter_of(reason)
    if flt and flt in config.get("filters", []):
        how.append(f"leave the filter out with --set filters={','.join(f for f in config['filters'] if f != flt) or '[]'}")
    if config.get("preset", "web") == "web" and name in ("C4", "FineWeb", "Gopher quality", "Gopher repetition"):
        how.append("if this is prose (books, notes) rather than web pages, use --preset books")
    share = f"{100 * b / b_in:.0f}%" if b is not None else "most"
    return [f"warning: {100 * removed / b_in:.0f}% of the bytes were removed, {share} by {name} "
            f"({reason}: {describe_reason(reason, config)}); " + "; or ".join(how)]


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
    whole = report.get("whole_text_files")
    if whole or (whole is None and cfg.get("source", {}).get("text_split") == "file" and any(
            format_of(str(i)) == "text" and not str(i).startswith("hf:") for i in report.get("inputs", []))):
        hints.append("use --text-split paragraph (a whole file is judged as one document)")
    return f"0 of {n_in:,} documents kept: {', '.join(parts)}" + ("; " + "; or ".join(hints) if hints else "")


def _filter_of(reason: str) -> str | None:
    """The filter in QUALITY_FILTERS that gives this reason code."""
    if reason.startswith(("gopher_dup", "gopher_top")):
        return "gopher_repetition"
    for prefix, name in (("gopher_", "gopher_quality"), ("c4_", "c4"), ("fineweb_", "fineweb"), ("code_", "code")):
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


def _size(b: int | None) -> str:
    if b is None:
        return ""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if b >= scale:
            return f"{b / scale:.{2 if b < 10 * scale else 1}f} {unit}"
    return f"{b} B"


def _snippet(text: str, n: int = 90) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= n else flat[: n - 1] + "…"


def format_report(report: dict) -> str:
    """The report as a plain-text table: what went in, what each filter removed (documents, bytes, what the rule
    is, two examples), what came out."""
    n_in, b_in = report["docs_in"], report["bytes_in"]
    presets = report.get("presets") or {}

    def row(name, docs, b):
        pct_b = f"{100 * b / max(b_in, 1):7.1f}" if b is not None else f"{'':7s}"
        return f"{name:36s}{docs:11,d}{100 * docs / max(n_in, 1):7.1f}{_size(b):>11s}{pct_b}"

    lines = [f"{'':36s}{'documents':>11s}{'%':>7s}{'bytes':>11s}{'%':>7s}", row("read", n_in, b_in)]
    for name, p in presets.items():
        if len(presets) > 1:
            lines.append(row(f"  with preset {name} ({p['files']:,} file{'s' * (p['files'] != 1)})", p["docs_in"],
                             p["bytes_in"]))
    for name, docs, b, items in _groups(report):
        lines.append(row(f"removed by {name}" if name != "duplicates" else "removed as duplicates", docs, b))
        for reason, r in items:
            lines.append(row(f"  {reason}", r["docs"], r["bytes"] if name != "duplicates" else None)
                         + f"   {describe_reason(reason, _config_for(reason, report))}")
            lines += [f'      e.g. "{_snippet(e)}"' for e in r.get("examples", [])[:2]]
    lines.append(row("kept", report["docs_out"], report["bytes_out"]))
    near = report["dedup"].get("near")
    if near:
        lines.append(f"duplicate clusters: {near['clusters']:,} (largest {near['largest']}), "
                     f"{near['removed']:,} near-duplicates removed; exact duplicates removed: {report['dedup']['exact_removed']:,}")
    nz = report.get("normalize", {})
    if nz.get("invalid_utf8_chars"):
        lines.append(f"invalid UTF-8: {nz['invalid_utf8_chars']:,} bytes in {nz['documents_with_invalid_utf8']:,} documents (replaced)")
    if report.get("c4_lines_removed"):
        lines.append(f"C4 line cleaning removed {report['c4_lines_removed']:,} lines")
    tox = report.get("toxicity")
    if tox:
        lines.append(f"toxicity classifier {', '.join(tox['classifiers'])}: {tox['scored']:,} documents scored, "
                     f"{tox['removed']:,} removed")
    for p in report.get("problems", []):
        where = p["path"] + (f":{p['line']}" if p.get("line") else "")
        lines.append(f"skipped {where}: {p['problem']} ({p['detail'][:120]})")
    if "tokens" in report:
        t = report["tokens"]
        lines.append(f"tokens: train {t['n_tokens']['train']:,} ({t['n_docs']['train']:,} docs), "
                     f"val {t['n_tokens']['val']:,} ({t['n_docs']['val']:,} docs), {t['dtype']}")
    return "\n".join(lines)

