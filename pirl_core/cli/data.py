"""`pirl demo-data | ingest | datasets | task`: bringing images in, and the question asked of them."""

from __future__ import annotations

from pathlib import Path

from ._output import print_json, progress


def add_parsers(sub) -> None:
    p = sub.add_parser("demo-data", help="write synthetic lesion images (unlabeled pool + labeled classes)")
    p.add_argument("out_dir")
    p.add_argument("--n", type=int, default=60, help="labeled images, split evenly over the classes")
    p.add_argument("--unlabeled", type=int, default=None, help="unlabeled images (default 2n)")
    p.add_argument("--classes", type=int, default=2, choices=[2, 3])
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=run_demo_data, uses_workspace=False)

    p = sub.add_parser("ingest", help="import a folder, a .zip or studies from a PACS as a dataset (prints a JSON "
                                      "report)")
    p.add_argument("path", nargs="?", help="a folder (searched recursively) or a .zip")
    p.add_argument("--dicomweb", metavar="URL_OR_NAME",
                   help="pull from a PACS over DICOMweb instead: its URL, or a [pacs.NAME] from the PACS settings "
                        "(credentials: those settings, or PIRL_PACS_USER + PIRL_PACS_PASSWORD, or PIRL_PACS_TOKEN)")
    p.add_argument("--query", default="", help="with --dicomweb: the studies to pull, e.g. "
                                               "'ModalitiesInStudy=US&StudyDate=20240101-20241231'")
    p.add_argument("--workers", type=int, default=4, help="with --dicomweb: requests at once")
    p.add_argument("--label-from", default="", metavar="ATTRIBUTE",
                   help="with --dicomweb: labels from this DICOM attribute (e.g. StudyDescription, or 0011,1010)")
    p.add_argument("--label-map", default="", metavar="TABLE",
                   help="with --label-from: 'MALIG=malignant,BENIGN=benign' (first keyword the attribute contains)")
    p.add_argument("--name", help="dataset name (default: the folder's name)")
    p.add_argument("--labels", help="CSV with columns filename,label[,group]")
    p.add_argument("--folder-labels", action="store_true", help="class = the image's sub-folder name")
    p.add_argument("--seed", type=int, default=0, help="seed of the train/val/test split")
    p.set_defaults(run=run_ingest)

    p = sub.add_parser("datasets", help="list the workspace's datasets (JSON)")
    p.set_defaults(run=run_datasets)

    p = sub.add_parser("task", help="the class a labeled set's figures are about (its positive class); with "
                                    "--vs-rest, a labeled set of that class against all the others")
    p.add_argument("--dataset", required=True)
    p.add_argument("--positive", required=True, metavar="CLASS")
    p.add_argument("--vs-rest", action="store_true",
                   help="a set of three or more classes: make 'DATASET · CLASS vs rest' (a new labeled set)")
    p.add_argument("--seed", type=int, default=0, help="with --vs-rest: seed of its train/val/test split")
    p.set_defaults(run=run_task)


def run_demo_data(args, ws) -> int:
    from ..data import demo_data

    print_json(demo_data.generate(args.out_dir, n=args.n, seed=args.seed, unlabeled=args.unlabeled,
                                  classes=args.classes, size=args.size))
    return 0


def run_ingest(args, ws) -> int:
    from ..data import ingest, sources
    from ..errors import PirlError

    if args.dicomweb:
        return run_pull(args, ws)
    if not args.path:
        raise PirlError("Give a folder or a .zip to import, or --dicomweb URL --query ... to pull from a PACS.")
    path = Path(args.path)
    pre_skipped: list[dict] = []
    if path.is_file() and path.suffix.lower() == ".zip":
        files, pre_skipped = sources.zip_source(path)
    else:
        files = sources.folder_source(path, check_roots=False)
    with progress("image") as show:
        report = ingest.ingest(ws, files, args.name or path.stem, folder_labels=args.folder_labels,
                               labels_csv=Path(args.labels) if args.labels else None, seed=args.seed,
                               pre_skipped=pre_skipped, on_progress=lambda i, n, _: show(i, n, f"{i}/{n} images"))
    print_json(report.to_dict())
    return 0


def run_pull(args, ws) -> int:
    """`pirl ingest --dicomweb`: the pull runs here, staged in a folder of its own per server, query and name, so
    running the same command again after an interruption resumes it."""
    import hashlib

    from ..data import labels, pacs, pacs_pull
    from ..errors import PirlError

    if not args.name:
        raise PirlError("Name the new dataset: --name.")
    attribute, label_map = labels.header_rule(args.label_from, args.label_map) if args.label_from else ("", [])
    cfg = pacs_pull.PullConfig(args.dicomweb, args.name, query=pacs.parse_query(args.query), workers=args.workers,
                               label_attribute=attribute, label_map=label_map)
    cfg.validate()
    tag = hashlib.sha256(f"{args.dicomweb}|{sorted(cfg.query.items())}|{args.name}".encode()).hexdigest()[:16]
    with progress("image") as show:
        outcome = pacs_pull.pull(ws, cfg, ws.uploads / f"pacs-{tag}",
                                 lambda fraction, message: show(int(fraction * 1000), 1000, message),
                                 allow_any_url=True)
    print_json({**outcome.report, "studies": outcome.studies, "instances": outcome.instances,
                "downloaded": outcome.downloaded, "reused": outcome.reused, "download_s": outcome.download_s})
    return 0


def run_datasets(args, ws) -> int:
    store = ws.store
    print_json([{"id": d["id"], "name": d["name"], "kind": d["kind"], "images": d["images"], "labeled": d["labeled"],
                 "classes": store.class_counts(d["id"]), "skipped": len(store.skipped(d["id"]))}
                for d in store.datasets()])
    return 0


def run_task(args, ws) -> int:
    from ..data import datasets, tasks

    if args.vs_rest:
        print_json(tasks.one_vs_rest(ws, args.dataset, args.positive, seed=args.seed).to_dict())
    else:
        datasets.set_positive(ws, args.dataset, args.positive)
        print_json({"dataset": args.dataset, "positive": args.positive})
    return 0
