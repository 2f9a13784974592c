"""Training throughput at nanoGPT's CPU "baby GPT" architecture: our trainer vs a plain eager PyTorch step.

    .venv/bin/python benchmarks/train_throughput.py [--steps 60] [--rounds 3] [--bf16]

The architecture and batch are nanoGPT's documented CPU run (README, "I only have a macbook"): GPT-2 style
(learned positions, pre-LayerNorm, exact (erf) GELU MLP, tied embeddings) with train.py's default bias=False
(no biases in the linear layers or LayerNorms), 4 layers, 4 heads, width 128, context 64, batch 12, vocab 65
(Tiny Shakespeare characters), dropout 0, float32. nanoGPT's train.py runs it at about 34 ms per iteration on
these 2 cores (about 22,600 tokens/s).

Three contenders, measured in the same process, interleaved round by round (so background load hits them
alike), median of the rounds:
  nanogpt-style   a plain eager step written the way nanoGPT's model.py/train.py do it: fused c_attn
                  projection, SDPA, nn.GELU(), no biases, random windows from a memmap, AdamW (foreach, as
                  nanoGPT uses on CPU), clip 1.0, loss.item() every step (log_interval=1)
  model-plain     our scratchlm Transformer in the same plain eager step
  trainer         scratchlm.train.Trainer.train_step: what `scratchlm pretrain` runs per step (loader,
                  schedule, accumulation, clipping, non-finite guard, fused AdamW)
Prints tokens/s, each ratio to the nanogpt-style step, and the ratio to nanoGPT's documented 22,600 tokens/s.
Our char tokenizer has 8 special tokens, so our vocab is 73 rows to nanoGPT's 65 (0.2% more FLOPs: ignored).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
SHAKESPEARE = ROOT.parent / "shared" / "data" / "tinyshakespeare" / "input.txt"
NANOGPT_DOCUMENTED_TOKENS_PER_SEC = 22_600  # 12 x 64 tokens / 34 ms
N_LAYER, N_HEAD, N_EMBD, BLOCK, BATCH, VOCAB = 4, 4, 128, 64, 12, 65


# ------------------------------------------------------------------------------------------ the peer step
class _Block(nn.Module):
    """nanoGPT's block, written plainly: one fused qkv projection, SDPA, exact-GELU MLP, pre-LayerNorm, no biases."""

    def __init__(self, d: int, h: int):
        super().__init__()
        self.h = h
        self.ln_1, self.ln_2 = nn.LayerNorm(d, bias=False), nn.LayerNorm(d, bias=False)
        self.c_attn, self.c_proj = nn.Linear(d, 3 * d, bias=False), nn.Linear(d, d, bias=False)
        self.c_fc, self.mlp_proj = nn.Linear(d, 4 * d, bias=False), nn.Linear(4 * d, d, bias=False)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.h, C // self.h).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, C)
        x = x + self.c_proj(y)
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x))))


class PlainGPT(nn.Module):
    def __init__(self):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(VOCAB, N_EMBD), nn.Embedding(BLOCK, N_EMBD)
        self.h = nn.ModuleList(_Block(N_EMBD, N_HEAD) for _ in range(N_LAYER))
        self.ln_f = nn.LayerNorm(N_EMBD, bias=False)
        for p in self.parameters():
            if p.dim() == 2:
                nn.init.normal_(p, 0.0, 0.02)

    def forward(self, idx):
        x = self.wte(idx) + self.wpe.weight[: idx.size(1)]
        for block in self.h:
            x = block(x)
        return F.linear(self.ln_f(x), self.wte.weight)  # tied head


