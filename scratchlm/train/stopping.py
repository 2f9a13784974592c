"""How a training run stops when it should not go on: a signal from the user, or weights that are no longer numbers.

Ctrl-C (SIGINT) and SIGTERM (what `kill`, SLURM's time limit and torchrun's shutdown send) do not lose work:

    first signal   the loop finishes the step it is in, writes a checkpoint, and exits 130 (SIGINT) or
                   143 (SIGTERM) with the command that resumes it
    second signal  aborts at once (the checkpoints already written are complete: every save is atomic)

Under torchrun every rank gets the signal (the launcher forwards it to each worker, then waits 30 s before
SIGKILL), but not at the same step; the ranks agree on the step to stop at with one all-reduce per step, so
the collective checkpoint save starts on all of them together.

A run whose weights became inf or NaN must never finish as if it had succeeded: non-finite weights are never
saved over the last finite checkpoint, and the run stops with exit code 1 naming that checkpoint.
"""

from __future__ import annotations

import os
import signal
import threading

import torch


class TrainingStopped(RuntimeError):
    """The run cannot continue (e.g. repeated non-finite losses); the message says why and what to change."""

    exit_code = 1


class Interrupted(RuntimeError):
    """A signal stopped the run after a checkpoint was saved; the CLI exits 128 + signum and says how to resume."""

    resume_hint = True

    def __init__(self, signum: int, step: int, checkpoint):
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        self.exit_code = 128 + signum
        super().__init__(f"{signal.Signals(signum).name}: stopped after step {step}; checkpoint saved in {checkpoint}")


class StopOnSignal:
    """`with StopOnSignal() as stop:` ... `if stop.requested(): save and raise Interrupted(...)`.

    Installs its handlers only in the main thread (Python delivers signals there; elsewhere, e.g. a training
    run started from a server thread, signals keep their default behaviour) and restores the previous ones."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum = 0
        self._previous: dict = {}

    def __enter__(self) -> "StopOnSignal":
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}

    def _handle(self, signum, frame) -> None:
        if self.signum:  # the second one: do what the signal does by default, now
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self.signum = signum
        # os.write, not print: a handler that runs while the main thread is inside a print to the same stream
        # would raise "reentrant call"
        os.write(2, f"\n{signal.Signals(signum).name} received: finishing this step and saving a checkpoint "
                    f"(send it again to abort at once)\n".encode())

    def requested(self, distributed: bool = False, device="cpu") -> int:
        """The signal to stop on (0: none). Distributed: the largest over all ranks, so all stop at this step."""
        if not distributed:
            return self.signum
        flag = torch.tensor([self.signum], dtype=torch.int64, device=device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return int(flag.item())


def weights_finite(params, distributed: bool = False, device="cpu") -> bool:
    """Are all parameters finite? Sharded parameters (FSDP, TP) are checked shard by shard, on every rank."""
    bad = 0
    with torch.no_grad():
        for p in params:
            local = p.to_local() if hasattr(p, "to_local") else p
            if local.numel() and not bool(torch.isfinite(local).all()):
                bad = 1
                break
    if distributed:
        flag = torch.tensor([bad], dtype=torch.int64, device=device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        bad = int(flag.item())
    return not bad


def nonfinite_weights_error(step: int, last_checkpoint) -> TrainingStopped:
    where = f"the last finite checkpoint is {last_checkpoint}" if last_checkpoint else "no checkpoint was written"
    return TrainingStopped(f"the weights became non-finite (inf/NaN) by step {step}, so they were not saved; {where}. "
                           "Lower train.lr or raise train.warmup_steps, then --resume (or start over with --overwrite)")
