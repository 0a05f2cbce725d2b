"""The linear probe: how good are frozen features for a labeled task?

The standard for small data: L2-regularised logistic regression (L-BFGS, scikit-learn) on
standardised features, its regularisation strength chosen by an inner cross-validation on the
training images only (grouped, so near-copies never sit on both sides of an inner fold).
Deterministic: the same features and seed give the same probe. SGD with early stopping on a
small validation split, what this replaced, moved the AUC by more than the effects it measured.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
from sklearn.model_selection import StratifiedGroupKFold, cross_val_predict

C_GRID = np.logspace(-5, 0, 6)  # inverse L2 strength; features are standardised, so one grid fits all backbones
INNER_FOLDS = 3


@dataclass
class LinearProbe:
    mean: np.ndarray  # (D,) feature standardisation
    scale: np.ndarray  # (D,)
    weight: np.ndarray  # (C, D) logits = weight @ standardised + bias; softmax gives the probabilities
    bias: np.ndarray  # (C,)
    C: float  # the chosen inverse regularisation strength
    cv_auc: dict[float, float]  # inner-CV AUC per C on the training images

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        logits = ((features - self.mean) / self.scale) @ self.weight.T + self.bias
        logits -= logits.max(1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(1, keepdims=True)


def _inner_splits(y: np.ndarray, groups: np.ndarray, seed: int) -> list | None:
    smallest = np.bincount(y).min()
    k = int(min(INNER_FOLDS, smallest, len(np.unique(groups))))
    if k < 2:
        return None
    return list(StratifiedGroupKFold(k, shuffle=True, random_state=seed).split(y, y, groups))


def fit_linear_probe(features: np.ndarray, y: np.ndarray, n_classes: int, groups: np.ndarray | None = None,
                     seed: int = 0) -> LinearProbe:
    """Fit the probe on training features (N, D) and labels 0..n_classes-1 (all present)."""
    features = np.asarray(features, dtype=np.float64)
    y = np.asarray(y)
    mean, scale = features.mean(0), features.std(0)
    scale = np.where(scale > 1e-6 * max(float(scale.max()), 1e-12), scale, 1.0)  # dead features stay at 0
    x = (features - mean) / scale
    # With fewer images than features, the L2 solution lies in the span of the training rows: fitting in
    # that basis (x = U S Vt, coordinates x Vt') gives the same probe with fewer columns, several times faster.
    basis = np.linalg.svd(x, full_matrices=False)[2] if x.shape[0] < x.shape[1] else None
    if basis is not None:
        x = x @ basis.T
    groups = np.arange(len(y)) if groups is None else np.asarray(groups)
    splits = _inner_splits(y, groups, seed)
    common = dict(max_iter=1000, tol=1e-3, class_weight="balanced")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", (ConvergenceWarning, FutureWarning))
        if splits is None:  # too few images for an inner CV: a middling strength
            model, chosen, cv_auc = LogisticRegression(C=0.1, **common).fit(x, y), 0.1, {}
        else:
            model = LogisticRegressionCV(Cs=C_GRID, cv=splits, scoring="roc_auc" if n_classes == 2 else "roc_auc_ovr",
                                         refit=True, n_jobs=2, **common).fit(x, y)
            chosen = float(np.ravel(model.C_)[0])
            scores = next(iter(model.scores_.values()))  # (folds, Cs): the same for every class
            cv_auc = {float(c): float(s) for c, s in zip(model.Cs_, scores.mean(0))}
    coef, intercept = model.coef_, model.intercept_
    if basis is not None:
        coef = coef @ basis
    if n_classes == 2:  # sklearn's one logit z for class 1 -> two logits (-z/2, z/2): softmax = sigmoid(z)
        coef = np.concatenate([-coef / 2, coef / 2])
        intercept = np.concatenate([-intercept / 2, intercept / 2])
    return LinearProbe(mean, scale, coef, intercept, chosen, cv_auc)


def validation_probs(features: np.ndarray, y: np.ndarray, probe: LinearProbe, groups: np.ndarray | None = None,
                     seed: int = 0) -> np.ndarray | None:
    """Out-of-inner-fold probabilities (N, C) of the training images at the probe's chosen strength: predictions
    on images each model did not train on, for choosing a decision threshold without touching the test part.
    None when the training images are too few for an inner cross-validation."""
    y = np.asarray(y)
    groups = np.arange(len(y)) if groups is None else np.asarray(groups)
    splits = _inner_splits(y, groups, seed)
    if splits is None:
        return None
    x = (np.asarray(features, dtype=np.float64) - probe.mean) / probe.scale
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", (ConvergenceWarning, FutureWarning))
        return cross_val_predict(LogisticRegression(C=probe.C, max_iter=1000, tol=1e-3, class_weight="balanced"),
                                 x, y, cv=splits, method="predict_proba")
