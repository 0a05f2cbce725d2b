"""Which unlabeled images to label next: the choice rules behind the Label page and `pirl suggest`.

Pure functions on a pool's vectors (N, D) in the PIRL representation; the selection itself is scikit-activeml's:
* `random`: the baseline every figure is measured against;
* `typical` (cold start): MaxHerding (generalised coverage, Bae et al. 2024). Each image covers its neighbours
  by a Gaussian kernel; the batch is chosen greedily, each time the image that adds the most coverage of the
  pool beyond what the labeled and already chosen images cover: typical images first (dense neighbourhoods),
  never two of one region, no outliers. Built for few labels on self-supervised embeddings, and it needs no
  number of clusters. It replaced TypiClust: `auto` with it was at or above `auto` with TypiClust at every
  budget on BUSI and cxr256 (20 seeds, docs/results.md; BUSI at 10 / 20 labels 0.714 / 0.770 against 0.639 /
  0.764, random 0.583 / 0.689). Its kernel is N x N, so over COVERAGE_SAMPLE candidates it weighs a sample;
* `uncertain` (warm): BADGE. Gradient embeddings of a linear probe fitted on the labels so far, spread out by
  k-means++ seeding: images the probe is unsure of, and unlike one another, so a batch is not ten versions of
  one doubt;
* `auto`: typical until every class has COLD_LABELS_PER_CLASS labels (a probe on fewer is noise), then uncertain.

Near-copies: the candidates are one image per near-copy cluster, clusters that already hold a labeled (or
skipped) image left out, so a batch never spends two labels on one lesion photographed twice.
The vectors are reduced to SELECTION_DIMS principal components first: k-means on 1,280-d features of 10,000
images takes a minute on two cores, on 32 components a second, and the clusters are the same in practice
(the components are fitted on a sample of PCA_SAMPLE images).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression

from ..errors import PirlError

STRATEGIES = ("auto", "typical", "uncertain", "random")
COLD_LABELS_PER_CLASS = 5
SELECTION_DIMS = 32
PCA_SAMPLE = 2000  # the components are fitted on this many images at most, then every image is projected
COVERAGE_SAMPLE = 2000  # candidates `typical` weighs at most: its kernel matrix is this squared (10,000: 496 s)


@dataclass
class Suggestion:
    index: int  # position in the pool
    reason: str  # in plain words, for the annotator
    score: float  # the strategy's own utility: typicality, or the probe's doubt (1 - top probability)


def selection_space(vectors: np.ndarray, seed: int = 0) -> np.ndarray:
    """The vectors the strategies cluster: the leading principal components of the L2-normalised vectors."""
    x = np.asarray(vectors, dtype=np.float32)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    dims = min(SELECTION_DIMS, x.shape[1], max(1, x.shape[0] - 1))
    fit_on = x if len(x) <= PCA_SAMPLE else x[np.random.default_rng(seed).choice(len(x), PCA_SAMPLE, replace=False)]
    return PCA(dims, svd_solver="randomized", random_state=seed).fit(fit_on).transform(x).astype(np.float32)


def candidates(done: np.ndarray, cluster_of: list[int] | None = None) -> np.ndarray:
    """Pool positions that may be suggested: not done (labeled or skipped), and one per near-copy cluster, none
    from a cluster that has a done member."""
    cluster_of = list(range(len(done))) if cluster_of is None else cluster_of
    covered = {cluster_of[i] for i in np.flatnonzero(done)}
    out, seen = [], set()
    for i, c in enumerate(cluster_of):
        if not done[i] and c not in covered and c not in seen:
            seen.add(c)
            out.append(i)
    return np.asarray(out, dtype=int)


def resolve(strategy: str, y: np.ndarray, n_classes: int) -> str:
    """The rule `auto` stands for now, and `uncertain` falls back to `typical` while some class has no label."""
    if strategy not in STRATEGIES:
        raise PirlError(f"Unknown strategy {strategy!r}: use one of {', '.join(STRATEGIES)}.")
    counts = np.bincount(y[y >= 0], minlength=n_classes) if n_classes else np.zeros(1)
    if strategy == "auto":
        strategy = "typical" if counts.min() < COLD_LABELS_PER_CLASS else "uncertain"
    if strategy == "uncertain" and counts.min() == 0:
        strategy = "typical"
    return strategy


def suggest(space: np.ndarray, y: np.ndarray, n: int, n_classes: int, strategy: str = "auto",
            done: np.ndarray | None = None, cluster_of: list[int] | None = None,
            seed: int = 0) -> tuple[str, list[Suggestion]]:
    """`n` pool positions to label next. `space`: selection_space vectors (N, d); `y`: class index per image, -1
    unlabeled; `done`: images not to suggest again (labeled, or skipped as not sure). Returns the rule used."""
    done = (y >= 0) if done is None else (done | (y >= 0))
    pool = candidates(done, cluster_of)
    if n < 1:
        raise PirlError("Ask for at least one suggestion.")
    if len(pool) == 0:
        raise PirlError("Every image of this dataset is labeled or was skipped: there is nothing left to suggest.")
    n = min(n, len(pool))
    rule = resolve(strategy, y, n_classes)
    if rule == "random":
        chosen = np.random.default_rng(seed).choice(pool, n, replace=False)
        return rule, [Suggestion(int(i), "chosen at random (the baseline)", 0.0) for i in chosen]
    if rule == "typical":
        return rule, _typical(space, y, pool, n, seed)
    return rule, _uncertain(space, y, pool, n, n_classes, seed)


def _missing(y: np.ndarray) -> np.ndarray:
    """Labels in scikit-activeml's form: NaN where there is none."""
    return np.where(y >= 0, y, np.nan).astype(float)


def _typical(space: np.ndarray, y: np.ndarray, pool: np.ndarray, n: int, seed: int) -> list[Suggestion]:
    from skactiveml.pool import MaxHerding

    if len(pool) > COVERAGE_SAMPLE:
        pool = np.sort(np.random.default_rng(seed).choice(pool, COVERAGE_SAMPLE, replace=False))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        chosen, utilities = MaxHerding(random_state=seed).query(space, _missing(y), candidates=pool, batch_size=n,
                                                                return_utilities=True)
    return [Suggestion(int(i), "typical of a part of the pool that no label covers yet", float(utilities[b, i]))
            for b, i in enumerate(chosen)]


def _uncertain(space: np.ndarray, y: np.ndarray, pool: np.ndarray, n: int, n_classes: int,
               seed: int) -> list[Suggestion]:
    from skactiveml.classifier import SklearnClassifier
    from skactiveml.pool import Badge

    x = (space - space.mean(0)) / np.maximum(space.std(0), 1e-6)
    probe = SklearnClassifier(LogisticRegression(C=0.1, max_iter=1000, class_weight="balanced"),
                              classes=np.arange(n_classes), random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        probe.fit(x, _missing(y))
        chosen = Badge(random_state=seed).query(x, _missing(y), clf=probe, fit_clf=False, candidates=pool,
                                                batch_size=n)
        probs = probe.predict_proba(x[np.asarray(chosen, dtype=int)])
    return [Suggestion(int(i), f"the current model is unsure (its best guess has {p.max():.0%})",
                       float(1 - p.max())) for i, p in zip(chosen, probs)]
