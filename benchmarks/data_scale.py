"""The data stage at scale: prepare -> tokenize over ~0.25, 0.5 and 1 GB of text, with peak memory, throughput per
stage and named peers measured in the same run.

    .venv/bin/python benchmarks/data_scale.py                         # 0.25, 0.5 and 1 GB (1 GB: ~15 min on 2 cores)
    .venv/bin/python benchmarks/data_scale.py --sizes 0.25 0.5 --workers 2 --work /tmp/scale

Input: TinyWorld (`scratchlm data synth`, generated once at the largest size; smaller sizes are its prefixes) plus,
when ../shared/data is present, the Gutenberg books, Tiny Shakespeare and TinyStories once each (~8 MB of real
text cut into ~300-word documents, spread evenly), written as 64 MB JSONL parts so the filter stage has parallel
work. TinyWorld is generated from templates, so it is highly repetitive: the exact and near duplicate rates are
printed for every size.

Per size, scratchlm.data.pipeline.run_pipeline (web filters, exact + MinHash dedup, tokenize) runs in a child
process with --workers local workers. Printed per stage: wall time and MB/s per core (the stage's input bytes /
wall / workers) and CPU seconds (the process tree's user + system time, which other programs on the cores do not
inflate); the growth of each stage's wall and CPU time per doubling of the input (goal <= 2.1x); and the whole run's
peak memory, two ways: the largest single process (getrusage: the driver and every worker) and the sum over the
process tree (PSS from /proc every 0.5 s: shared pages counted once). The driver's peak is its VmHWM; a worker's
is getrusage(RUSAGE_CHILDREN), which counts the pages it shares with the driver it was forked from.

Peers, on a --peer-mb sample of the same input, one process each (MB/s per core), beside ours on the same sample:
  filters    datatrove's GopherQuality + GopherRepetition + C4 (no terminal-punct rule) + FineWeb filters
             (pip install datatrove spacy) vs our web filter chain
  near dedup datatrove's MinHash stages 1-3 (signatures, buckets, clusters; 5-grams, 14 x 8, as ours; SHA-1
             shingle hashes) vs our MinHash stages (run_dedup with exact=False, one worker)
  tokenize   Hugging Face tokenizers' encode_batch on one thread (our tokenizer's exported tokenizer.json, so the
             same ids) vs our encoder (scratchlm.data.shards.encode_documents)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = REPO.parent / "shared" / "data"
PART_BYTES = 64_000_000
REAL_FILES = ["gutenberg", "tinyshakespeare", "tinystories"]


# --------------------------------------------------------------------------------------------------
# input

def tinyworld(work: Path, gb: float) -> Path:
    """train.txt of a TinyWorld corpus of at least `gb` GB (reused when already there)."""
    out = work / f"tinyworld_{gb:g}GB"
    if not (out / "manifest.json").exists():
        print(f"generating TinyWorld ({gb:g} GB, ~6 MB/s) into {out} ...", flush=True)
        subprocess.run([sys.executable, "-m", "scratchlm", "data", "synth", "--out", str(out), "--size", f"{gb * 1.04:.3f}GB",
                        "--overwrite", "-q"], check=True, cwd=REPO)
    return out / "train.txt"


def real_documents() -> list[str]:
    """The real text beside the repository, once, as ~300-word documents of consecutive paragraphs."""
    docs = []
    for folder in REAL_FILES:
        for f in sorted((DATA / folder).glob("*.txt")) if (DATA / folder).is_dir() else []:
            cur: list[str] = []
            for para in re.split(r"\n\s*\n", f.read_text(encoding="utf-8", errors="replace").replace("\r\n", "\n")):
                if para.strip():
                    cur.append(para.strip())
                if sum(len(p.split()) for p in cur) >= 300:
                    docs.append("\n\n".join(cur))
                    cur = []
    return docs


def build_input(work: Path, train_txt: Path, gb: float, real: list[str]) -> tuple[Path, dict]:
    """JSONL parts of `gb` GB: TinyWorld documents (blank-line separated) with the real documents spread evenly."""
    out = work / f"input_{gb:g}GB"
    done = work / f"input_{gb:g}GB.json"  # beside the folder: everything inside it is read as input
    if done.exists():
        return out, json.loads(done.read_text())
    out.mkdir(parents=True, exist_ok=True)
    target = int(gb * 1e9)
    stride = target / len(real) if real else float("inf")  # one real document every `stride` bytes of input
    size = n_docs = n_real = part = part_size = 0
    f = open(out / f"part_{part:03d}.jsonl", "w", encoding="utf-8")
    with open(train_txt, encoding="utf-8") as src:
        buf: list[str] = []
        for line in src:
            if line.strip():
                buf.append(line.rstrip("\n"))
                continue
            if not buf:
                continue
            docs = ["\n".join(buf)]
            buf = []
            if n_real < len(real) and size >= n_real * stride:
                docs.append(real[n_real])
                n_real += 1
            for d in docs:
                line_out = json.dumps({"text": d}, ensure_ascii=False) + "\n"
                f.write(line_out)
                size += len(d.encode())
                part_size += len(line_out)
                n_docs += 1
            if part_size >= PART_BYTES:
                f.close()
                part, part_size = part + 1, 0
                f = open(out / f"part_{part:03d}.jsonl", "w", encoding="utf-8")
            if size >= target:
                break
    f.close()
    if size < target * 0.98:
        sys.exit(f"{train_txt} holds only {size / 1e9:.2f} GB of documents: delete its folder and re-run")
    info = {"bytes": size, "docs": n_docs, "real_docs": n_real,
            "real_bytes": sum(len(d.encode()) for d in real[:n_real]), "parts": part + 1}
    done.write_text(json.dumps(info))
    return out, info


# --------------------------------------------------------------------------------------------------
# one pipeline run (child process)

def child(spec: dict) -> None:
    from scratchlm.data.executors import LocalExecutor
    from scratchlm.data.pipeline import PipelineConfig, run_pipeline

    class TimingExecutor(LocalExecutor):
        """The local pool, timing each stage (map) and the tokenizer's stream of batches (imap)."""

        def __init__(self, workers):
            super().__init__(workers, progress=False)
            self.times: dict[str, float] = {}
            self.cpu: dict[str, float] = {}
            self.t0 = time.perf_counter()

        def map(self, fn, tasks, desc=""):
            t, c = time.perf_counter(), cpu_seconds()
            out = super().map(fn, tasks, desc)  # the pool is joined here, so its workers' CPU time is counted
            self.times[desc] = self.times.get(desc, 0.0) + time.perf_counter() - t
            self.cpu[desc] = self.cpu.get(desc, 0.0) + cpu_seconds() - c
            print(f"  [{spec['label']}] {desc:13s} {self.times[desc]:8.1f} s  ({len(tasks)} tasks; "
                  f"{time.perf_counter() - self.t0:.0f} s so far)", flush=True)
            return out

        def imap(self, fn, tasks, window=None):
            t, c = time.perf_counter(), cpu_seconds()
            docs = [0, 0]  # documents sent, documents at the last progress line

            def counted():
                for task in tasks:  # (tokenizer, texts, dtype)
                    docs[0] += len(task[1])
                    if docs[0] - docs[1] >= 250_000:
                        docs[1] = docs[0]
                        print(f"  [{spec['label']}] tokenize      {docs[0]:,} documents sent ...", flush=True)
                    yield task

            yield from super().imap(fn, counted(), window)
            self.times["tokenize"] = time.perf_counter() - t
            self.cpu["tokenize"] = cpu_seconds() - c
            print(f"  [{spec['label']}] tokenize      {self.times['tokenize']:8.1f} s", flush=True)

    ex = TimingExecutor(spec["workers"])
    t0 = time.perf_counter()
    report = run_pipeline([spec["input"]], spec["out"], PipelineConfig(), spec["tokenizer"], ex, progress=False)
    wall = time.perf_counter() - t0
    # the driver's own peak: VmHWM starts afresh at exec, while getrusage's maxrss keeps the peak of the process
    # that forked us (the benchmark, with datatrove and spaCy loaded)
    self_rss = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
    child_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # the largest worker (all are joined)
    filtered = report["docs_in"] - sum(r["docs"] for k, r in report["removed"].items()
                                       if k not in ("exact_duplicate", "near_duplicate"))
    filtered_bytes = report["bytes_in"] - sum(r["bytes"] or 0 for k, r in report["removed"].items()
                                              if k not in ("exact_duplicate", "near_duplicate"))
    Path(spec["result"]).write_text(json.dumps({
        "times": ex.times, "cpu": ex.cpu, "wall": wall, "cpu_total": cpu_seconds(), "max_rss_mb": max(self_rss, child_rss) / 1024,
        "driver_rss_mb": self_rss / 1024, "worker_rss_mb": child_rss / 1024,
        "docs_in": report["docs_in"], "bytes_in": report["bytes_in"], "docs_filtered": filtered,
        "bytes_filtered": filtered_bytes, "docs_out": report["docs_out"], "bytes_out": report["bytes_out"],
        "exact_removed": report["dedup"]["exact_removed"], "near": report["dedup"]["near"],
        "tokens": report.get("tokens"), "preset": report.get("config", {}).get("preset"),
    }))