def plain_stepper(model: nn.Module, data: np.ndarray):
    """nanoGPT's train.py inner loop: get_batch (random windows from a memmap), forward, backward, clip, step."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-3, betas=(0.9, 0.99))

    def step():
        ix = torch.randint(len(data) - BLOCK, (BATCH,))
        x = torch.stack([torch.from_numpy(data[i : i + BLOCK].astype(np.int64)) for i in ix])
        y = torch.stack([torch.from_numpy(data[i + 1 : i + 1 + BLOCK].astype(np.int64)) for i in ix])
        logits = model(x)
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    return step


# ------------------------------------------------------------------------------------------ ours
def baby_gpt_config(run_dir: Path, dtype: str, compile_: bool = False):
    from scratchlm.train import load_pretrain_config

    return load_pretrain_config(None, [], defaults={
        "data": {"train_text": str(SHAKESPEARE), "tokenizer": "char"},
        "model": {"vocab_size": VOCAB, "d_model": N_EMBD, "n_layers": N_LAYER, "n_heads": N_HEAD, "max_seq_len": BLOCK,
                  "activation": "gelu_exact", "norm": "layernorm", "pos_emb": "learned", "bias": False,
                  "tie_embeddings": True, "pad_vocab_multiple": 1, "dropout": 0.0},
        "train": {"seq_len": BLOCK, "micro_batch_size": BATCH, "max_steps": 10**6, "lr": 1e-3, "warmup_steps": 0,
                  "beta2": 0.99, "eval_every": 0, "sample_tokens": 0, "tensorboard": False, "progress": False,
                  "device": "cpu", "dtype": dtype, "compile": compile_}})


def time_steps(step, n: int, warmup: int = 3) -> float:
    for _ in range(warmup):  # allocator, oneDNN primitive caches, and the caches the previous contender evicted
        step()
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    return n * BATCH * BLOCK / (time.perf_counter() - t0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=10, help="timed steps per contender per round")
    ap.add_argument("--rounds", type=int, default=15, help="interleaved rounds (medians and best rounds reported)")
    ap.add_argument("--bf16", action="store_true", help="also time our trainer with CPU bf16 autocast")
    ap.add_argument("--compile", action="store_true",
                    help="also time our trainer with train.compile = true (steady state; ~20 s to compile first)")
    args = ap.parse_args()
    if not SHAKESPEARE.exists():
        print(f"needs {SHAKESPEARE}", file=sys.stderr)
        return 1
    from scratchlm.model import Transformer
    from scratchlm.train import Trainer

    torch.manual_seed(0)
    tmp = Path(tempfile.mkdtemp(prefix="scratchlm_bench_"))
    trainer = Trainer(baby_gpt_config(tmp / "fp32", "float32"), tmp / "fp32")
    text = SHAKESPEARE.read_text()
    data = np.array([ord(c) % VOCAB for c in text[: int(0.9 * len(text))]], dtype=np.uint16)

    contenders = {"nanogpt-style": plain_stepper(PlainGPT(), data),
                  "model-plain": plain_stepper(Transformer(trainer.cfg.model), data),
                  "trainer": lambda: trainer.train_step(*trainer.loader.next_batch())}
    if args.bf16:
        t16 = Trainer(baby_gpt_config(tmp / "bf16", "bfloat16"), tmp / "bf16")
        contenders["trainer-bf16"] = lambda: t16.train_step(*t16.loader.next_batch())
    if args.compile:
        tc = Trainer(baby_gpt_config(tmp / "compiled", "float32", True), tmp / "compiled")
        contenders["trainer-compile"] = lambda: tc.train_step(*tc.loader.next_batch())
    n_ours = sum(p.numel() for p in trainer.model.parameters())
    n_peer = sum(p.numel() for p in PlainGPT().parameters())
    print(f"baby GPT: {n_ours:,} parameters (nanogpt-style peer: {n_peer:,}), batch {BATCH} x {BLOCK}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}")
    for name, step in contenders.items():  # compile (and first-step) costs are paid here, not in the rounds
        t0 = time.perf_counter()
        step()
        first = time.perf_counter() - t0
        if first > 1.0:
            print(f"{name}: first step took {first:.1f} s (compilation; less when inductor's cache is warm)")
        for _ in range(5):
            step()
    results: dict[str, list[float]] = {k: [] for k in contenders}
    order = list(contenders)
    for r in range(args.rounds):
        for name in order if r % 2 == 0 else order[::-1]:  # alternate the order: a slow-down mid-round is shared
            results[name].append(time_steps(contenders[name], args.steps, warmup=1))
    # This VM sustains its full clock for ~40 s of 2-core load, then slows by up to ~30% for a while. Every
    # round runs all contenders back to back for a third of a second each, so a ratio taken within a round
    # compares like with like; the median of those per-round ratios is the figure to quote. "best" is the fastest round (an unthrottled
    # window), the one comparable with nanoGPT's documented 34 ms.
    ref = results["nanogpt-style"]
    print(f"{'contender':16s} {'tokens/s':>9s} {'best':>7s} {'ms/step':>8s} {'vs nanogpt-style':>17s} "
          f"{'best vs 22,600':>15s}")
    for name, vals in results.items():
        ratio = statistics.median(v / r for v, r in zip(vals, ref))
        best = max(vals)
        print(f"{name:16s} {statistics.median(vals):9,.0f} {best:7,.0f} {1000 * BATCH * BLOCK / best:8.1f} "
              f"{ratio:16.2f}x {best / NANOGPT_DOCUMENTED_TOKENS_PER_SEC:14.2f}x")
    print("tokens/s: median of the rounds; best: fastest round (ms/step is its time); ratio: median of the "
          "per-round ratios")
    assert all(math.isfinite(v) for vals in results.values() for v in vals)
    return 0


if __name__ == "__main__":
    sys.exit(main())
