"""Learning-rate schedules as pure functions of progress.

A schedule here is `lr_multiplier(step, progress) -> float in (0, 1]`, multiplied into each param group's peak
lr. Being a pure function, it needs no state of its own to resume exactly: the checkpoint's step and budget
counters are the schedule's state.

- cosine (default): linear warmup, then half a cosine from the peak down to a floor (min_lr_ratio). The shape
  of GPT-3, Chinchilla and nanoGPT.
- wsd (warmup-stable-decay): warmup, a long flat phase at the peak, then a short linear decay to the floor
  (Hu et al. 2024, MiniCPM; Hägele et al. 2024). Because the flat phase does not depend on the total length,
  a run can be extended, or branched and decayed at any point, without restarting.
- constant: warmup, then flat.

The decay is driven by `progress` in [0, 1], the fraction of the run's budget spent since warmup ended. With a
step budget that is (step - warmup) / (max_steps - warmup), the textbook formula. With a wall-clock budget
(train.max_time) it is the fraction of the remaining time spent, so the same shapes run on the clock and the
decay ends exactly when the budget does, however fast the machine is.
"""

from __future__ import annotations

import math


def lr_multiplier(step: int, progress: float, *, schedule: str = "cosine", warmup_steps: int = 0,
                  min_ratio: float = 0.1, decay_fraction: float = 0.2) -> float:
    """Multiplier of the peak learning rate at optimizer step `step` (0-based), `progress` in [0, 1] after warmup."""
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)  # never exactly 0: a zero-lr first step would waste its batch
    progress = min(1.0, max(0.0, progress))
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
    if schedule == "wsd":
        if progress < 1.0 - decay_fraction:
            return 1.0
        return 1.0 - (1.0 - min_ratio) * (progress - (1.0 - decay_fraction)) / max(decay_fraction, 1e-9)
    raise ValueError(f"unknown schedule {schedule!r}; use cosine, wsd or constant")
