"""Top-10 query latency and memory for 10^5 and 10^6 bank vectors of 128 floats, and the
near-duplicate scan time at 10^5, on this CPU.

    python bench/retrieval.py
"""

from __future__ import annotations

import resource
import time

import torch
import torch.nn.functional as F

from pirl_core.evaluation.neighbours import near_duplicates, topk


def main() -> None:
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for n in (100_000, 1_000_000):
        vectors = F.normalize(torch.randn(n, 128), dim=1)
        queries = F.normalize(torch.randn(20, 128), dim=1)
        topk(vectors, queries[:1], 10)  # warm-up
        t = time.perf_counter()
        for q in queries:
            topk(vectors, q[None], 10)
        ms = (time.perf_counter() - t) / len(queries) * 1000
        print(f"N = {n:>9,}: top-10 query {ms:7.1f} ms   index {vectors.numel() * 4 / 2**20:6.0f} MiB   "
              f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:6.0f} MiB")
        del vectors
    vectors = F.normalize(torch.randn(100_000, 128), dim=1)
    vectors[5000] = vectors[77]
    t = time.perf_counter()
    pairs = near_duplicates(vectors, 0.95)
    print(f"near-duplicate scan, N = 100,000: {time.perf_counter() - t:.1f} s, {len(pairs)} pair(s) found")


if __name__ == "__main__":
    main()
