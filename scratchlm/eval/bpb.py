"""Bits per byte of a text under a trained model: the tokenizer-independent measure of language modelling.

Loss per token depends on the tokenizer (a token can be one character or a whole word), so it cannot compare
models with different vocabularies. Bits per byte divides the total information, sum over tokens of
-log2 p(token | context), by the text's length in UTF-8 bytes: the same denominator for every tokenizer.
(For ASCII text bytes are characters, so nats per character = bpb * ln 2.)

Long texts are scored with a sliding window (the method of Hugging Face's perplexity guide): windows of
seq_len tokens advance by `stride`; each window scores only the tokens that no earlier window scored, so every
token is scored exactly once and, after the first window, with at least seq_len - stride tokens of context.
stride = seq_len is the fast non-overlapping evaluation; smaller strides give each token more context.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class Window:
    start: int  # first input position
    end: int  # inputs are ids[start:end], targets ids[start+1:end+1]
    first_new: int  # targets at positions >= first_new are scored by this window


def sliding_windows(n_ids: int, seq_len: int, stride: int) -> list[Window]:
    """Windows over ids[0:n_ids] (ids[0] is BOS, never a target) scoring every target position 1..n_ids-1 once."""
    if not 1 <= stride <= seq_len:
        raise ValueError(f"stride must be in 1..seq_len ({seq_len}), got {stride}")
    windows, scored = [], 0  # targets 1..scored are done
    length = min(seq_len, n_ids - 1)
    while scored < n_ids - 1:
        end = min(scored + (stride if windows else length), n_ids - 1)
        start = max(0, end - length)
        windows.append(Window(start, end, scored + 1))
        scored = end
    return windows


@torch.no_grad()
def bits_per_byte(model, tokenizer, text: str, seq_len: int | None = None, stride: int | None = None,
                  batch_size: int = 8, device: str = "cpu", dtype: torch.dtype | None = None,
                  progress: bool = False) -> dict:
    """Score `text` (a BOS, then its tokens); returns {bpb, nats_per_byte, loss, tokens, bytes, seq_len, stride}."""
    n_bytes = len(text.encode("utf-8"))
    if n_bytes == 0:
        raise ValueError("the text is empty; pass a file with some text in it")
    ids = tokenizer.encode(text)
    bos = tokenizer.bos_id
    ids = ([bos] if bos is not None else []) + ids
    if len(ids) < 2:
        raise ValueError("the text is a single token; bits per byte needs at least one token to predict")
    seq_len = seq_len or model.config.max_seq_len
    if seq_len > model.config.max_seq_len:
        raise ValueError(f"--seq-len {seq_len} exceeds the model's max_seq_len {model.config.max_seq_len}")
    stride = stride or max(1, seq_len // 2)
    windows = sliding_windows(len(ids), seq_len, stride)
    ids_t = torch.tensor(ids, dtype=torch.long)
    model.eval()
    autocast = torch.autocast(device.split(":")[0], dtype=dtype) if dtype not in (None, torch.float32) else None
    nll_sum = 0.0
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(windows), desc="bpb", unit="window")
    for i in range(0, len(windows), batch_size):
        chunk = windows[i : i + batch_size]
        x = torch.stack([ids_t[w.start : w.end] for w in chunk]).to(device)  # (B, L): all windows have length L
        y = torch.stack([ids_t[w.start + 1 : w.end + 1] for w in chunk]).to(device)
        if autocast is not None:
            with autocast:
                logits = model(x)
        else:
            logits = model(x)
        nll = F.cross_entropy(logits.float().transpose(1, 2), y, reduction="none")  # (B, L)
        for row, w in enumerate(chunk):
            nll_sum += nll[row, w.first_new - 1 - w.start :].sum().item()  # target position p sits at p-1-start
        if bar is not None:
            bar.update(len(chunk))
    if bar is not None:
        bar.close()
    n_tokens = len(ids) - 1
    return {"bpb": nll_sum / math.log(2) / n_bytes, "nats_per_byte": nll_sum / n_bytes, "loss": nll_sum / n_tokens,
            "tokens": n_tokens, "bytes": n_bytes, "seq_len": seq_len, "stride": stride}