def cpu_seconds() -> float:
    """User + system CPU time of this process and its joined workers: unlike wall time, it does not grow when other
    programs share the cores, so its growth per doubling is the one to trust on a busy machine."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


class TreeMemory(threading.Thread):
    """Peak of the summed PSS (and RSS) of a process and its descendants, sampled from /proc."""

    def __init__(self, pid: int, every: float = 0.5):
        super().__init__(daemon=True)
        self.pid, self.every = pid, every
        self.peak_pss = self.peak_rss = self.peak_at = 0
        self.peak_each: list[int] = []
        self.stop = threading.Event()

    def tree(self) -> list[int]:
        children: dict[int, list[int]] = {}
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    ppid = int(open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
                children.setdefault(ppid, []).append(int(d))
        out, todo = [], [self.pid]
        while todo:
            p = todo.pop()
            out.append(p)
            todo += children.get(p, [])
        return out

    def run(self) -> None:
        t0 = time.perf_counter()
        while not self.stop.is_set():
            pss = rss = 0
            each = []
            for p in self.tree():
                try:
                    mine = {}
                    for line in open(f"/proc/{p}/smaps_rollup"):
                        if line.startswith(("Pss:", "Rss:")):
                            mine[line[:3]] = int(line.split()[1])
                    pss, rss = pss + mine.get("Pss", 0), rss + mine.get("Rss", 0)
                    each.append(mine.get("Pss", 0) // 1024)
                except OSError:
                    pass
            if pss > self.peak_pss:  # where the peak was: seconds into the run, PSS MB of each process
                self.peak_at, self.peak_each = round(time.perf_counter() - t0), each
            self.peak_pss, self.peak_rss = max(self.peak_pss, pss), max(self.peak_rss, rss)
            self.stop.wait(self.every)


def run_size(label: str, input_dir: Path, out: Path, tokenizer: Path, workers: int) -> dict:
    result = out.parent / f"{out.name}.result.json"
    spec = {"label": label, "input": str(input_dir), "out": str(out), "tokenizer": str(tokenizer),
            "workers": workers, "result": str(result)}
    env = {k: v for k, v in os.environ.items() if k != "RAYON_RS_NUM_CPUS"}
    proc = subprocess.Popen([sys.executable, __file__, "--child", json.dumps(spec)], cwd=REPO, env=env)
    mem = TreeMemory(proc.pid)
    mem.start()
    if proc.wait():
        sys.exit(f"the {label} run failed (exit {proc.returncode})")
    mem.stop.set()
    mem.join()
    res = json.loads(result.read_text())
    res["tree_pss_mb"], res["tree_rss_mb"] = mem.peak_pss / 1024, mem.peak_rss / 1024
    res["tree_peak_at_s"], res["tree_peak_pss_each_mb"] = mem.peak_at, mem.peak_each
    return res


# --------------------------------------------------------------------------------------------------
# peers (this process, one thread each)

def sample_texts(input_dir: Path, mb: float) -> list[str]:
    texts, size = [], 0
    for part in sorted(input_dir.glob("part_*.jsonl")):
        with open(part, encoding="utf-8") as f:
            for line in f:
                texts.append(json.loads(line)["text"])
                size += len(texts[-1].encode())
                if size >= mb * 1e6:
                    return texts
    return texts


def timed(fn, *args):
    t = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t, out


def ours_filters(texts):
    from scratchlm.data.pipeline import PipelineConfig, document_reason
    from scratchlm.data.quality import c4_clean_lines

    cfg = PipelineConfig()
    return [document_reason(c4_clean_lines(t, cfg.quality)[0], cfg) is None for t in texts]


def datatrove_filters(texts):
    from datatrove.data import Document
    from datatrove.pipeline.filters import (C4QualityFilter, FineWebQualityFilter, GopherQualityFilter,
                                            GopherRepetitionFilter)

    filters = [GopherQualityFilter(), GopherRepetitionFilter(), C4QualityFilter(filter_no_terminal_punct=False),
               FineWebQualityFilter(char_duplicates_ratio=0.1)]  # FineWeb's published value, as data_filter.py
    keep = []
    for i, t in enumerate(texts):
        doc, ok = Document(text=t, id=str(i)), True
        for f in filters:
            r = f.filter(doc)
            if r is False or (isinstance(r, tuple) and r[0] is False):
                ok = False
                break
        keep.append(ok)
    return keep


def ours_near_dedup(texts, work: Path):
    from scratchlm.data.dedup import DedupConfig
    from scratchlm.data.executors import LocalExecutor
    from scratchlm.data.pipeline import run_dedup

    work.mkdir(parents=True, exist_ok=True)
    chunks = []
    for k in range(0, len(texts), 50_000):
        p = work / f"in_{k // 50_000:03d}.jsonl"
        p.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts[k:k + 50_000]))
        chunks.append((str(p), len(texts[k:k + 50_000])))
    t, (_, stats) = timed(run_dedup, chunks, work / "work", work / "clean", DedupConfig(exact=False),
                          LocalExecutor(1, progress=False))
    return t, stats["near"]["removed"]


def datatrove_near_dedup(texts, work: Path):
    from datatrove.data import Document
    from datatrove.pipeline.dedup.minhash import (MinhashConfig, MinhashDedupBuckets, MinhashDedupCluster,
                                                  MinhashDedupSignature)
    from datatrove.utils.hashing import HashConfig

    # 5-grams, 14 buckets x 8 hashes: FineWeb's, as ours. SHA-1 shingle hashes: its default xxhash call passes str,
    # which xxhash >= 4 refuses
    cfg = MinhashConfig(hash_config=HashConfig(precision=64, hash_fc="sha1"))
    docs = [Document(text=t, id=str(i)) for i, t in enumerate(texts)]
    t0 = time.perf_counter()
    MinhashDedupSignature(output_folder=str(work / "sigs"), config=cfg).run(iter(docs), rank=0, world_size=1)
    for b in range(cfg.num_buckets):
        MinhashDedupBuckets(input_folder=str(work / "sigs"), output_folder=str(work / "buckets"),
                            config=cfg).run(rank=b, world_size=cfg.num_buckets)
    MinhashDedupCluster(input_folder=str(work / "buckets"), output_folder=str(work / "remove"), config=cfg).run()
    t = time.perf_counter() - t0
    removed = sum(os.path.getsize(p) // 4 for p in (work / "remove").glob("*.remove"))
    return t, removed


def peers(texts: list[str], tokenizer: Path, work: Path) -> dict:
    import numpy as np

    mb = sum(len(t.encode()) for t in texts) / 1e6
    res: dict = {"sample_mb": mb, "sample_docs": len(texts)}
    print(f"peers on a {mb:.1f} MB sample ({len(texts):,} documents), one process each:", flush=True)
    t, keep = timed(ours_filters, texts)
    res["filters_ours"] = mb / t
    try:
        import datatrove  # noqa: F401

        datatrove_filters(texts[:50])  # warm-up: spaCy's tokenizer loads
        t2, keep2 = timed(datatrove_filters, texts)
        res["filters_datatrove"] = mb / t2
        res["filters_agree"] = float(np.mean(np.array(keep) == np.array(keep2)))
    except ImportError:
        print("  datatrove not installed (pip install datatrove spacy): no filter/MinHash peer", flush=True)
    print(f"  filters     ours {res['filters_ours']:6.2f} MB/s" + (
        f"   datatrove {res['filters_datatrove']:6.2f} MB/s   agree {res['filters_agree']:.1%}"
        if "filters_datatrove" in res else ""), flush=True)
    t, removed = ours_near_dedup(texts, work / "ours_dedup")
    res["minhash_ours"], res["minhash_ours_removed"] = mb / t, removed
    if "filters_datatrove" in res:
        t2, removed2 = datatrove_near_dedup(texts, work / "datatrove_dedup")
        res["minhash_datatrove"], res["minhash_datatrove_removed"] = mb / t2, removed2
    print(f"  near dedup  ours {res['minhash_ours']:6.2f} MB/s (removed {removed:,})" + (
        f"   datatrove {res['minhash_datatrove']:6.2f} MB/s (removed {res['minhash_datatrove_removed']:,})"
        if "minhash_datatrove" in res else ""), flush=True)

    from scratchlm.data.shards import encode_documents
    from scratchlm.tokenizer import load_tokenizer

    tok = load_tokenizer(tokenizer)
    t, (flat, _) = timed(encode_documents, tok, texts, np.dtype(np.uint16))
    res["tokenize_ours"] = mb / t
    try:
        import tokenizers  # RAYON_RS_NUM_CPUS=1 (set at start): one thread, so MB/s per core

        hf = tokenizers.Tokenizer.from_file(str(tokenizer / "tokenizer.json"))
        hf.encode_batch(texts[:100], add_special_tokens=False)
        t2, enc = timed(lambda: hf.encode_batch(texts, add_special_tokens=False))
        res["tokenize_hf"] = mb / t2
        res["tokenize_same_ids"] = sum(len(e.ids) + 1 for e in enc) == len(flat)
    except ImportError:
        print("  tokenizers not installed: no tokenizer peer", flush=True)
    print(f"  tokenize    ours {res['tokenize_ours']:6.2f} MB/s" + (
        f"   HF encode_batch {res['tokenize_hf']:6.2f} MB/s (same token count: {res['tokenize_same_ids']})"
        if "tokenize_hf" in res else ""), flush=True)
    return res


# --------------------------------------------------------------------------------------------------

STAGES = [("filter", "filter"), ("exact", "exact hashes+exact dedup"), ("minhash", "minhash"), ("lsh", "lsh"),
          ("clusters", "clusters"), ("write", "write"), ("tokenize", "tokenize")]


def stage_times(r: dict) -> dict:
    t = r["times"]
    return {"filter": t.get("filter", 0), "exact": t.get("exact hashes", 0) + t.get("exact dedup", 0),
            "minhash": t.get("minhash", 0), "lsh": t.get("lsh", 0), "clusters": t.get("clusters", 0),
            "write": t.get("write", 0), "tokenize": t.get("tokenize", 0), "total": r["wall"]}


def stage_cpu(r: dict) -> dict:
    c = r.get("cpu", {})
    return {"filter": c.get("filter", 0), "exact": c.get("exact hashes", 0) + c.get("exact dedup", 0),
            "minhash": c.get("minhash", 0), "lsh": c.get("lsh", 0), "clusters": c.get("clusters", 0),
            "write": c.get("write", 0), "tokenize": c.get("tokenize", 0), "total": r.get("cpu_total", 0)}


def stage_bytes(r: dict) -> dict:
    """Each stage's input: filter reads the raw text; dedup the filters' survivors; tokenize the clean text."""
    b = {"filter": r["bytes_in"], "tokenize": r["bytes_out"], "total": r["bytes_in"]}
    for s in ("exact", "minhash", "lsh", "clusters", "write"):
        b[s] = r["bytes_filtered"]
    return b


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=float, nargs="+", default=[0.25, 0.5, 1.0], help="GB of text per run")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--work", type=Path, default=REPO / "runs" / "data_scale", help="inputs, outputs, results")
    ap.add_argument("--peer-mb", type=float, default=8.0, help="sample size for the peers (0: skip them); "
                    "datatrove filters ~0.15 MB/s, so 8 MB takes about a minute")
    ap.add_argument("--vocab", type=int, default=4096, help="vocabulary of the tokenizer trained for the run")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(json.loads(args.child))
    os.environ["RAYON_RS_NUM_CPUS"] = "1"  # HF tokenizers in this process: one thread (the pipeline child drops it)
    os.environ.setdefault("LOGURU_LEVEL", "WARNING")  # datatrove logs every bucket
    args.work.mkdir(parents=True, exist_ok=True)
    sizes = sorted(args.sizes)
    load0 = open("/proc/loadavg").read().split()[:3]
    print(f"{time.strftime('%Y-%m-%d %H:%M')}  {os.cpu_count()} CPUs, workers {args.workers}, load average {' '.join(load0)}")
    train_txt = tinyworld(args.work, sizes[-1])
    real = real_documents()
    print(f"real text: {len(real):,} documents, {sum(len(d.encode()) for d in real) / 1e6:.1f} MB"
          + ("" if real else f" ({DATA} absent: TinyWorld only)"))
    inputs = {gb: build_input(args.work, train_txt, gb, real) for gb in sizes}

    tok_dir = args.work / f"tokenizer_{args.vocab}"
    if not (tok_dir / "tokenizer.json").exists():
        from scratchlm.tokenizer import train_bpe_from_texts

        print(f"training a {args.vocab}-token BPE on 4 MB of the input ...", flush=True)
        train_bpe_from_texts(sample_texts(inputs[sizes[0]][0], 4), vocab_size=args.vocab).save(tok_dir)

    peer = peers(sample_texts(inputs[sizes[0]][0], args.peer_mb), tok_dir, args.work / "peers") if args.peer_mb else {}
    results = {}
    for gb in sizes:
        input_dir, info = inputs[gb]
        print(f"\n== {gb:g} GB: {info['bytes'] / 1e9:.3f} GB, {info['docs']:,} documents ({info['real_docs']:,} real, "
              f"{info['real_bytes'] / 1e6:.1f} MB), {info['parts']} parts; load average "
              f"{' '.join(open('/proc/loadavg').read().split()[:3])}", flush=True)
        r = run_size(f"{gb:g} GB", input_dir, args.work / f"out_{gb:g}GB", tok_dir, args.workers)
        r["input"] = info
        r["load_after"] = open("/proc/loadavg").read().split()[:3]
        results[gb] = r
        t, b = stage_times(r), stage_bytes(r)
        c = stage_cpu(r)
        print(f"   {'stage':10s}{'seconds':>9s}{'MB/s/core':>11s}{'CPU s':>9s}{'MB/CPU-s':>10s}")
        for s in [s for s, _ in STAGES] + ["total"]:
            print(f"   {s:10s}{t[s]:9.1f}{b[s] / 1e6 / max(t[s], 1e-9) / args.workers:11.2f}"
                  f"{c[s]:9.1f}{b[s] / 1e6 / max(c[s], 1e-9):10.2f}")
        print(f"   filtered to {r['docs_filtered']:,} documents; exact duplicates {r['exact_removed']:,} "
              f"({r['exact_removed'] / max(r['docs_filtered'], 1):.1%}), near duplicates {r['near']['removed']:,} "
              f"({r['near']['removed'] / max(r['docs_filtered'], 1):.1%}; {r['near']['documents_in_pairs']:,} documents "
              f"in pairs); kept {r['docs_out']:,}")
        print(f"   peak memory: largest process {r['max_rss_mb']:.0f} MB (driver {r['driver_rss_mb']:.0f}, worker "
              f"{r['worker_rss_mb']:.0f}); whole tree PSS {r['tree_pss_mb']:.0f} MB (RSS {r['tree_rss_mb']:.0f} MB) "
              f"at {r['tree_peak_at_s']} s: {r['tree_peak_pss_each_mb']} MB per process", flush=True)
        save(args, load0, results, peer)

    if len(sizes) > 1:
        print("\ntime growth per doubling (goal <= 2.1x):")
        for a, b in zip(sizes, sizes[1:]):
            ta, tb = stage_times(results[a]), stage_times(results[b])
            k = results[b]["bytes_in"] / results[a]["bytes_in"]
            per = {s: (tb[s] / ta[s]) ** (1 / max(1e-9, math.log2(k))) for s in ta if ta[s] > 0.5}
            print(f"  {a:g} -> {b:g} GB ({k:.2f}x bytes), wall: " + ", ".join(f"{s} {v:.2f}x" for s, v in per.items()))
            ca, cb = stage_cpu(results[a]), stage_cpu(results[b])
            per = {s: (cb[s] / ca[s]) ** (1 / max(1e-9, math.log2(k))) for s in ca if ca[s] > 0.5}
            if per:
                print(f"  {'':>{len(f'{a:g} -> {b:g} GB ({k:.2f}x bytes)')}}  CPU:  "
                      + ", ".join(f"{s} {v:.2f}x" for s, v in per.items()))
    if peer:
        first = results[sizes[0]]
        t, b = stage_times(first), stage_bytes(first)
        per_core = {s: b[s] / 1e6 / max(t[s], 1e-9) / args.workers for s in t}
        near_stage = b["minhash"] / 1e6 / max(t["minhash"] + t["lsh"] + t["clusters"], 1e-9) / args.workers
        print("\nratios (ours / peer, MB/s per core):")
        if "filters_datatrove" in peer:
            print(f"  filters: like for like {peer['filters_ours'] / peer['filters_datatrove']:.2f}x; our whole filter "
                  f"stage (read, normalise, filter, write) {per_core['filter'] / peer['filters_datatrove']:.2f}x")
            print(f"  near dedup: like for like {peer['minhash_ours'] / peer['minhash_datatrove']:.2f}x; our pipeline's "
                  f"MinHash stages {near_stage / peer['minhash_datatrove']:.2f}x")
        if "tokenize_hf" in peer:
            print(f"  tokenize: like for like {peer['tokenize_ours'] / peer['tokenize_hf']:.2f}x; our tokenize stage "
                  f"{per_core['tokenize'] / peer['tokenize_hf']:.2f}x")
    out = save(args, load0, results, peer)
    print(f"\nload average at the end {' '.join(out['load_after'])}; results in {args.work / 'results.json'}")


def save(args, load0, results, peer) -> dict:
    out = {"date": time.strftime("%Y-%m-%d %H:%M"), "load_before": load0,
           "load_after": open("/proc/loadavg").read().split()[:3], "workers": args.workers,
           "runs": {f"{gb:g}": r for gb, r in results.items()}, "peers": peer}
    (args.work / "results.json").write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
