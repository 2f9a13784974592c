"""GPU training throughput, MFU and peak memory for gpt2-124m at context 1024 (needs a CUDA GPU).

    .venv/bin/python benchmarks/train_gpu.py [--micro-batch 16] [--steps 30] [--no-compile]

Runs scratchlm's Trainer (bf16 autocast, torch.compile, SDPA flash attention, fused AdamW) on random tokens
(throughput does not depend on the text) in three settings: plain, activation checkpointing on every block,
and, as the peer, the same model in a plain eager bf16 step without compile. Prints tokens/s, MFU against
the device's datasheet peak (scratchlm/train/metrics.py) and peak memory. Exits 0 with a note on a machine
without CUDA; never record a GPU figure you did not measure.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def make_shards(folder: Path, vocab: int = 50257, n_tokens: int = 8_000_000) -> None:
    """Random token shards plus a GPT-2-sized byte-level tokenizer stand-in (only its vocab size matters here)."""
    import json

    from scratchlm.data.shards import FORMAT_VERSION

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split, n in (("train", n_tokens), ("val", 1 << 17)):
        rng.integers(0, vocab, n, dtype=np.uint16).tofile(folder / f"{split}.bin")
        np.save(folder / f"{split}.idx.npy", np.zeros(1, dtype=np.int64))
    (folder / "manifest.json").write_text(json.dumps({
        "format_version": FORMAT_VERSION, "dtype": "uint16", "vocab_size": vocab, "bos_id": 0, "eos_id": None,
        "doc_boundary": "bos_prefix", "n_tokens": {"train": n_tokens, "val": 1 << 17}, "n_docs": {"train": 1, "val": 1},
        "tokenizer": {"path": None, "sha256": ""}, "source": "random"}))


def run(shards: Path, tok_dir: Path, micro_batch: int, steps: int, compile_: bool, ckpt_every: int) -> dict:
    from scratchlm.train import Trainer, load_pretrain_config

    torch.cuda.reset_peak_memory_stats()
    cfg = load_pretrain_config(Path(__file__).resolve().parents[1] / "configs" / "pretrain_gpt2_124m.toml", [
        f"data.shards={shards}", f"data.tokenizer={tok_dir}", f"train.micro_batch_size={micro_batch}",
        f"train.global_batch_tokens={micro_batch * 1024}", f"train.compile={str(compile_).lower()}",
        f"train.activation_checkpointing={ckpt_every}", "train.progress=false", "train.tensorboard=false",
        "train.max_steps=100000"])
    trainer = Trainer(cfg, Path(tempfile.mkdtemp(prefix="scratchlm_gpu_")))
    for _ in range(5):  # compile and autotune
        trainer.train_step(*trainer.loader.next_batch())
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        trainer.train_step(*trainer.loader.next_batch())
    torch.cuda.synchronize()
    tps = steps * trainer.global_batch_tokens / (time.perf_counter() - t0)
    mfu = trainer.flops_per_token * tps / (trainer.peak_tflops * 1e12) if trainer.peak_tflops else float("nan")
    return {"tokens_per_sec": tps, "mfu": mfu, "peak_gb": torch.cuda.max_memory_allocated() / 1e9}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--micro-batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--no-compile", action="store_true")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA GPU visible: nothing measured (run this on a GPU machine)")
        return 0
    from scratchlm.tokenizer import BPETokenizer
    from scratchlm.tokenizer.pretokenize import SPECIAL_TOKENS

    tmp = Path(tempfile.mkdtemp(prefix="scratchlm_gpu_data_"))
    # A stand-in tokenizer with GPT-2's 50,257 ids (two-byte merges; only the size matters for speed)
    n_merges = 50257 - 256 - len(SPECIAL_TOKENS)
    BPETokenizer([(i // 256, i % 256) for i in range(n_merges)]).save(tmp / "tok")
    make_shards(tmp / "shards", vocab=50257)
    print(f"{torch.cuda.get_device_name()} | torch {torch.__version__} | gpt2-124m, context 1024, bf16")
    rows = [("compile" if not args.no_compile else "eager", not args.no_compile, 0),
            ("compile + act. ckpt" if not args.no_compile else "eager + act. ckpt", not args.no_compile, 1),
            ("eager (peer)", False, 0)]
    for name, comp, ck in rows:
        r = run(tmp / "shards", tmp / "tok", args.micro_batch, args.steps, comp, ck)
        print(f"{name:22s} {r['tokens_per_sec']:12,.0f} tokens/s   MFU {100 * r['mfu']:5.1f}%   "
              f"peak {r['peak_gb']:6.1f} GB   (micro-batch {args.micro_batch})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
