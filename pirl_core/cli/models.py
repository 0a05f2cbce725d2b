"""`pirl export | predict`: take a model away, and use it with nothing else."""

from __future__ import annotations

import csv
import sys

from ..fmt import csv_safe
from ._output import note, print_json


def add_parsers(sub) -> None:
    p = sub.add_parser("export", help="a finetuned model as a zip bundle, or a PIRL backbone as a state_dict")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--finetune", type=int, help="finetune job id: TorchScript + ONNX + weights + model card")
    which.add_argument("--pretrain", type=int, help="pretrain job id: the backbone's weights as a .pth file")
    p.add_argument("--out", help="output file (default: WORKSPACE/exports/...)")
    p.set_defaults(run=run_export)

    p = sub.add_parser("predict", help="class probabilities from a bundle alone (CSV)")
    p.add_argument("--model", required=True, help="bundle .zip from pirl export")
    p.add_argument("paths", nargs="+", help="image files (PNG, JPEG, TIFF, BMP, DICOM)")
    p.add_argument("--out", help="CSV file (default: standard output)")
    p.add_argument("--trust", metavar="KEY.pub", help="refuse the bundle unless signed by this public key "
                                                       "(the exporting workspace's keys/bundle_signing.pub)")
    p.set_defaults(run=run_predict, uses_workspace=False)


def run_export(args, ws) -> int:
    from ..models import export

    if args.pretrain is not None:
        print_json({"path": export.export_backbone(ws, args.pretrain, args.out)})
    else:
        print_json(export.export_finetune(ws, args.finetune, args.out))
    return 0


def run_predict(args, ws) -> int:
    from ..models.export import predict_files

    rows = predict_files(args.model, args.paths, args.trust, log=note)  # the bundle is read and checked once
    columns = list(dict.fromkeys(k for r in rows for k in r))
    out = open(args.out, "w", newline="") if args.out else sys.stdout
    writer = csv.DictWriter(out, fieldnames=columns)
    writer.writeheader()
    writer.writerows({k: csv_safe(v) for k, v in r.items()} for r in rows)
    if args.out:
        out.close()
        note(f"wrote {len(rows)} row(s) to {args.out}")
    return 0 if all("error" not in r for r in rows) else 1
