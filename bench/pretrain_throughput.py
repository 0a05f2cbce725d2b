"""PIRL training throughput against its compute bound, in one run on one machine.

  (a) plain: supervised forward+backward+SGD step of the backbone on B images at the image size
  (b) bound: the backbone's forward+backward on the B images plus on the 9B jigsaw patches
      (synthetic tensors: no data loading, no augmentation, no heads, no loss, no bank)
  (c) pirl:  the real training step (pirl_core.engine.pretrain) on a uint8 cache: views,
      heads, loss, bank update, optimiser (jigsaw; then each other pretext)

Prints images/s, peak RSS, efficiency = (c)/(b) and ratio = (c)/(a). The ratio's physical limit is the
share of the step's pixels that are the image's: 1 / (1 + 9 (patch / size)^2), 0.58 at 224 px. On a GPU
all three use bf16 autocast (as the engine does) and channels_last; defaults: resnet50, 224 px, batch 256.

    python bench/pretrain_throughput.py                      # CPU: resnet18 at 96 and 224 px, batch 32
    python bench/pretrain_throughput.py --sizes 96 --patch-sizes 27 32
    python bench/pretrain_throughput.py --compile            # (c) with torch.compile too

(c) is measured a second time with every convolution on the library's general path, single output
positions included: the ratio is what engine/small_maps.py buys at that size.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import time

import numpy as np
import torch
import torch.nn.functional as F


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _timed(step, steps: int, warmup: int) -> float:
    for _ in range(warmup):
        step()
    _sync()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    _sync()
    return (time.perf_counter() - t) / steps


def _measure(kind: str, backbone: str, size: int, patch: int | None, batch: int, steps: int, q,
             pretext: str = "jigsaw", compile: bool = False, plain_convs: bool = False) -> None:
    from pirl_core.engine.backbones import build_backbone
    from pirl_core.engine.config import PretrainConfig
    from pirl_core.engine.pretrain import Callbacks, pretrain
    from pirl_core.engine.small_maps import SmallMap
    from pirl_core.engine.views import ViewSizes

    if plain_convs:  # every convolution on the library's general path, single output positions included
        SmallMap.forward = lambda self, x: super(SmallMap, self).forward(x)

    torch.manual_seed(0)
    fmt = torch.channels_last
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if kind in ("plain", "bound"):
        model = build_backbone(backbone).to(device, memory_format=fmt)
        head = torch.nn.Linear(model.dim, 2).to(device)
        opt = torch.optim.SGD(list(model.parameters()) + list(head.parameters()), lr=0.01, momentum=0.9)
        x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=fmt)
        y = torch.randint(0, 2, (batch,), device=device)
        p = ViewSizes.for_image_size(size, patch).patch
        patches = torch.randn(batch * 9, 3, p, p, device=device).contiguous(memory_format=fmt)

        def step():
            opt.zero_grad()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                loss = F.cross_entropy(head(model(x)).float(), y)
                if kind == "bound":
                    loss = loss + model(patches).float().mean()
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
                             bank_init="random", checkpoint_every_s=1e9, pretext=pretext, compile=compile,
                             num_workers=4 if device.type == "cuda" else 0)
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            pretrain(cfg, cache, list(range(n)), tmp, Clock())
        skip = 4 if compile else 2  # compilation happens in the first steps (one graph per input shape)
        seconds = (times[-1] - times[skip]) / (len(times) - skip - 1)
    q.put((batch / seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))


def measure(*args, pretext: str = "jigsaw", compile: bool = False, plain_convs: bool = False) -> tuple[float, float]:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_measure, args=(*args, q, pretext, compile, plain_convs))
    p.start()
    p.join()
    if p.exitcode != 0:
        raise SystemExit(f"measurement {args[0]} failed (exit code {p.exitcode})")
    return q.get()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    gpu = torch.cuda.is_available()
    ap.add_argument("--backbone", default="resnet50" if gpu else "resnet18")
    ap.add_argument("--sizes", type=int, nargs="+", default=[224] if gpu else [96, 224])
    ap.add_argument("--patch-sizes", type=int, nargs="*", default=[], help="extra patch sizes for (b)")
    ap.add_argument("--pretexts", nargs="*", default=["rotation", "jigsaw+rotation"],
                    help="other pretexts whose (c) to measure too")
    ap.add_argument("--batch", type=int, default=256 if gpu else 32)
    ap.add_argument("--steps", type=int, default=20 if gpu else 6)
    ap.add_argument("--compile", action="store_true", help="also (c) with torch.compile (the backbone)")
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {'cuda ' + torch.cuda.get_device_name() if gpu else 'cpu'}, "
          f"{torch.get_num_threads()} threads, backbone {args.backbone}, batch {args.batch}, channels_last")
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
        limit = 1 / (1 + 9 * (default_patch / size) ** 2)
        print(f"  efficiency = (c)/(b) = {pirl / bound:.2f}    ratio = (c)/(a) = {pirl / plain:.2f}   "
              f"(physical limit {limit:.2f}: (c)/(a) is {pirl / plain / limit:.2f} of it)")
        c, _ = measure("pirl", args.backbone, size, None, args.batch, args.steps, plain_convs=True)
        print(f"  (c) with single-position convolutions on the general path {c:7.1f} img/s: "
              f"engine/small_maps.py makes the step {pirl / c:.2f}x faster")
        if args.compile:
            c, _ = measure("pirl", args.backbone, size, None, args.batch, args.steps, compile=True)
            print(f"  (c) with torch.compile {c:7.1f} img/s   = {c / pirl:.2f}x eager")
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
