"""Optimisation helpers shared by pretraining and finetuning: device, parameter groups, LR schedule."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import PirlError


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise PirlError("CUDA was asked for but no GPU is available here; use device 'cpu' or 'auto'.")
    return torch.device(name)


def param_groups(modules: nn.Module, weight_decay: float, lr_scale: dict[nn.Module, float] | None = None
                 ) -> list[dict]:
    """Weight decay on weights only: none on BatchNorm parameters or biases.

    `lr_scale` maps sub-modules to a learning-rate multiplier (a slower backbone than head when
    finetuning a pretrained network); each group carries its `lr_scale` (1.0 by default)."""
    scale_of = {}
    for module, scale in (lr_scale or {}).items():
        for p in module.parameters():
            scale_of[id(p)] = scale
    groups: dict[tuple[bool, float], list] = {}
    for p in modules.parameters():
        if p.requires_grad:
            groups.setdefault((p.ndim <= 1, scale_of.get(id(p), 1.0)), []).append(p)
    return [{"params": ps, "weight_decay": 0.0 if no_decay else weight_decay, "lr_scale": scale}
            for (no_decay, scale), ps in sorted(groups.items(), key=lambda kv: kv[0])]


def lr_at(step: int, total: int, warmup: int, base: float) -> float:
    """Linear warm-up, then cosine decay to zero."""
    return CosineSchedule(base, warmup, total).lr(step)


@dataclass
class CosineSchedule:
    """Linear warm-up, then cosine decay to zero at `total` steps; `retarget` moves the end (a time budget
    re-planned) without a jump: the cosine continues from where it is to zero at the new end."""

    base: float
    warmup: int
    total: int
    anchor_step: int = 0
    anchor_progress: float = 0.0

    def progress(self, step: int) -> float:
        start = max(self.anchor_step, self.warmup)
        if step <= start:
            return self.anchor_progress
        return min(1.0, self.anchor_progress + (1 - self.anchor_progress) * (step - start) / max(1, self.total - start))

    def lr(self, step: int) -> float:
        if step < self.warmup:
            return self.base * (step + 1) / self.warmup
        return self.base * 0.5 * (1 + math.cos(math.pi * self.progress(step)))

    def retarget(self, step: int, total: int) -> None:
        if step > self.warmup:
            self.anchor_progress, self.anchor_step = self.progress(step), step
        else:
            self.warmup = min(self.warmup, total // 2)
        self.total = total


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every group's learning rate to `lr` times its `lr_scale`."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
