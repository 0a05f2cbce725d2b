"""Linear probe: does PIRL pretraining give better frozen features than a random init?

Pretrains on every image under DATA (labels unused), then fits a logistic regression on frozen
backbone features of a stratified train split and reports test AUC, for the PIRL backbone and
for the same backbone at random init (and ImageNet, where its weights are on this machine).

    python bench/linear_probe.py ../shared/data/busi256 --positive malignant
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from pirl_core.engine.backbones import build_backbone
from pirl_core.engine.pretrain import PirlModel, PretrainConfig, embed_dataset, load_pretrained, pretrain
from pirl_core.errors import PirlError
from pirl_core.image_cache import build_cache, cache_size_for, folder_images


def probe_auc(model: PirlModel, images, size: int, y: np.ndarray, seed: int) -> float:
    feats = embed_dataset(model, images, size, torch.device("cpu"), head=False).numpy()
    tr, te = train_test_split(np.arange(len(y)), test_size=0.3, stratify=y, random_state=seed)
    scaler = StandardScaler().fit(feats[tr])
    clf = LogisticRegression(max_iter=5000, C=0.1).fit(scaler.transform(feats[tr]), y[tr])
    return roc_auc_score(y[te], clf.predict_proba(scaler.transform(feats[te]))[:, 1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", help="folder with one sub-folder per class")
    ap.add_argument("--positive", default="malignant", help="class scored as positive (others negative)")
    ap.add_argument("--backbone", default=None)
    ap.add_argument("--image-size", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--seeds", type=int, default=5, help="probe splits averaged")
    args = ap.parse_args()

    overrides = {k: v for k, v in {"backbone": args.backbone, "image_size": args.image_size,
                                   "epochs": args.epochs, "lr": args.lr}.items() if v is not None}
    config = PretrainConfig.defaults_for("auto", **overrides)
    files = folder_images(args.data)
    y = np.array([f.parent.name == args.positive for f in files], dtype=int)
    print(f"{len(files)} images, {y.sum()} {args.positive}; {config.backbone} at {config.image_size} px, "
          f"{config.epochs} epochs, batch {config.batch_size}, lr {config.learning_rate:g}")
    with tempfile.TemporaryDirectory() as tmp:
        images = build_cache(files, len(files), cache_size_for(config.image_size), Path(tmp) / "c.npy", Image.open)
        t0 = time.time()
        result = pretrain(config, images, [str(f) for f in files], tmp)
        minutes = (time.time() - t0) / 60
        pirl_model, _, _ = load_pretrained(result.checkpoint)
        torch.manual_seed(config.seed)
        random_model = PirlModel(build_backbone(config.backbone))
        rows = [("PIRL", pirl_model), ("random init", random_model)]
        try:
            rows.append(("ImageNet", PirlModel(build_backbone(config.backbone, pretrained=True))))
        except PirlError as exc:
            print(f"(ImageNet skipped: {str(exc)[:100]}...)")
        print(f"pretraining: {minutes:.1f} min, {result.images_per_s:.1f} img/s, "
              f"final loss {result.last_metrics['loss']:.3f} (ln N = {np.log(len(files)):.2f})")
        for name, model in rows:
            aucs = [probe_auc(model, images, config.image_size, y, s) for s in range(args.seeds)]
            print(f"  {name:12s} linear-probe AUC {np.mean(aucs):.3f} (sd {np.std(aucs):.3f} over {args.seeds} splits)")


if __name__ == "__main__":
    main()
