"""Process pools finish although the parent catches SIGTERM.

A forked worker inherits the parent's Python signal handlers. `with multiprocessing.Pool()` ends with terminate(),
which stops the workers with SIGTERM: a worker whose inherited handler catches it and returns never stops, and the
pool's join waits forever. CI hung exactly so in encode_batch, after an earlier test in the same process had left
such a handler installed (a training run's stop-on-signal and Ray's driver both install one). Every pool of ours
must finish whatever handlers the parent has.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent("""
    import signal, sys
    from pathlib import Path

    signal.signal(signal.SIGTERM, lambda signum, frame: None)  # the parent's handler: catches SIGTERM, returns
    from scratchlm.data.executors import LocalExecutor
    from scratchlm.tokenizer import build_pattern
    from scratchlm.tokenizer.corpus import count_words
    from scratchlm.tokenizer.train import train_bpe_from_texts

    texts = [f"story {i}: the fox ran {i % 7} times around the old mill." for i in range(400)]
    tok = train_bpe_from_texts(texts, vocab_size=300)
    want = [tok.encode(t) for t in texts]
    for _ in range(3):  # each call starts and terminates a pool
        assert tok.encode_batch(texts, num_workers=2) == want
    print("encode_batch", flush=True)

    folder = Path(sys.argv[1])
    for i in range(4):
        (folder / f"{i}.txt").write_text("\\n\\n".join(texts[i::4]))
    counts = count_words([folder], build_pattern("gpt4"), num_workers=2, progress=False, block_bytes=2000)
    assert sum(counts.values()) > 0
    print("count_words", flush=True)

    assert LocalExecutor(2, progress=False).map(pow, [(i, 2) for i in range(8)]) == [i * i for i in range(8)]
    assert list(LocalExecutor(2, progress=False).imap(pow, ((i, 3) for i in range(8)))) == [i ** 3 for i in range(8)]
    print("executor", flush=True)
""")


def test_pools_finish_when_the_parent_catches_sigterm(tmp_path):
    try:
        proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], cwd=ROOT, capture_output=True,
                              text=True, timeout=240)
    except subprocess.TimeoutExpired as e:  # the bug is a hang: a pool's join waiting on a worker that never stops
        raise AssertionError(f"a process pool never finished; it got as far as: {e.stdout!r}") from None
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["encode_batch", "count_words", "executor"]
