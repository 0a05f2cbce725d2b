"""Near-copy pairs among more vectors than an exact scan can take (a million signatures in minutes).

Three steps, none of which can add a false pair:
1. Project the unit vectors onto their first PROJECTED_DIMS principal directions (faiss PCAMatrix: centred, rows
   orthonormal). A projection only shortens distances, and for unit vectors cosine >= t means a distance of at
   most sqrt(2 - 2t): every true pair is within that radius in the projection too.
2. Find the pairs within the radius there: an inverted-file index (L2, full floats) and a range search, with
   nprobe four times the smallest of 1, 2, 4, ... that finds every pair an exact search of the projection finds for
   2,000 sampled vectors. Only this step can miss a pair.
3. Keep the candidates whose cosine on the full vectors reaches the threshold.
On 10^5 synthetic signatures (bench/scale.py) it found all 4,794 pairs the exact scan finds.
"""

from __future__ import annotations

import faiss
import numpy as np

from .index import MAX_CELLS, NPROBES

PROJECTED_DIMS = 64
PCA_SAMPLE = 20_000  # vectors the principal directions are fitted on
SAMPLE_QUERIES = 2_000  # vectors whose pairs choose nprobe
_BATCH = 16_384


def pairs_above(x: np.ndarray, threshold: float, max_pairs: int, seed: int = 0) -> list[tuple[int, int, float]]:
    """Pairs (i, j, cosine), i < j, of the unit vectors `x` (N, D) with cosine >= threshold, most similar first,
    at most `max_pairs`."""
    n, dim = x.shape
    rng = np.random.default_rng(seed)
    pca = faiss.PCAMatrix(dim, min(PROJECTED_DIMS, dim))
    pca.train(x[np.sort(rng.choice(n, min(n, PCA_SAMPLE), replace=False))])
    y = np.concatenate([pca.apply(x[s:s + _BATCH]) for s in range(0, n, _BATCH)])
    radius = 2.0 - 2.0 * threshold  # squared distance between unit vectors at cosine `threshold`
    nlist = int(min(MAX_CELLS, 4 * np.sqrt(n)))
    index = faiss.IndexIVFFlat(faiss.IndexFlatL2(y.shape[1]), y.shape[1], nlist)
    index.cp.seed = seed
    index.train(y[np.sort(rng.choice(n, min(n, 40 * nlist), replace=False))])
    index.add(y)
    index.nprobe = _nprobe_for_pairs(index, y, radius, rng)
    found, total = [], 0
    for start in range(0, n, _BATCH):
        lims, _, ids = index.range_search(y[start:start + _BATCH], radius)
        rows = np.repeat(np.arange(start, start + len(lims) - 1), np.diff(lims.astype(np.int64)))
        keep = ids > rows
        rows, cols = rows[keep], ids[keep]
        sims = np.einsum("ij,ij->i", x[rows], x[cols])
        alike = sims >= threshold
        found.append(np.rec.fromarrays([rows[alike], cols[alike], sims[alike]], names="i,j,s"))
        total += int(alike.sum())
        if total >= max_pairs:
            break
    pairs = np.concatenate(found)
    pairs = pairs[np.argsort(-pairs["s"], kind="stable")][:max_pairs]
    return [(int(i), int(j), float(s)) for i, j, s in pairs]


def _nprobe_for_pairs(index: faiss.IndexIVFFlat, y: np.ndarray, radius: float, rng: np.random.Generator) -> int:
    """Four times the smallest nprobe whose range search finds every projected pair of SAMPLE_QUERIES sampled
    vectors: a sample holds a few hundred pairs, so its "all" cannot vouch for the last half percent (at 10^5 the
    smallest alone missed 26 of 4,794 pairs, twice it 1), and a search visits so few vectors that the margin
    costs seconds."""
    queries = y[rng.choice(len(y), min(len(y), SAMPLE_QUERIES), replace=False)]
    distances, ids = faiss.knn(queries, y, min(len(y), 64), metric=faiss.METRIC_L2)
    truth = {(q, int(ids[q, k])) for q, k in zip(*np.nonzero(distances <= radius))}
    for nprobe in NPROBES:
        index.nprobe = nprobe
        lims, _, found_ids = index.range_search(queries, radius)
        lims = lims.astype(np.int64)
        found = {(q, int(j)) for q in range(len(queries)) for j in found_ids[lims[q]:lims[q + 1]]}
        if truth <= found:
            break
    return min(4 * nprobe, index.nlist)
