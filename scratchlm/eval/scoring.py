"""Log-likelihood of continuations: the one primitive behind multiple-choice evals and lm-evaluation-harness.

A multiple-choice question is answered by scoring each candidate ending after the same context and picking
the most likely one (GPT-3 paper, section 2.4; lm-evaluation-harness `loglikelihood`). For a (context,
continuation) pair of token lists we run the model once over context + continuation and add up the
log-probabilities of the continuation's tokens, each given everything before it.

Batching: sequences of different lengths are right-padded. With a causal model, padding after a token cannot
change that token's logits, so no mask is needed; we read only the positions that belong to each row. Rows are
sorted by length so a batch holds sequences of similar length and little compute goes to padding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _device_of(model) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


@torch.no_grad()
def score_continuations(model, requests: list[tuple[list[int], list[int]]], batch_size: int = 32,
                        progress: bool = False, desc: str = "scoring") -> list[tuple[float, bool]]:
    """For each (context ids, continuation ids): (sum of log p(continuation token | everything before it),
    whether greedy decoding would have produced exactly the continuation).

    The context must hold at least one token (callers put BOS first). When context + continuation exceeds the
    model's context window, the context is cut from the left, as lm-evaluation-harness does.
    """
    max_len = int(model.config.max_seq_len)
    device = _device_of(model)
    model.eval()
    seqs = []
    for ctx, cont in requests:
        if not ctx:
            raise ValueError("empty context: start it with the BOS token so the first continuation token is scored")
        if not cont:
            raise ValueError("empty continuation: there is nothing to score")
        if len(cont) > max_len:
            raise ValueError(f"continuation of {len(cont)} tokens does not fit the model's context {max_len}")
        full = (ctx + cont)[-(max_len + 1):]
        seqs.append((full, len(cont)))
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i][0]))
    out: list[tuple[float, bool] | None] = [None] * len(seqs)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(seqs), desc=desc, unit="seq")
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        T = max(len(seqs[i][0]) for i in rows) - 1
        x = torch.zeros((len(rows), T), dtype=torch.long)  # (B, T) right-padded inputs
        for b, i in enumerate(rows):
            full = seqs[i][0]
            x[b, : len(full) - 1] = torch.tensor(full[:-1])
        logp = F.log_softmax(model(x.to(device)).float(), dim=-1)  # (B, T, V)
        for b, i in enumerate(rows):
            full, n = seqs[i]
            L = len(full) - 1  # inputs of this row; its last n positions predict the continuation
            target = torch.tensor(full[-n:], device=device)
            lp = logp[b, L - n : L]  # (n, V)
            total = lp.gather(1, target[:, None]).sum().item()
            greedy = bool((lp.argmax(dim=-1) == target).all())
            out[i] = (total, greedy)
        if bar is not None:
            bar.update(len(rows))
    if bar is not None:
        bar.close()
    return out  # type: ignore[return-value]


def split_context_continuation(tokenizer, context: str, continuation: str,
                               bos: bool = True) -> tuple[list[int], list[int]]:
    """Token ids of (context, continuation) as the model would see the joined text.

    BPE merges across the boundary, so we encode the whole string and take the continuation as the tokens past
    the context's own encoding (lm-evaluation-harness does the same). A trailing space of the context moves to
    the continuation first: "... the" + " end" tokenises naturally, "... the " + "end" would not.
    """
    n_space = len(context) - len(context.rstrip(" "))
    if n_space:
        context, continuation = context[:-n_space], " " * n_space + continuation
    ctx_ids = tokenizer.encode(context)
    whole = tokenizer.encode(context + continuation)
    if whole[: len(ctx_ids)] != ctx_ids:  # a merge crossed the boundary: fall back to encoding the parts
        whole = ctx_ids + tokenizer.encode(continuation)
    head = [tokenizer.bos_id] if bos and getattr(tokenizer, "bos_id", None) is not None else []
    return head + ctx_ids, whole[len(ctx_ids):]


def generate_in_batches(engine, prompts: list[list[int]], params, batch_size: int = 32, progress: bool = False,
                        desc: str = "generate") -> list[str]:
    """Replies (text) to prompt ids, `batch_size` at a time through the engine, with an optional progress bar.

    Prompts run in order of length and the replies come back in the caller's order. A batch is left-padded to its
    longest prompt and shares one context window, so mixing a 200-token story with 20-token sums costs padding
    and, near the window's end, cuts the short prompts' replies to the room the long one leaves (Engine.steps).
    Sorted, a reply rarely depends on which prompts it was batched with, and less compute goes to padding (500
    TinyWorld tasks on the demo's model: 1.5x faster as a chat model, 2x as a base model).
    """
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(prompts), desc=desc, unit="prompt")
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    replies: list[str] = [""] * len(prompts)
    for i in range(0, len(order), batch_size):
        rows = order[i : i + batch_size]
        for j, seq in zip(rows, engine.generate([prompts[j] for j in rows], params)):
            replies[j] = seq.text
        if bar is not None:
            bar.update(len(rows))
    if bar is not None:
        bar.close()
    return replies
