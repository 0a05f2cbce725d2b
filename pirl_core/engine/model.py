"""The PIRL network (backbone + image_head f + patch_head g) and embedding a dataset with it."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from .backbones import Backbone
from .heads import ImageHead, PatchHead
from .views import eval_view, to_float


class PirlModel(nn.Module):
    """Backbone + image_head f + patch_head g (the rotation pretext reuses f). Calling it gives f(v)."""

    def __init__(self, backbone: Backbone):
        super().__init__()
        self.backbone = backbone
        self.image_head = ImageHead(backbone.dim)
        self.patch_head = PatchHead(backbone.dim)

    def embed_images(self, x: torch.Tensor, backbone: nn.Module | None = None) -> torch.Tensor:
        """`backbone`: the same network, compiled (engine/train_step.py)."""
        return self.image_head((self.backbone if backbone is None else backbone)(x))

    forward = embed_images

    def embed_jigsaw(self, patches: torch.Tensor, memory_format=torch.contiguous_format,
                     backbone: nn.Module | None = None) -> torch.Tensor:
        """patches (B, 9, 3, p, p) -> (B, 128): the 9B patches in one pass."""
        flat = patches.flatten(0, 1).contiguous(memory_format=memory_format)
        return self.patch_head((self.backbone if backbone is None else backbone)(flat))


def eval_batches(images: np.ndarray, image_size: int, batch_size: int = 128):
    """The evaluation view of cached uint8 images (N, S, S, 3), in near-equal batches (never a lone image)."""
    if len(images) == 0:
        return
    for rows in np.array_split(np.arange(len(images)), math.ceil(len(images) / batch_size)):
        yield eval_view(to_float(torch.from_numpy(np.array(images[rows[0]:rows[-1] + 1]))), image_size)


@torch.no_grad()
def embed_dataset(net: nn.Module, images: np.ndarray, image_size: int, device: torch.device | str = "cpu",
                  batch_size: int = 128, channels_last: bool = False, batch_stats: bool = False) -> torch.Tensor:
    """`net` (a PirlModel for f(v), a backbone for pooled features) on every cached image's evaluation view.

    `batch_stats` normalises with each batch's statistics, as training does, instead of the
    BatchNorm running averages (which a random init has not estimated yet)."""
    was_training = net.training
    net.eval()
    if batch_stats:
        for module in net.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.train()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    out = [net(x.to(device, memory_format=fmt)).float().cpu() for x in eval_batches(images, image_size, batch_size)]
    net.train(was_training)
    return torch.cat(out)
