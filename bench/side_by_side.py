"""What a linear probe reads: a PIRL run's features alone, beside the ImageNet backbone's (the ImageNet+PIRL arm's
probe, engine/backbones.py SideBySide), and two runs together (side by side, or their probes' probabilities
averaged), on the Compare page's own folds (duplicate- and group-aware 5 x 5-fold, the product's probe).

WS is a workspace holding the labeled set (named "binary", as bench/compare_quality.py leaves it); each RUN is a
pretrain checkpoint, from any workspace. Prints the AUC at 5 / 10 / 25 / 50 / 100 % of the labels and the paired
difference (95% CI) against ImageNet and against the first run alone, at 10 and 100 %.

    python bench/side_by_side.py bench-busi bench-busi/checkpoints/job-1/last.pt,other/checkpoints/job-1/last.pt
    python bench/side_by_side.py bench-cxr bench-cxr/checkpoints/job-1/last.pt --positive virus

--together measures what the Compare page's "together" arm reads: each run beside ImageNet, all runs beside it in one
probe, and the former's probabilities averaged (compared against ImageNet and against the first run beside it).
"""

from __future__ import annotations

import argparse
import itertools

import numpy as np

from pirl_core.data.image_cache import cache_size_for, dataset_cache
from pirl_core.data.splits import nested_subset
from pirl_core.engine.backbones import build_backbone
from pirl_core.engine.linear_probe import fit_linear_probe
from pirl_core.engine.metrics import auc_score
from pirl_core.engine.model import embed_dataset
from pirl_core.engine.train_state import load_pretrained
from pirl_core.evaluation import compare
from pirl_core.evaluation.statistics import paired_bootstrap_p
from pirl_core.workspace.folder import Workspace

FRACTIONS = (0.05, 0.1, 0.25, 0.5, 1.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workspace")
    ap.add_argument("runs", type=lambda s: s.split(","), help="CHECKPOINT[,CHECKPOINT]")
    ap.add_argument("--positive", default="malignant")
    ap.add_argument("--labeled", default="binary", help="the labeled set's name in WS")
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--together", action="store_true",
                    help="only what several runs add beside ImageNet: each run beside it, all of them beside it in "
                         "one probe (the Compare page's 'together' arm), and the former's probabilities averaged")
    args = ap.parse_args()
    ws, size = Workspace(args.workspace), args.image_size
    dataset = ws.store.dataset(args.labeled)
    everything = ws.store.images(dataset["id"])
    position = {r["id"]: i for i, r in enumerate(everything)}
    rows = [r for r in everything if r["label"] is not None]
    classes = sorted({r["label"] for r in rows}, key=lambda c: c == args.positive)  # the positive class last
    y = np.array([classes.index(r["label"]) for r in rows])
    images = dataset_cache(ws, dataset["id"], cache_size_for(size))[np.array([position[r["id"]] for r in rows])]
    groups = compare.split_groups(ws, dataset["id"], rows)
    codes = np.unique([g if g is not None else f"\0{i}" for i, g in enumerate(groups)], return_inverse=True)[1]
    splits = compare.data_splits(rows, groups, 5, 0, 5)

    def probabilities(x: np.ndarray) -> dict[float, np.ndarray]:
        """Out-of-fold P(positive) per image at each fraction, the mean of its repeats (as compare.py pools)."""
        out = {f: [[] for _ in rows] for f in FRACTIONS}
        for split in splits:
            train, val = np.asarray(split["train"]), np.asarray(split["val"], dtype=int)
            test = np.sort(np.asarray(split["test"], dtype=int))
            for f in FRACTIONS:
                fit = np.sort(np.concatenate([train[nested_subset([rows[i]["label"] for i in train], f, 0)],
                                              val[nested_subset([rows[i]["label"] for i in val], f, 0)]]))
                p = fit_linear_probe(x[fit], y[fit], 2, codes[fit], 0).predict_proba(x[test])[:, 1]
                for i, v in zip(test, p):
                    out[f][i].append(v)
        return {f: np.array([np.mean(v) for v in out[f]]) for f in FRACTIONS}

    features = {"ImageNet": embed_dataset(build_backbone("efficientnet_lite0", pretrained=True), images, size)}
    for k, path in enumerate(args.runs, 1):
        features[f"run {k}"] = embed_dataset(load_pretrained(path)[0].backbone, images, size)
    numbers = range(1, len(args.runs) + 1)
    arms = {"ImageNet": ["ImageNet"]} if args.together else {name: [name] for name in features}
    arms.update({f"ImageNet beside run {k}": ["ImageNet", f"run {k}"] for k in numbers})
    if args.together:
        arms["ImageNet beside all runs"] = ["ImageNet", *(f"run {k}" for k in numbers)]
    else:
        arms.update({f"runs {a} and {b} side by side": [f"run {a}", f"run {b}"]
                     for a, b in itertools.combinations(numbers, 2)})
    probs = {name: probabilities(np.concatenate([features[n].numpy() for n in parts], 1))
             for name, parts in arms.items()}
    prefix = "ImageNet beside run" if args.together else "run"
    for a, b in itertools.combinations(numbers, 2):
        probs[f"{prefix}s {a} and {b} averaged"] = {
            f: (probs[f"{prefix} {a}"][f] + probs[f"{prefix} {b}"][f]) / 2 for f in FRACTIONS}
    print(f"{args.labeled}: {len(rows)} labeled, {args.positive} {int(y.sum())}; AUC at "
          + " / ".join(f"{f:.0%}" for f in FRACTIONS))
    for name, p in probs.items():
        against = []
        for baseline in ("ImageNet", list(arms)[1]):
            if name != baseline:
                tests = [paired_bootstrap_p(y, _two(p[f]), _two(probs[baseline][f]), n_boot=500) for f in (0.1, 1.0)]
                against.append(f"vs {baseline} " + ", ".join(
                    f"{f:.0%} {t['difference']:+.3f} ({t['ci_low']:+.3f} to {t['ci_high']:+.3f})"
                    for f, t in zip((0.1, 1.0), tests)))
        print(f"  {name:28s} " + " / ".join(f"{auc_score(y, _two(p[f])):.3f}" for f in FRACTIONS)
              + ("  | " + "; ".join(against) if against else ""), flush=True)


def _two(p: np.ndarray) -> np.ndarray:
    return np.stack([1 - p, p], 1)


if __name__ == "__main__":
    main()
