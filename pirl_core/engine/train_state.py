"""What a PIRL run is at one step, and its checkpoint: the one place the checkpoint format is written and read.

A `TrainState` holds the model (backbone, image_head, patch_head), the optimiser, the memory bank with its image
ids, the learning-rate schedule, the step and the planned total, and a time budget's account. `start` builds a
fresh one or resumes from a checkpoint; `to_checkpoint` is everything a run needs to continue, so that a run
stopped anywhere and resumed gives the same result as one that never stopped. `load_pretrained` reads the parts
that evaluation needs (model, config, bank) from the same format.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import PirlError
from . import checkpoint as ckpt
from . import distributed
from .backbones import build_backbone
from .batchnorm import recompute_bn_stats
from .budget import TimeBudget
from .config import PretrainConfig
from .heads import EMBED_DIM
from .memory_bank import MemoryBank
from .model import PirlModel, embed_dataset
from .optim import CosineSchedule, param_groups

KIND = "pirl"


def step_generator(seed: int, *keys: int) -> torch.Generator:
    """A generator seeded by (seed, *keys): data order by (seed, 1, epoch), augmentation by (seed, 2, step)."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed, *keys]).generate_state(1)[0]))


@dataclass
class TrainState:
    config: PretrainConfig
    model: PirlModel
    optimizer: torch.optim.Optimizer
    bank: MemoryBank
    schedule: CosineSchedule
    batch: int  # the global batch; each process builds and trains on batch / processes
    steps_per_epoch: int
    total_steps: int
    step: int = 0
    budget: TimeBudget | None = None
    last_metrics: dict[str, float] = field(default_factory=dict)

    @property
    def epochs(self) -> int:
        return -(-self.total_steps // self.steps_per_epoch)

    @classmethod
    def start(cls, config: PretrainConfig, images: np.ndarray, ids: list, device: torch.device,
              world: distributed.World, checkpoint: Path | None = None, copies: list[int] | None = None
              ) -> TrainState:
        """A fresh run, or the run in `checkpoint` when that file exists (its own near-copy clusters included)."""
        n = len(images)
        torch.manual_seed(config.seed)
        fmt = torch.channels_last if config.channels_last else torch.contiguous_format
        model = PirlModel(build_backbone(config.backbone, config.pretrained_imagenet, config.weights_path))
        model = model.to(device).to(memory_format=fmt)
        batch = min(config.batch_size, n)
        batch -= batch % world.size
        steps_per_epoch = n // batch
        total_steps = min(steps_per_epoch * config.epochs, config.max_steps or steps_per_epoch * config.epochs)
        schedule = CosineSchedule(config.learning_rate, min(int(config.warmup_epochs * steps_per_epoch),
                                                            total_steps // 2), total_steps)
        saved = ckpt.load(checkpoint, map_location=device) if checkpoint and checkpoint.exists() else None
        if saved is not None:
            if saved["bank"]["ids"] != list(ids):
                raise PirlError(f"Checkpoint {checkpoint} was trained on other images; cannot resume on these.")
            model.load_state_dict(saved["model"])
            bank = MemoryBank.from_state_dict(saved["bank"]).to(device)
            torch.set_rng_state(saved["rng"]["torch"])
            if config.time_budget_s:  # the plan continues from the checkpoint's
                total_steps = saved["total_steps"]
                schedule = CosineSchedule(**saved.get("schedule", {**vars(schedule), "total": total_steps}))
        else:
            bank = MemoryBank(_initial_vectors(config, model, images, device), ids, config.bank_momentum,
                              copies=copies).to(device)
        if world.size > 1 and config.sync_bn_for(batch // world.size):
            model = distributed.sync_batchnorm(model, device)
        slower = {model.backbone: config.backbone_lr_scale} if config.backbone_lr_scale != 1 else None
        optimizer = torch.optim.SGD(param_groups(model, config.weight_decay, slower), lr=config.learning_rate,
                                    momentum=config.momentum)
        state = cls(config, model, optimizer, bank, schedule, batch, steps_per_epoch, total_steps)
        if saved is not None:
            optimizer.load_state_dict(saved["optimizer"])
            state.step, state.last_metrics = saved["step"], saved.get("last_metrics", {})
        if config.time_budget_s:  # the time earlier sessions of this run spent counts
            state.budget = TimeBudget(config.time_budget_s, steps_per_epoch, config.max_steps, state.step,
                                      (saved or {}).get("budget_spent_s", 0.0), (saved or {}).get("budget_decided",
                                                                                                  False))
        return state

    def to_checkpoint(self) -> dict:
        budget = ({"budget_spent_s": self.budget.spent(), "budget_decided": self.budget.decided}
                  if self.budget else {})
        return {"format": ckpt.FORMAT, "kind": KIND, "config": self.config.to_dict(), "step": self.step,
                "total_steps": self.total_steps, "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(), "bank": self.bank.state_dict(),
                "rng": {"torch": torch.get_rng_state()}, "schedule": vars(self.schedule), **budget,
                "last_metrics": self.last_metrics}

    def save(self, path: Path, images: np.ndarray, device: torch.device, world: distributed.World) -> bool:
        """A checkpoint with BatchNorm statistics of whole images (re-estimated in every process: synchronised
        BatchNorm layers take part); process 0 writes it. True where this process wrote it."""
        if self.config.bn_stats == "whole_images":
            fmt = torch.channels_last if self.config.channels_last else torch.contiguous_format
            recompute_bn_stats(self.model, images, self.config.image_size, device, memory_format=fmt,
                               seed=self.config.seed)
        if world.main:
            ckpt.save_atomic(self.to_checkpoint(), path)
        return world.main


def _initial_vectors(config: PretrainConfig, model: PirlModel, images: np.ndarray, device: torch.device):
    """The memory bank's first vectors: f(v) of every image, or random ones."""
    if config.bank_init != "features":
        return torch.randn(len(images), EMBED_DIM, generator=step_generator(config.seed, 3))
    # A random init has no BatchNorm running statistics yet: normalising with them gave every image the same
    # embedding (a collapsed bank that the loss cannot learn from).
    random_start = not (config.pretrained_imagenet or config.weights_path)
    return embed_dataset(model, images, config.image_size, device, channels_last=config.channels_last,
                         batch_stats=random_start)


def load_pretrained(checkpoint_path: str | Path) -> tuple[PirlModel, PretrainConfig, MemoryBank]:
    """The model, config and memory bank of a finished (or stopped) run."""
    saved = ckpt.load(checkpoint_path)
    config = PretrainConfig.from_dict(saved["config"])
    model = PirlModel(build_backbone(config.backbone))
    model.load_state_dict(saved["model"])
    return model, config, MemoryBank.from_state_dict(saved["bank"])
