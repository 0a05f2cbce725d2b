"""Training for a time: a budget of seconds becomes a number of whole epochs, planned from measured time."""

from __future__ import annotations

import time

import numpy as np


class TimeBudget:
    """A time budget becomes a number of whole epochs, planned from measured time, never guessed (machines
    differ 2-3x, and a CPU estimate was 4x off): first from the first steps, then again at every epoch end
    from the wall time of the last epochs, checkpoints included, so a machine that slows down (another job
    started) or speeds up still finishes on time, with the cosine schedule run to its end."""

    PROBE_STEPS = 6  # the first is a warm-up and not timed
    RESERVE = 0.95  # the first plan cannot know the epoch-end costs yet (checkpoint, BatchNorm re-estimation)
    RECENT_EPOCHS = 3

    def __init__(self, seconds: float, steps_per_epoch: int, max_steps: int | None, step: int = 0,
                 spent: float = 0.0, decided: bool = False, clock=time.perf_counter):
        """`step`, `spent`, `decided`: where a resumed run stands (its earlier sessions' time counts)."""
        self.seconds, self.steps_per_epoch, self.max_steps, self.clock = seconds, steps_per_epoch, max_steps, clock
        self.before, self.decided = spent, decided
        self.t0 = self.started = clock()
        self.step_times: list[float] = []
        self.segments: list[tuple[float, int]] = []  # (seconds, steps) between epoch ends
        self.segment_start = (self.started, step)

    def spent(self) -> float:
        return self.before + self.clock() - self.started

    def after_step(self) -> bool:
        """Call after every step; True once, when the first steps are timed and the first plan is due."""
        if self.decided:
            return False
        now = self.clock()
        self.step_times.append(now - self.t0)
        self.t0 = now
        return len(self.step_times) == self.PROBE_STEPS

    def plan(self, step: int, epoch_end: bool = False) -> int:
        """The total number of steps that fits the budget, in whole epochs, at least `step`."""
        left = self.seconds - self.spent()
        if epoch_end:
            now = self.clock()
            self.segments.append((now - self.segment_start[0], step - self.segment_start[1]))
            self.segment_start = (now, step)
            recent = self.segments[-self.RECENT_EPOCHS:]
            per_step = sum(t for t, _ in recent) / max(1, sum(n for _, n in recent))
        else:
            per_step = float(np.median(self.step_times[1:]))
            left -= self.seconds * (1 - self.RESERVE)
        self.decided = True
        epochs = int((step + max(0.0, left) / per_step) // self.steps_per_epoch)
        total = max(epochs * self.steps_per_epoch, self.steps_per_epoch, step)
        return min(total, self.max_steps) if self.max_steps else total
