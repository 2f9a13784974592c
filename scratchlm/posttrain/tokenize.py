"""Chat-template tokenization with a loss mask, and batching by padding or by packing.

A conversation becomes the ids of the one chat template (scratchlm/inference/chat_template.py):

    <|bos|><|im_start|>user\\nWhat is 2+2?<|im_end|>\\n<|im_start|>assistant\\n4<|im_end|>\\n
                                                                       ^^^^^^^^^^^^ trained
Only the assistant's reply and its closing <|im_end|> are targets (SFT "completion-only" loss, the TRL default):
the model learns to answer and to stop, not to predict the user's question. Every other target is -100, which
cross_entropy ignores. `assistant_only=False` trains on every token instead. A tool call is an assistant reply
(trained); a tool's result is not (the model must learn to read it, not to predict it).

The reply is encoded on its own, after "<|im_start|>" + encode("assistant\\n"): exactly the ids a chat prompt
ends with at inference time (encode_chat(..., add_generation_prompt=True)), so training sees the boundary the
model will see when it generates.

An imported Hugging Face model whose tokenizer has its own chat template (Llama 3's <|start_header_id|> ...,
Qwen's ChatML with a default system turn) is trained in that template, as TRL does and as it is served
(inference/hf_chat.py: encode_hf_chat_with_mask marks each reply through the template's end-of-turn token).

Batching (`make_batches`):
- "pad": length-grouped right padding. Rows are grouped by length so little is padding; padding sits after
  each row's tokens, so under causal attention no real token can attend to it and no mask is needed.
- "pack": several conversations per row, each restarting at position 0 and attending only to itself (a
  block-diagonal causal mask, see packing.py). No compute is spent on padding and no sample sees another.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from scratchlm.inference.chat_template import chat_special_ids, turn_text, validate_messages

IGNORE = -100  # F.cross_entropy's default ignore_index


@dataclass
class Example:
    """One tokenized sample, already shifted: the model reads x and is scored on y (IGNORE = not scored)."""

    x: list[int]
    y: list[int]

    def __len__(self) -> int:
        return len(self.x)


def encode_chat_with_mask(tokenizer, messages: list[dict], assistant_only: bool = True,
                          add_generation_prompt: bool = False) -> tuple[list[int], list[bool]]:
    """(ids, is_target) for a conversation: is_target[i] says whether ids[i] is a token the model must predict."""
    from scratchlm.inference.hf_chat import encode_hf_chat_with_mask, has_hf_template

    if has_hf_template(tokenizer):  # the model's own template: replies through its end-of-turn token
        return encode_hf_chat_with_mask(tokenizer, messages, add_generation_prompt, assistant_only=assistant_only)
    bos, start, end = chat_special_ids(tokenizer)
    nl = tokenizer.encode("\n")
    ids = [] if bos is None else [bos]
    target = [False] * len(ids)
    for m in validate_messages(messages):
        if m["role"] == "assistant":
            head = [start] + tokenizer.encode("assistant\n")
            body = tokenizer.encode(turn_text(m)) + [end]  # a tool call is a reply to learn too
            ids += head + body + nl
            target += [not assistant_only] * len(head) + [True] * len(body) + [not assistant_only] * len(nl)
        else:
            seg = [start] + tokenizer.encode(f"{m['role']}\n{turn_text(m)}") + [end] + nl  # tool results: context
            ids += seg
            target += [not assistant_only] * len(seg)
    if add_generation_prompt:
        seg = [start] + tokenizer.encode("assistant\n")
        ids += seg
        target += [False] * len(seg)
    return ids, target


def make_example(tokenizer, messages: list[dict], max_len: int, assistant_only: bool = True) -> Example | None:
    """Shifted (x, y) for one conversation, cut to max_len inputs; None if nothing is left to learn."""
    ids, target = encode_chat_with_mask(tokenizer, messages, assistant_only)
    ids, target = ids[: max_len + 1], target[: max_len + 1]
    y = [t if keep else IGNORE for t, keep in zip(ids[1:], target[1:])]
    if all(t == IGNORE for t in y):
        return None
    return Example(ids[:-1], y)


@dataclass
class Batch:
    """Model inputs for one micro-batch. positions/doc_ids are set for packed rows only."""

    x: torch.Tensor  # (B, T) token ids
    y: torch.Tensor  # (B, T) targets, IGNORE where not scored
    positions: torch.Tensor | None = None  # (B, T) position of each token inside its own sample
    doc_ids: torch.Tensor | None = None  # (B, T) which sample each token belongs to (-1: padding)

    @property
    def n_targets(self) -> int:
        return int((self.y != IGNORE).sum())

    def to(self, device) -> "Batch":
        mv = lambda t: None if t is None else t.to(device, non_blocking=True)  # noqa: E731
        return Batch(mv(self.x), mv(self.y), mv(self.positions), mv(self.doc_ids))


PAD_MULTIPLE = 16


def pad_batch(examples: list[Example], pad_id: int, limit: int | None = None) -> Batch:
    """Right-pad to the longest example, rounded up to a multiple of PAD_MULTIPLE where `limit` (the longest row
    the model takes) allows. Causal attention never looks right, so padding needs no mask.

    The rounding is for memory: a new width every batch means tensors of ever new sizes, which glibc's heap keeps
    once freed (the process only grows). DPO on the demo's model peaked at 2.1 GB padded to the exact length and at
    1.3 GB rounded to 16, in the same time (48 s for 40 steps and the reference pass; docs/LOG.md)."""
    T = max(len(e) for e in examples)
    if limit is not None:
        T = max(T, min(-(-T // PAD_MULTIPLE) * PAD_MULTIPLE, limit))
    x = torch.full((len(examples), T), pad_id, dtype=torch.long)
    y = torch.full((len(examples), T), IGNORE, dtype=torch.long)
    for i, e in enumerate(examples):
        x[i, : len(e)] = torch.tensor(e.x)
        y[i, : len(e)] = torch.tensor(e.y)
    return Batch(x, y)


def pack_rows(examples: list[Example], seq_len: int) -> list[list[Example]]:
    """First-fit-decreasing bin packing of examples into rows of at most seq_len tokens."""
    rows: list[list[Example]] = []
    room: list[int] = []
    for e in sorted(examples, key=len, reverse=True):
        n = min(len(e), seq_len)
        for i, r in enumerate(room):
            if r >= n:
                rows[i].append(e)
                room[i] -= n
                break
        else:
            rows.append([e])
            room.append(seq_len - n)
    return rows


def packed_batch(rows: list[list[Example]], seq_len: int, pad_id: int) -> Batch:
    """Rows of several examples each: positions restart at 0 per example, doc_ids tell them apart."""
    T = min(seq_len, max(sum(len(e) for e in r) for r in rows))
    B = len(rows)
    x = torch.full((B, T), pad_id, dtype=torch.long)
    y = torch.full((B, T), IGNORE, dtype=torch.long)
    pos = torch.zeros((B, T), dtype=torch.long)
    doc = torch.full((B, T), -1, dtype=torch.long)
    for i, r in enumerate(rows):
        t = 0
        for d, e in enumerate(r):
            n = min(len(e), T - t)
            if n <= 0:
                break
            x[i, t:t + n] = torch.tensor(e.x[:n])
            y[i, t:t + n] = torch.tensor(e.y[:n])
            pos[i, t:t + n] = torch.arange(n)
            doc[i, t:t + n] = d
            t += n
    return Batch(x, y, pos, doc)


def make_batches(examples: list[Example], micro_batch: int, seq_len: int, pad_id: int, mode: str = "pad",
                 seed: int = 0, shuffle: bool = True) -> list[Batch]:
    """One epoch of micro-batches. "pad": length-grouped (sorted within shuffled windows of 32 batches, so
    rows in a batch have similar lengths but batch order stays random); "pack": packed rows."""
    rng = random.Random(seed)
    order = list(examples)
    if shuffle:
        rng.shuffle(order)
    if mode == "pack":
        rows = pack_rows(order, seq_len)
        if shuffle:
            rng.shuffle(rows)
        return [packed_batch(rows[i:i + micro_batch], seq_len, pad_id) for i in range(0, len(rows), micro_batch)]
    if mode != "pad":
        raise ValueError(f"unknown batching mode {mode!r}; use pad or pack")
    window = micro_batch * 32
    chunks = []
    for w in range(0, len(order), window):
        part = sorted(order[w:w + window], key=len)
        chunks += [part[i:i + micro_batch] for i in range(0, len(part), micro_batch)]
    if shuffle:
        rng.shuffle(chunks)
    return [pad_batch(c, pad_id, seq_len) for c in chunks]


def make_reply_example(tokenizer, prompt: list[dict], reply: str, max_len: int) -> Example | None:
    """(x, y) for one reply to a chat prompt, scoring the reply and its <|im_end|> only (DPO, reward model,
    GRPO): earlier assistant turns of a multi-turn prompt are context, not targets. In a Hugging Face model's
    own template: the reply as the template writes it, through its end-of-turn token."""
    from scratchlm.inference.chat_template import encode_chat
    from scratchlm.inference.hf_chat import has_hf_template, hf_reply_span

    if has_hf_template(tokenizer):
        msgs = list(prompt) + [{"role": "assistant", "content": reply}]
        full = encode_chat(tokenizer, msgs, add_generation_prompt=False)
        a, b = hf_reply_span(tokenizer, msgs, len(msgs) - 1, full=full)
        return example_from_ids(full[:a], full[a:b], max_len)
    _, _, end = chat_special_ids(tokenizer)
    p = encode_chat(tokenizer, prompt, add_generation_prompt=True)
    ids = p + tokenizer.encode(reply) + [end]
    return example_from_ids(p, ids[len(p):], max_len)


def example_from_ids(prompt_ids: list[int], reply_ids: list[int], max_len: int) -> Example | None:
    ids = (prompt_ids + reply_ids)[: max_len + 1]
    n_prompt = len(prompt_ids)
    if len(ids) <= n_prompt:
        return None  # the prompt alone fills the context
    y = [IGNORE] * (n_prompt - 1) + ids[n_prompt:]
    return Example(ids[:-1], y)
