"""What the machine can do: default settings and a time estimate for a pretraining run."""

from __future__ import annotations

import os

import torch

from ..engine.config import PretrainConfig
from ..engine.optim import resolve_device
from ..jobs import queue
from ..workspace.store import Store
from . import measured

# PIRL pretraining images/s through the product on this project's 2-core CPU (the run's own `images_per_s`, the
# figure a past run supplies below) at the size each was measured, BUSI's 780 images: `python
# bench/compare_quality.py ../shared/data/busi256 --modes linear --random-minutes 30` (efficientnet_lite0 from
# ImageNet at 128 px, resnet18 from random at 96 px). Other sizes scale with pixel count; resnet34 and resnet50 are
# not measured: resnet18's rate over their multiply-adds (3.6 and 4.1 G against 1.8).
CPU_PIRL_RATE = {"resnet18": (29.6, 96), "resnet34": (29.6 * 1.8 / 3.6, 96), "resnet50": (29.6 * 1.8 / 4.1, 96),
                 "efficientnet_lite0": (23.6, 128)}
GPU_RATE_224 = 400.0


def pretext_cost(pretext: str) -> float:
    """Time per image of `pretext` over jigsaw's: the same pool on the same CPU (measured.PRETEXTS, BUSI)."""
    return measured.PRETEXTS[pretext]["minutes"] / measured.PRETEXTS["jigsaw"]["minutes"]


def cpu_rate(backbone: str, image_size: int) -> float:
    """Estimated PIRL images/s of `backbone` at `image_size` on 2 CPU cores."""
    rate, size = CPU_PIRL_RATE.get(backbone, CPU_PIRL_RATE["resnet18"])
    return rate * (size / image_size) ** 2


def machine() -> str:
    device = resolve_device("auto")
    if device.type == "cuda":
        return f"GPU: {torch.cuda.get_device_name(0)}"
    return f"CPU: {os.cpu_count()} cores, {torch.get_num_threads()} threads for training"


def estimate_seconds(store: Store, config: PretrainConfig, n_images: int) -> tuple[float, str]:
    """(seconds, where the rate comes from) for `config` on `n_images`.

    The rate of the newest past run of the same backbone and size, of the same pretext where there is one; another
    pretext's rate, or the benchmark's (jigsaw), is scaled by what each pretext costs: jigsaw+rotation trains on
    one view more and takes up to half as long again.
    """
    past = [(queue.config_of(j).pretext, j, queue.result_of(j).images_per_s)
            for j in store.jobs(kind="pretrain", statuses=["succeeded", "cancelled", "running"])
            if (queue.config_of(j).backbone, queue.config_of(j).image_size) == (config.backbone, config.image_size)]
    past = sorted([p for p in past if p[2]], key=lambda p: p[0] != config.pretext)  # same pretext first, newest first
    if past:
        pretext, job, rate = past[0]
        rate *= pretext_cost(pretext)  # as if that run had been jigsaw
        source = f"measured in run #{job['id']}" + (f" with {pretext}, scaled to {config.pretext}"
                                                    if pretext != config.pretext else "")
    elif resolve_device(config.device).type == "cuda":
        rate, source = GPU_RATE_224 * (224 / config.image_size) ** 2, "rough GPU estimate"
    else:
        rate = cpu_rate(config.backbone, config.image_size) * torch.get_num_threads() / 2
        source = "estimate from a 2-core CPU benchmark"
    rate /= pretext_cost(config.pretext)
    steps = (n_images // min(config.batch_size, n_images)) * config.epochs
    return steps * min(config.batch_size, n_images) / rate + 5, source
