"""Labels saved: the label-efficiency curves read horizontally.

For a PIRL arm at each label fraction: how many training labels the best baseline needs to reach the AUC that the
PIRL arm reaches there (linear interpolation on the baseline's measured curve, number of labels against AUC), with a
95% interval from a paired bootstrap of the test images (every arm and fraction is resampled with the same images,
as the paired tests are). A baseline that never reaches it, even with all its labels, is "more than all of them".
"""

from __future__ import annotations

import math

import numpy as np

from ..engine.metrics import auc_score
from .statistics import _resample

BEYOND = math.inf  # the baseline does not reach the AUC with any measured number of labels


def labels_to_reach(curve: list[tuple[float, float]], target: float) -> float:
    """The fewest labels at which the piecewise-linear curve [(labels, auc), ...] (labels ascending) reaches
    `target`; BEYOND when it never does. At or above target at its first point: that point's labels (no
    extrapolation below what was measured)."""
    for i, (n, auc) in enumerate(curve):
        if auc >= target:
            if i == 0:
                return float(n)
            n0, a0 = curve[i - 1]
            return float(n0 + (n - n0) * (target - a0) / (auc - a0))
    return BEYOND


def _curve(labels: dict[float, float], aucs: dict[float, float]) -> list[tuple[float, float]]:
    return sorted((labels[f], aucs[f]) for f in labels)


def labels_saved(y: np.ndarray, arm: dict[float, np.ndarray], baseline: dict[float, np.ndarray],
                 labels: dict[float, float], baseline_labels: dict[float, float], n_boot: int = 200,
                 seed: int = 0) -> list[dict]:
    """Per fraction of the arm: {fraction, labels, auc, baseline_labels (BEYOND if never), low, high}.

    `arm` / `baseline`: fraction -> (N, C) test probabilities on the same images `y`; `labels`: fraction -> the
    mean number of training labels used there."""
    y = np.asarray(y)

    def reading(idx: np.ndarray) -> list[float]:
        base = _curve(baseline_labels, {f: auc_score(y[idx], p[idx]) for f, p in baseline.items()})
        return [labels_to_reach(base, auc_score(y[idx], arm[f][idx])) for f in sorted(arm)]

    observed = reading(np.arange(len(y)))
    rng = np.random.default_rng(seed)
    boots = np.array([reading(_resample(y, rng)) for _ in range(n_boot)])  # inf stays inf in the quantiles
    out = []
    for k, f in enumerate(sorted(arm)):
        low, high = np.quantile(boots[:, k], [0.025, 0.975], method="nearest")  # BEYOND is a plain value here
        out.append({"fraction": f, "labels": labels[f], "auc": auc_score(y, arm[f]),
                    "baseline_labels": observed[k], "low": float(low), "high": float(high)})
    return out


def _bound(n: float, all_labels: float) -> str:
    return f"more than all {all_labels:.0f}" if n == BEYOND else f"{n:.0f}"


def sentence(arm: str, baseline: str, entry: dict, all_labels: float) -> str:
    """The reading in one plain sentence, e.g. 'With 45 labels, ImageNet+PIRL reaches the AUC that ImageNet
    reaches with about 120 labels (95% interval 80 to 310): about 75 labels saved.'"""
    n = entry["baseline_labels"]
    interval = f"95% interval {_bound(entry['low'], all_labels)} to {_bound(entry['high'], all_labels)}"
    if n == BEYOND:
        return (f"With {entry['labels']:.0f} labels, {arm} reaches an AUC ({entry['auc']:.3f}) that {baseline} "
                f"does not reach even with all {all_labels:.0f} labels ({interval}).")
    saved = n - entry["labels"]
    return (f"With {entry['labels']:.0f} labels, {arm} reaches the AUC that {baseline} reaches with about "
            f"{n:.0f} labels ({interval}): " + (f"about {saved:.0f} labels saved." if saved >= 1
                                                 else "no labels saved."))
