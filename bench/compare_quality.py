"""Quality of each initialisation on a real labeled folder, through the product itself, at its defaults.

Ingests DATA as the unlabeled pool and as labeled sets (labels unused for pretraining), pretrains PIRL
with the machine's defaults (on a CPU: efficientnet_lite0 from its offline ImageNet weights), optionally
a second run from random weights, then runs the Compare page's comparison for each task: --positive vs
the rest (binary AUC) and every class (macro one-vs-rest AUC). Splits are duplicate-aware, the linear
probe is the product's (logistic regression, inner CV, 5 x 5-fold); full finetuning uses the fixed split, or
--finetune-folds k folds (one finetuning per fold and arm).
Prints each arm's AUC with its 95% CI, the verdict sentences, label efficiency, and wall times.

    python bench/compare_quality.py ../shared/data/busi256
    python bench/compare_quality.py ../shared/data/busi256 --random-minutes 30 --modes linear
    python bench/compare_quality.py ../shared/data/busi256 --modes finetune --tasks binary --finetune-folds 5

One mechanism at a time: --variant NAME:KEY=VALUE[,KEY=VALUE] adds an ImageNet+PIRL run with those pretraining
settings (PretrainConfig fields) beside the default, compared in the same comparison (the same folds), with the
paired AUC difference between every two PIRL runs at each fraction. --labels takes the binary task's labels
(and patient groups) from a filename,label[,group] CSV instead of the class folders:

    python bench/compare_quality.py ../shared/data/busi256 --modes linear --tasks binary \
        --variant slow-backbone:backbone_lr_scale=0.1
    python bench/cxr_subtype_labels.py ../shared/data/cxr256 cxr-subtype.csv  # viral vs bacterial, by patient
    python bench/compare_quality.py ../shared/data/cxr256 --modes linear --tasks binary --positive virus \
        --labels cxr-subtype.csv --variant slow-backbone:backbone_lr_scale=0.1

--workspace WS --run J[,J...] compares finished (or resumed) runs of an existing workspace instead of pretraining
anew (its labeled sets are added to WS, named after the task, or reused if WS holds them already); several runs are
compared in one comparison, with the paired difference between every two:

    python bench/compare_quality.py ../shared/data/cxr256 --workspace bench-cxr --run 1 --modes linear \
        --tasks binary --positive virus --labels cxr-subtype.csv
    python bench/compare_quality.py ../shared/data/busi256 --workspace bench-busi --run 1,2 --modes linear
"""

from __future__ import annotations

import argparse
import ast
import csv
import itertools
import tempfile
import time
from pathlib import Path

from pirl_core.data import ingest, sources
from pirl_core.evaluation import compare
from pirl_core.jobs import queue
from pirl_core.training import pretraining
from pirl_core.workspace.folder import Workspace


