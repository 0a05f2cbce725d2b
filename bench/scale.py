"""How far search and near-copy finding scale on this CPU: figures for the README's "How far it scales".

    python bench/scale.py [--min-n 10000] [--max-n 10000000] [--near-copy-n 1000000] [--no-near-copies]

1. Top-10 search over N synthetic 128-float vectors (clustered, like embeddings: 2,000 centres plus
   noise), N = 10^4 .. max-n: the exact query time (faiss flat), and above the crossover the IVF
   index that `search.index` builds: build time, the nprobe it chose, query time, recall@10 against
   exact search (200 indexed vectors as queries), index memory. Vectors above 10^6 live in a temporary memmap.
2. Near-copy pairs among 10^5 synthetic 32 x 32 signatures (smooth random images, 5% planted
   copies with noise, the threshold of `data.duplicates`): the exact scan against the projected range
   search (`search.projected_pairs`; pairs missed counted), then `near_duplicates` alone at --near-copy-n.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
import torch
import torch.nn.functional as F

from pirl_core.data.duplicates import THRESHOLD
from pirl_core.search import projected_pairs
from pirl_core.search.index import EXACT_UP_TO, VectorIndex
from pirl_core.search.vectors import near_duplicates


def embeddings(n: int, folder: Path, dim: int = 128, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((2000, dim)).astype(np.float32)
    x = np.lib.format.open_memmap(folder / f"vectors-{n}.npy", "w+", np.float32, (n, dim)) if n > 10**6 \
        else np.empty((n, dim), np.float32)
    for s in range(0, n, 10**6):
        m = min(n - s, 10**6)
        block = centres[rng.integers(0, 2000, m)] + 0.8 * rng.standard_normal((m, dim)).astype(np.float32)
        faiss.normalize_L2(block)
        x[s:s + m] = block
    return x


def signatures(n: int, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    out = np.empty((n, 1024), np.float32)
    for s in range(0, n, 50_000):
        m = min(n - s, 50_000)
        low = torch.from_numpy(rng.standard_normal((m, 1, 6, 6)).astype(np.float32))
        out[s:s + m] = (F.interpolate(low, size=32, mode="bicubic", align_corners=False).reshape(m, -1).numpy()
                        + 0.15 * rng.standard_normal((m, 1024)).astype(np.float32))
    copies, sources = rng.integers(0, n, n // 20), rng.integers(0, n, n // 20)
    out[copies] = out[sources] + 0.05 * out[sources].std() * rng.standard_normal((len(copies), 1024)).astype(np.float32)
    out -= out.mean(1, keepdims=True)
    faiss.normalize_L2(out)
    return torch.from_numpy(out)


def per_query_ms(search, queries: np.ndarray) -> float:
    search(queries[:1])
    t = time.perf_counter()
    for q in queries[:50]:
        search(q[None])
    return (time.perf_counter() - t) / min(50, len(queries)) * 1000


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def search_figures(min_n: int, max_n: int) -> None:
    print(f"faiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads; exact up to {EXACT_UP_TO:,}")
    with tempfile.TemporaryDirectory() as tmp:
        for n in [n for n in (10**4, 10**5, 10**6, 10**7) if min_n <= n <= max_n]:
            x = embeddings(n, Path(tmp))
            queries = np.ascontiguousarray(x[np.random.default_rng(1).choice(n, 200, replace=False)])
            exact_ms = per_query_ms(lambda q, x=x: faiss.knn(q, x, 10, metric=faiss.METRIC_INNER_PRODUCT), queries)
            line = f"N = {n:>10,}: exact {exact_ms:7.2f} ms/query"
            if n > EXACT_UP_TO:
                t = time.perf_counter()
                index = VectorIndex.build(x)
                built = time.perf_counter() - t
                info = index.info
                with tempfile.NamedTemporaryFile(dir=tmp) as f:
                    faiss.write_index(index.index, f.name)
                    size = Path(f.name).stat().st_size / 2**30
                ms = per_query_ms(lambda q, index=index: index.search(q, 10), queries)
                line += (f" | IVF{info.nlist},SQfp16 built in {built:6.0f} s, nprobe {info.nprobe}: {ms:6.2f} ms/query,"
                         f" recall@10 {info.recall_at_10:.3f}, index {size:.2f} GiB")
                del index
            print(line + f" | peak RSS {rss_mib():,.0f} MiB", flush=True)


def near_copy_figures(big_n: int) -> None:
    sig = signatures(100_000)
    t = time.perf_counter()
    exact = {(i, j) for i, j, _ in near_duplicates(sig, THRESHOLD, max_pairs=10**7)}
    exact_s = time.perf_counter() - t
    t = time.perf_counter()
    found = {(i, j) for i, j, _ in projected_pairs.pairs_above(sig.numpy(), THRESHOLD, max_pairs=10**7)}
    print(f"near-copies, 100,000 signatures: exact scan {exact_s:.0f} s, {len(exact):,} pairs; projected range "
          f"search {time.perf_counter() - t:.0f} s, {len(found):,} pairs, {len(exact - found)} missed, "
          f"{len(found - exact)} extra", flush=True)
    del sig
    if big_n > 100_000:
        t = time.perf_counter()
        sig = signatures(big_n, seed=1)
        made = time.perf_counter() - t
        t = time.perf_counter()
        pairs = near_duplicates(sig, THRESHOLD, max_pairs=10**8)
        print(f"near-copies, {big_n:,} signatures (made in {made:.0f} s): {time.perf_counter() - t:.0f} s, "
              f"{len(pairs):,} pairs, peak RSS {rss_mib():,.0f} MiB", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--min-n", type=int, default=10**4)
    parser.add_argument("--max-n", type=int, default=10**7)
    parser.add_argument("--near-copy-n", type=int, default=10**6)
    parser.add_argument("--no-near-copies", action="store_true", help="search figures only")
    args = parser.parse_args()
    search_figures(args.min_n, args.max_n)
    if not args.no_near_copies:
        near_copy_figures(args.near_copy_n)


if __name__ == "__main__":
    main()
