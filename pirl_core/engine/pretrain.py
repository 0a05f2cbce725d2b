"""The PIRL pretraining loop: config, model, resumable training.

Everything a run needs to continue lives in one checkpoint: backbone, heads, optimiser,
step, memory bank with its image ids, and RNG state. Data order and augmentation are drawn
from generators seeded by (seed, epoch) and (seed, step), so a run stopped anywhere and
resumed gives the same result as one that never stopped.

Under torchrun the same loop runs in every process (engine/distributed.py says how the processes
stay one run); the checkpoint does not depend on the number of processes, so a run can resume on
another number of GPUs. Each step moves the uint8 batch to the device first and builds the views there.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..errors import PirlError
from . import checkpoint as ckpt
from . import distributed
from .backbones import build_backbone
from .batchnorm import frozen_bn_stats, recompute_bn_stats
from .config import PretrainConfig
from .heads import EMBED_DIM
from .loss import pirl_loss
from .memory_bank import MemoryBank
from .model import PirlModel, embed_dataset
from .optim import CosineSchedule, param_groups, set_lr
from .views import ViewSizes, image_view, jigsaw_view, rotation_view, to_float

ONE_PROCESS = distributed.World()


@dataclass
class StepReport:
    step: int
    total_steps: int
    epoch: int
    epochs: int
    metrics: dict[str, float]
    images_per_s: float
    eta_s: float


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


def _step_generator(seed: int, *keys: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed, *keys]).generate_state(1)[0]))


class _Batches(torch.utils.data.Dataset):
    """Batch i of an epoch: its bank indices and its uint8 images, gathered from the cache; under several
    processes, this process's share of the global batch (every image once per epoch across processes)."""

    def __init__(self, images: np.ndarray, order: torch.Tensor, batch_size: int, start: int,
                 world: distributed.World = ONE_PROCESS):
        self.images, self.order, self.batch_size, self.start, self.world = images, order, batch_size, start, world

    def __len__(self) -> int:
        return len(self.order) // self.batch_size - self.start

    def __getitem__(self, i: int):
        idx = self.order[(self.start + i) * self.batch_size:(self.start + i + 1) * self.batch_size]
        share = self.batch_size // self.world.size
        rows = np.sort(idx.numpy())[self.world.rank * share:(self.world.rank + 1) * share]  # sorted memmap reads
        return torch.from_numpy(rows), torch.from_numpy(np.array(self.images[rows]))


