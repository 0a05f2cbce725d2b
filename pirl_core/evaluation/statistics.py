"""Evaluation: ROC, AUC with bootstrap confidence intervals, paired tests, threshold metrics.

All functions take `y` (N,) integer labels and `probs` (N, C) class probabilities. Binary
AUC scores the positive class (index 1); more classes give the macro one-vs-rest AUC.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_curve

from ..engine.metrics import auc_score


def roc_points(y: np.ndarray, probs: np.ndarray, positive: int = 1) -> dict:
    """ROC curve of one class against the rest: fpr, tpr, thresholds (lists, for JSON and plots)."""
    fpr, tpr, thr = roc_curve((np.asarray(y) == positive).astype(int), np.asarray(probs)[:, positive])
    return {"fpr": fpr.tolist(), "tpr": tpr.tolist(), "thresholds": np.clip(thr, 0, 1).tolist()}


def roc_area(roc: dict) -> float:
    """The area under stored ROC points: the AUC of that class against the rest (the table's AUC is the macro
    average over classes when there are more than two)."""
    return float(np.trapezoid(roc["tpr"], roc["fpr"]))


def _resample(y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A stratified bootstrap sample: each class resampled within itself, so every draw has all classes."""
    return np.concatenate([rng.choice(np.flatnonzero(y == c), size=(y == c).sum()) for c in np.unique(y)])


def auc_with_ci(y: np.ndarray, probs: np.ndarray, n_boot: int = 1000, level: float = 0.95,
                seed: int = 0) -> dict:
    """AUC and its percentile bootstrap confidence interval."""
    y, probs = np.asarray(y), np.asarray(probs)
    rng = np.random.default_rng(seed)
    boots = np.array([auc_score(y[idx], probs[idx]) for idx in (_resample(y, rng) for _ in range(n_boot))])
    alpha = (1 - level) / 2
    lo, hi = np.nanquantile(boots, [alpha, 1 - alpha])
    return {"auc": auc_score(y, probs), "ci_low": float(lo), "ci_high": float(hi), "n": int(len(y)),
            "level": level}


def paired_bootstrap_p(y: np.ndarray, probs_a: np.ndarray, probs_b: np.ndarray, n_boot: int = 2000,
                       seed: int = 0) -> dict:
    """Two-sided p-value for AUC(a) == AUC(b), both scored on the same images (paired bootstrap).

    Resamples images, recomputes the AUC difference, and asks how often the centred
    differences are at least as extreme as the observed one.
    """
    y, a, b = np.asarray(y), np.asarray(probs_a), np.asarray(probs_b)
    observed = auc_score(y, a) - auc_score(y, b)
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(n_boot):
        idx = _resample(y, rng)
        diffs.append(auc_score(y[idx], a[idx]) - auc_score(y[idx], b[idx]))
    diffs = np.array(diffs)
    centred = diffs - diffs.mean()
    p = (np.sum(np.abs(centred) >= abs(observed) - 1e-12) + 1) / (n_boot + 1)
    return {"difference": float(observed), "p_value": float(min(1.0, p)),
            "ci_low": float(np.quantile(diffs, 0.025)), "ci_high": float(np.quantile(diffs, 0.975))}


def threshold_metrics(y: np.ndarray, probs: np.ndarray, threshold: float, positive: int = 1) -> dict:
    """Sensitivity, specificity, PPV, NPV and the confusion matrix when `positive` is called at
    probability >= threshold."""
    truth = np.asarray(y) == positive
    called = np.asarray(probs)[:, positive] >= threshold
    tp, fn = int(np.sum(truth & called)), int(np.sum(truth & ~called))
    tn, fp = int(np.sum(~truth & ~called)), int(np.sum(~truth & called))

    def ratio(a, b):
        return a / (a + b) if a + b else float("nan")

    return {"threshold": threshold, "sensitivity": ratio(tp, fn), "specificity": ratio(tn, fp),
            "ppv": ratio(tp, fp), "npv": ratio(tn, fn), "confusion": [[tn, fp], [fn, tp]]}


def youden_threshold(y: np.ndarray, probs: np.ndarray, positive: int = 1) -> float:
    """The threshold that maximises sensitivity + specificity - 1 (a sensible starting point)."""
    fpr, tpr, thr = roc_curve((np.asarray(y) == positive).astype(int), np.asarray(probs)[:, positive])
    return float(np.clip(thr[np.argmax(tpr - fpr)], 0, 1))


def errors_at(y: np.ndarray, probs: np.ndarray, threshold: float, positive: int = 1) -> dict[str, list[int]]:
    """Indices of the false positives and false negatives at `threshold`, most confident mistakes first."""
    p = np.asarray(probs)[:, positive]
    truth, called = np.asarray(y) == positive, p >= threshold
    fp, fn = np.flatnonzero(~truth & called), np.flatnonzero(truth & ~called)
    return {"false_positives": fp[np.argsort(-p[fp])].tolist(), "false_negatives": fn[np.argsort(p[fn])].tolist()}


def calibration(y: np.ndarray, probs: np.ndarray, positive: int = 1, bins: int = 10) -> dict[str, list[float]]:
    """Reliability curve: in bins of equal count, the mean predicted probability of `positive` against the
    observed share of `positive` (on the diagonal: calibrated), and each bin's size."""
    p = np.asarray(probs)[:, positive]
    truth = (np.asarray(y) == positive).astype(float)
    order = np.argsort(p, kind="stable")
    groups = [g for g in np.array_split(order, max(1, min(bins, len(p) // 10))) if len(g)]
    return {"predicted": [float(p[g].mean()) for g in groups], "observed": [float(truth[g].mean()) for g in groups],
            "count": [len(g) for g in groups]}


def format_p(p: float, n_boot: int) -> str:
    """A bootstrap p-value as text; below the bootstrap's resolution (or 0.001) it reads "< 0.001"."""
    floor = max(1 / (n_boot + 1), 0.001)
    return f"< {floor:.3g}" if p <= floor else f"{p:.3f}"


def outcome(test: dict) -> str:
    """"better", "worse" or "unclear": where the paired difference's 95% interval lies against zero."""
    return "better" if test["ci_low"] > 0 else "worse" if test["ci_high"] < 0 else "unclear"


def verdict(arm: str, baseline: str, test: dict, n_boot: int) -> str:
    """One sentence: the paired AUC difference of `arm` over `baseline` with its 95% interval, and what it means."""
    d, lo, hi = test["difference"], test["ci_low"], test["ci_high"]
    meaning = {"better": f"{arm} is better: the interval excludes zero",
               "worse": f"{arm} is worse: the interval excludes zero",
               "unclear": "no difference shown: the interval includes zero"}[outcome(test)]
    def signed(x: float) -> str:  # a bound that rounds to +0.000 keeps a fourth digit: its side of zero shows
        return f"{x:+.3f}" if abs(x) >= 0.0005 or x == 0 else f"{x:+.4f}"

    return (f"{arm} vs {baseline}: AUC {signed(d)} (95% CI {signed(lo)} to {signed(hi)}, "
            f"p {format_p(test['p_value'], n_boot)}); {meaning}.")
