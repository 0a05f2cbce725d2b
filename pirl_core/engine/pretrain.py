"""The PIRL pretraining loop: epochs of steps over the cached images, checkpoints, a stop, a time budget.

Read with `train_state.py` (what a run is at one step, and its checkpoint) and `train_step.py` (one step of the
paper's algorithm). Data order and augmentation are drawn from generators seeded by (seed, epoch) and
(seed, step), so a run stopped anywhere and resumed gives the same result as one that never stopped.

Under torchrun the same loop runs in every process (engine/distributed.py says how the processes stay one run;
every decision taken from a clock or a callback goes through `distributed.agreed`); the checkpoint does not
depend on the number of processes, so a run can resume on another number of GPUs. Each step moves the uint8
batch to the device first and builds the views there.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import PirlError
from . import distributed
from .config import PretrainConfig
from .optim import set_lr
from .train_state import TrainState, step_generator
from .train_step import TrainStep


@dataclass
class StepReport:
    step: int
    total_steps: int
    epoch: int
    epochs: int
    metrics: dict[str, float]
    images_per_s: float
    eta_s: float
    planned: bool = True  # False while a time budget's first steps are timed: total and epochs not known yet

    def position(self) -> str:
        """Where the run is, in words: "epoch 2/9 · step 40/180", or the time budget being planned."""
        if not self.planned:
            return f"step {self.step} · timing the first steps to plan the epochs that fit the time"
        return f"epoch {self.epoch}/{self.epochs} · step {self.step}/{self.total_steps}"


class Callbacks:
    """What the job runner hooks into. Override any of these."""

    def on_start(self, step: int, total_steps: int) -> None:
        """Called once before training; `step` > 0 when resuming from a checkpoint."""

    def on_step(self, report: StepReport) -> None:
        pass

    def on_checkpoint(self, path: Path, step: int) -> None:
        pass

    def should_stop(self) -> bool:
        return False


@dataclass
class PretrainResult:
    checkpoint: str
    status: str  # "finished" or "stopped"
    step: int
    total_steps: int
    last_metrics: dict[str, float] = field(default_factory=dict)
    images_per_s: float = 0.0


class _Batches(torch.utils.data.Dataset):
    """Batch i of an epoch: its bank indices and its uint8 images, gathered from the cache; under several
    processes, this process's share of the global batch (every image once per epoch across processes)."""

    def __init__(self, images: np.ndarray, order: torch.Tensor, batch_size: int, start: int,
                 world: distributed.World = distributed.ONE_PROCESS):
        self.images, self.order, self.batch_size, self.start, self.world = images, order, batch_size, start, world

    def __len__(self) -> int:
        return len(self.order) // self.batch_size - self.start

    def __getitem__(self, i: int):
        idx = self.order[(self.start + i) * self.batch_size:(self.start + i + 1) * self.batch_size]
        share = self.batch_size // self.world.size
        rows = np.sort(idx.numpy())[self.world.rank * share:(self.world.rank + 1) * share]  # sorted memmap reads
        return torch.from_numpy(rows), torch.from_numpy(np.array(self.images[rows]))


@dataclass
class _Run:
    """One session of a run: its state, the step function, where it reports, and its clocks."""

    state: TrainState
    train_step: TrainStep
    images: np.ndarray
    path: Path
    callbacks: Callbacks
    device: torch.device
    world: distributed.World
    started: float = field(default_factory=time.perf_counter)
    last_save: float = field(default_factory=time.monotonic)
    seen: int = 0

    @property
    def images_per_s(self) -> float:
        return self.seen / max(time.perf_counter() - self.started, 1e-9)

    def agreed(self, value: int | bool) -> int:
        return distributed.agreed(value, self.world, self.device)

    def save(self) -> None:
        if self.state.save(self.path, self.images, self.device, self.world):
            self.callbacks.on_checkpoint(self.path, self.state.step)
        self.last_save = time.monotonic()

    def replan(self, epoch_end: bool = False) -> None:
        """A time budget's plan: after the first timed steps, then at every epoch end."""
        s = self.state
        s.total_steps = self.agreed(s.budget.plan(s.step, epoch_end=epoch_end))
        s.schedule.retarget(s.step, s.total_steps)

    def epoch(self) -> bool:
        """The rest of the current epoch; False when the run was told to stop."""
        s, config = self.state, self.state.config
        epoch, in_epoch = divmod(s.step, s.steps_per_epoch)
        order = torch.randperm(len(self.images), generator=step_generator(config.seed, 1, epoch))
        loader = torch.utils.data.DataLoader(
            _Batches(self.images, order, s.batch, in_epoch, self.world), batch_size=None, shuffle=False,
            num_workers=config.num_workers, persistent_workers=False, pin_memory=self.device.type == "cuda")
        for index, batch_u8 in loader:
            if self.agreed(self.callbacks.should_stop()):
                return False
            lr = s.schedule.lr(s.step)
            set_lr(s.optimizer, lr)
            part = (self.world.rank * len(index), s.batch)
            s.last_metrics = self.train_step(index, batch_u8, step_generator(config.seed, 2, s.step), part) | {
                "lr": lr}
            s.step += 1
            self.seen += s.batch
            if s.budget and s.budget.after_step():
                self.replan()
            rate = self.images_per_s
            if s.budget and not s.budget.decided:  # no plan yet: the time the budget has left
                eta, planned = s.budget.seconds - s.budget.spent(), False
            else:
                eta, planned = (s.total_steps - s.step) * s.batch / max(rate, 1e-9), True
            self.callbacks.on_step(StepReport(s.step, s.total_steps, epoch + 1, s.epochs, s.last_metrics, rate,
                                              max(0.0, eta), planned))
            if s.step >= s.total_steps:
                return True
            if self.agreed(time.monotonic() - self.last_save > config.checkpoint_every_s):
                self.save()
        if s.budget and s.step < s.total_steps:  # re-plan from the epochs' measured wall time
            self.replan(epoch_end=True)
        return True


def pretrain(config: PretrainConfig, images: np.ndarray, ids: list, out_dir: str | Path,
             callbacks: Callbacks | None = None, resume: bool = True,
             copies: list[int] | None = None) -> PretrainResult:
    """Train PIRL on cached uint8 images (N, S, S, 3); checkpoints go to `out_dir/last.pt`.

    With `resume` and an existing checkpoint the run continues from it (and its near-copy clusters).
    `copies`: a near-copy cluster id per image (duplicates.clusters); copies are never each other's negatives.
    """
    callbacks = callbacks or Callbacks()
    config.validate(len(images))
    if len(ids) != len(images):
        raise PirlError(f"{len(ids)} image ids for {len(images)} images")
    world, device = distributed.world(), distributed.device_for(config.device)
    path = Path(out_dir) / "last.pt"
    state = TrainState.start(config, images, ids, device, world, path if resume else None, copies)
    train_step = TrainStep(state.model, state.optimizer, state.bank, config, config.negatives_for(len(images)),
                           device, world)
    run = _Run(state, train_step, images, path, callbacks, device, world)
    callbacks.on_start(state.step, state.total_steps)
    state.model.train()
    status = "finished"
    while state.step < state.total_steps:
        if not run.epoch():
            status = "stopped"
            break
    run.save()  # finished or stopped
    return PretrainResult(str(path), status, state.step, state.total_steps, state.last_metrics, run.images_per_s)
