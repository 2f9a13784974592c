"""Quality-filter throughput (MB/s on one core): scratchlm.data.quality vs datatrove's filters, same documents.

    .venv/bin/python benchmarks/data_filter.py [--mb 8]

Both sides run Gopher quality, Gopher repetition, C4 (line cleaning without the terminal-punctuation rule, as
FineWeb) and FineWeb's filters, with FineWeb's published thresholds, in one process. Documents: the Gutenberg
books and TinyStories in ../shared/data cut into ~300-word documents, plus 10% synthetic junk (lists, repeated
lines, symbol spam, code). Prints MB/s for each, the ratio, and how often the two keep/drop decisions agree.
The peer needs `pip install datatrove spacy` (its English word tokenizer is spaCy's); without it only our
throughput is printed.
"""

import argparse
import re
import time
from pathlib import Path

import numpy as np

from scratchlm.data.quality import QualityConfig, c4_clean_lines, quality_reason

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def load_documents(target_mb: float, seed: int = 0) -> list[str]:
    paras = []
    for f in ["gutenberg/pg2701.txt", "gutenberg/pg1342.txt", "gutenberg/pg11.txt",
              "tinystories/tinystories_val_head.txt", "tinystories/tinystories_train_first5000_lowercased.txt"]:
        raw = (DATA / f).read_text(encoding="utf-8").replace("\r\n", "\n")
        paras += [p.strip() for p in re.split(r"\n\s*\n", raw) if p.strip()]
    docs, cur = [], []
    for p in paras:  # ~300-word documents of consecutive paragraphs
        cur.append(p)
        if sum(len(x.split()) for x in cur) >= 300:
            docs.append("\n\n".join(cur))
            cur = []
    rng = np.random.default_rng(seed)
    junk = []
    for i in range(len(docs) // 10):
        kind = i % 4
        if kind == 0:
            junk.append("\n".join(f"- item {j} ..." for j in range(60)))
        elif kind == 1:
            junk.append("\n".join(["Click here to subscribe to our newsletter!"] * 30))
        elif kind == 2:
            junk.append(" ".join(f"#tag{j} #deal" for j in range(100)))
        else:
            junk.append("function f(x) {\n  return x * 2;\n}\n" * 20)
    docs += junk
    docs = [docs[i] for i in rng.permutation(len(docs))]
    out, size = [], 0
    while size < target_mb * 1e6:  # repeat to reach the target size
        for d in docs:
            out.append(d)
            size += len(d.encode())
            if size >= target_mb * 1e6:
                break
    return out


def ours(docs):
    cfg = QualityConfig()
    keep = []
    for d in docs:
        text, _ = c4_clean_lines(d, cfg)
        keep.append(quality_reason(text, cfg) is None)
    return keep


def datatrove_run(docs):
    from datatrove.data import Document
    from datatrove.pipeline.filters import (C4QualityFilter, FineWebQualityFilter, GopherQualityFilter,
                                            GopherRepetitionFilter)

    filters = [GopherQualityFilter(), GopherRepetitionFilter(), C4QualityFilter(filter_no_terminal_punct=False),
               FineWebQualityFilter(char_duplicates_ratio=0.1)]
    keep = []
    for i, d in enumerate(docs):
        doc = Document(text=d, id=str(i))
        ok = True
        for f in filters:
            r = f.filter(doc)
            if r is not True and (r is False or r[0] is False):
                ok = False
                break
        keep.append(ok)
    return keep


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, default=8.0, help="megabytes of text to filter")
    args = ap.parse_args()
    docs = load_documents(args.mb)
    mb = sum(len(d.encode()) for d in docs) / 1e6
    print(f"{len(docs):,} documents, {mb:.1f} MB; loadavg {open('/proc/loadavg').read().split()[:3]}")
    t0 = time.perf_counter()
    k_ours = ours(docs)
    t_ours = time.perf_counter() - t0
    print(f"scratchlm   {mb / t_ours:7.2f} MB/s per core   kept {np.mean(k_ours):.1%}")
    try:
        import datatrove  # noqa: F401
    except ImportError:
        print("datatrove not installed: pip install datatrove spacy for the comparison")
        return
    datatrove_run(docs[:50])  # warm-up: loads spaCy's tokenizer
    t0 = time.perf_counter()
    k_dt = datatrove_run(docs)
    t_dt = time.perf_counter() - t0
    print(f"datatrove   {mb / t_dt:7.2f} MB/s per core   kept {np.mean(k_dt):.1%}")
    print(f"speed-up: {t_dt / t_ours:.2f}x; keep/drop decisions agree on {np.mean(np.array(k_ours) == np.array(k_dt)):.1%} "
          f"of documents")


if __name__ == "__main__":
    main()
