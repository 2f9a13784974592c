"""What every tokenizer offers (BPE and char), and the small helpers they share."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

from .pretokenize import BOS_TOKEN, EOS_TOKEN, PAD_TOKEN

CONFIG_FILE = "scratchlm_tokenizer.json"  # our readable format: config + merges (or chars)


class Tokenizer:
    """Base class. Subclasses set self.special_tokens ({string: id}) and implement the methods below."""

    special_tokens: dict[str, int]

    # ---- interface ----
    def encode(self, text: str, allowed_special=frozenset()) -> list[int]:
        raise NotImplementedError

    def decode(self, ids, errors: str = "replace") -> str:
        raise NotImplementedError

    def save(self, directory, chat_template: str | None = None) -> Path:
        raise NotImplementedError

    def decode_bytes(self, ids) -> bytes:
        """The UTF-8 bytes of ids (for streaming: a BPE token may end in the middle of a character)."""
        return self.decode(ids, errors="strict").encode("utf-8")

    @property
    def vocab_size(self) -> int:
        raise NotImplementedError

    # ---- shared ----
    @property
    def bos_id(self) -> int | None:
        return self.special_tokens.get(BOS_TOKEN)

    @property
    def eos_id(self) -> int | None:
        return self.special_tokens.get(EOS_TOKEN)

    @property
    def pad_id(self) -> int | None:
        return self.special_tokens.get(PAD_TOKEN)

    def _allowed(self, allowed_special) -> frozenset:
        """Resolve allowed_special ("all" or a set of special-token strings) to a frozenset."""
        if allowed_special == "all":
            return frozenset(self.special_tokens)
        if isinstance(allowed_special, str):
            raise ValueError(f'allowed_special must be "all" or a set of token strings, not {allowed_special!r}')
        allowed = frozenset(allowed_special)
        unknown = allowed - self.special_tokens.keys()
        if unknown:
            raise ValueError(f"unknown special token(s) {sorted(unknown)}; known: {sorted(self.special_tokens)}")
        return allowed

    def encode_batch(self, texts, allowed_special=frozenset(), num_workers: int | None = None) -> list[list[int]]:
        """Encode many texts, in parallel processes when num_workers > 1 (None = all CPUs)."""
        texts = list(texts)
        if num_workers is None:
            num_workers = os.cpu_count() or 1
        if num_workers <= 1 or len(texts) < 2:
            return [self.encode(t, allowed_special) for t in texts]
        import multiprocessing as mp

        ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
        chunksize = max(1, len(texts) // (num_workers * 8))
        pool = ctx.Pool(num_workers, initializer=_set_worker_tokenizer, initargs=(self, allowed_special))
        with finishing(pool):
            return pool.map(_worker_encode, texts, chunksize=chunksize)

    def __len__(self) -> int:
        return self.vocab_size


_WORKER: tuple | None = None


def _set_worker_tokenizer(tok: Tokenizer, allowed_special) -> None:
    global _WORKER
    default_signals()
    _WORKER = (tok, allowed_special)


@contextlib.contextmanager
def finishing(pool):
    """Run a multiprocessing pool's work, then let its workers leave on their own (close + join): `with Pool()`
    would stop them with SIGTERM, which a worker may not obey (see default_signals). On an error, terminate."""
    try:
        yield pool
    except BaseException:
        pool.terminate()
        raise
    else:
        pool.close()
    finally:
        pool.join()


def default_signals() -> None:
    """For a forked pool worker: SIGTERM and SIGINT do what they do by default again. A fork inherits the parent's
    Python handlers (a training run's stop-on-signal, Ray's, a server's); one that catches SIGTERM and returns makes
    Pool.terminate(), which every `with Pool()` calls on exit, wait forever for a worker that will not stop (seen in
    CI: the suite hung in encode_batch after a test had left such a handler installed)."""
    import signal

    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, signal.SIG_DFL)


def _worker_encode(text: str) -> list[int]:
    tok, allowed = _WORKER
    return tok.encode(text, allowed)


def write_text(path: Path, text: str) -> None:
    """Write a file atomically (temp file + rename), so a crash never leaves half a tokenizer behind."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; tokenizer files are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path: Path, obj, indent: int | None = 2) -> None:
    write_text(path, json.dumps(obj, ensure_ascii=False, indent=indent) + "\n")
