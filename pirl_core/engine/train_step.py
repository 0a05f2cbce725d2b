"""One PIRL training step, in the paper's terms: build the image view v_I and the jigsaw view v_It on the device,
embed them (f through image_head, g through patch_head), InfoNCE of each against the memory bank entry m_I with
negatives from the bank, an SGD step, then the bank's momentum update from f(v_I)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from . import distributed
from .batchnorm import frozen_bn_stats
from .config import PretrainConfig
from .loss import pirl_loss
from .memory_bank import MemoryBank
from .model import PirlModel
from .views import ViewSizes, image_view, jigsaw_view, rotation_view, to_float


class Views(nn.Module):
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
class TrainStep:
    """One PIRL training step: views (built on the device), embeddings, InfoNCE against the bank, SGD, bank
    update; under several processes DDP averages the gradients and the bank takes every process's rows."""

    model: PirlModel
    optimizer: torch.optim.Optimizer
    bank: MemoryBank
    config: PretrainConfig
    negatives: int
    device: torch.device
    world: distributed.World = distributed.ONE_PROCESS
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
        self.forward = Views(self.model, self.config.bn_stats != "training", self.fmt, self.config.compile)
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
        distort = config.distort
        v_image = image_view(x, config.image_size, gen, scale, part=part, **distort)
        v_image = v_image.contiguous(memory_format=self.fmt)
        neg = self.bank.sample_negatives(index, self.negatives, gen)
        index = index.to(self.device)
        v_jigsaw = jigsaw_view(x, self.sizes, gen, part=part, **distort)[0] if "jigsaw" in weights else None
        v_rotation = None
        if "rotation" in weights:
            v_rotation = rotation_view(x, config.image_size, gen, scale, part=part, **distort)[0]
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
