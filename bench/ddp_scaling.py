"""PIRL images/s with 1..N processes (torch.distributed: gloo CPU processes, or one NCCL process per GPU), the
same per-process batch each (weak scaling), and the efficiency N-process / (N x 1-process). In one run.

On a CPU the cores are shared out (each of N processes gets cores / N threads), so there the script prints the
N-process throughput as a share of the 1-process one on the same cores: what distribution costs (gradient
all-reduce, synchronised BatchNorm, bank all_gather, one thread per process), not extra hardware.

    python bench/ddp_scaling.py                          # CPU: 1 and 2 processes, resnet18 96 px, 16 each
    python bench/ddp_scaling.py --nproc 1 2 4 8          # GPUs: resnet50 224 px, 64 each
"""

from __future__ import annotations

import argparse
import os
import socket
import tempfile
import time

import numpy as np
import torch
import torch.multiprocessing as mp


def _rank(rank: int, world: int, port: int, args, threads: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(threads)
    from pirl_core.engine import distributed
    from pirl_core.engine.config import PretrainConfig
    from pirl_core.engine.pretrain import Callbacks, pretrain

    distributed.join(args.device)
    batch = args.per_process * world
    side = int(args.size * 256 / 224)
    images = np.random.default_rng(0).integers(0, 256, (batch * (args.steps + 4), side, side, 3), dtype=np.uint8)
    times = []

    class Clock(Callbacks):
        def on_step(self, report):
            times.append(time.perf_counter())

    config = PretrainConfig(backbone=args.backbone, image_size=args.size, batch_size=batch, epochs=1,
                            bank_init="random", checkpoint_every_s=1e9, device=args.device,
                            bn_stats="image_pass", num_workers=2 if args.device != "cpu" else 0)
    with tempfile.TemporaryDirectory() as tmp:
        pretrain(config, images, list(range(len(images))), tmp, Clock())
    if rank == 0:
        rate = batch * (len(times) - 3) / (times[-1] - times[2])
        with open(out, "w") as f:
            f.write(str(rate))
    distributed.leave()


def run(world: int, args) -> float:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    threads = max(1, (os.cpu_count() or 1) // world) if args.device == "cpu" else 4
    with tempfile.NamedTemporaryFile(suffix=".txt") as out:
        mp.spawn(_rank, args=(world, port, args, threads, out.name), nprocs=world)
        return float(open(out.name).read())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    gpus = torch.cuda.device_count()
    ap.add_argument("--device", default="cuda" if gpus else "cpu")
    ap.add_argument("--nproc", type=int, nargs="+", default=list(range(1, gpus + 1)) if gpus else [1, 2])
    ap.add_argument("--backbone", default="resnet50" if gpus else "resnet18")
    ap.add_argument("--size", type=int, default=224 if gpus else 96)
    ap.add_argument("--per-process", type=int, default=64 if gpus else 16, help="images per process and step")
    ap.add_argument("--steps", type=int, default=8)
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {args.device}, {os.cpu_count()} cores, {args.backbone} {args.size} px, "
          f"{args.per_process} images per process and step")
    one = None
    for n in args.nproc:
        rate = run(n, args)
        one = one or (rate if n == 1 else None)
        if not one:
            print(f"  {n} processes  {rate:8.1f} img/s")
        elif args.device == "cpu":  # the same cores either way: what distributing costs
            print(f"  {n} process{'es' if n > 1 else '  '}  {rate:8.1f} img/s   {rate / one:.2f} of 1 process "
                  "on the same cores")
        else:
            print(f"  {n} GPU{'s' if n > 1 else ' '}  {rate:8.1f} img/s   efficiency {rate / (n * one):.2f}")


if __name__ == "__main__":
    main()
