"""Training windows from token shards, resumable and rank-aware, from one shard folder or a mixture of several.

A training row is seq_len + 1 consecutive tokens: inputs are the first seq_len, targets the last seq_len
(each position predicts the next token). A split is read as one array, its shard files end to end
(scratchlm.data.shards.ShardedTokens), so everything below is the same for one shard or a thousand, and a
row may cross a shard boundary exactly as it would cross a document boundary in one big file. Two ways to cut
rows from it:

- "random" (nanoGPT): each row starts at a uniformly random offset, so each shard gets rows in proportion to
  its size. Batch i is drawn from a generator seeded by (seed, i): the global batch of all world_size ranks,
  of which rank r keeps rows [r*rows, (r+1)*rows). The loader's whole state is the counter i, so resuming is
  exact, ranks draw different windows without talking to each other, and N ranks see exactly the rows one
  process would (any world size). Only this rank's windows are read.
- "docs" (document-aligned packing): documents are visited in a shuffled order (a new permutation per
  epoch over the documents of all shards; rank r takes every world_size-th document). A row starts at a
  document's BOS and is filled with whole documents; the document that overflows is cropped. A document longer
  than a row continues in the next row. Every token the model sees as context then belongs to its own document
  or ones before it in the row, each introduced by a BOS. State: (epoch, cursor, offset into the current
  document), plus which shard and where in it that is, for the reader.

Both yield the *global* batch of one optimizer step at once (micro_batch_size * grad_accum rows) so that the
split into micro-batches cannot change which rows are drawn: 4 x 1 and 1 x 4 see the same data.

A MixtureLoader reads several shard folders ("sources") at fixed weights: each row of the global batch is given
to the source furthest below its share of the rows so far, so after any number of rows every source is less
than one row from its target (proportions exact to 1/rows, not to a coin's luck), and the assignment is the
same on every rank. Each source is a TokenLoader of its own (its own random stream or document order).
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch


def gather_windows(tokens, starts: np.ndarray, length: int) -> np.ndarray:
    """tokens[s : s + length] for each s in `starts`, as int64 (len(starts), length); works across shard files."""
    if hasattr(tokens, "windows"):  # ShardedTokens: one gather per shard, boundary-crossing rows pieced together
        return np.asarray(tokens.windows(starts, length), dtype=np.int64)
    return np.asarray(tokens[np.asarray(starts)[:, None] + np.arange(length)], dtype=np.int64)


class TokenLoader:
    """Rows of `seq_len + 1` tokens from one split; `next_batch()` -> (x, y), each (rows, seq_len) int64.

    stream: 0 for a run's one loader; a mixture gives each source its own (1, 2, ...) so that sources of equal
    size do not draw the same offsets.
    """

    def __init__(self, tokens: np.ndarray, offsets: np.ndarray | None, seq_len: int, rows: int,
                 mode: str = "random", seed: int = 0, rank: int = 0, world_size: int = 1, stream: int = 0):
        if mode not in ("random", "docs"):
            raise ValueError(f"unknown packing mode {mode!r}; use random or docs")
        if len(tokens) < seq_len + 2:
            raise ValueError(f"the split has {len(tokens)} tokens, fewer than one window of seq_len + 1 = "
                             f"{seq_len + 1}; lower train.seq_len or add data")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world_size {world_size}")
        self.tokens, self.seq_len, self.rows, self.mode = tokens, seq_len, rows, mode
        self.seed, self.rank, self.world_size, self.stream = seed, rank, world_size, stream
        if offsets is None or len(offsets) == 0:
            offsets = np.zeros(1, dtype=np.int64)
        self.doc_starts = np.asarray(offsets, dtype=np.int64)
        self.doc_ends = np.append(self.doc_starts[1:], len(tokens))
        self.batch_index = 0  # batches drawn so far (the whole state in random mode)
        self.epoch, self.cursor, self.doc_offset = 0, 0, 0  # docs mode
        self._order = None

    def _key(self, *parts: int) -> list[int]:
        # stream 0 keeps the seeds of runs written before mixtures existed: their resumes stay exact
        return [self.seed, *parts] + ([self.stream] if self.stream else [])

    # ------------------------------------------------------------------ random windows
    def _random_rows(self, n_global: int, lo: int, hi: int) -> np.ndarray:
        T = self.seq_len
        rng = np.random.default_rng(self._key(0, self.batch_index))
        starts = rng.integers(0, len(self.tokens) - T, size=n_global)  # last: len - T - 1
        return gather_windows(self.tokens, starts[lo:hi], T + 1)  # (hi - lo, T+1): this rank's slice only

    # ------------------------------------------------------------------ document packing
    def _rank_order(self) -> np.ndarray:
        if self._order is None or self._order[0] != self.epoch:
            perm = np.random.default_rng(self._key(1 << 20, self.epoch)).permutation(len(self.doc_starts))
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
    def take(self, n_global: int, lo: int, hi: int) -> np.ndarray:
        """Rows [lo, hi) of this step's n_global rows (all ranks together), int64 (hi - lo, seq_len + 1), and
        advance one step. In docs mode a rank packs its own documents: only hi - lo counts."""
        if self.mode == "random":
            data = self._random_rows(n_global, lo, hi)
        else:
            data = np.stack([self._packed_row() for _ in range(hi - lo)]) if hi > lo else \
                np.empty((0, self.seq_len + 1), dtype=np.int64)
        self.batch_index += 1
        return data

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next (x, y): inputs and next-token targets, each (rows, seq_len) int64 on the CPU."""
        data = self.take(self.rows * self.world_size, self.rank * self.rows, (self.rank + 1) * self.rows)
        data = torch.from_numpy(data)
        return data[:, :-1], data[:, 1:]

    def metrics(self) -> dict:
        """Values for the metrics row (a mixture reports its proportions; one source has nothing to add)."""
        return {}

    def position(self) -> dict:
        """Where the next docs-mode read starts: {"shard": k, "shard_offset": i} (shard 0 for a one-file split)."""
        if self.mode != "docs" or not len(order := self._rank_order()):
            return {}
        pos = int(self.doc_starts[order[self.cursor]] + self.doc_offset)
        k, local = self.tokens.locate(pos) if hasattr(self.tokens, "locate") else (0, pos)
        return {"shard": k, "shard_offset": local}

    def state_dict(self) -> dict:
        return {"mode": self.mode, "seed": self.seed, "rank": self.rank, "world_size": self.world_size,
                "stream": self.stream, "batch_index": self.batch_index, "epoch": self.epoch, "cursor": self.cursor,
                "doc_offset": self.doc_offset, "n_tokens": len(self.tokens), "n_docs": len(self.doc_starts),
                **self.position()}

    def load_state_dict(self, state: dict) -> None:
        if state.get("kind") == "mixture":
            raise ValueError(f"loader state was saved by a run that mixed {', '.join(state['names'])}; this run "
                             "reads one shard folder: resume with the same data.mix")
        # Random windows depend only on the step, not on the world size: a run may resume on more or fewer ranks.
        keys = ("mode", "seed") if self.mode == "random" else ("mode", "seed", "world_size")
        for key in keys:
            if state[key] != getattr(self, key):
                raise ValueError(f"loader state was saved with {key}={state[key]!r}, this run has "
                                 f"{getattr(self, key)!r}; resume with the same config")
        # states written before shards were counted have no sizes: nothing to compare
        for key, have in (("n_tokens", len(self.tokens)), ("n_docs", len(self.doc_starts))):
            if key in state and state[key] != have:
                raise ValueError(f"loader state was saved over {state[key]:,} {key[2:]}, these shards hold "
                                 f"{have:,}: the data changed; resume with the shards the run started with")
        self.batch_index, self.epoch = state["batch_index"], state["epoch"]
        self.cursor, self.doc_offset = state["cursor"], state["doc_offset"]
        self._order = None


