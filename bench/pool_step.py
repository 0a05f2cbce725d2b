"""A whole pretraining step at the CPU default: does it grow with the pool, and what does the PNG cache cost?

    python bench/pool_step.py ../shared/data/busi256 [--pools 1000 100000] [--steps 8] [--rounds 2]

DATA's images are cached at the default's training size (146 px for 128) once; pools of each size are made by
cycling them, written in the product's cache format (lossless PNG, `data/image_cache.py`), and the smallest pool
also as the uint8 array the cache used to be. Every measurement is the real `pretrain()` at the default
configuration (efficientnet_lite0 from ImageNet, 128 px, batch 64; negatives min(N - 1, 16,384)) in a process of
its own, the bank filled at random (an embedding pass of 10^5 images is hours here and not part of a step), for
--steps steps after two warm-up steps; the kinds are interleaved over --rounds rounds so load drifts hit each
alike. A larger pool also gathers more negatives at the default, so each larger pool is measured again with
the smallest pool's number of negatives: then only the pool differs. Prints the median step per kind and the
ratios: PNG vs array at the smallest pool, each pool vs the smallest. Then arithmetic for a 10^7 archive: an
epoch's hours on this CPU at the measured step, and on a GPU from the FLOPs of the GPU default's step
(resnet50, 224 px: torch's FLOP counter on the backbone's forward and backward over an image and its nine
jigsaw patches) at an assumed share of an H200's dense bf16 peak.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from pirl_core.data.image_cache import CacheWriter, cache_size_for, open_cache
from pirl_core.data.ingest import cache_folder
from pirl_core.training.pretraining import default_config

WARMUP = 2
GPU_DEFAULT = ("resnet50", 224)  # PretrainConfig.defaults_for on a GPU (which this CPU cannot ask for)
H200_BF16 = 989e12  # FLOP/s, dense
ASSUMED_SHARE = 0.25  # of the peak a convolutional training step keeps busy (an assumption, not a measurement)


def step_flops_per_image(backbone: str, size: int) -> float:
    """The backbone's forward + backward FLOPs for one image and its nine jigsaw patches (heads, loss and bank,
    a few MFLOP, left out)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from pirl_core.engine.backbones import build_backbone
    from pirl_core.engine.views import ViewSizes

    model = build_backbone(backbone)
    patch = ViewSizes.for_image_size(size).patch
    with FlopCounterMode(display=False) as counter:
        (model(torch.randn(2, 3, size, size)).sum() + model(torch.randn(18, 3, patch, patch)).sum()).backward()
    return counter.get_total_flops() / 2


def _steps(cache_file: str, steps: int, negatives: int | None, q) -> None:
    from pirl_core.engine.pretrain import Callbacks, pretrain

    images = open_cache(cache_file)
    times: list[float] = []

    class Clock(Callbacks):
        def on_step(self, report):
            times.append(time.perf_counter())

        def should_stop(self):
            return len(times) > WARMUP + steps

    config = default_config(bank_init="random", epochs=1, checkpoint_every_s=1e9, exclude_copies=False,
                            negatives=negatives)
    with tempfile.TemporaryDirectory() as out:
        pretrain(config, images, list(range(len(images))), out, Clock())
    q.put(np.diff(times[WARMUP:]).tolist())


def measure(cache_file: Path, steps: int, negatives: int | None) -> list[float]:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_steps, args=(str(cache_file), steps, negatives, q))
    p.start()
    out = q.get()
    p.join()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", type=Path)
    ap.add_argument("--pools", type=int, nargs="+", default=[1000, 100_000])
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    size = cache_size_for(default_config().image_size)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        source, _, _ = cache_folder(args.data, size, tmp / "source.pngs")
        rows = open_cache(source)
        caches, negatives = {}, {}
        smallest = min(args.pools)
        for n in args.pools:
            t = time.perf_counter()
            with CacheWriter(tmp / f"pool-{n}.pngs", size) as writer:
                for i in range(n):
                    writer.append(rows[i % len(rows)])
                caches[f"PNG cache, {n:,} images"] = writer.finish()
            if n > smallest:
                caches[f"PNG cache, {n:,} images, {smallest - 1} negatives"] = caches[f"PNG cache, {n:,} images"]
                negatives[f"PNG cache, {n:,} images, {smallest - 1} negatives"] = smallest - 1
            print(f"pool of {n:,}: {caches[f'PNG cache, {n:,} images'].stat().st_size / n / 1024:.1f} KB an image "
                  f"(written in {time.perf_counter() - t:.0f} s)", flush=True)
        array_file = tmp / f"pool-{smallest}.npy"
        np.save(array_file, np.asarray(open_cache(caches[f"PNG cache, {smallest:,} images"])))
        caches[f"array cache, {smallest:,} images"] = array_file
        times: dict[str, list[float]] = {k: [] for k in caches}
        for r in range(args.rounds):
            for kind, path in caches.items():
                times[kind] += measure(path, args.steps, negatives.get(kind))
                print(f"round {r + 1}: {kind}: median step {statistics.median(times[kind]):.3f} s", flush=True)
    median = {k: statistics.median(v) for k, v in times.items()}
    base = median[f"PNG cache, {smallest:,} images"]
    print(f"\nPNG vs array cache at {smallest:,} images: {base / median[f'array cache, {smallest:,} images']:.3f}")
    for kind, seconds in median.items():
        if kind.startswith("PNG"):
            print(f"{kind} vs {smallest:,} images: {seconds / base:.3f} ({seconds:.3f} s a step)")
    archive_arithmetic(median[f"PNG cache, {max(args.pools):,} images"])


def archive_arithmetic(step_s: float) -> None:
    cpu_hours = 1e7 / default_config().batch_size * step_s / 3600
    print(f"\n10^7 images, one epoch on this CPU at the default: {cpu_hours:,.0f} h")
    flops = step_flops_per_image(*GPU_DEFAULT)
    hours = 1e7 * flops / (H200_BF16 * ASSUMED_SHARE) / 3600
    print(f"GPU default ({GPU_DEFAULT[0]}, {GPU_DEFAULT[1]} px): {flops / 1e9:.1f} GFLOP an image a step; one epoch "
          f"of 10^7 images at {ASSUMED_SHARE:.0%} of an H200's bf16 peak: {hours:.1f} h (arithmetic; the paper's 200 "
          "epochs: x200)")


if __name__ == "__main__":
    main()
