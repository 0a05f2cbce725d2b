"""Vector search over L2-normalised vectors: exact cosine top-k, near-copy pairs, a 2-D map.

Search is exact cosine top-k as one matrix product per block of the index (bounded memory);
the near-duplicate scan walks the index in blocks too, never holding an N x N matrix.
Used by near-copy finding (`data.duplicates`) and by Explore (`evaluation.neighbours`).
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import PirlError

BLOCK = 65_536


def topk(vectors: torch.Tensor, queries: torch.Tensor, k: int, block: int = BLOCK,
         exclude: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact cosine top-k of each query (Q, D) among vectors (N, D) (both normalised), block by block.
    `exclude` (Q,) removes one index per query (the query itself). Returns similarities and indices."""
    k = min(k, len(vectors) - (1 if exclude is not None else 0))
    best_s = torch.full((len(queries), 0), -2.0)
    best_i = torch.zeros((len(queries), 0), dtype=torch.long)
    for start in range(0, len(vectors), block):
        sims = queries @ vectors[start:start + block].T
        if exclude is not None:
            rows = torch.nonzero((exclude >= start) & (exclude < start + block)).flatten()
            sims[rows, exclude[rows] - start] = -2.0
        s, i = sims.topk(min(k, sims.shape[1]), dim=1)
        best_s, order = torch.cat([best_s, s], 1).topk(min(k, best_s.shape[1] + s.shape[1]), dim=1)
        best_i = torch.gather(torch.cat([best_i, i + start], 1), 1, order)
    return best_s, best_i


def knn_agreement(vectors: torch.Tensor, labels: list[str | None], k: int = 10) -> float:
    """Mean share of each labeled image's k nearest labeled neighbours that carry its label."""
    keep = [i for i, lab in enumerate(labels) if lab is not None]
    if len(keep) <= k:
        raise PirlError(f"kNN agreement needs more than k = {k} labeled images; there are {len(keep)}.")
    vecs = vectors[keep]
    labs = np.array([labels[i] for i in keep])
    shares = []
    for start in range(0, len(keep), 1024):
        q = vecs[start:start + 1024]
        _, idx = topk(vecs, q, k, exclude=torch.arange(start, start + len(q)))
        shares.append((labs[idx.numpy()] == labs[start:start + len(q), None]).mean(1))
    return float(np.concatenate(shares).mean())


def near_duplicates(vectors: torch.Tensor, threshold: float = 0.95, block: int = 4096,
                    max_pairs: int = 10_000) -> list[tuple[int, int, float]]:
    """Pairs (i, j, similarity), i < j, with cosine similarity >= threshold; one block of rows at a time."""
    pairs: list[tuple[int, int, float]] = []
    n = len(vectors)
    for start in range(0, n, block):
        sims = vectors[start:start + block] @ vectors.T  # (block, N)
        rows, cols = torch.nonzero(sims >= threshold, as_tuple=True)
        keep = cols > rows + start
        for r, c in zip(rows[keep].tolist(), cols[keep].tolist()):
            pairs.append((start + r, c, float(sims[r, c])))
        if len(pairs) >= max_pairs:
            break
    return sorted(pairs, key=lambda p: -p[2])[:max_pairs]


def project(vectors: torch.Tensor, method: str = "pca", seed: int = 0) -> np.ndarray:
    """2-D coordinates for the embedding map: PCA (fast, default) or t-SNE (slower, local structure)."""
    x = vectors.numpy().astype(np.float32)
    if method == "tsne":
        from sklearn.manifold import TSNE

        return TSNE(n_components=2, init="pca", random_state=seed, perplexity=min(30, max(2, len(x) // 4))
                    ).fit_transform(x)
    from sklearn.decomposition import PCA

    return PCA(n_components=2, random_state=seed).fit_transform(x)
