"""Linear probe: which pretraining gives the best frozen features, at a fixed budget?

Pretrains on every image under DATA (labels unused), then fits a logistic regression on frozen
backbone features of stratified train splits and reports test AUC. Every list option is a grid
axis: one pretraining per combination, all at the same epochs, so pretexts, learning rates and
starts compare at the same budget. The random-init and ImageNet features of each backbone are
printed as the baselines.

    python bench/linear_probe.py ../shared/data/busi256 --positive malignant
    python bench/linear_probe.py ../shared/data/busi256 --pretext jigsaw rotation jigsaw+rotation
    python bench/linear_probe.py ../shared/data/busi256 --backbone efficientnet_lite0 \
        --start random imagenet --lr 0.0075 0.03 0.12
"""

from __future__ import annotations

import argparse
import itertools
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


def probe_aucs(model: PirlModel, images, config: PretrainConfig, y: np.ndarray, seeds: int) -> np.ndarray:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    feats = embed_dataset(model.to(device), images, config.image_size, device, head=False).numpy()
    aucs = []
    for seed in range(seeds):
        tr, te = train_test_split(np.arange(len(y)), test_size=0.3, stratify=y, random_state=seed)
        scaler = StandardScaler().fit(feats[tr])
        clf = LogisticRegression(max_iter=5000, C=0.1).fit(scaler.transform(feats[tr]), y[tr])
        aucs.append(roc_auc_score(y[te], clf.predict_proba(scaler.transform(feats[te]))[:, 1]))
    return np.array(aucs)


def line(name: str, aucs: np.ndarray, extra: str = "") -> str:
    return f"{name:44s} AUC {aucs.mean():.3f} (sd {aucs.std():.3f})  {extra}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", help="folder with one sub-folder per class")
    ap.add_argument("--positive", default="malignant", help="class scored as positive (others negative)")
    ap.add_argument("--backbone", nargs="+", default=[PretrainConfig.backbone])
    ap.add_argument("--start", nargs="+", default=["random"], choices=["random", "imagenet"])
    ap.add_argument("--pretext", nargs="+", default=[PretrainConfig.pretext])
    ap.add_argument("--lr", nargs="+", type=float, default=[None])
    ap.add_argument("--batch", nargs="+", type=int, default=[PretrainConfig.batch_size])
    ap.add_argument("--image-size", type=int, default=PretrainConfig.image_size)
    ap.add_argument("--epochs", type=int, default=PretrainConfig.epochs)
    ap.add_argument("--seeds", type=int, default=5, help="probe splits averaged")
    args = ap.parse_args()

    files = folder_images(args.data)
    y = np.array([f.parent.name == args.positive for f in files], dtype=int)
    ids = [str(f) for f in files]
    print(f"{len(files)} images, {y.sum()} {args.positive}; {args.image_size} px, {args.epochs} epochs, "
          f"probe: logistic regression, {args.seeds} stratified 70/30 splits; ln N = {np.log(len(files)):.2f}",
          flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        images = build_cache(files, len(files), cache_size_for(args.image_size), Path(tmp) / "c.npy", Image.open)
        for backbone in args.backbone:
            base = PretrainConfig.defaults_for("auto", backbone=backbone, image_size=args.image_size)
            torch.manual_seed(base.seed)
            print(line(f"{backbone} random-init features", probe_aucs(PirlModel(build_backbone(backbone)),
                                                                     images, base, y, args.seeds)), flush=True)
            starts = list(args.start)
            try:
                imagenet = PirlModel(build_backbone(backbone, pretrained=True))
                print(line(f"{backbone} ImageNet features", probe_aucs(imagenet, images, base, y, args.seeds)),
                      flush=True)
            except PirlError as exc:
                print(f"{backbone} ImageNet: skipped, weights not on this machine ({str(exc)[:60]}...)")
                starts = [s for s in starts if s != "imagenet"]
            for start, pretext, lr, batch in itertools.product(starts, args.pretext, args.lr, args.batch):
                config = PretrainConfig.defaults_for(
                    "auto", backbone=backbone, image_size=args.image_size, epochs=args.epochs, lr=lr,
                    batch_size=batch, pretext=pretext, pretrained_imagenet=start == "imagenet",
                    checkpoint_every_s=1e9)
                out = Path(tmp) / f"run-{time.monotonic_ns()}"
                t0 = time.time()
                result = pretrain(config, images, ids, out)
                minutes = (time.time() - t0) / 60
                model, _, _ = load_pretrained(result.checkpoint)
                name = f"{backbone} PIRL {start} {pretext} lr {config.learning_rate:g} b{batch}"
                print(line(name, probe_aucs(model, images, config, y, args.seeds),
                           f"loss {result.last_metrics['loss']:.2f}, {minutes:.1f} min, "
                           f"{result.images_per_s:.0f} img/s"), flush=True)


if __name__ == "__main__":
    main()
