"""`pirl`: the command line. Every command runs the same services as the pages."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from . import __version__
from .errors import PirlError
from .fmt import bar, duration

APP_FILE = Path(__file__).resolve().parent.parent / "app.py"


def _print_json(obj) -> None:
    print(json.dumps(obj, indent=None, default=str))


def cmd_demo_data(args) -> int:
    from . import demo_data

    summary = demo_data.generate(args.out_dir, n=args.n, seed=args.seed, unlabeled=args.unlabeled,
                                 classes=args.classes, size=args.size)
    _print_json(summary)
    return 0


def cmd_app(args) -> int:
    from .workspace import Workspace

    ws = Workspace(args.workspace)
    if args.demo:
        from .demo import ensure_demo_workspace

        ensure_demo_workspace(ws, log=lambda m: print(m, file=sys.stderr))
    env = {**os.environ, "PIRL_HOME": str(ws.root)}
    cmd = [sys.executable, "-m", "streamlit", "run", str(APP_FILE), "--server.port", str(args.port),
           "--server.address", args.address]
    if args.headless:
        cmd += ["--server.headless", "true"]
    print(f"PIRL Studio: http://{args.address}:{args.port}  (workspace {ws.root})", file=sys.stderr)
    return subprocess.call(cmd, env=env, cwd=APP_FILE.parent)


def cmd_pretrain(args) -> int:
    import time

    from PIL import Image

    from .engine.pretrain import Callbacks, PretrainConfig, pretrain
    from .image_cache import build_cache, cache_size_for, folder_images
    from .workspace import Workspace

    overrides = {k: v for k, v in {
        "backbone": args.backbone, "pretrained_imagenet": args.pretrained_imagenet or None,
        "weights_path": args.weights, "image_size": args.image_size, "epochs": args.epochs,
        "batch_size": args.batch_size, "lr": args.lr, "negatives": args.negatives,
        "temperature": args.temperature, "pretext_weight": args.lam, "seed": args.seed, "pretext": args.pretext,
        "device": args.device, "num_workers": args.workers, "max_steps": args.max_steps,
    }.items() if v is not None}
    config = PretrainConfig.defaults_for(overrides.pop("device", "auto"), **overrides)
    if args.dataset:
        return _queue_pretrain(args, config)
    files = folder_images(args.data)
    if not files:
        raise PirlError(f"No images (png, jpg, tif, bmp) found under {args.data}.")
    config.validate(len(files))
    out = Path(args.out) if args.out else Workspace().checkpoints / f"pretrain-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)

    readable, skipped = [], []
    for f in files:
        try:
            with Image.open(f) as im:
                im.verify()
            readable.append(f)
        except Exception as exc:  # unreadable files are listed, not fatal
            skipped.append({"file": str(f), "reason": f"unreadable image ({type(exc).__name__})"})
    for s in skipped:
        print(f"skipped {s['file']}: {s['reason']}", file=sys.stderr)
    size = cache_size_for(config.image_size)
    print(f"Caching {len(readable)} images at {size} px ...", file=sys.stderr)
    images = build_cache(readable, len(readable), size, out / f"cache_{size}.npy", Image.open,
                         on_progress=lambda i, n: print(f"\r{bar(i, n)} {i}/{n}", end="", file=sys.stderr))
    print(file=sys.stderr)

    class Progress(Callbacks):
        def on_step(self, r):
            m = r.metrics
            print(f"\r{bar(r.step, r.total_steps)} epoch {r.epoch}/{r.epochs} step {r.step}/{r.total_steps} "
                  f"loss {m['loss']:.3f} ("
                  + ", ".join(f"{k[5:]} {v:.3f}" for k, v in m.items() if k.startswith("loss_")) + ") "
                  f"{r.images_per_s:.1f} img/s ETA {duration(r.eta_s)}  ", end="", file=sys.stderr)

    result = pretrain(config, images, [str(f.relative_to(args.data)) for f in readable], out, Progress())
    print(file=sys.stderr)
    _print_json({"checkpoint": result.checkpoint, "status": result.status, "steps": result.step,
                 "images_per_s": round(result.images_per_s, 2), "last": result.last_metrics,
                 "skipped": skipped, "config": config.to_dict()})
    return 0


def cmd_ingest(args) -> int:
    from . import ingest
    from .workspace import Workspace

    path = Path(args.path)
    pre_skipped: list[dict] = []
    if path.is_file() and path.suffix.lower() == ".zip":
        files, pre_skipped = ingest.zip_source(path)
    else:
        files = ingest.folder_source(path, check_roots=False)

    def progress(i, n, name):
        print(f"\r{bar(i, n)} {i}/{n}", end="", file=sys.stderr)

    report = ingest.ingest(Workspace(), files, args.name or path.stem, folder_labels=args.folder_labels,
                           labels_csv=Path(args.labels) if args.labels else None, seed=args.seed,
                           pre_skipped=pre_skipped, on_progress=progress)
    print(file=sys.stderr)
    _print_json(report.to_dict())
    return 0


def cmd_datasets(args) -> int:
    from .workspace import Workspace

    store = Workspace().store
    rows = [{"id": d["id"], "name": d["name"], "kind": d["kind"], "images": d["images"], "labeled": d["labeled"],
             "classes": store.class_counts(d["id"]), "skipped": len(store.skipped(d["id"]))}
            for d in store.datasets()]
    _print_json(rows)
    return 0


def _queue_pretrain(args, config) -> int:
    from . import jobs
    from .workspace import Workspace

    ws = Workspace()
    dataset = ws.store.dataset(args.dataset)
    if dataset is None:
        names = ", ".join(d["name"] for d in ws.store.datasets()) or "none yet: pirl ingest first"
        raise PirlError(f"No dataset named {args.dataset!r} (datasets: {names}).")
    config.validate(dataset["n_images"])
    job_id = jobs.submit(ws, "pretrain", config.to_dict(), dataset["id"])
    print(f"queued pretrain job {job_id} on {args.dataset!r}", file=sys.stderr)
    if not args.wait:
        _print_json({"job": job_id, "status": "queued"})
        return 0
    return _follow(ws, job_id)


def _follow(ws, job_id: int) -> int:
    from . import jobs

    def show(job):
        print(f"\r{bar(job['progress'] or 0, 1)} {job['status']}: {job['message'] or ''}"[:160].ljust(160),
              end="", file=sys.stderr)

    job = jobs.wait(ws, job_id, on_update=show)
    print(file=sys.stderr)
    _print_json({"job": job_id, "status": job["status"], "message": job["message"], "result": job["result"]})
    return 0 if job["status"] == "succeeded" else 1


def cmd_jobs(args) -> int:
    from . import jobs
    from .workspace import Workspace

    ws = Workspace()
    jobs.reap(ws)
    if args.action == "list":
        _print_json([{k: j[k] for k in ("id", "kind", "status", "progress", "message", "dataset_id")}
                     for j in ws.store.jobs()])
        return 0
    if args.id is None:
        raise PirlError(f"pirl jobs {args.action} needs a job id.")
    if args.action == "show":
        job = ws.store.job(args.id)
        if job is None:
            raise PirlError(f"No job {args.id} in this workspace.")
        metrics = ws.store.metrics(args.id, ["loss"])
        _print_json({**job, "loss_curve": [(m["step"], round(m["value"], 4)) for m in metrics[-20:]]})
    elif args.action == "cancel":
        _print_json({"job": args.id, "status": jobs.cancel(ws, args.id)})
    elif args.action == "resume":
        jobs.resume(ws, args.id)
        if args.wait:
            return _follow(ws, args.id)
        _print_json({"job": args.id, "status": "queued"})
    return 0


def cmd_compare(args) -> int:
    from . import compare, jobs
    from .workspace import Workspace

    ws = Workspace()
    inits = [args.init] if getattr(args, "init", None) else args.inits.split(",")
    pretrain = [int(j) for j in args.pretrain.split(",")] if args.pretrain else []
    if not pretrain:
        done = [j for j in ws.store.jobs(kind="pretrain") if j["checkpoint"]]
        if not done:
            raise PirlError("No pretrain run with a checkpoint: run pirl pretrain --dataset ... first.")
        pretrain = [done[0]["id"]]
    fractions = [float(f) for f in args.label_fractions.split(",")]
    cid = compare.start(ws, compare.CompareRequest(labeled=args.labeled, pretrain_jobs=pretrain, mode=args.mode,
                                                   inits=inits, folds=args.folds, fractions=fractions,
                                                   seed=args.seed, epochs=args.epochs))
    comp = next(c for c in compare.comparisons(ws) if c["id"] == cid)["result"]
    for note in comp["notes"]:
        print(f"note: {note}", file=sys.stderr)
    print(f"comparison {cid}: jobs " + ", ".join(f"{a['label']} #{a['job_id']}" for a in comp["arms"]),
          file=sys.stderr)
    if not args.wait:
        _print_json({"comparison": cid, "jobs": {a["label"]: a["job_id"] for a in comp["arms"]}})
        return 0
    for arm in comp["arms"]:
        job = jobs.wait(ws, arm["job_id"])
        print(f"{arm['label']}: {job['status']} {job['message'] or ''}", file=sys.stderr)
    summary = compare.summarize(ws, cid)
    level = 95
    print(f"{'initialisation':22s} {'AUC':>6s}  {level}% CI          vs baselines", file=sys.stderr)
    for e in summary["table"]:
        vs = "; ".join(f"{o}: {t['difference']:+.3f} (p={t['p_value']:.3f})" for o, t in (e.get("vs") or {}).items())
        print(f"{e['arm']:22s} {e['auc']:6.3f}  {e['ci_low']:.3f}-{e['ci_high']:.3f}  {vs}", file=sys.stderr)
    _print_json({"comparison": cid, "results": {e["arm"]: {
        "auc": e["auc"], "ci": [e["ci_low"], e["ci_high"]], "fold_aucs": e["fold_aucs"],
        "label_efficiency": e["efficiency"], "vs": {o: t["p_value"] for o, t in (e.get("vs") or {}).items()}}
        for e in summary["table"]}})
    return 0 if summary["complete"] else 1


def cmd_search(args) -> int:
    from . import retrieval
    from .workspace import Workspace

    ws = Workspace()
    space = retrieval.load_space(ws, args.pretrain, args.space)
    path = Path(args.image)
    if not path.is_file():
        raise PirlError(f"{path} is not a file.")
    from .image_io import BadImage

    try:
        query = retrieval.embed_image(space, path.read_bytes(), path.name)
    except BadImage as exc:
        raise PirlError(f"{path}: {exc}") from None
    rows = {im["id"]: im for im in ws.store.images(space.dataset_id)}
    _print_json([{**hit, "file": rows[hit["image_id"]]["orig_name"], "label": rows[hit["image_id"]]["label"]}
                 for hit in retrieval.search(space, query, args.k)])
    return 0


def cmd_duplicates(args) -> int:
    from . import retrieval
    from .workspace import Workspace

    ws = Workspace()
    space = retrieval.load_space(ws, args.pretrain, args.space)
    out = retrieval.duplicate_pairs(space, ws.store.images(space.dataset_id), args.threshold)
    _print_json(out)
    return 0


def cmd_export(args) -> int:
    from . import export
    from .workspace import Workspace

    ws = Workspace()
    if args.pretrain is not None:
        _print_json({"path": export.export_backbone(ws, args.pretrain, args.out)})
    else:
        _print_json(export.export_finetune(ws, args.finetune, args.out))
    return 0


def cmd_predict(args) -> int:
    import csv

    from .export import predict_files

    rows = predict_files(args.model, args.paths)
    columns = list(dict.fromkeys(k for r in rows for k in r))
    out = open(args.out, "w", newline="") if args.out else sys.stdout
    writer = csv.DictWriter(out, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    if args.out:
        out.close()
        print(f"wrote {len(rows)} row(s) to {args.out}", file=sys.stderr)
    return 0 if all("error" not in r for r in rows) else 1


def cmd_worker(args) -> int:
    from .jobs import run_worker
    from .workspace import Workspace

    done = run_worker(Workspace(), forever=args.forever)
    print(f"worker finished {done} job(s)", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pirl", description="PIRL Studio: self-supervised pretraining for medical images, on your machine.")
    parser.add_argument("--version", action="version", version=f"pirl-studio {__version__}")
    parser.add_argument("--workspace", "-w", default=None,
                        help="workspace folder (default: $PIRL_HOME or ./pirl-workspace)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("app", help="start the web app")
    p.add_argument("--port", type=int, default=8501)
    p.add_argument("--address", default="127.0.0.1", help="address to listen on (default: this machine only)")
    p.add_argument("--demo", action="store_true", help="fill an empty workspace with the demo data set first")
    p.add_argument("--headless", action="store_true", help="do not open a browser")
    p.set_defaults(func=cmd_app)

    p = sub.add_parser("demo-data", help="write synthetic lesion images (unlabeled pool + labeled classes)")
    p.add_argument("out_dir")
    p.add_argument("--n", type=int, default=60, help="labeled images, split evenly over the classes")
    p.add_argument("--unlabeled", type=int, default=None, help="unlabeled images (default 2n)")
    p.add_argument("--classes", type=int, default=2, choices=[2, 3])
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo_data)

    p = sub.add_parser("ingest", help="import a folder or .zip of images as a dataset (prints a JSON report)")
    p.add_argument("path", help="a folder (searched recursively) or a .zip")
    p.add_argument("--name", help="dataset name (default: the folder's name)")
    p.add_argument("--labels", help="CSV with columns filename,label[,group]")
    p.add_argument("--folder-labels", action="store_true", help="class = the image's sub-folder name")
    p.add_argument("--seed", type=int, default=0, help="seed of the train/val/test split")
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("datasets", help="list the workspace's datasets (JSON)")
    p.set_defaults(func=cmd_datasets)

    p = sub.add_parser("pretrain", help="PIRL pretraining on a folder of images",
                       description="Defaults suit the machine: on a CPU resnet18 at 96 px for 15 epochs "
                                   "(minutes for ~1,000 images); on a GPU the paper's resnet50 at 224 px.")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset", help="an ingested dataset: queued as a background job")
    source.add_argument("--data", help="a plain folder of images (searched recursively): runs here, now")
    p.add_argument("--wait", action="store_true", help="with --dataset: follow the job until it ends")
    p.add_argument("--backbone", choices=["resnet18", "resnet34", "resnet50", "efficientnet_lite0"])
    p.add_argument("--pretrained-imagenet", action="store_true", help="start from ImageNet weights")
    p.add_argument("--weights", help="start from this weights file (.pth state_dict)")
    p.add_argument("--image-size", type=int)
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float, help="default: 0.24 per 256 images (tuned for short runs)")
    p.add_argument("--negatives", type=int, help="negatives per sample (default: min(N-1, 16384))")
    p.add_argument("--temperature", type=float)
    p.add_argument("--pretext", choices=["jigsaw", "rotation", "jigsaw+rotation"],
                   help="the transform the representation learns to ignore (default jigsaw)")
    p.add_argument("--lambda", dest="lam", type=float, help="weight of the pretext term(s) (default 0.5)")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="auto (default), cpu or cuda")
    p.add_argument("--workers", type=int, help="DataLoader workers")
    p.add_argument("--max-steps", type=int, help="stop after this many steps")
    p.add_argument("--out", help="run folder (default: WORKSPACE/checkpoints/pretrain-TIME); resumes if it "
                                 "holds a checkpoint")
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("jobs", help="list, show, cancel or resume background jobs")
    p.add_argument("action", nargs="?", default="list", choices=["list", "show", "cancel", "resume"])
    p.add_argument("id", nargs="?", type=int)
    p.add_argument("--wait", action="store_true", help="with resume: follow the job until it ends")
    p.set_defaults(func=cmd_jobs)

    for name in ("compare", "finetune"):
        single = name == "finetune"
        p = sub.add_parser(name, help="finetune one initialisation on a labeled set" if single else
                           "scratch vs ImageNet vs PIRL vs ImageNet+PIRL on a labeled set (ROC AUC with CIs)")
        p.add_argument("--labeled", required=True, help="a labeled dataset")
        p.add_argument("--pretrain", help="pretrain job id(s), comma-separated (default: the latest)")
        p.add_argument("--mode", choices=["linear", "finetune"], default="linear")
        if single:
            p.add_argument("--init", choices=["scratch", "imagenet", "pirl", "imagenet+pirl"], default="pirl")
        else:
            p.add_argument("--inits", default="scratch,imagenet,pirl,imagenet+pirl")
        p.add_argument("--folds", type=int, default=None, help="k-fold CV (default 5 under 2,000 labeled "
                                                                "images; 0 = the fixed split)")
        p.add_argument("--label-fractions", default="1" if single else "0.1,0.25,0.5,1")
        p.add_argument("--epochs", type=int)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--wait", action="store_true", help="follow the jobs and print the result table")
        p.set_defaults(func=cmd_compare)

    p = sub.add_parser("search", help="nearest neighbours of an image in a pretrain run (JSON)")
    p.add_argument("image")
    p.add_argument("--pretrain", type=int, required=True, help="pretrain job id")
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--space", choices=["bank", "features"], default="bank")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("duplicates", help="near-duplicate pairs in a run's images; flags train/test leaks")
    p.add_argument("--pretrain", type=int, required=True)
    p.add_argument("--threshold", type=float, default=0.95)
    p.add_argument("--space", choices=["bank", "features"], default="features")
    p.set_defaults(func=cmd_duplicates)

    p = sub.add_parser("export", help="a finetuned model as a zip bundle, or a PIRL backbone as a state_dict")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--finetune", type=int, help="finetune job id: TorchScript + ONNX + weights + model card")
    which.add_argument("--pretrain", type=int, help="pretrain job id: the backbone as a torchvision-style .pth")
    p.add_argument("--out", help="output file (default: WORKSPACE/exports/...)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("predict", help="class probabilities from a bundle alone (CSV)")
    p.add_argument("--model", required=True, help="bundle .zip from pirl export")
    p.add_argument("paths", nargs="+", help="image files (PNG, JPEG, TIFF, BMP, DICOM)")
    p.add_argument("--out", help="CSV file (default: standard output)")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("worker", help="run queued jobs (started automatically; --forever for servers)")
    p.add_argument("--forever", action="store_true")
    p.set_defaults(func=cmd_worker)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.workspace:
        os.environ["PIRL_HOME"] = str(Path(args.workspace).expanduser().resolve())
    try:
        return args.func(args) or 0
    except KeyboardInterrupt:
        return 130
    except PirlError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
