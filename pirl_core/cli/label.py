"""`pirl suggest | label | labeled-set`: the labeling loop, for a team that labels in its own tool.

    pirl suggest --dataset pool --pretrain 3 --n 20 --classes benign,malignant > batch.csv
    (fill a `label` column in batch.csv, in any tool)
    pirl label --dataset pool --csv batch.csv
    pirl labeled-set --dataset pool --compare 3
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

from ..engine.choices import INITS
from ..errors import PirlError
from ._output import print_json


def add_parsers(sub) -> None:
    p = sub.add_parser("suggest", help="which images to label next (CSV on stdout: filename,reason,score)")
    p.add_argument("--dataset", required=True, help="the unlabeled dataset (pool) to label")
    p.add_argument("--pretrain", type=int, required=True, help="a finished pretrain run: its features choose")
    p.add_argument("--n", type=int, default=20, help="how many images (default 20)")
    p.add_argument("--classes", help="comma-separated class names (default: those of the dataset's last batch)")
    p.add_argument("--strategy", default="auto", help="auto (default), typical, uncertain or random")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=run_suggest)

    p = sub.add_parser("label", help="record labels given elsewhere: a CSV with columns filename,label")
    p.add_argument("--dataset", required=True)
    p.add_argument("--csv", required=True, help="filename,label rows (the CSV `pirl suggest` printed, labelled)")
    p.set_defaults(run=run_label)

    p = sub.add_parser("labeled-set", help="turn the agreed labels of a pool into a labeled dataset (JSON report)")
    p.add_argument("--dataset", required=True)
    p.add_argument("--compare", type=int, metavar="PRETRAIN_JOB", help="then compare the starts on it")
    p.add_argument("--inits", default=",".join(INITS), help=f"the starts to compare, from {', '.join(INITS)}")
    p.set_defaults(run=run_labeled_set)


def _classes(ws, args) -> list[str]:
    from ..labeling import suggestions

    if args.classes:
        return args.classes.split(",")
    row = ws.store.dataset(args.dataset)
    last = suggestions.batch(ws, row["id"]) if row else None
    if last is None:
        raise PirlError("Name the classes the first time: --classes benign,malignant")
    return last.classes


def run_suggest(args, ws) -> int:
    from ..labeling import suggestions

    batch = suggestions.suggest(ws, args.dataset, args.pretrain, args.n, _classes(ws, args), args.strategy,
                                args.seed)
    names = {im["id"]: im["orig_name"] for im in ws.store.images(batch.dataset_id)}
    writer = csv.writer(sys.stdout)
    writer.writerow(["filename", "reason", "score"])
    for item in batch.items:
        writer.writerow([names[item["image_id"]], item["reason"], item["score"]])
    print(f"batch {batch.id}: {len(batch.items)} images chosen by {batch.strategy}; classes "
          f"{', '.join(batch.classes)}", file=sys.stderr)
    return 0


def run_label(args, ws) -> int:
    from ..labeling import annotations, suggestions

    row = ws.store.dataset(args.dataset)
    last = suggestions.batch(ws, row["id"]) if row else None
    print_json(annotations.import_csv(ws, args.dataset, Path(args.csv).read_bytes(),
                                      last.classes if last else None))
    return 0


def run_labeled_set(args, ws) -> int:
    from ..labeling import labeled_sets

    report = labeled_sets.build(ws, args.dataset)
    out = report.to_dict()
    if args.compare is not None:
        out["comparison"] = labeled_sets.compare_now(ws, report.dataset, args.compare,
                                                       [i.strip() for i in args.inits.split(",") if i.strip()])
    print_json(out)
    return 0
