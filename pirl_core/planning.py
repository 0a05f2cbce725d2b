"""What the machine can do: default settings and a time estimate for a pretraining run."""

from __future__ import annotations

import os

import torch

from .engine.config import PretrainConfig
from .engine.optim import resolve_device
from .store import Store

# PIRL training images/s measured on a 2-core laptop CPU at 96 px (bench/pretrain_throughput.py);
# other sizes scale with pixel count. Relative speed of the backbones on that CPU.
CPU_RATE_96 = 45.0
BACKBONE_SPEED = {"resnet18": 1.0, "resnet34": 0.5, "resnet50": 0.3, "efficientnet_lite0": 0.8}
GPU_RATE_224 = 400.0


def machine() -> str:
    device = resolve_device("auto")
    if device.type == "cuda":
        return f"GPU: {torch.cuda.get_device_name(0)}"
    return f"CPU: {os.cpu_count()} cores, {torch.get_num_threads()} threads for training"


def estimate_seconds(store: Store, config: PretrainConfig, n_images: int) -> tuple[float, str]:
    """(seconds, where the rate comes from) for `config` on `n_images`."""
    past = [j for j in store.jobs(kind="pretrain", statuses=["succeeded", "cancelled", "running"])
            if j["config"].get("backbone") == config.backbone and j["config"].get("image_size") == config.image_size
            and j["result"].get("images_per_s")]
    if past:
        rate, source = past[0]["result"]["images_per_s"], f"measured in run #{past[0]['id']}"
    elif resolve_device(config.device).type == "cuda":
        rate, source = GPU_RATE_224 * (224 / config.image_size) ** 2, "rough GPU estimate"
    else:
        rate = CPU_RATE_96 * (96 / config.image_size) ** 2 * BACKBONE_SPEED.get(config.backbone, 0.5)
        rate *= torch.get_num_threads() / 2
        source = "estimate from a 2-core laptop benchmark"
    steps = (n_images // min(config.batch_size, n_images)) * config.epochs
    return steps * min(config.batch_size, n_images) / rate + 5, source
