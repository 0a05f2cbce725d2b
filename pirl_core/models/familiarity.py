"""Does an input look like the images a model was trained on? A model called on unlike images (another
modality, another machine, synthetic demo images against real scans) answers with confidence all the same.

The reference is the training images' distribution in the model's own feature space, kept as statistics only
(the mean, the COMPONENTS main directions of spread with their variances, and the spread left outside them;
never a training image or its vector): an input's distance is its Mahalanobis distance within those directions
plus its distance outside them, each per its training spread (the principal-subspace score of novelty
detection). The features alone are not enough: a breast-ultrasound model's features put chest X-rays within
that limit more often than not (`python bench/out_of_depth.py`). So the look of the pixels is checked too: per
image, its 16-bin intensity histogram, mean, spread, mean steps across and down (texture) and colour, at the
model's input size; its Mahalanobis distance from the training images' (covariance shrunk by Ledoit-Wolf; 22
numbers against hundreds of images). An input is unlike when either distance passes its limit: the 99.5th
percentile over the reference images themselves and the model's own test part (images it never trained on,
from the same source), so about one in a hundred images like the training set is flagged, and an unlike one
stands far out. The card states the pixel statistics in words (mean and spread of the 8-bit intensities, the
share of grayscale images).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..engine import checkpoint
from ..engine.finetune import Classifier
from ..engine.model import eval_batches

BATCH = 32
MAX_IMAGES = 512  # reference images used (a random sample beyond this)
COMPONENTS = 16
PERCENTILE = 99.5  # of each distance over like images: two checks, about 1 like image in 100 flagged
HISTOGRAM_BINS = 16


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
    ref["limit"] = float(np.percentile(np.concatenate([distance(ref, train), distance(ref, test)]), PERCENTILE))
    return ref


def looks(images: np.ndarray) -> torch.Tensor:
    """Per uint8 (N, S, S, 3) image, what its pixels look like (N, 22): the intensity histogram, mean, spread,
    mean step across and down, and mean distance from grey, all on a 0-1 scale."""
    out = []
    for start in range(0, len(images), BATCH):
        rgb = np.asarray(images[start:start + BATCH], np.float32) / 255
        grey = rgb.mean(-1)
        histogram = np.stack([np.histogram(g, HISTOGRAM_BINS, (0, 1))[0] / g.size for g in grey])
        out.append(np.column_stack([histogram, grey.mean((1, 2)), grey.std((1, 2)),
                                    np.abs(np.diff(grey, axis=2)).mean((1, 2)),
                                    np.abs(np.diff(grey, axis=1)).mean((1, 2)),
                                    np.abs(rgb - grey[..., None]).mean((1, 2, 3))]))
    return torch.from_numpy(np.concatenate(out).astype(np.float32)) if out else torch.zeros((0, HISTOGRAM_BINS + 6))


def look_distance(reference: dict, look: torch.Tensor) -> np.ndarray:
    x = look - reference["mean"]
    return ((x @ reference["precision"]) * x).sum(1).clamp_min(0).sqrt().numpy()


def look_reference(train: np.ndarray, test: np.ndarray) -> dict:
    """The training images' pixel looks (mean and shrunk inverse covariance) and the limit of their distance."""
    from sklearn.covariance import LedoitWolf

    seen, unseen = looks(train), looks(test)
    fitted = LedoitWolf().fit(seen.double().numpy())
    ref = {"mean": torch.from_numpy(fitted.location_).float(), "precision": torch.from_numpy(fitted.precision_).float()}
    ref["limit"] = float(np.percentile(np.concatenate([look_distance(ref, seen), look_distance(ref, unseen)]),
                                       PERCENTILE))
    return ref


def reference(classifier: Classifier, train: np.ndarray, test: np.ndarray, size: int, seed: int = 0) -> dict:
    """The reference of training images (uint8 (N, S, S, 3)) with their test part, and their pixel statistics."""
    rng = np.random.default_rng(seed)
    if len(train) > MAX_IMAGES:
        train = train[np.sort(rng.choice(len(train), MAX_IMAGES, replace=False))]
    test = test[:MAX_IMAGES]
    ref = from_features(features(classifier, train, size), features(classifier, test, size))
    ref["looks"] = look_reference(train, test)
    pixels = train.astype(np.float32)
    gray = np.abs(pixels - pixels.mean(-1, keepdims=True)).max(axis=(1, 2, 3)) < 2
    return {**ref, "n": int(len(train)), "pixel_mean": float(pixels.mean()), "pixel_std": float(pixels.std()),
            "grayscale_share": float(gray.mean())}


def unlike(reference: dict | None, feats: torch.Tensor, images: np.ndarray | None = None) -> list[bool]:
    """Per row: beyond either limit (True: its features, or the look of its uint8 `images`' pixels), or within
    both; all False without a reference (a bundle exported before), features alone where it has no looks."""
    if reference is None:
        return [False] * len(feats)
    far = distance(reference, feats) > reference["limit"]
    if images is not None and "looks" in reference:
        far |= look_distance(reference["looks"], looks(images)) > reference["looks"]["limit"]
    return [bool(f) for f in far]


def from_workspace(ws, classifier: Classifier, labeled_dataset_id: int, test_image_ids, size: int,
                   kept: Path | None = None) -> dict:
    """The reference of a workspace model: its labeled set's images outside its own test part, and that part.
    Measuring it runs up to 2 x MAX_IMAGES images through the network (16 s for a BUSI model on this CPU), so
    it is measured once per model and read from `kept` (a file beside the model) after."""
    from ..data.image_cache import cache_size_for, dataset_cache

    if kept is not None and kept.exists():
        try:
            return torch.load(kept, weights_only=True)
        except Exception:  # noqa: BLE001  a damaged or cut-short file: measured again and rewritten below
            pass
    rows = ws.store.images(labeled_dataset_id)
    cache = dataset_cache(ws, labeled_dataset_id, cache_size_for(size))
    test_ids = set(test_image_ids)
    train = [i for i, r in enumerate(rows) if r["label"] is not None and r["id"] not in test_ids]
    test = [i for i, r in enumerate(rows) if r["id"] in test_ids]
    ref = reference(classifier, cache[train], cache[test], size)
    if kept is not None:
        checkpoint.save_atomic(ref, kept)
    return ref


def beside(model_file: str | Path) -> Path:
    """Where a workspace model's reference is kept: next to its model file."""
    return Path(model_file).with_name("familiarity.pt")


def for_bundle(reference: dict) -> dict:
    """What a bundle keeps for Predict's check: statistics only, no image and no image's vector."""
    return {k: reference[k] for k in ("mean", "components", "variances", "residual", "limit", "looks")}


def statement(reference: dict, synthetic: bool) -> dict:
    """What the card says of the training images (no vectors): for people, and for Predict's warnings."""
    return {"images": reference["n"], "synthetic": synthetic, "pixel_mean": round(reference["pixel_mean"], 1),
            "pixel_std": round(reference["pixel_std"], 1), "grayscale_share": round(reference["grayscale_share"], 3),
            "unlike_limit": round(reference["limit"], 3)}
