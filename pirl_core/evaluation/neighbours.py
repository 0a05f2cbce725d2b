"""Nearest neighbours in a pretrain run's representation (the Explore page and `pirl search`).

Two spaces:
* bank: the memory bank, one 128-d PIRL vector per training image (moving averages of f(v)
  over training, so they lag the final weights a little);
* features: backbone features of every image with the run's final weights, computed once per run and
  dataset and kept beside the checkpoint (the Label page and `pirl suggest` read them in a second).

The search itself is `search.index`; this module loads a run's vectors, keeps the search index of a
large space beside the checkpoint (rebuilt when it is missing, stale or from an older version), and
names the hits.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..data import duplicates
from ..data.image_cache import cache_size_for, dataset_cache
from ..data.preprocess import model_input
from ..engine.model import PirlModel, embed_dataset
from ..engine.train_state import load_pretrained
from ..errors import PirlError
from ..search.index import VectorIndex
from ..search.vectors import near_duplicates
from ..workspace.atomic import atomic_path
from ..workspace.folder import Workspace


@dataclass
class Space:
    job_id: int
    name: str  # "bank" or "features"
    dataset_id: int
    image_ids: list[int]
    vectors: torch.Tensor  # (N, D), L2-normalised
    model: PirlModel
    image_size: int
    key: tuple = ()  # (workspace, run, space, dataset, checkpoint time): what a cached result of it depends on
    index: VectorIndex | None = None
    index_note: str = ""  # why the kept index was rebuilt, when it was

    def searcher(self) -> VectorIndex:
        if self.index is None:
            self.index = VectorIndex.build(self.vectors)
        return self.index


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
            vectors = _kept_features(ws, path, model, config.image_size, dataset_id, image_ids)
        else:
            raise PirlError(f"Unknown space {space!r}: use 'bank' or 'features'.")
        index, note = _kept_index(path.with_name(f"index-{space}-dataset{dataset_id}.faiss"), vectors)
        _cache.clear()  # one run at a time stays in memory
        _cache[key] = Space(job_id, space, dataset_id, image_ids, vectors, model, config.image_size, key, index, note)
        return _cache[key]


def _kept_index(path: Path, vectors: torch.Tensor) -> tuple[VectorIndex, str]:
    """The space's search index: the one kept at `path` when it was built from these very vectors by this
    version; otherwise built now, and kept when it is an approximate one (an exact index builds in
    milliseconds). The note says why a kept index was rebuilt (empty when nothing was kept or it was used)."""
    kept, why = VectorIndex.load(path, vectors)
    if kept is not None:
        return kept, ""
    index = VectorIndex.build(vectors)
    if index.info.kind == "exact":
        return index, ""
    index.save(path)
    return index, "" if why.startswith("no search index") else f"Search index rebuilt: {why}."


def _kept_features(ws: Workspace, checkpoint: Path, model: PirlModel, image_size: int, dataset_id: int,
                   image_ids: list[int]) -> torch.Tensor:
    """The dataset's L2-normalised backbone features under this checkpoint, from the file kept beside it when
    that file is newer than the checkpoint and covers the same images; computed (and kept) otherwise."""
    kept = checkpoint.with_name(f"features-dataset{dataset_id}.pt")
    if kept.exists() and kept.stat().st_mtime >= checkpoint.stat().st_mtime:
        saved = torch.load(kept, weights_only=True)
        if saved["image_ids"].tolist() == image_ids:
            return saved["vectors"]
    images = dataset_cache(ws, dataset_id, cache_size_for(image_size))
    vectors = F.normalize(embed_dataset(model.backbone, images, image_size), dim=1)
    with atomic_path(kept) as tmp:
        torch.save({"image_ids": torch.tensor(image_ids), "vectors": vectors}, tmp)
    return vectors


@torch.no_grad()
def embed_image(space: Space, data: bytes, name: str) -> torch.Tensor:
    """A new image's vector in `space`, with the same preprocessing as the training cache."""
    x = model_input(data, name, space.image_size)
    out = space.model.embed_images(x) if space.name == "bank" else space.model.backbone(x)
    return F.normalize(out.float(), dim=1)[0]


def search(space: Space, query: torch.Tensor | int, k: int = 10) -> list[dict]:
    """Neighbours of a vector, or of the image at position `query` in the space (itself excluded)."""
    if isinstance(query, int):
        s, i = space.searcher().search(space.vectors[query][None], k, exclude=torch.tensor([query]))
    else:
        s, i = space.searcher().search(query[None], k)
    return [{"rank": r + 1, "position": int(p), "image_id": space.image_ids[int(p)], "similarity": float(v)}
            for r, (v, p) in enumerate(zip(s[0].tolist(), i[0].tolist()))]


def _pair(rows: list[dict], i: int, j: int, similarity: float) -> dict:
    a, b = rows[i], rows[j]
    return {"position_a": i, "position_b": j, "a": a["orig_name"], "b": b["orig_name"],
            "similarity": round(similarity, 4), "split_a": a["split"], "split_b": b["split"],
            "leak": bool(a["split"] and b["split"] and a["split"] != b["split"])}


def duplicate_pairs(space: Space, rows: list[dict], threshold: float) -> list[dict]:
    """Near-duplicate pairs in the representation with file names and splits; `leak` marks pairs that straddle
    splits (one image in train, its near twin in test inflates every test AUC)."""
    return [_pair(rows, i, j, sim) for i, j, sim in near_duplicates(space.vectors, threshold)]


def pixel_copy_pairs(ws: Workspace, dataset_id: int, rows: list[dict]) -> list[dict]:
    """The near-copies in the pixels alone (data/duplicates.py: what the Data page counts and every split keeps
    together), in duplicate_pairs' form, so Explore lists at least what the splits know of."""
    position = {r["id"]: i for i, r in enumerate(ws.store.images(dataset_id))}
    thumbs = dataset_cache(ws, dataset_id, duplicates.SIGNATURE_SIZE)
    signatures = np.stack([duplicates.signature(thumbs[position[r["id"]]]) for r in rows]) if rows else []
    return [_pair(rows, i, j, sim) for i, j, sim in duplicates.pairs(signatures)]