def pretrain(config: PretrainConfig, images: np.ndarray, ids: list, out_dir: str | Path,
             callbacks: Callbacks | None = None, resume: bool = True,
             copies: list[int] | None = None) -> PretrainResult:
    """Train PIRL on cached uint8 images (N, S, S, 3); checkpoints go to `out_dir/last.pt`.

    With `resume` and an existing checkpoint the run continues from it (and its near-copy clusters).
    `copies`: a near-copy cluster id per image (duplicates.clusters); copies are never each other's negatives.
    """
    callbacks = callbacks or Callbacks()
    n = len(images)
    config.validate(n)
    if len(ids) != n:
        raise PirlError(f"{len(ids)} image ids for {n} images")
    world = distributed.world()
    device = distributed.device_for(config.device)
    out_dir = Path(out_dir)
    ckpt_path = out_dir / "last.pt"
    torch.manual_seed(config.seed)

    model = PirlModel(build_backbone(config.backbone, config.pretrained_imagenet, config.weights_path)).to(device)
    fmt = torch.channels_last if config.channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    batch = min(config.batch_size, n)
    batch -= batch % world.size  # the global batch; each process builds and trains on batch / processes
    steps_per_epoch = n // batch
    total_steps = steps_per_epoch * config.epochs
    if config.max_steps:
        total_steps = min(total_steps, config.max_steps)
    schedule = CosineSchedule(config.learning_rate, min(int(config.warmup_epochs * steps_per_epoch),
                                                        total_steps // 2), total_steps)
    negatives = config.negatives_for(n)

    step = 0
    if resume and ckpt_path.exists():
        state = ckpt.load(ckpt_path, map_location=device)
        if state["bank"]["ids"] != list(ids):
            raise PirlError(f"Checkpoint {ckpt_path} was trained on other images; cannot resume on these.")
        model.load_state_dict(state["model"])
        bank = MemoryBank.from_state_dict(state["bank"]).to(device)
        step = state["step"]
        torch.set_rng_state(state["rng"]["torch"])
        if config.time_budget_s:  # the plan continues from the checkpoint's
            total_steps = state["total_steps"]
            schedule = CosineSchedule(**state.get("schedule", {**vars(schedule), "total": total_steps}))
    else:
        if config.bank_init == "features":
            # A random init has no BatchNorm running statistics yet: normalising with them gave every
            # image the same embedding (a collapsed bank that the loss cannot learn from).
            random_start = not (config.pretrained_imagenet or config.weights_path)
            vectors = embed_dataset(model, images, config.image_size, device, channels_last=config.channels_last,
                                    batch_stats=random_start)
        else:
            vectors = torch.randn(n, EMBED_DIM, generator=_step_generator(config.seed, 3))
        bank = MemoryBank(vectors, ids, config.bank_momentum, copies=copies).to(device)
    if world.size > 1 and config.sync_bn_for(batch // world.size):
        model = distributed.sync_batchnorm(model, device)
    optimizer = torch.optim.SGD(param_groups(model, config.weight_decay), lr=config.learning_rate,
                                momentum=config.momentum)
    if step:
        optimizer.load_state_dict(state["optimizer"])

    budget = None
    if config.time_budget_s:  # the time earlier sessions of this run spent counts
        resumed = state if step else {}
        budget = _Budget(config.time_budget_s, steps_per_epoch, config.max_steps, step,
                         resumed.get("budget_spent_s", 0.0), resumed.get("budget_decided", False))
    train_step = _Step(model, optimizer, bank, config, negatives, device, world)

    def save() -> None:
        if config.bn_stats == "whole_images":  # in every process: synchronised BatchNorm layers take part
            recompute_bn_stats(model, images, config.image_size, device, memory_format=train_step.fmt,
                               seed=config.seed)
        if not world.main:
            return
        ckpt.save_atomic({
            "format": ckpt.FORMAT, "kind": "pirl", "config": config.to_dict(), "step": step,
            "total_steps": total_steps, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "bank": bank.state_dict(), "rng": {"torch": torch.get_rng_state()},
            "schedule": vars(schedule),
            **({"budget_spent_s": budget.spent(), "budget_decided": budget.decided} if budget else {}),
            "last_metrics": last}, ckpt_path)
        callbacks.on_checkpoint(ckpt_path, step)

    last: dict[str, float] = {}
    callbacks.on_start(step, total_steps)
    model.train()
    t_start, seen, last_save = time.perf_counter(), 0, time.monotonic()
    status = "finished"
    while step < total_steps:
        epoch, in_epoch = divmod(step, steps_per_epoch)
        order = torch.randperm(n, generator=_step_generator(config.seed, 1, epoch))
        loader = torch.utils.data.DataLoader(
            _Batches(images, order, batch, in_epoch, world), batch_size=None, shuffle=False,
            num_workers=config.num_workers, persistent_workers=False, pin_memory=device.type == "cuda")
        for index, batch_u8 in loader:
            if _agreed(callbacks.should_stop(), world, device):
                status = "stopped"
                break
            lr = schedule.lr(step)
            set_lr(optimizer, lr)
            part = (world.rank * len(index), batch)
            last = train_step(index, batch_u8, _step_generator(config.seed, 2, step), part) | {"lr": lr}
            step += 1
            seen += batch
            rate = seen / (time.perf_counter() - t_start)
            if budget and budget.after_step():
                total_steps = _agreed(budget.plan(step), world, device)
                schedule.retarget(step, total_steps)
            callbacks.on_step(StepReport(step, total_steps, epoch + 1, -(-total_steps // steps_per_epoch), last, rate,
                                         (total_steps - step) * batch / max(rate, 1e-9)))
            if step >= total_steps:
                break
            if _agreed(time.monotonic() - last_save > config.checkpoint_every_s, world, device):
                save()
                last_save = time.monotonic()
        if status == "stopped":
            break
        if budget and step < total_steps:  # re-plan from the epochs' measured wall time
            total_steps = _agreed(budget.plan(step, epoch_end=True), world, device)
            schedule.retarget(step, total_steps)
    save()  # finished or stopped
    return PretrainResult(str(ckpt_path), status, step, total_steps, last,
                          seen / max(time.perf_counter() - t_start, 1e-9))


def _agreed(value: int | bool, world: distributed.World, device: torch.device) -> int:
    """Process 0's decision (a stop, a checkpoint, a plan), in every process: their clocks differ a little, and a
    checkpoint that only some processes make would pair their collectives wrongly (synchronised BatchNorm)."""
    return distributed.from_main(value, device) if world.size > 1 else int(value)


class _Budget:
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


class _Views(nn.Module):
    """Every view's embedding in one forward call: what DistributedDataParallel wraps (one forward, one
    backward per step). The jigsaw pass leaves the BatchNorm running statistics alone unless `bn_stats` is
    "training". `compile`: the backbone compiled for these training calls only (evaluation passes, with other
    shapes and modes, run it uncompiled rather than compile it again)."""

    def __init__(self, model: PirlModel, freeze_patch_stats: bool, fmt: torch.memory_format, compile: bool = False):
        super().__init__()
        self.model, self.freeze_patch_stats, self.fmt = model, freeze_patch_stats, fmt
        self.backbone = torch.compile(model.backbone) if compile else model.backbone

    def forward(self, image: torch.Tensor, jigsaw: torch.Tensor | None = None,
                rotation: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        out = {"image": self.model.embed_images(image, self.backbone)}
        if jigsaw is not None:
            with frozen_bn_stats(self.model, self.freeze_patch_stats):
                out["jigsaw"] = self.model.embed_jigsaw(jigsaw, self.fmt, self.backbone)
        if rotation is not None:  # the rotated view goes through the same image head f
            out["rotation"] = self.model.embed_images(rotation, self.backbone)
        return out


@dataclass
class _Step:
    """One PIRL training step: views (built on the device), embeddings, InfoNCE against the bank, SGD, bank
    update; under several processes DDP averages the gradients and the bank takes every process's rows."""

    model: PirlModel
    optimizer: torch.optim.Optimizer
    bank: MemoryBank
    config: PretrainConfig
    negatives: int
    device: torch.device
    world: distributed.World = ONE_PROCESS
    sizes: ViewSizes = field(init=False)
    fmt: torch.memory_format = field(init=False)
    amp_dtype: torch.dtype | None = field(init=False)

    def __post_init__(self):
        self.sizes = self.config.view_sizes
        self.fmt = torch.channels_last if self.config.channels_last else torch.contiguous_format
        self.amp_dtype = None
        if self.device.type == "cuda":
            self.amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.forward = _Views(self.model, self.config.bn_stats != "training", self.fmt, self.config.compile)
        if self.world.size > 1:
            self.forward = DistributedDataParallel(
                self.forward, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                forward_sync_buffers=False, find_unused_parameters="jigsaw" not in self.config.loss_weights)

    def __call__(self, index: torch.Tensor, batch_u8: torch.Tensor, gen: torch.Generator,
                 part: tuple[int, int] | None = None) -> dict[str, float]:
        """`part`: this process's rows of the global batch (offset, size); None in a one-process run."""
        config, weights = self.config, self.config.loss_weights
        x = to_float(batch_u8.to(self.device, non_blocking=True))
        scale = (config.min_crop_scale, 1.0)
        v_image = image_view(x, config.image_size, gen, scale, part=part).contiguous(memory_format=self.fmt)
        neg = self.bank.sample_negatives(index, self.negatives, gen)
        index = index.to(self.device)
        v_jigsaw = jigsaw_view(x, self.sizes, gen, part=part)[0] if "jigsaw" in weights else None
        v_rotation = None
        if "rotation" in weights:
            v_rotation = rotation_view(x, config.image_size, gen, scale, part=part)[0]
            v_rotation = v_rotation.contiguous(memory_format=self.fmt)
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            views = self.forward(v_image, v_jigsaw, v_rotation)
        f = views["image"]
        loss, terms = pirl_loss({k: v.float() for k, v in views.items()}, weights, self.bank.vectors[index],
                                self.bank.vectors[neg.candidates.to(self.device)], neg.keep.to(self.device),
                                config.temperature)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        report = {"loss": loss.item(), **{f"loss_{k}": v.item() for k, v in terms.items()}}
        if self.world.size > 1:  # every process's rows, in rank order: the replicas stay identical
            index, f = distributed.all_gather_rows(index), distributed.all_gather_rows(f.detach().float())
            report = distributed.mean_over_ranks(report, self.device)
        self.bank.update(index, f)
        return report
