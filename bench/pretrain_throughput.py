"""PIRL training throughput against its compute bound, in one run on one machine.

  (a) plain: supervised forward+backward+SGD step of the backbone on B images at the image size
  (b) bound: the backbone's forward+backward on the B images plus on the 9B jigsaw patches
      (synthetic tensors: no data loading, no augmentation, no heads, no loss, no bank)
  (c) pirl:  the real training step (pirl_core.engine.pretrain) on a uint8 cache: views,
      heads, loss, bank update, optimiser (jigsaw; then each other pretext)

Prints images/s, peak RSS, efficiency = (c)/(b) and ratio = (c)/(a).

    python bench/pretrain_throughput.py                      # CPU default size and 224 px
    python bench/pretrain_throughput.py --sizes 96 --patch-sizes 27 32
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import time

import numpy as np
import torch
import torch.nn.functional as F


def _timed(step, steps: int, warmup: int) -> float:
    for _ in range(warmup):
        step()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t) / steps


def _measure(kind: str, backbone: str, size: int, patch: int | None, batch: int, steps: int, q,
             pretext: str = "jigsaw") -> None:
    from pirl_core.engine.backbones import build_backbone
    from pirl_core.engine.config import PretrainConfig
    from pirl_core.engine.pretrain import Callbacks, pretrain
    from pirl_core.engine.views import ViewSizes

    torch.manual_seed(0)
    fmt = torch.channels_last
    if kind in ("plain", "bound"):
        model = build_backbone(backbone).to(memory_format=fmt)
        head = torch.nn.Linear(model.dim, 2)
        opt = torch.optim.SGD(list(model.parameters()) + list(head.parameters()), lr=0.01, momentum=0.9)
        x = torch.randn(batch, 3, size, size).contiguous(memory_format=fmt)
        y = torch.randint(0, 2, (batch,))
        p = ViewSizes.for_image_size(size, patch).patch
        patches = torch.randn(batch * 9, 3, p, p).contiguous(memory_format=fmt)

        def step():
            opt.zero_grad()
            loss = F.cross_entropy(head(model(x)), y)
            if kind == "bound":
                loss = loss + model(patches).mean()
            loss.backward()
            opt.step()

        seconds = _timed(step, steps, 2)
    else:
        n = batch * (steps + 3)
        rng = np.random.default_rng(0)
        cache = rng.integers(0, 256, (n, int(size * 256 / 224), int(size * 256 / 224), 3), dtype=np.uint8)
        times = []

        class Clock(Callbacks):
            def on_step(self, report):
                times.append(time.perf_counter())

        cfg = PretrainConfig(backbone=backbone, image_size=size, patch_size=patch, batch_size=batch, epochs=1,
                             bank_init="random", checkpoint_every_s=1e9, pretext=pretext)
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            pretrain(cfg, cache, list(range(n)), tmp, Clock())
        seconds = (times[-1] - times[2]) / (len(times) - 3)
    q.put((batch / seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))


def measure(*args, pretext: str = "jigsaw") -> tuple[float, float]:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_measure, args=(*args, q, pretext))
    p.start()
    p.join()
    if p.exitcode != 0:
        raise SystemExit(f"measurement {args[0]} failed (exit code {p.exitcode})")
    return q.get()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="resnet18")
    ap.add_argument("--sizes", type=int, nargs="+", default=[96, 224])
    ap.add_argument("--patch-sizes", type=int, nargs="*", default=[], help="extra patch sizes for (b)")
    ap.add_argument("--pretexts", nargs="*", default=["rotation", "jigsaw+rotation"],
                    help="other pretexts whose (c) to measure too")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=6)
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, backbone {args.backbone}, "
          f"batch {args.batch}, channels_last")
    for size in args.sizes:
        from pirl_core.engine.views import ViewSizes

        default_patch = ViewSizes.for_image_size(size).patch
        plain, mem_a = measure("plain", args.backbone, size, None, args.batch, args.steps)
        bound, mem_b = measure("bound", args.backbone, size, None, args.batch, args.steps)
        pirl, mem_c = measure("pirl", args.backbone, size, None, args.batch, args.steps)
        print(f"\n{size} px (patches {default_patch} px)")
        print(f"  (a) plain step       {plain:7.1f} img/s   peak RSS {mem_a:6.0f} MiB")
        print(f"  (b) compute bound    {bound:7.1f} img/s   peak RSS {mem_b:6.0f} MiB   (b)/(a) = {bound / plain:.2f}")
        print(f"  (c) PIRL step        {pirl:7.1f} img/s   peak RSS {mem_c:6.0f} MiB")
        print(f"  efficiency = (c)/(b) = {pirl / bound:.2f}    ratio = (c)/(a) = {pirl / plain:.2f}")
        for pretext in args.pretexts:
            c, _ = measure("pirl", args.backbone, size, None, args.batch, args.steps, pretext=pretext)
            print(f"  pretext {pretext:16s} (c) {c:6.1f} img/s   (c)/(a) = {c / plain:.2f}")
        for patch in args.patch_sizes:
            b, _ = measure("bound", args.backbone, size, patch, args.batch, args.steps)
            c, _ = measure("pirl", args.backbone, size, patch, args.batch, args.steps)
            print(f"  patches {patch} px: (b) {b:6.1f} img/s ((b)/(a) = {b / plain:.2f}), "
                  f"(c) {c:6.1f} img/s ((c)/(b) = {c / b:.2f})")


if __name__ == "__main__":
    main()
