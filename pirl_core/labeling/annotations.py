"""The labels annotators give, one row each in the workspace database, saved the moment they are given.

Who gave a label and when is kept (and in the audit log), so two annotators who disagree are both on
record: an image's label is the one every annotator's latest answer agrees on; where their latest answers
differ, it is a conflict, listed on the Label page and left out of the labeled set until resolved.
A skip ("not sure") is a row with no label: the image is not suggested again, and counts for nobody.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..access import audit
from ..data.labels import match_labels, read_labels_csv
from ..errors import PirlError
from ..workspace.folder import Workspace

MAX_CLASS_NAME = 60


def check_classes(classes: list[str]) -> list[str]:
    """The class names, stripped and checked: at least two, distinct, short, one line each."""
    out = []
    for name in classes:
        name = " ".join(str(name).split())
        if name and name not in out:
            out.append(name)
    if len(out) < 2:
        raise PirlError("Give at least two classes, separated by commas (for example: benign, malignant).")
    long = [c for c in out if len(c) > MAX_CLASS_NAME]
    if long:
        raise PirlError(f"Class names are at most {MAX_CLASS_NAME} characters; shorten {long[0][:20]}...")
    return out


def _dataset(ws: Workspace, dataset: str | int) -> dict:
    row = ws.store.dataset(dataset)
    if row is None:
        raise PirlError(f"No dataset {dataset!r}. `pirl datasets` lists them.")
    return row


def record(ws: Workspace, dataset: str | int, image_id: int, label: str | None, classes: list[str] | None = None,
           batch_id: int | None = None) -> int:
    """Save one label (None: skipped) by `ws.actor`. Refused, with the reason, for an image that is not (or no
    longer) in the dataset, or a label outside the batch's classes."""
    row = _dataset(ws, dataset)
    if image_id not in {im["id"] for im in ws.store.images(row["id"])}:
        raise PirlError(f"Image {image_id} is no longer in {row['name']!r} (deleted or re-imported); "
                        "its label was not saved. Ask for a new batch of suggestions.")
    if label is not None and classes is not None and label not in classes:
        raise PirlError(f"{label!r} is not one of this batch's classes ({', '.join(classes)}).")
    annotation = ws.store.add_annotation(row["id"], image_id, label, ws.actor, batch_id)
    audit.record(ws, "label" if label is not None else "skip", row["name"], f"image {image_id}: {label or 'not sure'}")
    return annotation


def undo(ws: Workspace, dataset: str | int, batch_id: int | None = None) -> dict | None:
    """Take back `ws.actor`'s latest label (in `batch_id`, when given); returns it, or None when there is none."""
    row = _dataset(ws, dataset)
    mine = [a for a in ws.store.annotations(row["id"])
            if a["annotator"] == ws.actor and (batch_id is None or a["batch_id"] == batch_id)]
    if not mine:
        return None
    ws.store.delete_annotation(mine[-1]["id"])
    audit.record(ws, "undo label", row["name"], f"image {mine[-1]['image_id']}")
    return mine[-1]


@dataclass
class LabelState:
    labels: dict[int, str]  # image id -> the label every annotator's latest answer agrees on
    conflicts: dict[int, dict[str, str]]  # image id -> {annotator: label}, where they differ
    skipped: set[int]  # image ids only skipped so far
    annotators: list[str]
    given: int  # label rows in all (skips excluded), what labeling has cost


def state(ws: Workspace, dataset: str | int) -> LabelState:
    latest: dict[int, dict[str, str | None]] = {}
    annotators, given = [], 0
    for a in ws.store.annotations(_dataset(ws, dataset)["id"]):
        latest.setdefault(a["image_id"], {})[a["annotator"]] = a["label"]
        if a["label"] is not None:
            given += 1
            if a["annotator"] not in annotators:
                annotators.append(a["annotator"])
    labels, conflicts, skipped = {}, {}, set()
    for image_id, answers in latest.items():
        given_labels = {who: lab for who, lab in answers.items() if lab is not None}
        if not given_labels:
            skipped.add(image_id)
        elif len(set(given_labels.values())) == 1:
            labels[image_id] = next(iter(given_labels.values()))
        else:
            conflicts[image_id] = given_labels
    return LabelState(labels, conflicts, skipped, annotators, given)


def import_csv(ws: Workspace, dataset: str | int, labels_csv: bytes | str, classes: list[str] | None = None) -> dict:
    """Labels given in another tool (`pirl label`): a filename,label CSV, each row saved as `ws.actor`'s label.
    Rows naming no image of the dataset are reported, not saved; nothing is saved when a label is outside
    `classes`."""
    row = _dataset(ws, dataset)
    images = ws.store.images(row["id"])
    table = read_labels_csv(labels_csv)
    found, _, unknown = match_labels([im["orig_name"] for im in images], table)
    pairs = [(im["id"], lab) for im, lab in zip(images, found) if lab is not None]
    if classes is not None:
        outside = sorted({lab for _, lab in pairs} - set(classes))
        if outside:
            raise PirlError(f"The CSV uses label(s) outside the classes ({', '.join(classes)}): "
                            f"{', '.join(outside[:5])}. Nothing was saved.")
    with ws.store.transaction():
        for image_id, label in pairs:
            ws.store.add_annotation(row["id"], image_id, label, ws.actor)
    audit.record(ws, "label (CSV)", row["name"], f"{len(pairs)} labels")
    return {"saved": len(pairs), "unknown": unknown}
