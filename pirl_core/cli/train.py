"""`pirl pretrain | jobs | worker`: PIRL runs and the background job queue."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ..engine.choices import AUGMENTS, BACKBONES, PRETEXTS
from ..errors import PirlError
from ..fmt import duration
from ..training import measured
from ._output import note, print_json, progress

if TYPE_CHECKING:
    from ..engine.config import PretrainConfig


def add_parsers(sub) -> None:
    p = sub.add_parser("pretrain", help="PIRL pretraining on a dataset (queued) or a plain folder (here, now)",
                       description="Defaults suit the machine (see the README's Defaults section); every "
                                   "setting below overrides one.")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset", help="an ingested dataset: queued as a background job")
    source.add_argument("--data", help="a plain folder of images (searched recursively): runs here, now")
    p.add_argument("--wait", action="store_true", help="with --dataset: follow the job until it ends")
    p.add_argument("--backbone", choices=list(BACKBONES))
    p.add_argument("--pretrained-imagenet", action=argparse.BooleanOptionalAction, default=None,
                   help="start from ImageNet weights (--no-pretrained-imagenet: from random weights)")
    p.add_argument("--weights", help="start from this weights file (.pth state_dict)")
    p.add_argument("--image-size", type=int)
    p.add_argument("--epochs", type=int)
    p.add_argument("--minutes", type=float, help="pretrain for this long instead: the epochs follow from the "
                                                 "speed measured in the first steps")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float, help="default: LR_PER_256 per 256 images")
    p.add_argument("--backbone-lr-scale", type=float,
                   help=measured.backbone_lr_scale_sentence())
    p.add_argument("--negatives", type=int, help="negatives per sample (default: min(N-1, 16384))")
    p.add_argument("--temperature", type=float)
    p.add_argument("--pretext", choices=list(PRETEXTS), help="the transform the representation learns to ignore")
    p.add_argument("--augment", choices=list(AUGMENTS),
                   help="photo (default, the paper's colour jitter) or scan (grayscale scans: intensity, gamma, blur)")
    p.add_argument("--lambda", dest="lam", type=float, help="weight of the pretext term(s) (default 0.5)")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="auto (default), cpu or cuda")
    p.add_argument("--workers", type=int, help="DataLoader workers")
    p.add_argument("--max-steps", type=int, help="stop after this many steps")
    p.add_argument("--nproc", type=int, help="with --dataset: processes on this machine, one per GPU (or CPU "
                                             "processes with --device cpu), run under torchrun")
    p.add_argument("--nnodes", type=int, help="with --dataset: machines; the job is queued for a cluster launch "
                                              "and the command each machine runs is printed (README: Scaling)")
    p.add_argument("--sync-bn", action=argparse.BooleanOptionalAction, default=None,
                   help="BatchNorm over the whole batch across processes (default: on below 64 images each)")
    p.add_argument("--compile", action="store_true", help="torch.compile the backbone (README: Scaling)")
    p.add_argument("--out", help="with --data: run folder (default: WORKSPACE/checkpoints/pretrain-TIME); "
                                 "resumes if it holds a checkpoint")
    p.set_defaults(run=run_pretrain)

    p = sub.add_parser("jobs", help="list, show, cancel or resume background jobs")
    p.add_argument("action", nargs="?", default="list", choices=["list", "show", "cancel", "resume"])
    p.add_argument("id", nargs="?", type=int)
    p.add_argument("--wait", action="store_true", help="with resume: follow the job until it ends")
    p.set_defaults(run=run_jobs)

    p = sub.add_parser("worker", help="run queued jobs (started automatically; --forever for servers)")
    p.add_argument("--forever", action="store_true")
    p.set_defaults(run=run_worker)


def _config(args) -> PretrainConfig:
    from ..engine.config import PretrainConfig

    overrides = {k: v for k, v in {
        "backbone": args.backbone, "pretrained_imagenet": args.pretrained_imagenet,
        "weights_path": args.weights, "image_size": args.image_size, "epochs": args.epochs,
        "time_budget_s": args.minutes * 60 if args.minutes else None,
        "batch_size": args.batch_size, "lr": args.lr, "negatives": args.negatives,
        "backbone_lr_scale": args.backbone_lr_scale,
        "temperature": args.temperature, "pretext_weight": args.lam, "seed": args.seed, "pretext": args.pretext,
        "augment": args.augment,
        "device": args.device, "num_workers": args.workers, "max_steps": args.max_steps,
        "nproc": args.nproc, "nnodes": args.nnodes, "sync_bn": args.sync_bn, "compile": args.compile or None,
    }.items() if v is not None}
    return PretrainConfig.defaults_for(overrides.pop("device", "auto"), **overrides)


def run_pretrain(args, ws) -> int:
    from ..training import pretraining

    config = _config(args)
    if args.data and (config.nproc > 1 or config.nnodes > 1):
        raise PirlError("Several processes need an ingested dataset: import the folder, then use --dataset.")
    if args.dataset:
        job_id = pretraining.start(ws, args.dataset, config)
        note(f"queued pretrain job {job_id} on {args.dataset!r}")
        if config.nnodes > 1:
            print_json({"job": job_id, "status": "queued", "run_on_each_machine": pretraining.cluster_command(
                ws, job_id, config)})
            return 0
        if not args.wait:
            print_json({"job": job_id, "status": "queued"})
            return 0
        return follow(ws, job_id)
    return _pretrain_folder(args, ws, config)


def _pretrain_folder(args, ws, config: PretrainConfig) -> int:
    """PIRL on a plain folder in this process: decoded as ingest decodes (DICOM too), bad files listed."""
    from ..data import duplicates
    from ..data.image_cache import cache_size_for, open_cache
    from ..data.ingest import cache_folder
    from ..data.sources import folder_source
    from ..engine.pretrain import Callbacks, pretrain

    config.validate(len(folder_source(args.data, check_roots=False)))  # before minutes of decoding
    out = Path(args.out) if args.out else ws.checkpoints / f"pretrain-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    size = cache_size_for(config.image_size)
    note(f"Caching the images under {args.data} at {size} px ...")
    with progress("image") as show:
        cache, names, skipped = cache_folder(args.data, size, out / f"cache_{size}.pngs",
                                             on_progress=lambda i, n: show(i, n, f"{i}/{n} images"))
    for s in skipped:
        note(f"skipped {s['name']}: {s['reason']}")
    config.validate(len(names))

    class Progress(Callbacks):
        def __init__(self, show):
            self.show = show

        def on_step(self, r):
            terms = ", ".join(f"{k[5:]} {v:.3f}" for k, v in r.metrics.items() if k.startswith("loss_"))
            self.show(r.step, r.total_steps, f"{r.position()} · "
                      f"loss {r.metrics['loss']:.3f} ({terms}) {r.images_per_s:.1f} img/s ETA {duration(r.eta_s)}")

    images = open_cache(cache)
    copies = duplicates.image_clusters(images) if config.exclude_copies else None
    with progress() as show:
        result = pretrain(config, images, names, out, Progress(show), copies=copies)
    print_json({"checkpoint": result.checkpoint, "status": result.status, "steps": result.step,
                "images_per_s": round(result.images_per_s, 2), "last": result.last_metrics,
                "skipped": skipped, "config": config.to_dict()})
    return 0


def follow(ws, job_id: int) -> int:
    """Follow a job until it ends, a progress line on stderr; the final state as JSON."""
    from ..jobs import queue

    with progress("job") as show:
        job = queue.wait(ws, job_id, on_update=lambda j: show(j["progress"] or 0, 1,
                                                              f"{j['status']}: {j['message'] or ''}"))
    print_json({"job": job_id, "status": job["status"], "message": job["message"], "result": job["result"]})
    return 0 if job["status"] == "succeeded" else 1


def run_jobs(args, ws) -> int:
    from ..jobs import queue

    queue.reap(ws)
    if args.action == "list":
        print_json([{k: j[k] for k in ("id", "kind", "status", "progress", "message", "dataset_id")}
                    for j in ws.store.jobs()])
        return 0
    if args.id is None:
        raise PirlError(f"pirl jobs {args.action} needs a job id.")
    if args.action == "show":
        job = ws.store.job(args.id)
        if job is None:
            raise PirlError(f"No job {args.id} in this workspace.")
        metrics = ws.store.metrics(args.id, ["loss"])
        print_json({**job, "loss_curve": [(m["step"], round(m["value"], 4)) for m in metrics[-20:]]})
    elif args.action == "cancel":
        print_json({"job": args.id, "status": queue.cancel(ws, args.id)})
    elif args.action == "resume":
        queue.resume(ws, args.id)
        if args.wait:
            return follow(ws, args.id)
        print_json({"job": args.id, "status": "queued"})
    return 0


def run_worker(args, ws) -> int:
    from ..jobs.worker import serve

    note(f"worker finished {serve(ws, forever=args.forever)} job(s)")
    return 0
