"""Linear probe sweeps: which start, image size, BatchNorm handling and pretraining settings give the best
frozen features, per CPU minute?

Everything under DATA is the unlabeled pool (labels unused for pretraining). Features are probed the way
the Compare page does it: the product's logistic-regression probe (inner CV), repeated 5 x 5-fold with
near-copies kept in one fold. Two tasks at once: --positive vs the rest (binary AUC) and every class
(macro one-vs-rest AUC). Every list option is a grid axis; each pretraining prints its wall time.

    python bench/linear_probe.py ../shared/data/busi256 --sizes 96 128 160 --no-pretrain
    python bench/linear_probe.py ../shared/data/busi256 --start imagenet --bn-stats training image_pass
    python bench/linear_probe.py ../shared/data/busi256 --backbone resnet18 --start random --minutes 30
    python bench/linear_probe.py ../shared/data/busi256 --backbone resnet18 --start random --temperature 0.07 0.2
    python bench/linear_probe.py ../shared/data/busi256 --backbone resnet18 --start random --copies negatives excluded
"""

from __future__ import annotations

import argparse
import copy
import itertools
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from pirl_core.data import duplicates
from pirl_core.data.image_cache import cache_size_for, open_cache
from pirl_core.data.ingest import cache_folder
from pirl_core.data.splits import assign_folds
from pirl_core.engine.backbones import build_backbone, imagenet_weights_problem
from pirl_core.engine.batchnorm import recompute_bn_stats
from pirl_core.engine.config import PretrainConfig
from pirl_core.engine.linear_probe import fit_linear_probe
from pirl_core.engine.metrics import auc_score
from pirl_core.engine.model import embed_dataset
from pirl_core.engine.pretrain import pretrain
from pirl_core.engine.train_state import load_pretrained

# Pretraining settings that can be swept: option -> (PretrainConfig field, type, help); each is a grid axis.
AXES = {
    "lr": ("lr", float, "learning rate (default: LR_PER_256 per 256 images)"),
    "min-scale": ("min_crop_scale", float, "image view's smallest crop"),
    "batch": ("batch_size", int, "images per step"),
    "temperature": ("temperature", float, "InfoNCE temperature"),
    "bank-momentum": ("bank_momentum", float, "memory bank momentum"),
    "negatives": ("negatives", int, "negatives per image"),
    "warmup": ("warmup_epochs", float, "learning-rate warm-up, in epochs"),
    "seed": ("seed", int, "pretraining seed (initial weights, order, views): run-to-run spread"),
}


