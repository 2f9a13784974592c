"""Training speed: `scratchlm tokenizer train` vs Hugging Face `tokenizers` BpeTrainer, each a whole process.

Same corpus (TinyStories, Gutenberg and Tiny Shakespeare files in ../shared/data, ~8 MB), vocab 8192 including the
same 8 special tokens, same GPT-4 split pattern. Wall time includes interpreter start-up, imports and writing the
files. Run: .venv/bin/python benchmarks/tokenizer_train.py [--repeats 3] [--vocab-size 8192]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
INPUTS = [DATA / "tinystories", DATA / "gutenberg", DATA / "tinyshakespeare"]

HF_SCRIPT = r"""
import sys
from tokenizers import Tokenizer, Regex, models, pre_tokenizers, decoders, trainers
from scratchlm.tokenizer.pretokenize import GPT4_PATTERN, SPECIAL_TOKENS
vocab_size, out, files = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
tok = Tokenizer(models.BPE())
tok.pre_tokenizer = pre_tokenizers.Sequence([
    pre_tokenizers.Split(Regex(GPT4_PATTERN), behavior="isolated"),
    pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
tok.decoder = decoders.ByteLevel()
trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                              initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
tok.train(files, trainer)
tok.save(out + "/tokenizer.json")
"""


def corpus_files() -> list[str]:
    files = []
    for p in INPUTS:
        files += sorted(str(f) for f in p.rglob("*.txt")) if p.is_dir() else [str(p)]
    return files


def timed(cmd: list[str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the process and its children): CPU time is less sensitive to other load."""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    dt = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        sys.exit(f"command failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr[-2000:]}")
    return dt, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--vocab-size", type=int, default=8192)
    args = ap.parse_args()
    if not DATA.is_dir():
        sys.exit(f"{DATA} not found; this benchmark needs ../shared/data")
    files = corpus_files()
    mb = sum(os.path.getsize(f) for f in files) / 1e6
    py = sys.executable
    scratchlm = Path(py).with_name("scratchlm")
    ours_cmd = [str(scratchlm)] if scratchlm.exists() else [py, "-m", "scratchlm.cli.main"]
    tmp = Path(tempfile.mkdtemp(prefix="bench_tok_"))
    ours, hf = [], []
    try:
        for _ in range(args.repeats):  # interleaved, so load from other processes hits both alike
            shutil.rmtree(tmp / "ours", ignore_errors=True)
            ours.append(timed(ours_cmd + ["tokenizer", "train", "--input", *files, "--vocab-size",
                                          str(args.vocab_size), "--out", str(tmp / "ours"), "-q"]))
            (tmp / "hf").mkdir(exist_ok=True)
            hf.append(timed([py, "-c", HF_SCRIPT, str(args.vocab_size), str(tmp / "hf"), *files]))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    o, h = statistics.median(w for w, _ in ours), statistics.median(w for w, _ in hf)
    oc, hc = statistics.median(c for _, c in ours), statistics.median(c for _, c in hf)
    print(f"corpus: {len(files)} files, {mb:.1f} MB; vocab {args.vocab_size}; {args.repeats} runs each (median)")
    print(f"scratchlm tokenizer train : {o:6.2f} s wall, {oc:6.2f} s CPU   runs {[round(w, 2) for w, _ in ours]}")
    print(f"HF tokenizers BpeTrainer  : {h:6.2f} s wall, {hc:6.2f} s CPU   runs {[round(w, 2) for w, _ in hf]}")
    print(f"ratio ours / HF           : {o / h:6.2f}x wall, {oc / hc:5.2f}x CPU   (goal <= 3x wall)")
    print(f"loadavg: {open('/proc/loadavg').read().strip()}   cpus: {os.cpu_count()}")


if __name__ == "__main__":
    main()
