"""The score every part of the product reports: ROC AUC, binary or macro one-vs-rest."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score


def auc_score(y: np.ndarray, probs: np.ndarray) -> float:
    """Binary AUC of the positive class, or macro one-vs-rest AUC for more classes."""
    if len(np.unique(y)) < 2:
        return float("nan")
    if probs.shape[1] == 2:
        return float(roc_auc_score(y, probs[:, 1]))
    return float(roc_auc_score(y, probs, multi_class="ovr", average="macro", labels=list(range(probs.shape[1]))))
