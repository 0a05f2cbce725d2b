"""Predictions for new images, with a Grad-CAM heatmap each, from an exported bundle or a finetuned model in
the workspace. Binary models decide at the threshold chosen on the comparison (stated in the bundle)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..data import preprocess
from ..engine.finetune import Classifier
from ..engine.gradcam import gradcam
from ..engine.model import eval_batches
from ..errors import BadImage, PirlError
from ..evaluation.compare import decision_threshold
from ..jobs import queue
from ..workspace.atomic import atomic_path
from ..workspace.folder import Workspace
from . import familiarity, signing
from .export import decide, load_classifier, open_bundle

BATCH = 16


@dataclass
class Model:
    classifier: Classifier
    classes: list[str]
    image_size: int
    description: str
    threshold: dict | None = None  # {"value", "how"}: binary models only
    test_image_ids: frozenset = frozenset()  # a comparison's model: the images of its own test part
    signature: str | None = None  # a bundle: who signed it, in words
    trusted: bool = True  # a bundle: signed by a key the workspace trusts (a workspace model always is)
    familiarity: dict | None = None  # the training images' feature statistics (models/familiarity.py)
    synthetic: bool = False  # trained on synthetic demo images
    training_hashes: frozenset = frozenset()  # a workspace model: content hashes of the images it could train on


@dataclass
class Predictions:
    rows: list[dict] = field(default_factory=list)  # file, one probability per class, decision
    images: list[np.ndarray] = field(default_factory=list)  # uint8 (S, S, 3), what the model saw
    heatmaps: list[np.ndarray] = field(default_factory=list)  # float (S, S) in [0, 1], for the decided class
    skipped: list[dict] = field(default_factory=list)  # file, reason


def sources(ws: Workspace) -> list[dict]:
    """Models to predict with, newest first: exported bundles, then finetuned models of the workspace."""
    out = [{"key": f"bundle:{e['path']}", "label": f"exported bundle {Path(e['path']).name}"}
           for e in ws.store.exports() if e["info"].get("kind") == "finetune" and Path(e["path"]).exists()]
    for j in ws.store.jobs(kind="finetune", statuses=["succeeded"]):
        cfg, model = queue.config_of(j), queue.result_of(j).model
        if model and Path(model).exists():
            out.append({"key": f"job:{j['id']}", "label": f"{cfg.label} finetuned on {cfg.labeled} (job #{j['id']})"})
    return out


def load(ws: Workspace, key: str, familiar: bool = True) -> Model:
    """The model `key` names ("bundle:PATH" or "job:ID"). `familiar=False`: without the reference of its
    training images (`Model.familiarity` None), for a caller that only explains, never predicts: a workspace
    model's reference is measured the first time it is asked for (models/familiarity.py)."""
    kind, _, ref = key.partition(":")
    if kind == "bundle":
        classifier, meta = open_bundle(ref, keys=signing.trusted_keys(ws))
        card = meta["card"]
        trained = card["model"]["trained_on"]
        return Model(classifier, meta["classes"], meta["image_size"],
                     f"{card['model']['backbone']}, {card['model']['initialisation']} start, trained on {trained} "
                     f"({card['model']['n_train']} images)", card.get("decision_threshold"),
                     signature=meta["signature"], trusted=meta["trusted"], familiarity=meta.get("familiarity"),
                     synthetic=bool(card["training_data"].get("images", {}).get("synthetic")))
    if kind == "job":
        job = ws.store.job(int(ref))
        if job is None or job["kind"] != "finetune" or not queue.result_of(job).model:
            raise PirlError(f"No finetuned model for job {ref}.")
        classifier, state = load_classifier(queue.result_of(job).model)
        cfg = queue.config_of(job)
        trained = (f"fold {state['fold'] + 1} of {cfg.folds}" if state["fold"] is not None
                   else "the fixed training split")
        test_ids = frozenset(state.get("test_image_ids", ()))
        rows = ws.store.images(cfg.labeled_dataset_id)
        return Model(classifier, state["classes"], state["image_size"],
                     f"{state['backbone']}, {job['config']['label']} start, trained on {trained} "
                     f"({state['n_train']} images)", decision_threshold(ws, int(ref)), test_ids,
                     familiarity=familiarity.from_workspace(
                         ws, classifier, cfg.labeled_dataset_id, test_ids, state["image_size"],
                         familiarity.beside(queue.result_of(job).model)) if familiar else None,
                     synthetic=bool(ws.store.dataset(cfg.labeled_dataset_id)["info"].get("synthetic")),
                     training_hashes=frozenset(r["content_hash"] for r in rows if r["id"] not in test_ids))
    raise PirlError(f"Unknown model {key!r}.")


