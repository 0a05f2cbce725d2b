"""The workspace the README's screenshots are taken from: a real run, not a smoke test.

Ingests DATA (class sub-folders, e.g. ../shared/data/busi256) as an unlabeled pool and as a labeled set with
--positive against the rest, pretrains PIRL at this machine's defaults (on a CPU: efficientnet_lite0 from ImageNet,
128 px, 60 epochs: about 33 minutes for BUSI), compares every start with the linear probe at the Compare page's
defaults, exports the best model, and labels 12 of a suggested batch of 20 from the folders (the Label page
mid-batch). Each step is skipped when the workspace already has it, so a second call
only finishes what is missing. `make screenshots` runs this, then bench/screenshots.py.

    python bench/screenshot_workspace.py ../shared/data/busi256 pirl-screenshots
"""

from __future__ import annotations

import argparse
import csv
import io
import time
from pathlib import Path

from pirl_core.data import ingest, sources
from pirl_core.evaluation import compare
from pirl_core.jobs import queue
from pirl_core.labeling import annotations, suggestions
from pirl_core.models import export
from pirl_core.training import pretraining
from pirl_core.workspace.folder import Workspace

POOL, LABELED = "busi-pool", "busi-malignant"


def _labels_csv(data: Path, positive: str) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["filename", "label"])
    for path in sorted(p for p in data.rglob("*.png")):
        rel = path.relative_to(data).as_posix()
        writer.writerow([rel, positive if rel.split("/")[0] == positive else f"not {positive}"])
    return out.getvalue().encode()


def _follow(ws: Workspace, job_id: int, what: str) -> dict:
    t0 = time.time()
    job = queue.wait(ws, job_id, poll_s=10)
    print(f"{what}: {job['status']} after {(time.time() - t0) / 60:.1f} min", flush=True)
    if job["status"] != "succeeded":
        raise SystemExit(f"{what} ended {job['status']}: {job['message']}")
    return job


def _label_some(ws: Workspace, run: int) -> None:
    """A batch of 20 suggested on the pool, 12 of them labeled from their folders: the Label page mid-batch."""
    pool = ws.store.dataset(POOL)
    if suggestions.batch(ws, pool["id"]) is not None:
        return
    batch = suggestions.suggest(ws, pool["id"], run, 20, ["malignant", "not malignant"])
    names = {im["id"]: im["orig_name"] for im in ws.store.images(pool["id"])}
    for item in batch.items[:12]:
        truth = "malignant" if names[item["image_id"]].startswith("malignant/") else "not malignant"
        annotations.record(ws, pool["id"], item["image_id"], truth, batch.classes, batch.id)
    print(f"batch {batch.id}: 20 suggested by {batch.strategy}, 12 labeled", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path)
    parser.add_argument("workspace", type=Path)
    parser.add_argument("--positive", default="malignant")
    args = parser.parse_args()
    ws = Workspace(args.workspace)
    if ws.store.dataset(POOL) is None:
        ingest.ingest(ws, sources.folder_source(args.data, check_roots=False), POOL)
    if ws.store.dataset(LABELED) is None:
        ingest.ingest(ws, sources.folder_source(args.data, check_roots=False), LABELED,
                      labels_csv=_labels_csv(args.data, args.positive))
    runs = [j for j in pretraining.runs(ws) if j["status"] == "succeeded"]
    run = runs[0]["id"] if runs else None
    if run is None:
        active = [j for j in pretraining.runs(ws) if j["status"] in queue.ACTIVE]
        run = active[0]["id"] if active else pretraining.start(ws, POOL, pretraining.default_config())
        _follow(ws, run, f"pretrain #{run}")
    if not compare.comparisons(ws):
        cid = compare.start(ws, compare.CompareRequest(labeled=LABELED, pretrain_jobs=[run],
                                                       fractions=[0.1, 0.25, 0.5, 1.0]))
        for arm in compare.comparison(ws, cid)["arms"]:
            _follow(ws, arm["job_id"], arm["label"])
    comparison = compare.comparisons(ws)[0]
    summary = compare.summarize(ws, comparison["id"])
    if not ws.store.exports():
        best = max(summary["table"], key=lambda e: e["auc"])
        job_id = next(a["job_id"] for a in comparison["result"]["arms"] if a["label"] == best["arm"])
        print("exported", export.export_finetune(ws, job_id)["path"])
    _label_some(ws, run)
    for e in summary["table"]:
        curve = sorted((float(f), a) for f, a in e["efficiency"].items())
        print(f"{e['arm']}: AUC {e['auc']:.3f} [{e['ci_low']:.3f}, {e['ci_high']:.3f}]; at "
              + " / ".join(f"{f:.0%} {a:.3f}" for f, a in curve))
    for v in summary["verdicts"]:
        print(v["text"])
    for reading in summary.get("labels_saved", []):
        print(reading["sentence"])


if __name__ == "__main__":
    main()
