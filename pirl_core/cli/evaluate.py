"""`pirl compare | finetune | search | duplicates`: is the representation any good?"""

from __future__ import annotations

from pathlib import Path

from ..engine.choices import INITS
from ..errors import PirlError
from ._output import note, print_json


def _labeled_set_options(p, fractions: str) -> None:
    p.add_argument("--labeled", required=True, help="a labeled dataset")
    p.add_argument("--pretrain", help="pretrain job id(s), comma-separated (default: the latest)")
    p.add_argument("--mode", choices=["linear", "finetune"], default="linear")
    p.add_argument("--folds", type=int, default=None, help="k-fold CV (default 5 under 2,000 labeled "
                                                            "images; 0 = the fixed split)")
    p.add_argument("--label-fractions", default=fractions,
                   help="comma-separated shares of the training labels for the label-efficiency curve (default: "
                        "0.05,0.1,0.25,0.5,1 under 2,000 labeled images, else 0.1,0.25,0.5,1; those that leave a "
                        "class fewer than 5 training labels are left out)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--wait", action="store_true", help="follow the jobs and print the result table")


def add_parsers(sub) -> None:
    p = sub.add_parser("compare", help="scratch vs ImageNet vs PIRL vs ImageNet+PIRL on a labeled set "
                                       "(ROC AUC with CIs)")
    _labeled_set_options(p, None)
    p.add_argument("--inits", default=",".join(INITS), help=f"comma-separated, from {', '.join(INITS)}")
    p.add_argument("--no-together", dest="together", action="store_false",
                   help="with several ImageNet-started runs, do not add the arm whose linear probe reads them all "
                        "together (added by default)")
    p.set_defaults(run=run_compare)

    p = sub.add_parser("finetune", help="finetune one initialisation on a labeled set")
    _labeled_set_options(p, "1")
    p.add_argument("--init", choices=list(INITS), default="pirl")
    p.set_defaults(run=run_finetune)

    p = sub.add_parser("search", help="nearest neighbours of an image in a pretrain run (JSON)")
    p.add_argument("image")
    p.add_argument("--pretrain", type=int, required=True, help="pretrain job id")
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--space", choices=["bank", "features"], default="bank")
    p.set_defaults(run=run_search)

    p = sub.add_parser("duplicates", help="near-duplicate pairs in a run's images; flags train/test leaks")
    p.add_argument("--pretrain", type=int, required=True)
    p.add_argument("--threshold", type=float, default=0.95)
    p.add_argument("--space", choices=["bank", "features"], default="features")
    p.set_defaults(run=run_duplicates)


def run_finetune(args, ws) -> int:
    return _compare(args, ws, [args.init])


def run_compare(args, ws) -> int:
    return _compare(args, ws, [i.strip() for i in args.inits.split(",") if i.strip()])


def _compare(args, ws, inits: list[str]) -> int:
    from ..evaluation import compare
    from ..jobs import queue
    from ..training import pretraining

    pretrain = [int(j) for j in args.pretrain.split(",")] if args.pretrain else []
    if not pretrain:
        done = pretraining.runs(ws, with_checkpoint=True)
        if not done:
            raise PirlError("No pretrain run with a checkpoint: run pirl pretrain --dataset ... first.")
        pretrain = [done[0]["id"]]
    fractions = [float(f) for f in args.label_fractions.split(",")] if args.label_fractions else None
    cid = compare.start(ws, compare.CompareRequest(labeled=args.labeled, pretrain_jobs=pretrain, mode=args.mode,
                                                   inits=inits, folds=args.folds, fractions=fractions,
                                                   seed=args.seed, epochs=args.epochs,
                                                   together=getattr(args, "together", True)))
    comp = compare.comparison(ws, cid)
    for text in comp["notes"]:
        note(f"note: {text}")
    note(f"comparison {cid}: jobs " + ", ".join(f"{a['label']} #{a['job_id']}" for a in comp["arms"]))
    if not args.wait:
        print_json({"comparison": cid, "jobs": {a["label"]: a["job_id"] for a in comp["arms"]}})
        return 0
    for arm in comp["arms"]:
        job = queue.wait(ws, arm["job_id"])
        note(f"{arm['label']}: {job['status']} {job['message'] or ''}")
    summary = compare.summarize(ws, cid)
    width = max([22] + [len(e["arm"]) for e in summary["table"]])
    note(f"{'initialisation':{width}s} {'AUC':>6s}  95% CI          vs baselines")
    for e in summary["table"]:
        vs = "; ".join(f"{o}: {t['difference']:+.3f} (p={t['p_value']:.3f})" for o, t in (e.get("vs") or {}).items())
        note(f"{e['arm']:{width}s} {e['auc']:6.3f}  {e['ci_low']:.3f}-{e['ci_high']:.3f}  {vs}")
    for v in summary.get("verdicts", []):
        note(v["text"])
    for reading in summary.get("labels_saved", []):
        note(f"\n{reading['arm']} vs {reading['baseline']}, label fraction by label fraction:")
        note(f"{'labels':>7s} {'AUC':>6s}  {'difference [95% CI]':24s} {reading['baseline'] + ' needs':>20s}")
        for point in reading["points"]:
            test = reading["tests"][str(point["fraction"])]
            needs = "more than all" if point["baseline_labels"] is None else f"about {point['baseline_labels']:.0f}"
            note(f"{point['labels']:7.0f} {point['auc']:6.3f}  {test['difference']:+.3f} "
                 f"[{test['ci_low']:+.3f}, {test['ci_high']:+.3f}] {needs:>20s}")
        note(reading["sentence"])
    print_json({"comparison": cid, "results": {e["arm"]: {
        "auc": e["auc"], "ci": [e["ci_low"], e["ci_high"]], "fold_aucs": e["fold_aucs"],
        "label_efficiency": e["efficiency"],
        "vs": {o: {"difference": t["difference"], "ci": [t["ci_low"], t["ci_high"]], "p": t["p_value"]}
               for o, t in (e.get("vs") or {}).items()}}
        for e in summary["table"]}, "labels_saved": summary.get("labels_saved", [])})
    return 0 if summary["complete"] else 1


def run_search(args, ws) -> int:
    from ..evaluation import neighbours

    space = neighbours.load_space(ws, args.pretrain, args.space)
    path = Path(args.image)
    if not path.is_file():
        raise PirlError(f"{path} is not a file.")
    query = neighbours.embed_image(space, path.read_bytes(), path.name)
    rows = {im["id"]: im for im in ws.store.images(space.dataset_id)}
    print_json([{**hit, "file": rows[hit["image_id"]]["orig_name"], "label": rows[hit["image_id"]]["label"]}
                for hit in neighbours.search(space, query, args.k)])
    return 0


def run_duplicates(args, ws) -> int:
    from ..evaluation import neighbours

    space = neighbours.load_space(ws, args.pretrain, args.space)
    print_json(neighbours.duplicate_pairs(space, ws.store.images(space.dataset_id), args.threshold))
    return 0
