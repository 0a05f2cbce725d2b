"""Quality of each initialisation on a real labeled folder, at the CPU defaults.

Pretrains PIRL twice on all images (labels unused): from random weights (PIRL) and from
ImageNet weights (ImageNet+PIRL); then, for each task (positive class vs the rest, and every
class with macro one-vs-rest AUC), compares scratch / ImageNet / PIRL / ImageNet+PIRL by linear
probe (5-fold CV) and full finetune (fixed split), and prints test AUC with 95% CI and the wall
time of each stage. Both tasks share the two pretraining runs.

    python bench/compare_quality.py ../shared/data/busi256 --positive malignant
    python bench/compare_quality.py ../shared/data/busi256 --tasks multiclass --modes linear
"""

from __future__ import annotations

import argparse
import csv
import itertools
import tempfile
import time
from pathlib import Path

from pirl_core import compare, ingest, jobs
from pirl_core.engine.pretrain import PretrainConfig
from pirl_core.workspace import Workspace


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", help="folder with one sub-folder per class")
    ap.add_argument("--positive", default="malignant")
    ap.add_argument("--tasks", default="binary,multiclass",
                    help="binary: --positive vs the rest; multiclass: every class (macro one-vs-rest AUC)")
    ap.add_argument("--backbone", default="efficientnet_lite0", help="efficientnet_lite0: ImageNet works offline")
    ap.add_argument("--image-size", type=int, default=96)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--modes", default="linear,finetune")
    args = ap.parse_args()
    data = Path(args.data)
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace(Path(tmp) / "ws")
        files = ingest.folder_source(data, check_roots=False)
        ingest.ingest(ws, files, "pool")
        tasks = args.tasks.split(",")
        for task in tasks:
            labels = Path(tmp) / f"labels-{task}.csv"
            with open(labels, "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["filename", "label"])
                for src in files:
                    cls = src.name.split("/")[0]
                    w.writerow([src.name, cls if task == "multiclass" or cls == args.positive
                                else f"not-{args.positive}"])
            ingest.ingest(ws, files, task, labels_csv=labels)
        pool = ws.store.dataset("pool")["id"]
        runs = []
        for imagenet in (False, True):
            config = PretrainConfig.defaults_for(
                "auto",
                backbone=args.backbone,
                image_size=args.image_size,
                epochs=args.epochs,
                pretrained_imagenet=imagenet,
            )
            t0 = time.time()
            job_id = jobs.submit(ws, "pretrain", config.to_dict(), pool)
            job = jobs.wait(ws, job_id, poll_s=5)
            result = job["result"]
            name = "ImageNet+PIRL" if imagenet else "PIRL"
            print(
                f"pretrain {name}: {job['status']}, {(time.time() - t0) / 60:.1f} min, "
                f"{result.get('images_per_s', 0):.1f} img/s, loss {result.get('last', {}).get('loss', 0):.3f}",
                flush=True,
            )
            runs.append(job_id)
        for task, mode in itertools.product(tasks, args.modes.split(",")):
            t0 = time.time()
            cid = compare.start(
                ws,
                compare.CompareRequest(
                    labeled=task,
                    pretrain_jobs=runs,
                    mode=mode,
                    folds=5 if mode == "linear" else 0,
                    fractions=[0.1, 0.25, 0.5, 1.0] if mode == "linear" else [1.0],
                ),
            )
            comp = next(c for c in compare.comparisons(ws) if c["id"] == cid)["result"]
            for arm in comp["arms"]:
                jobs.wait(ws, arm["job_id"], poll_s=5)
            s = compare.summarize(ws, cid)
            print(
                f"\n{task}, {mode} ({'5-fold CV, out-of-fold' if mode == 'linear' else 'fixed split'}), "
                f"{(time.time() - t0) / 60:.1f} min",
                flush=True,
            )
            for e in s["table"]:
                vs = "; ".join(
                    f"vs {o} {t['difference']:+.3f} p={t['p_value']:.3f}" for o, t in (e.get("vs") or {}).items()
                )
                eff = " ".join(
                    f"{float(k):.0%}:{v:.3f}" for k, v in sorted(e["efficiency"].items(), key=lambda kv: float(kv[0]))
                )
                print(
                    f"  {e['arm']:20s} AUC {e['auc']:.3f} [{e['ci_low']:.3f}, {e['ci_high']:.3f}]  {vs}  | {eff}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
