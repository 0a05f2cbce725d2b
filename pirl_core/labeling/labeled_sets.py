"""The labels given so far as a labeled dataset, and the AUC they buy as labels are spent.

`build` turns the agreed labels of a pool into a labeled dataset like any imported one: the same images
(stored once, by content), the pool's groups, and the same ingest stages, so its splits and folds keep
near-copies and a patient's images together. Each build is a dataset of its own ("pool · 40 labels"), so
the comparison run on it stays as it was, and the list of builds with their comparisons is the curve of AUC
against labels spent.
"""

from __future__ import annotations

from ..data import ingest
from ..data.labels import labels_csv
from ..errors import PirlError
from ..evaluation import compare
from ..workspace.folder import Workspace
from . import annotations, suggestions


def build(ws: Workspace, dataset: str | int, seed: int = 0) -> ingest.Report:
    """A labeled dataset of the pool's agreed labels (conflicts left out, and said so)."""
    pool = ws.store.dataset(dataset)
    if pool is None:
        raise PirlError(f"No dataset {dataset!r}.")
    given = annotations.state(ws, pool["id"])
    images = [im for im in ws.store.images(pool["id"]) if im["id"] in given.labels]
    if not images:
        raise PirlError(f"No agreed labels in {pool['name']!r} yet: label a batch on the Label page first.")
    files = ingest.stored_files(ws, images)
    table = labels_csv([(im["orig_name"], given.labels[im["id"]], im["group_id"]) for im in images])
    base = f"{pool['name']} · {len(images)} labels"
    for attempt in range(1, 100):
        name = base if attempt == 1 else f"{base} ({attempt})"
        existing = ws.store.dataset(name)
        if existing is None or existing["info"].get("from_labels", {}).get("image_ids") == sorted(given.labels):
            break
    report = ingest.ingest(ws, files, name, labels_csv=table, seed=seed)
    rules = sorted({b.strategy for b in suggestions.batches(ws, pool["id"])})
    origin = {"pool": pool["name"], "pool_id": pool["id"], "labels": len(images), "annotators": len(given.annotators),
              "strategies": rules, "conflicts_left_out": len(given.conflicts), "image_ids": sorted(given.labels)}
    row = ws.store.dataset(report.dataset_id)
    ws.store.update_dataset(row["id"], info={**row["info"], "from_labels": origin})
    if given.conflicts:
        report.warnings.append(f"{len(given.conflicts)} image(s) where annotators disagree were left out; "
                               "resolve them on the Label page.")
    return report


def compare_now(ws: Workspace, labeled: str, job_id: int, inits: list[str] | None = None) -> int:
    """The comparison of the starts (all by default) on a built labeled set with all its labels: one point of
    the curve per start."""
    return compare.start(ws, compare.CompareRequest(labeled=labeled, pretrain_jobs=[job_id], fractions=[1.0],
                                                    inits=list(inits or compare.INITS)))


def curve(ws: Workspace, pool_id: int) -> list[dict]:
    """One row per (build of the pool, start) with a finished comparison: labels, start, AUC and its interval."""
    builds = {d["id"]: d for d in ws.store.datasets() if d["info"].get("from_labels", {}).get("pool_id") == pool_id}
    out = []
    for comp in compare.comparisons(ws):
        record = comp["result"]
        dataset_id = compare.comparison_config(record).labeled_dataset_id
        if dataset_id not in builds:
            continue
        summary = record.get("summary") or compare.summarize(ws, comp["id"])
        if not summary.get("complete"):
            continue
        for entry in summary["table"]:
            out.append({"labels": builds[dataset_id]["info"]["from_labels"]["labels"], "start": entry["arm"],
                        "auc": entry["auc"], "ci_low": entry["ci_low"], "ci_high": entry["ci_high"],
                        "dataset": builds[dataset_id]["name"], "comparison": comp["id"]})
    return sorted(out, key=lambda r: (r["start"], r["labels"]))