def _pretrain(ws: Workspace, name: str, config) -> int:
    t0 = time.time()
    job_id = pretraining.start(ws, "pool", config)
    job = queue.wait(ws, job_id, poll_s=5)
    r = job["result"]
    print(f"pretrain {name} (#{job_id}): {job['status']} {job['message'] or ''}, {(time.time() - t0) / 60:.1f} min, "
          f"{r.get('total_steps', 0)} steps, {r.get('images_per_s', 0):.1f} img/s, "
          f"loss {r.get('last', {}).get('loss', float('nan')):.3f}", flush=True)
    return job_id


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", help="folder with one sub-folder per class")
    ap.add_argument("--positive", default="malignant")
    ap.add_argument("--tasks", default="binary,multiclass")
    ap.add_argument("--modes", default="linear,finetune")
    ap.add_argument("--image-size", type=int, default=None, help="default: the machine's default")
    ap.add_argument("--epochs", type=int, default=None, help="ImageNet+PIRL epochs (default: the machine's)")
    ap.add_argument("--random-minutes", type=float, default=None,
                    help="also pretrain from random weights for this long (the PIRL arm)")
    ap.add_argument("--finetune-epochs", type=int, default=10)
    ap.add_argument("--finetune-tasks", default="binary", help="full finetuning is slow on a CPU: these tasks only")
    ap.add_argument("--finetune-folds", type=int, default=0, help="full finetuning's folds (0: the fixed split)")
    ap.add_argument("--labels", help="the binary task's labels: a filename,label[,group] CSV (files named as "
                                     "class/file under DATA); only its files are labeled")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME:KEY=VALUE[,KEY=VALUE]",
                    help="another ImageNet+PIRL run with these pretraining settings, in the same comparison")
    ap.add_argument("--inits", default=",".join(compare.INITS), help="the starts compared")
    ap.add_argument("--workspace", type=Path, help="an existing workspace (with --run)")
    ap.add_argument("--run", type=lambda s: [int(j) for j in s.split(",")],
                    help="compare these pretrain runs of --workspace (J[,J...]) instead of pretraining anew")
    args = ap.parse_args()
    if (args.run is None) != (args.workspace is None):
        ap.error("--run and --workspace go together")
    data = Path(args.data)
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace(args.workspace or Path(tmp) / "ws")
        files = [f for f in sources.folder_source(data, check_roots=False) if "/" in f.name]  # class sub-folders only
        if args.run is None:
            ingest.ingest(ws, files, "pool")
        tasks = args.tasks.split(",")
        for task in tasks:
            if args.labels and task == "binary":
                with open(args.labels, newline="") as f:
                    listed = {row["filename"] for row in csv.DictReader(f)}
                report = ingest.ingest(ws, [f for f in files if f.name in listed], task, labels_csv=Path(args.labels))
                print(f"{task}: {report.labels} from {args.labels}", flush=True)
                continue
            labels = Path(tmp) / f"labels-{task}.csv"
            with open(labels, "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["filename", "label"])
                for src in files:
                    cls = src.name.split("/")[0]
                    w.writerow([src.name, cls if task == "multiclass" or cls == args.positive
                                else f"not-{args.positive}"])
            report = ingest.ingest(ws, files, task, labels_csv=labels)
            print(f"{task}: {report.labels}; " + " ".join(report.notes[-1:]) + f" {len(report.label_conflicts)} "
                  "near-copy sets with conflicting labels", flush=True)
        sizes = {k: v for k, v in (("image_size", args.image_size), ("epochs", args.epochs)) if v}
        default = pretraining.default_config(**sizes)
        shown = {f"run {j}": queue.config_of(ws.store.job(j)) for j in args.run} if args.run else {"defaults": default}
        for name, c in shown.items():
            print(f"{name}: {c.backbone}, ImageNet start {c.pretrained_imagenet}, {c.image_size} px, "
                  f"{c.epochs} epochs, batch {c.batch_size}, lr {c.learning_rate:g}, pretext {c.pretext}, "
                  f"augment {c.augment}, backbone lr x{c.backbone_lr_scale:g}", flush=True)
        inits = args.inits.split(",")
        variants = [("default", default)] + [_variant(spec, sizes) for spec in args.variant]
        plans = [(variants, inits)]
        if args.random_minutes:  # another backbone: its own comparison, scratch vs PIRL
            plans.append(([("PIRL from random", pretraining.default_config(
                pretrained_imagenet=False, backbone="resnet18", image_size=96, epochs=1000,
                time_budget_s=60 * args.random_minutes))], ["scratch", "pirl"]))
        for variants, inits in plans:
            runs = []
            for name, config in variants:  # the default is the given runs where there are some
                runs += args.run if args.run is not None and name == "default" else [_pretrain(ws, name, config)]
            for task, mode in itertools.product(tasks, args.modes.split(",")):
                if mode == "finetune" and task not in args.finetune_tasks.split(","):
                    continue
                t0 = time.time()
                cid = compare.start(ws, compare.CompareRequest(
                    labeled=task, pretrain_jobs=runs, mode=mode, inits=inits,
                    folds=None if mode == "linear" else args.finetune_folds,
                    fractions=None if mode == "linear" else [1.0],  # the product's default fractions
                    epochs=args.finetune_epochs if mode == "finetune" else None))
                for arm in compare.comparison(ws, cid)["arms"]:
                    queue.wait(ws, arm["job_id"], poll_s=5)
                s = compare.summarize(ws, cid)
                c = compare.comparison(ws, cid)["config"]
                split = f"{c['folds']} folds x {c['repeats']}" if c["folds"] else "fixed split"
                print(f"\n{task}, {mode}, {c['backbone']} {c['image_size']} px, {split}, "
                      f"{(time.time() - t0) / 60:.1f} min", flush=True)
                for e in s["table"]:
                    eff = " ".join(f"{float(k):.0%}:{v:.3f}" for k, v in
                                   sorted(e["efficiency"].items(), key=lambda kv: float(kv[0])))
                    print(f"  {e['arm']:20s} AUC {e['auc']:.3f} [{e['ci_low']:.3f}, {e['ci_high']:.3f}]"
                          f"{'  NOT BETTER THAN CHANCE' if e.get('chance') else ''}  | {eff}", flush=True)
                for v in s["verdicts"]:
                    print(f"  {v['text']}", flush=True)
                for line in [*_labels_saved(s), *_between_runs(ws, cid)]:
                    print(f"  {line}", flush=True)


def _variant(spec: str, sizes: dict):
    """NAME:KEY=VALUE[,KEY=VALUE] -> (NAME, the machine's default with those PretrainConfig fields)."""
    name, _, settings = spec.partition(":")
    overrides = dict(sizes)
    for item in filter(None, settings.split(",")):
        key, _, value = item.partition("=")
        try:
            overrides[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):  # a word: a string setting such as pretext=rotation
            overrides[key] = value
    return name, pretraining.default_config(**overrides)


def _labels_saved(summary: dict) -> list[str]:
    """Each PIRL arm's labels-saved reading (the Compare page's sentence), and what the baseline needs at each
    fraction."""
    lines = []
    for r in summary.get("labels_saved", []):
        needs = ", ".join(f"{p['labels']:.0f} -> " + ("more than all" if p["baseline_labels"] is None
                                                     else f"{p['baseline_labels']:.0f}") for p in r["points"])
        lines += [r["sentence"], f"{r['arm']}: labels -> labels {r['baseline']} needs: {needs}"]
    return lines


def _between_runs(ws, comparison_id: int) -> list[str]:
    """The paired AUC difference of every two PIRL runs at each label fraction (the same held-out images)."""
    comp = compare.comparison(ws, comparison_id)
    arms = [{**a, "runs": queue.result_of(ws.store.job(a["job_id"])).runs}
            for a in comp["arms"] if a.get("pretrain_job")]
    fractions = compare.comparison_config(comp).fractions
    lines = []
    for a, b in itertools.combinations(arms, 2):
        for fraction, t in compare.by_fraction(a, b, fractions, n_boot=1000).get("tests", {}).items():
            lines.append(f"{a['label']} - {b['label']} at {float(fraction):.0%}: {t['difference']:+.3f} "
                         f"(95% CI {t['ci_low']:+.3f} to {t['ci_high']:+.3f}, p {t['p_value']:.3f})")
    return lines


if __name__ == "__main__":
    main()
