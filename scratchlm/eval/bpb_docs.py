"""Bits per byte over a set of documents, each scored on its own (BOS + document), and the token-sum form.

bpb.py scores one long text with a sliding window. A corpus of separate documents is better scored per
document: each starts from BOS, as in pretraining, and no document leaks context into the next. The corpus
figure is then total nats over total bytes (not the mean of per-document ratios, which would overweight short
documents).

The same number can be computed from per-token losses alone, which is what the training loop does on its
validation shards: sum the losses of the tokens that are text, divide by the bytes those tokens stand for
(`bpb_from_token_losses`). For a byte-level tokenizer a document's tokens cover exactly its bytes, so the two
must agree; tests/test_eval.py checks that they do.
"""

from __future__ import annotations

import math

import torch

from .bpb import bits_per_byte
from .scoring import score_continuations


def bpb_from_token_losses(nll: torch.Tensor, targets: torch.Tensor, token_bytes: torch.Tensor) -> dict:
    """nll and targets of the same shape (any), token_bytes (vocab,) = UTF-8 bytes per token id (0 for specials).

    Special-token targets carry no bytes, so their loss is left out of the numerator too."""
    nbytes = token_bytes.to(targets.device)[targets]
    text = nbytes > 0
    nats = float((nll * text).sum())
    n_bytes = int(nbytes.sum())
    if n_bytes == 0:
        raise ValueError("no text tokens among the targets: bits per byte is undefined")
    return {"bpb": nats / math.log(2) / n_bytes, "nats_per_byte": nats / n_bytes, "bytes": n_bytes}


@torch.no_grad()
def document_bits_per_byte(model, tokenizer, docs: list[str], batch_size: int = 16, progress: bool = False) -> dict:
    """Score each document on its own; returns {bpb, nats_per_byte, loss, perplexity, tokens, bytes, documents}.

    Documents that fit the context are scored in batches; longer ones go through bpb.py's sliding window."""
    docs = [d for d in docs if d]
    if not docs:
        raise ValueError("no non-empty documents to score")
    bos = getattr(tokenizer, "bos_id", None)
    if bos is None:
        raise ValueError("per-document scoring needs a tokenizer with a BOS token (each document starts with it)")
    max_len = int(model.config.max_seq_len)
    short, nats, n_tokens, n_bytes = [], 0.0, 0, 0
    for d in docs:
        ids = tokenizer.encode(d)
        n_bytes += len(d.encode("utf-8"))
        n_tokens += len(ids)
        if len(ids) <= max_len:
            short.append(([bos], ids))
        else:
            r = bits_per_byte(model, tokenizer, d, batch_size=batch_size)
            nats += r["loss"] * r["tokens"]
    for lp, _ in score_continuations(model, short, batch_size=batch_size, progress=progress, desc="bpb"):
        nats -= lp
    loss = nats / n_tokens
    return {"bpb": nats / math.log(2) / n_bytes, "nats_per_byte": nats / n_bytes, "loss": loss,
            "perplexity": math.exp(loss), "tokens": n_tokens, "bytes": n_bytes, "documents": len(docs)}
