"""The memory bank's share of a pretraining step at 10^3, 10^5 and 10^6 pool images: does a step grow with N?

    python bench/bank_scale.py [--batch 64] [--negatives 999]

Times everything a PIRL step does with the bank, at the CPU default batch, with the same number of
negatives at every N (999, the most a 1,000-image pool allows; the default at N >= 16,385 is 16,384):
drawing the negatives (with near-copy exclusion), gathering the positives and the candidates, the
loss of the jigsaw and whole-image views against them with its backward pass, and the momentum
update. The network's forward and backward, which do not depend on N, are left out: the ratio
printed is of the bank's part alone, an upper bound on how much a whole step grows.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from pirl_core.engine.loss import pirl_loss
from pirl_core.engine.memory_bank import MemoryBank


def bank_step_ms(n: int, batch: int, negatives: int, steps: int = 50) -> float:
    gen = torch.Generator().manual_seed(0)
    bank = MemoryBank.random(n, 128, list(range(n)), gen)
    bank.copies = torch.arange(n) // 2  # every image has one near-copy: the exclusion always has work
    views = {"jigsaw": F.normalize(torch.randn(batch, 128), dim=1).requires_grad_(),
             "image": F.normalize(torch.randn(batch, 128), dim=1).requires_grad_()}
    weights = {"jigsaw": 0.5, "image": 0.5}

    def step() -> None:
        index = torch.randint(0, n, (batch,), generator=gen)
        neg = bank.sample_negatives(index, negatives, gen)
        loss, _ = pirl_loss(views, weights, bank.vectors[index], bank.vectors[neg.candidates], neg.keep)
        loss.backward()
        bank.update(index, views["image"].detach())

    for _ in range(5):
        step()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t) / steps * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--negatives", type=int, default=999)
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, "
          f"{args.negatives} negatives")
    base = None
    for n in (1_000, 100_000, 1_000_000):
        ms = bank_step_ms(n, args.batch, args.negatives)
        base = base or ms
        print(f"N = {n:>9,}: bank part of a step {ms:6.2f} ms ({ms / base:.2f}x the 1,000-image pool)", flush=True)


if __name__ == "__main__":
    main()
