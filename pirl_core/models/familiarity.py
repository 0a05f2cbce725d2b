"""Does an input look like the images a model was trained on? A model called on unlike images (another
modality, another machine, synthetic demo images against real scans) answers with confidence all the same.

The reference is the training images' distribution in the model's own feature space, kept as statistics only
(the mean, the COMPONENTS main directions of spread with their variances, and the spread left outside them;
never a training image or its vector): an input's distance is its Mahalanobis distance within those directions
plus its distance outside them, each per its training spread (the principal-subspace score of novelty
detection). The limit is the 99th percentile of that distance over the reference
images themselves and the model's own test part (images it never trained on, from the same source), so about
one in a hundred images like the training set is flagged, and an unlike one stands far out. The pixel
statistics (mean and spread of the 8-bit intensities, the share of grayscale images) are stated in the card.
"""

from __future__ import annotations

import numpy as np
import torch

from ..engine.finetune import Classifier
from ..engine.model import eval_batches

BATCH = 32
MAX_IMAGES = 512  # reference images used (a random sample beyond this)
COMPONENTS = 16


@torch.no_grad()
def features(classifier: Classifier, images: np.ndarray, size: int) -> torch.Tensor:
    """Backbone features (N, D) of uint8 (N, S, S, 3) images, through the evaluation preset."""
    out = [classifier.backbone(x) for x in eval_batches(images, size, batch_size=BATCH)]
    return torch.cat(out) if out else torch.zeros((0, classifier.backbone.dim))


def distance(reference: dict, feats: torch.Tensor) -> np.ndarray:
    """Each row's distance from the training images: within the main directions (per direction's variance, mean
    over directions) plus outside them (per the training images' mean spread there)."""
    x = feats - reference["mean"]
    inside = x @ reference["components"].T
    outside = x - inside @ reference["components"]
    return ((inside.pow(2) / reference["variances"]).mean(1) + outside.pow(2).sum(1) / reference["residual"]).numpy()


def from_features(train: torch.Tensor, test: torch.Tensor) -> dict:
    """The statistics of training features (N, D), and the limit: the 99th percentile of the distance over
    them and the test part's features (images from the same source that the model never trained on)."""
    mean = train.mean(0)
    _, spread, directions = torch.linalg.svd(train - mean, full_matrices=False)
    k = max(1, min(COMPONENTS, len(train) - 1))
    ref = {"mean": mean, "components": directions[:k].contiguous(),
           "variances": (spread[:k] ** 2 / max(1, len(train) - 1)).clamp_min(1e-8)}
    x = train - mean
    ref["residual"] = (x - x @ ref["components"].T @ ref["components"]).pow(2).sum(1).mean().clamp_min(1e-8)
    ref["limit"] = float(np.percentile(np.concatenate([distance(ref, train), distance(ref, test)]), 99))
    return ref


def reference(classifier: Classifier, train: np.ndarray, test: np.ndarray, size: int, seed: int = 0) -> dict:
    """The reference of training images (uint8 (N, S, S, 3)) with their test part, and their pixel statistics."""
    rng = np.random.default_rng(seed)
    if len(train) > MAX_IMAGES:
        train = train[np.sort(rng.choice(len(train), MAX_IMAGES, replace=False))]
    ref = from_features(features(classifier, train, size), features(classifier, test[:MAX_IMAGES], size))
    pixels = train.astype(np.float32)
    gray = np.abs(pixels - pixels.mean(-1, keepdims=True)).max(axis=(1, 2, 3)) < 2
    return {**ref, "n": int(len(train)), "pixel_mean": float(pixels.mean()), "pixel_std": float(pixels.std()),
            "grayscale_share": float(gray.mean())}


def unlike(reference: dict | None, feats: torch.Tensor) -> list[bool]:
    """Per row: beyond the reference's limit (True), or within it; all False without a reference."""
    if reference is None:
        return [False] * len(feats)
    return [bool(d > reference["limit"]) for d in distance(reference, feats)]


def from_workspace(ws, classifier: Classifier, labeled_dataset_id: int, test_image_ids, size: int) -> dict:
    """The reference of a workspace model: its labeled set's images outside its own test part, and that part."""
    from ..data.image_cache import cache_size_for, dataset_cache

    rows = ws.store.images(labeled_dataset_id)
    cache = dataset_cache(ws, labeled_dataset_id, cache_size_for(size))
    test_ids = set(test_image_ids)
    train = [i for i, r in enumerate(rows) if r["label"] is not None and r["id"] not in test_ids]
    test = [i for i, r in enumerate(rows) if r["id"] in test_ids]
    return reference(classifier, cache[train], cache[test], size)


def statement(reference: dict, synthetic: bool) -> dict:
    """What the card says of the training images (no vectors): for people, and for Predict's warnings."""
    return {"images": reference["n"], "synthetic": synthetic, "pixel_mean": round(reference["pixel_mean"], 1),
            "pixel_std": round(reference["pixel_std"], 1), "grayscale_share": round(reference["grayscale_share"], 3),
            "unlike_limit": round(reference["limit"], 3)}