class MixtureLoader:
    """Rows from several sources at fixed weights; `next_batch()` -> (x, y) like TokenLoader.

    sources: {name: (tokens, doc_offsets)}, one split of each source's shards; weights: {name: weight > 0},
    normalised here. The global batch's rows are assigned to sources by largest deficit (below), each source's
    rows are drawn by its own TokenLoader, and rank r keeps rows [r*rows, (r+1)*rows) of the global batch, so N
    ranks see what one process would (random mode) and the mixture is the same at any world size.
    """

    def __init__(self, sources: dict, weights: dict, seq_len: int, rows: int, mode: str = "random", seed: int = 0,
                 rank: int = 0, world_size: int = 1):
        self.names = list(sources)
        if set(weights) != set(self.names):
            raise ValueError(f"mixture weights name {sorted(weights)}, the sources are {sorted(self.names)}")
        w = np.array([weights[n] for n in self.names], dtype=np.float64)
        if not len(w) or not np.all(np.isfinite(w)) or np.any(w <= 0):
            raise ValueError(f"mixture weights must be finite and > 0, got {dict(zip(self.names, w.tolist()))}")
        self.weights = (w / w.sum()).tolist()
        self.rows, self.seq_len, self.rank, self.world_size = rows, seq_len, rank, world_size
        self.loaders = []
        for i, name in enumerate(self.names):
            tokens, offsets = sources[name]
            try:
                self.loaders.append(TokenLoader(tokens, offsets, seq_len, rows, mode, seed, rank, world_size,
                                                stream=i + 1))
            except ValueError as e:
                raise ValueError(f"data.mix source {name!r}: {e}") from None
        self.counts = [0] * len(self.names)  # global rows drawn from each source so far (all ranks together)
        self.batch_index = 0

    def _assign(self, n: int) -> np.ndarray:
        """Sources of the next n global rows. Each row goes to the source whose count is furthest below
        weight * rows-so-far (ties: the first named). This keeps every source within one row of its exact share
        after every row (checked in tests/test_data_mix.py), where independent draws would drift by ~sqrt(rows)."""
        out = np.empty(n, dtype=np.int64)
        total = sum(self.counts)
        for j in range(n):
            total += 1
            s = max(range(len(self.counts)), key=lambda i: self.weights[i] * total - self.counts[i])
            self.counts[s] += 1
            out[j] = s
        return out

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        lo, hi = self.rank * self.rows, (self.rank + 1) * self.rows
        assign = self._assign(self.rows * self.world_size)  # the same on every rank: a function of the counts
        data = np.empty((self.rows, self.seq_len + 1), dtype=np.int64)
        for s, loader in enumerate(self.loaders):
            rows = np.flatnonzero(assign == s)  # this source's rows of the global batch, in order
            a, b = np.searchsorted(rows, lo), np.searchsorted(rows, hi)  # ... and which of them are this rank's
            try:
                data[rows[a:b] - lo] = loader.take(len(rows), int(a), int(b))
            except ValueError as e:  # e.g. docs mode: a rank with no document of this source
                raise ValueError(f"data.mix source {self.names[s]!r}: {e}") from None
        self.batch_index += 1
        data = torch.from_numpy(data)
        return data[:, :-1], data[:, 1:]

    def fractions(self) -> dict[str, float]:
        """Share of the training tokens drawn from each source so far (every row has seq_len + 1 tokens)."""
        total = max(1, sum(self.counts))
        return {name: c / total for name, c in zip(self.names, self.counts)}

    def metrics(self) -> dict:
        return {f"mix/{name}": round(f, 5) for name, f in self.fractions().items()}

    def state_dict(self) -> dict:
        return {"kind": "mixture", "names": list(self.names), "weights": list(self.weights),
                "counts": list(self.counts), "batch_index": self.batch_index,
                "sources": [loader.state_dict() for loader in self.loaders]}

    def load_state_dict(self, state: dict) -> None:
        if state.get("kind") != "mixture":
            raise ValueError(f"loader state was saved by a run that read one shard folder; this run mixes "
                             f"{', '.join(self.names)}: resume with the same data (data.shards, no data.mix)")
        if list(state["names"]) != self.names or not np.allclose(state["weights"], self.weights, rtol=0, atol=1e-12):
            saved = ", ".join(f"{n}={w:.4g}" for n, w in zip(state["names"], state["weights"]))
            now = ", ".join(f"{n}={w:.4g}" for n, w in zip(self.names, self.weights))
            raise ValueError(f"loader state was saved with data.mix {saved}, this run has {now}: resume with the "
                             "same data.mix (or start a new run from this checkpoint's weights)")
        for name, loader, sub in zip(self.names, self.loaders, state["sources"]):
            try:
                loader.load_state_dict(sub)
            except ValueError as e:
                raise ValueError(f"data.mix source {name!r}: {e}") from None
        self.counts, self.batch_index = [int(c) for c in state["counts"]], state["batch_index"]


def build_loader(data, seq_len: int, rows: int, mode: str = "random", seed: int = 0, rank: int = 0,
                 world_size: int = 1):
    """The training loader for a run's data (train/data.py: RunData): a MixtureLoader when it mixes sources."""
    if getattr(data, "mix", None):
        sources = {name: (src.train_tokens, src.train_offsets) for name, src in data.mix.items()}
        return MixtureLoader(sources, data.weights, seq_len, rows, mode, seed, rank, world_size)
    return TokenLoader(data.train_tokens, data.train_offsets, seq_len, rows, mode, seed, rank, world_size)


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
        data = torch.from_numpy(gather_windows(tokens, np.asarray(full[i : i + rows]), T + 1))
        yield data[:, :-1], data[:, 1:]
    tail = [s for s in starts if s + T > n]
    for s in tail:  # at most one: the last, shorter window
        data = torch.from_numpy(np.asarray(tokens[s : n + 1], dtype=np.int64))[None]
        yield data[:, :-1], data[:, 1:]
