"""Optimisation helpers shared by pretraining and finetuning: device, parameter groups, LR schedule."""

from __future__ import annotations

import math

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
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every group's learning rate to `lr` times its `lr_scale`."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
