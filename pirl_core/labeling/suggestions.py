"""Batches of suggested images to label, chosen in a pretrain run's representation and kept in the workspace.

A batch is stored the moment it is suggested (its images, why each was chosen, the classes), so a refresh, a
second tab or a restarted server resumes it where the annotator left off: the next image is the first of the
batch this annotator has not answered yet.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from ..access import audit
from ..data import duplicates
from ..data.image_cache import dataset_cache
from ..data.image_io import decode
from ..errors import PirlError
from ..evaluation.neighbours import Space, load_space
from ..search.vectors import topk
from ..workspace.folder import Workspace
from . import annotations, strategies


@dataclass
class Batch:
    id: int
    dataset_id: int
    job_id: int | None
    strategy: str  # the rule that chose it ("typical", "uncertain", "random")
    classes: list[str]
    items: list[dict]  # {"image_id", "reason", "score"}, in the order to label
    created_by: str
    created_at: float


_kept: dict[tuple, np.ndarray | list[int]] = {}
_lock = threading.Lock()


def _selection_space(space: Space) -> np.ndarray:
    with _lock:
        if ("space", space.key) not in _kept:
            _kept[("space", space.key)] = strategies.selection_space(space.vectors.numpy())
        return _kept[("space", space.key)]


def near_copy_clusters(ws: Workspace, dataset_id: int) -> list[int]:
    """Near-copy cluster per image of the dataset (pixel signatures), kept per dataset content."""
    key = ("clusters", str(ws.root), dataset_id, ws.store.dataset(dataset_id)["content_hash"])
    with _lock:
        if key not in _kept:
            _kept[key] = duplicates.image_clusters(dataset_cache(ws, dataset_id, duplicates.SIGNATURE_SIZE))
        return _kept[key]


def suggest(ws: Workspace, dataset: str | int, job_id: int, n: int, classes: list[str], strategy: str = "auto",
            seed: int = 0) -> Batch:
    """Choose `n` images of `dataset` to label next in pretrain run `job_id`'s features, and store the batch."""
    row = ws.store.dataset(dataset)
    if row is None:
        raise PirlError(f"No dataset {dataset!r}. `pirl datasets` lists them.")
    classes = annotations.check_classes(classes)
    space = load_space(ws, job_id, "features", row["id"])
    labels = annotations.state(ws, row["id"])
    position = {image_id: p for p, image_id in enumerate(space.image_ids)}
    y = np.full(len(space.image_ids), -1)
    done = np.zeros(len(space.image_ids), dtype=bool)
    for image_id, label in labels.labels.items():
        if label in classes:
            y[position[image_id]] = classes.index(label)
        done[position[image_id]] = True
    for image_id in [*labels.conflicts, *labels.skipped]:
        done[position[image_id]] = True
    rule, chosen = strategies.suggest(_selection_space(space), y, n, len(classes), strategy, done,
                                      near_copy_clusters(ws, row["id"]), seed)
    items = [{"image_id": space.image_ids[s.index], "reason": s.reason, "score": round(s.score, 4)} for s in chosen]
    batch_id = ws.store.add_label_batch(row["id"], job_id, rule, classes, items, ws.actor)
    audit.record(ws, "suggest", row["name"], f"{len(items)} images by {rule} in run #{job_id}")
    return batch(ws, row["id"], batch_id)


def batches(ws: Workspace, dataset_id: int) -> list[Batch]:
    """The dataset's batches, newest first."""
    return [Batch(**{k: r[k] for k in Batch.__dataclass_fields__}) for r in ws.store.label_batches(dataset_id)]


def batch(ws: Workspace, dataset_id: int, batch_id: int | None = None) -> Batch | None:
    """Batch `batch_id` of the dataset, or its newest one; None when it has none."""
    return next((b for b in batches(ws, dataset_id) if batch_id is None or b.id == batch_id), None)


def answered(ws: Workspace, b: Batch) -> set[int]:
    """The batch's images `ws.actor` has labeled or skipped (in this batch or before it)."""
    ids = {item["image_id"] for item in b.items}
    return {a["image_id"] for a in ws.store.annotations(b.dataset_id)
            if a["annotator"] == ws.actor and a["image_id"] in ids}


def next_item(ws: Workspace, b: Batch) -> dict | None:
    """The first image of the batch `ws.actor` has not answered; None when the batch is done."""
    done = answered(ws, b)
    return next((item for item in b.items if item["image_id"] not in done), None)


def picture(ws: Workspace, image: dict, max_side: int = 640):
    """The image as stored (not the training cache's square), at most `max_side` pixels a side, for labeling."""
    im = decode((ws.root / image["path"]).read_bytes(), image["orig_name"]).image
    im.thumbnail((max_side, max_side))
    return im


def labeled_neighbours(ws: Workspace, b: Batch, image_id: int, k: int = 4) -> list[dict]:
    """The `k` agreed-labeled images of the pool most like `image_id` in the batch's run: context for the
    annotator ("these were called benign"). Each: the image row, its label, the cosine similarity."""
    labels = annotations.state(ws, b.dataset_id).labels
    if not labels or b.job_id is None:
        return []
    space = load_space(ws, b.job_id, "features", b.dataset_id)
    rows = ws.store.images(b.dataset_id)
    labeled = [p for p, image in enumerate(space.image_ids) if image in labels and image != image_id]
    if not labeled:
        return []
    query = space.vectors[space.image_ids.index(image_id)][None]
    sims, hits = topk(space.vectors[labeled], query, min(k, len(labeled)))
    return [{"image": rows[labeled[h]], "label": labels[space.image_ids[labeled[h]]], "similarity": float(s)}
            for s, h in zip(sims[0].tolist(), hits[0].tolist())]