def probe(features: np.ndarray, y: np.ndarray, groups: list, repeats: int = 5, folds: int = 5) -> float:
    """Mean over repeats of the pooled out-of-fold AUC."""
    aucs = []
    codes = np.unique([g if g is not None else f"\0{i}" for i, g in enumerate(groups)], return_inverse=True)[1]
    for rep in range(repeats):
        fold = np.array(assign_folds([str(v) for v in y], groups, folds, seed=1000 * rep))
        probs = np.zeros((len(y), int(y.max()) + 1))
        for k in range(folds):
            tr, te = fold != k, fold == k
            probs[te] = fit_linear_probe(features[tr], y[tr], probs.shape[1], codes[tr], seed=rep).predict_proba(
                features[te])
        aucs.append(auc_score(y, probs))
    return float(np.mean(aucs))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", help="folder with one sub-folder per class")
    ap.add_argument("--positive", default="malignant", help="class scored as positive in the binary task")
    ap.add_argument("--backbone", nargs="+", default=["efficientnet_lite0"])
    ap.add_argument("--sizes", nargs="+", type=int, default=[96])
    ap.add_argument("--start", nargs="+", default=["imagenet"], choices=["random", "imagenet"])
    ap.add_argument("--bn-stats", nargs="+", default=["whole_images"], choices=["whole_images", "image_pass",
                                                                                 "training"])
    ap.add_argument("--pretext", nargs="+", default=["jigsaw"])
    ap.add_argument("--copies", nargs="+", default=["excluded"], choices=["negatives", "excluded"],
                    help="near-copies of an image: among its negatives, or excluded from them (the default)")
    for option, (_, kind, text) in AXES.items():
        ap.add_argument(f"--{option}", nargs="+", type=kind, default=[None], help=text)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--minutes", type=float, default=None, help="pretrain for this long instead of --epochs")
    ap.add_argument("--no-pretrain", action="store_true", help="only the untrained / ImageNet baselines")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            cache_file, names, _ = cache_folder(args.data, cache_size_for(size), Path(tmp) / f"c{size}.pngs")
            images = open_cache(cache_file)
            classes = sorted({n.split("/")[0] for n in names})
            tasks = {"binary": np.array([n.split("/")[0] == args.positive for n in names], dtype=int),
                     f"{len(classes)}-class": np.array([classes.index(n.split("/")[0]) for n in names])}
            cluster_of = duplicates.image_clusters(open_cache(cache_folder(
                args.data, duplicates.SIGNATURE_SIZE, Path(tmp) / f"s{size}.pngs")[0]))
            groups = duplicates.merge_groups([None] * len(names), cluster_of)

            def report(name: str, net, extra: str = "", images=images, size=size, tasks=tasks, groups=groups):
                t0 = time.time()
                feats = embed_dataset(net, images, size).numpy()
                cost = time.time() - t0
                aucs = "  ".join(f"{task} {probe(feats, y, groups):.3f}" for task, y in tasks.items())
                print(f"{size:4d} px  {name:58s} {aucs}  (features {cost:.0f} s{extra})", flush=True)

            print(f"{len(names)} images, {sum(g is not None for g in groups)} in "
                  f"near-copy groups; probe: logistic regression, inner CV, 5 x 5-fold", flush=True)
            for backbone in args.backbone:
                torch.manual_seed(0)
                random_net = build_backbone(backbone)
                recompute_bn_stats(random_net, images, size)
                report(f"{backbone} random init, BN of the pool", random_net)
                problem = imagenet_weights_problem(backbone)
                if problem:
                    print(f"{size:4d} px  {backbone} ImageNet: skipped ({problem[:60]}...)", flush=True)
                else:
                    imagenet = build_backbone(backbone, pretrained=True)
                    report(f"{backbone} ImageNet, ImageNet BN", imagenet)
                    adapted = copy.deepcopy(imagenet)
                    recompute_bn_stats(adapted, images, size)
                    report(f"{backbone} ImageNet, BN of the pool", adapted)
                if args.no_pretrain:
                    continue
                axes = [[(field, v) for v in getattr(args, option.replace("-", "_"))]
                        for option, (field, _, _) in AXES.items()]
                for start, bn, pretext, copies, *settings in itertools.product(
                        args.start, args.bn_stats, args.pretext, args.copies, *axes):
                    chosen = {field: v for field, v in settings if v is not None}
                    config = PretrainConfig.defaults_for(
                        "auto", backbone=backbone, image_size=size, epochs=args.epochs, pretext=pretext,
                        pretrained_imagenet=start == "imagenet", bn_stats=bn, checkpoint_every_s=1e9,
                        time_budget_s=args.minutes * 60 if args.minutes else None,
                        exclude_copies=copies == "excluded", **chosen)
                    t0 = time.time()
                    result = pretrain(config, images, names, Path(tmp) / f"run-{time.monotonic_ns()}",
                                      copies=cluster_of if copies == "excluded" else None)
                    minutes = (time.time() - t0) / 60
                    model, config, _ = load_pretrained(result.checkpoint)
                    name = (f"{backbone} PIRL from {start}, {pretext}, BN {bn}, lr {config.learning_rate:g}"
                            + (", copies not negatives" if copies == "excluded" else "")
                            + "".join(f", {k} {v:g}" for k, v in chosen.items() if k != "lr"))
                    report(name, model.backbone, f"; {minutes:.1f} min, {result.step} steps, "
                           f"loss {result.last_metrics['loss']:.2f}")
                    if bn == "training":  # the same weights with statistics of whole images, estimated after
                        recompute_bn_stats(model.backbone, images, size)
                        report(name.replace("BN training", "BN training, re-estimated after"), model.backbone)


if __name__ == "__main__":
    main()
