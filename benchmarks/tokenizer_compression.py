"""Compression (bytes per token, higher is better) on held-out text: our BPE vs Hugging Face's BpeTrainer trained
the same way (same corpus, vocab 8192 with the same 8 specials, same GPT-4 split) vs GPT-2's 50k encoding.

Training corpus: TinyStories, Gutenberg, Tiny Shakespeare (~8 MB). Held-out: text never trained on (a short story,
instructions, grade-school maths, HellaSwag contexts, dialogues).
Run: .venv/bin/python benchmarks/tokenizer_compression.py [--vocab-size 8192]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = REPO.parent / "shared" / "data"
TRAIN = [DATA / "tinystories", DATA / "gutenberg", DATA / "tinyshakespeare"]


def held_out() -> dict[str, str]:
    def jsonl(name, *fields, limit=None):
        rows = [json.loads(line) for line in (DATA / name).read_text(encoding="utf-8").splitlines() if line.strip()]
        return "\n\n".join(r[f] for r in rows[:limit] for f in fields if isinstance(r.get(f), str))

    alpaca = json.loads((DATA / "alpaca/alpaca_data_first200.json").read_text(encoding="utf-8"))
    return {
        "the-verdict (fiction)": (DATA / "llms-from-scratch/the-verdict.txt").read_text(encoding="utf-8"),
        "alpaca-200 (instructions)": "\n\n".join(f"{r['instruction']}\n{r['input']}\n{r['output']}" for r in alpaca),
        "gsm8k test (maths)": jsonl("gsm8k/test.jsonl", "question", "answer"),
        "hellaswag (web/how-to)": (DATA / "hellaswag/hellaswag_val_full.txt").read_text(encoding="utf-8")[:1_000_000],
        "hh-rlhf (dialogue)": jsonl("hh-rlhf/harmless-base_test.jsonl", "chosen", limit=1000),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vocab-size", type=int, default=8192)
    args = ap.parse_args()
    if not DATA.is_dir():
        sys.exit(f"{DATA} not found; this benchmark needs ../shared/data")
    import tiktoken
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    from scratchlm.tokenizer import train_bpe
    from scratchlm.tokenizer.pretokenize import GPT2_PATTERN, GPT4_PATTERN, SPECIAL_TOKENS

    files = sorted(str(f) for d in TRAIN for f in d.rglob("*.txt"))
    ours = train_bpe(files, args.vocab_size, progress=False)

    hf = Tokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(GPT4_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    hf.decoder = decoders.ByteLevel()
    hf.train(files, trainers.BpeTrainer(vocab_size=args.vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))

    gpt2_dir = DATA / "gpt2-tokenizer"
    gpt2 = tiktoken.Encoding("gpt2", pat_str=GPT2_PATTERN, special_tokens={"<|endoftext|>": 50256},
                             mergeable_ranks=data_gym_to_mergeable_bpe_ranks(str(gpt2_dir / "vocab.bpe"),
                                                                             str(gpt2_dir / "encoder.json")))
    print(f"bytes per token (higher = better); ours and HF: vocab {args.vocab_size}, trained on {len(files)} files")
    print(f"{'held-out set':28s} {'MB':>5s} {'ours':>7s} {'HF':>7s} {'GPT-2':>7s} {'ours/HF':>8s} {'ours/GPT-2':>10s}")
    tot = {"ours": 0, "hf": 0, "gpt2": 0, "bytes": 0}
    for name, text in held_out().items():
        n = len(text.encode("utf-8"))
        counts = {"ours": len(ours.encode(text)), "hf": len(hf.encode(text, add_special_tokens=False).ids),
                  "gpt2": len(gpt2.encode(text, disallowed_special=()))}
        bpt = {k: n / v for k, v in counts.items()}
        for k in counts:
            tot[k] += counts[k]
        tot["bytes"] += n
        print(f"{name:28s} {n / 1e6:5.2f} {bpt['ours']:7.3f} {bpt['hf']:7.3f} {bpt['gpt2']:7.3f} "
              f"{bpt['ours'] / bpt['hf']:8.3f} {bpt['ours'] / bpt['gpt2']:10.3f}")
    b = tot["bytes"]
    print(f"{'all held-out':28s} {b / 1e6:5.2f} {b / tot['ours']:7.3f} {b / tot['hf']:7.3f} {b / tot['gpt2']:7.3f} "
          f"{tot['hf'] / tot['ours']:8.3f} {tot['gpt2'] / tot['ours']:10.3f}")
    print("ratio ours/HF >= 1.0 is the goal (GPT-2 has a 6x larger vocabulary trained on web text)")
    print(f"loadavg: {open('/proc/loadavg').read().strip()}   cpus: {os.cpu_count()}")


if __name__ == "__main__":
    main()
