"""Training windows from token shards, resumable and rank-aware.

A training row is seq_len + 1 consecutive tokens: inputs are the first seq_len, targets the last seq_len
(each position predicts the next token). Two ways to cut rows from the flat token array of a split:

- "random" (nanoGPT): each row starts at a uniformly random offset. Batch i is drawn from a generator
  seeded by (seed, i): the global batch of all world_size ranks, of which rank r keeps rows
  [r*rows, (r+1)*rows). The loader's whole state is the counter i, so resuming is exact, ranks draw different
  windows without talking to each other, and N ranks see exactly the rows one process would (any world size).
- "docs" (document-aligned packing): documents are visited in a shuffled order (a new permutation per
  epoch; rank r takes every world_size-th document). A row starts at a document's BOS and is filled with
  whole documents; the document that overflows is cropped. A document longer than a row continues in the
  next row. Every token the model sees as context then belongs to its own document or ones before it in
  the row, each introduced by a BOS. State: (epoch, cursor, offset into the current document).

Both yield the *global* batch of one optimizer step at once (micro_batch_size * grad_accum rows) so that the
split into micro-batches cannot change which rows are drawn: 4 x 1 and 1 x 4 see the same data.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch


class TokenLoader:
    """Rows of `seq_len + 1` tokens from one split; `next_batch()` -> (x, y), each (rows, seq_len) int64."""

    def __init__(self, tokens: np.ndarray, offsets: np.ndarray | None, seq_len: int, rows: int,
                 mode: str = "random", seed: int = 0, rank: int = 0, world_size: int = 1):
        if mode not in ("random", "docs"):
            raise ValueError(f"unknown packing mode {mode!r}; use random or docs")
        if len(tokens) < seq_len + 2:
            raise ValueError(f"the split has {len(tokens)} tokens, fewer than one window of seq_len + 1 = "
                             f"{seq_len + 1}; lower train.seq_len or add data")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world_size {world_size}")
        self.tokens, self.seq_len, self.rows, self.mode = tokens, seq_len, rows, mode
        self.seed, self.rank, self.world_size = seed, rank, world_size
        if offsets is None or len(offsets) == 0:
            offsets = np.zeros(1, dtype=np.int64)
        self.doc_starts = np.asarray(offsets, dtype=np.int64)
        self.doc_ends = np.append(self.doc_starts[1:], len(tokens))
        self.batch_index = 0  # random mode: batches drawn so far
        self.epoch, self.cursor, self.doc_offset = 0, 0, 0  # docs mode
        self._order = None

    # ------------------------------------------------------------------ random windows
    def _random_rows(self) -> np.ndarray:
        T = self.seq_len
        rng = np.random.default_rng([self.seed, 0, self.batch_index])
        starts = rng.integers(0, len(self.tokens) - T, size=self.rows * self.world_size)  # last: len - T - 1
        starts = starts[self.rank * self.rows : (self.rank + 1) * self.rows]  # this rank's slice
        idx = starts[:, None] + np.arange(T + 1)  # (rows, T+1)
        return np.asarray(self.tokens[idx], dtype=np.int64)

    # ------------------------------------------------------------------ document packing
    def _rank_order(self) -> np.ndarray:
        if self._order is None or self._order[0] != self.epoch:
            perm = np.random.default_rng([self.seed, 1 << 20, self.epoch]).permutation(len(self.doc_starts))
            self._order = (self.epoch, perm[self.rank :: self.world_size])
        return self._order[1]

    def _advance_doc(self) -> None:
        self.cursor, self.doc_offset = self.cursor + 1, 0
        if self.cursor >= len(self._rank_order()):
            self.epoch, self.cursor = self.epoch + 1, 0

    def _packed_row(self) -> np.ndarray:
        need = self.seq_len + 1
        row = np.empty(need, dtype=np.int64)
        filled, first = 0, True
        while filled < need:
            order = self._rank_order()
            if len(order) == 0:
                raise ValueError(f"rank {self.rank} has no documents (world_size {self.world_size} > documents)")
            doc = order[self.cursor]
            start = self.doc_starts[doc] + self.doc_offset
            end = self.doc_ends[doc]
            take = min(need - filled, end - start)
            row[filled : filled + take] = self.tokens[start : start + take]
            filled += take
            if first and start + take < end:  # a long document continues in the next row
                self.doc_offset += take
            else:  # the document fit, or it overflowed a row it did not start: crop it, move on
                self._advance_doc()
            first = False
        return row

    # ------------------------------------------------------------------ public
    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next (x, y): inputs and next-token targets, each (rows, seq_len) int64 on the CPU."""
        if self.mode == "random":
            data = self._random_rows()
        else:
            data = np.stack([self._packed_row() for _ in range(self.rows)])
        self.batch_index += 1
        data = torch.from_numpy(data)
        return data[:, :-1], data[:, 1:]

    def state_dict(self) -> dict:
        return {"mode": self.mode, "seed": self.seed, "rank": self.rank, "world_size": self.world_size,
                "batch_index": self.batch_index, "epoch": self.epoch, "cursor": self.cursor,
                "doc_offset": self.doc_offset}

    def load_state_dict(self, state: dict) -> None:
        # Random windows depend only on the step, not on the world size: a run may resume on more or fewer ranks.
        keys = ("mode", "seed") if self.mode == "random" else ("mode", "seed", "world_size")
        for key in keys:
            if state[key] != getattr(self, key):
                raise ValueError(f"loader state was saved with {key}={state[key]!r}, this run has "
                                 f"{getattr(self, key)!r}; resume with the same config")
        self.batch_index, self.epoch = state["batch_index"], state["epoch"]
        self.cursor, self.doc_offset = state["cursor"], state["doc_offset"]
        self._order = None


def eval_windows(tokens: np.ndarray, seq_len: int, rows: int, max_tokens: int = 0, rank: int = 0,
                 world_size: int = 1) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Non-overlapping windows covering the split in order: every token after the first is a target once.

    Window j holds tokens [j*T, j*T + T + 1); the last one may be shorter. max_tokens > 0 scores only the first
    max_tokens targets (a fixed subset, so periodic evaluations compare like with like). Rank r takes windows
    j with j % world_size == r. Yields (x, y) batches of up to `rows` windows of equal length.
    """
    n = len(tokens) - 1  # targets available
    if max_tokens:
        n = min(n, max_tokens)
    T = seq_len
    starts = np.arange(0, n, T)[rank::world_size]
    full = [s for s in starts if s + T <= n]
    for i in range(0, len(full), rows):
        chunk = np.asarray(full[i : i + rows])
        data = torch.from_numpy(np.asarray(tokens[chunk[:, None] + np.arange(T + 1)], dtype=np.int64))
        yield data[:, :-1], data[:, 1:]
    tail = [s for s in starts if s + T > n]
    for s in tail:  # at most one: the last, shorter window
        data = torch.from_numpy(np.asarray(tokens[s : n + 1], dtype=np.int64))[None]
        yield data[:, :-1], data[:, 1:]
