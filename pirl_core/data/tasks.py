"""A two-class task from a labeled set of more classes: one class against the rest, as a labeled set of its own.

A clinician asks "malignant or not?" of images filed in three folders (benign, malignant, normal). The task is a
new labeled dataset over the same stored images (nothing is copied: files are stored once, by content) with the
labels CLASS and "not CLASS", CLASS its positive class, and splits made afresh through the ordinary ingest stages,
so near-copies and a patient's images still share a split. The set it came from stays as it is.
"""

from __future__ import annotations

from ..access import audit
from ..errors import PirlError
from ..workspace.folder import Workspace
from . import ingest
from .labels import labels_csv


def task_name(dataset: str, positive: str) -> str:
    return f"{dataset} · {positive} vs rest"


def rest_label(positive: str, classes) -> str:
    """The label of every other class: "not CLASS", unless a class of that name exists already."""
    for rest in (f"not {positive}", f"other than {positive}", "rest"):
        if rest not in classes:
            return rest
    raise PirlError(f"No free name for the classes other than {positive!r}: rename a class first.")


def one_vs_rest(ws: Workspace, dataset: str, positive: str, seed: int = 0) -> ingest.Report:
    """A labeled dataset "DATASET · POSITIVE vs rest" of `dataset`'s labeled images, POSITIVE its positive class."""
    row = ws.store.dataset(dataset)
    if row is None:
        raise PirlError(f"No dataset named {dataset!r}.")
    counts = ws.store.class_counts(row["id"])
    if positive not in counts:
        raise PirlError(f"{positive!r} is not a class of {dataset!r}"
                        + (f" ({', '.join(counts)})." if counts else ": it has no labels yet."))
    if len(counts) < 3:
        raise PirlError(f"{dataset!r} has two classes already: choose its positive class instead.")
    name = task_name(dataset, positive)
    if ws.store.dataset(name) is not None:
        raise PirlError(f"A dataset named {name!r} exists already: use it, or rename or delete it first.")
    images = [im for im in ws.store.images(row["id"]) if im["label"]]
    rest = rest_label(positive, counts)
    table = labels_csv((im["orig_name"], positive if im["label"] == positive else rest, im["group_id"])
                       for im in images)
    report = ingest.ingest(ws, ingest.stored_files(ws, images), name, labels_csv=table, seed=seed)
    made = ws.store.dataset(report.dataset_id)
    task = {"from": dataset, "from_id": row["id"], "positive": positive,
            "rest": sorted(c for c in counts if c != positive)}
    ws.store.update_dataset(made["id"], info={**made["info"], "positive": positive, "task": task})
    audit.record(ws, "one-vs-rest task", name, f"{positive} against {', '.join(task['rest'])}")
    return report
