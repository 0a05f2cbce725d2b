"""BatchNorm statistics of whole images ("precise BN", Wu & Johnson 2021).

A PIRL step runs the backbone on whole-image views and on 27-64 px jigsaw patches; both passes
update the BatchNorm running statistics, so after pretraining those statistics describe neither,
and every evaluation-mode consumer (linear probe, Explore's features, an exported backbone) sees
mis-normalised activations. `recompute_bn_stats` resets them and re-estimates each one as the exact
average over batches of whole images in the evaluation view: what every consumer feeds the network.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch
from torch import nn

from .model import eval_batches

MAX_IMAGES = 1024  # plenty for stable estimates (Wu & Johnson use ~10^4 at ImageNet scale) and a few seconds


def batchnorms(net: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@contextmanager
def frozen_bn_stats(net: nn.Module, enabled: bool = True) -> Iterator[None]:
    """Inside the block, BatchNorm layers still normalise with batch statistics (training is unchanged)
    but leave their running statistics as they are (momentum 0)."""
    layers = batchnorms(net) if enabled else []
    momenta = [m.momentum for m in layers]
    for m in layers:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum in zip(layers, momenta):
            m.momentum = momentum


@torch.no_grad()
def recompute_bn_stats(net: nn.Module, images: np.ndarray, image_size: int, device: torch.device | str = "cpu",
                       batch_size: int = 64, max_images: int = MAX_IMAGES, seed: int = 0,
                       memory_format: torch.memory_format = torch.contiguous_format) -> int:
    """Replace every BatchNorm's running mean and variance in `net` by their average over evaluation views of
    (up to `max_images`, an evenly spread seeded sample of) `images`. Weights are untouched; returns how many
    images were used."""
    layers = batchnorms(net)
    if not layers or len(images) == 0:
        return 0
    rows = np.arange(len(images))
    if len(rows) > max_images:
        rows = np.sort(np.random.default_rng(seed).choice(rows, max_images, replace=False))
    momenta = [m.momentum for m in layers]
    was_training = net.training
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches that follow
    net.eval()
    for m in layers:
        m.train()  # batch statistics in the forward pass, accumulated into the running ones
    subset = images if len(rows) == len(images) else np.asarray(images[rows])
    for x in eval_batches(subset, image_size, batch_size):
        net(x.to(device, memory_format=memory_format))
    for m, momentum in zip(layers, momenta):
        m.momentum = momentum
    net.train(was_training)
    return len(rows)

