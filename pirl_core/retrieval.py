"""Nearest neighbours in a pretrain run's representation.

Two spaces:
* bank: the memory bank, one 128-d PIRL vector per training image (moving averages of f(v)
  over training, so they lag the final weights a little);
* features: backbone features of every image computed now with the run's final weights.

Search is exact cosine top-k as one matrix product per block of the index (bounded memory);
the near-duplicate scan walks the index in blocks too, never holding an N x N matrix.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .engine.model import PirlModel, embed_dataset, load_pretrained
from .errors import PirlError
from .image_cache import cache_size_for, dataset_cache
from .preprocess import model_input
from .workspace import Workspace

BLOCK = 65_536


@dataclass
class Space:
    job_id: int
    name: str  # "bank" or "features"
    dataset_id: int
    image_ids: list[int]
    vectors: torch.Tensor  # (N, D), L2-normalised
    model: PirlModel
    image_size: int


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


# -- loading a run's spaces, cached ------------------------------------------------------------
_cache: dict[tuple, Space] = {}
_lock = threading.Lock()


def load_space(ws: Workspace, job_id: int, space: str = "bank", dataset_id: int | None = None) -> Space:
    """The run's vectors (cached in this process; the previous run's are released)."""
    job = ws.store.job(job_id)
    if job is None or job["kind"] != "pretrain" or not job["checkpoint"]:
        raise PirlError(f"Pretrain run #{job_id} has no checkpoint.")
    dataset_id = dataset_id or job["dataset_id"]
    if space == "bank" and dataset_id != job["dataset_id"]:
        raise PirlError("The memory bank only holds the run's own training images; use the features space.")
    path = Path(job["checkpoint"])
    key = (str(ws.root), job_id, space, dataset_id, path.stat().st_mtime)
    with _lock:
        if key in _cache:
            return _cache[key]
        model, config, bank = load_pretrained(path)
        model.eval()
        image_ids = [im["id"] for im in ws.store.images(dataset_id)]
        if space == "bank":
            if list(bank.ids) != image_ids:
                raise PirlError("The dataset changed since this run; its memory bank no longer matches.")
            vectors = bank.vectors
        elif space == "features":
            images = dataset_cache(ws, dataset_id, cache_size_for(config.image_size))
            features = embed_dataset(model.backbone, images, config.image_size)
            vectors = F.normalize(features, dim=1)
        else:
            raise PirlError(f"Unknown space {space!r}: use 'bank' or 'features'.")
        _cache.clear()  # one run at a time stays in memory
        _cache[key] = Space(job_id, space, dataset_id, image_ids, vectors, model, config.image_size)
        return _cache[key]


@torch.no_grad()
def embed_image(space: Space, data: bytes, name: str) -> torch.Tensor:
    """A new image's vector in `space`, with the same preprocessing as the training cache."""
    x = model_input(data, name, space.image_size)
    out = space.model.embed_images(x) if space.name == "bank" else space.model.backbone(x)
    return F.normalize(out.float(), dim=1)[0]


def search(space: Space, query: torch.Tensor | int, k: int = 10) -> list[dict]:
    """Neighbours of a vector, or of the image at position `query` in the space (itself excluded)."""
    if isinstance(query, int):
        s, i = topk(space.vectors, space.vectors[query][None], k, exclude=torch.tensor([query]))
    else:
        s, i = topk(space.vectors, query[None], k)
    return [{"rank": r + 1, "position": int(p), "image_id": space.image_ids[int(p)], "similarity": float(v)}
            for r, (v, p) in enumerate(zip(s[0].tolist(), i[0].tolist()))]


def project(vectors: torch.Tensor, method: str = "pca", seed: int = 0) -> np.ndarray:
    """2-D coordinates for the embedding map: PCA (fast, default) or t-SNE (slower, local structure)."""
    x = vectors.numpy().astype(np.float32)
    if method == "tsne":
        from sklearn.manifold import TSNE

        return TSNE(n_components=2, init="pca", random_state=seed, perplexity=min(30, max(2, len(x) // 4))
                    ).fit_transform(x)
    from sklearn.decomposition import PCA

    return PCA(n_components=2, random_state=seed).fit_transform(x)


def duplicate_pairs(space: Space, rows: list[dict], threshold: float) -> list[dict]:
    """Near-duplicate pairs with file names and splits; `leak` marks pairs that straddle splits
    (one image in train, its near twin in test inflates every test AUC)."""
    out = []
    for i, j, sim in near_duplicates(space.vectors, threshold):
        a, b = rows[i], rows[j]
        out.append({"position_a": i, "position_b": j, "a": a["orig_name"], "b": b["orig_name"],
                    "similarity": round(sim, 4),
                    "split_a": a["split"], "split_b": b["split"],
                    "leak": bool(a["split"] and b["split"] and a["split"] != b["split"])})
    return out