def predict(model: Model, files: list[tuple[str, bytes]],
            on_progress: Callable[[int, int], None] | None = None) -> Predictions:
    """Probabilities, the decision, and a heatmap of the decided class for every readable file; the rest
    are listed in `skipped` with the reason."""
    out = Predictions()
    readable: list[tuple[str, np.ndarray, bool]] = []  # name, cache row, one of its training images
    for name, data in files:
        try:
            readable.append((name, preprocess.cache_row(data, name, model.image_size),
                             hashlib.sha256(data).hexdigest() in model.training_hashes))
        except BadImage as exc:
            out.skipped.append({"file": name, "reason": str(exc)})
    for start in range(0, len(readable), BATCH):
        chunk = readable[start:start + BATCH]
        rows = np.stack([row for _, row, _ in chunk])
        x = next(eval_batches(rows, model.image_size, batch_size=len(chunk)))
        with torch.no_grad():
            feats = model.classifier.backbone(x)
            probs = torch.softmax(model.classifier.classify(feats), 1).numpy()
        decided = [decide(p, model.threshold) for p in probs]
        heat = _heatmaps(model, x, decided, rows.shape[1:3])
        unlike = familiarity.unlike(model.familiarity, feats, rows)
        for (name, row, known), p, d, h, far in zip(chunk, probs, decided, heat, unlike):
            out.rows.append({"file": name, **{f"p({c})": float(v) for c, v in zip(model.classes, p)},
                             "decision": model.classes[d], "unlike its training images": far,
                             "one of its training images": known})
            out.images.append(row)
            out.heatmaps.append(h)
        if on_progress:
            on_progress(min(start + BATCH, len(readable)), len(readable))
    return out


def _heatmaps(model: Model, x: torch.Tensor, classes: list[int], size: tuple[int, int]) -> np.ndarray:
    heat = gradcam(model.classifier, x, classes)
    return torch.nn.functional.interpolate(heat[:, None], size=size, mode="bilinear")[:, 0].numpy()


def explain(ws: Workspace, job_id: int, model: Model, images: np.ndarray, image_ids: list[int],
            classes: list[int]) -> list[np.ndarray]:
    """Grad-CAM overlays of finetune job `job_id`'s images already in the workspace (uint8 (N, S, S, 3), e.g.
    from its cache), each for the given class: where the model looked when it called that class. Each image
    and class is computed once and kept beside the model (heatmaps.npz), so a page that shows them again, after
    a restart too, does not run the network (Compare's first visit under load: 7.3 s, most of it these)."""
    path = heatmaps_file(ws, job_id)
    kept: dict[str, np.ndarray] = {}
    if path.exists():
        try:
            with np.load(path) as saved:
                kept = dict(saved)
        except Exception:  # noqa: BLE001  a damaged or cut-short file: computed again and rewritten below
            kept = {}
    images = np.asarray(images)
    keys = [f"{i}-{c}" for i, c in zip(image_ids, classes)]
    missing = [k for k, key in enumerate(keys) if key not in kept or kept[key].shape != images.shape[1:3]]
    for start in range(0, len(missing), BATCH):
        part = missing[start:start + BATCH]
        x = next(eval_batches(images[part], model.image_size, batch_size=len(part)))
        for k, heat in zip(part, _heatmaps(model, x, [classes[k] for k in part], images.shape[1:3])):
            kept[keys[k]] = heat.astype(np.float16)
    if missing:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, **kept)
    return [overlay(image, kept[key].astype(np.float32)) for image, key in zip(images, keys)]


def heatmaps_file(ws: Workspace, job_id: int) -> Path:
    """Where explain() keeps finetune job `job_id`'s heatmaps: beside its model."""
    return Path(queue.result_of(ws.store.job(job_id)).model).with_name("heatmaps.npz")


def overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """The heatmap over the image (uint8 RGB): red where the model looked most."""
    from matplotlib import colormaps

    colours = colormaps["jet"](np.clip(heat, 0, 1))[..., :3] * 255
    return ((1 - alpha) * image + alpha * colours).clip(0, 255).astype(np.uint8)


def decided_probability(row: dict) -> float:
    """The probability of the class a row's decision names (not the top class: at a threshold they differ)."""
    return row[f"p({row['decision']})"]
