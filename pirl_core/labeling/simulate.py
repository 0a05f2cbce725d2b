"""How many labels each strategy needs, measured with an annotator simulated from labels that already exist.

Per seed, a fixed test part (TEST_FRACTION of the labeled set, whole groups and near-copy clusters) is held
out and the rest is the pool. From no labels, each strategy asks for batches of `batch` images, the oracle
answers with the true label, and at each budget the product's linear probe (engine.linear_probe, as Compare
fits it) is fitted on the labels so far and scored on the test part. A probe that has seen one class only
scores 0.5: a strategy that finds no positive has bought nothing. `bench/label_efficiency.py` and the Label
page's simulation job both run `simulate`, so the page draws the benchmark's curves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..data.duplicates import merge_groups
from ..data.splits import assign_splits
from ..engine.linear_probe import fit_linear_probe
from ..errors import PirlError
from ..evaluation.neighbours import load_space
from ..evaluation.statistics import auc_score
from ..jobs import queue
from ..jobs.queue import JobContext, job_kind
from ..jobs.records import Record
from ..workspace.folder import Workspace
from . import strategies, suggestions

BUDGETS = (10, 20, 40, 80, 160)
BATCH = 10
SEEDS = 5
TEST_FRACTION = 0.3


@dataclass
class Curves:
    budgets: list[int]
    strategies: dict[str, list[list[float]]]  # strategy -> per seed, the test AUC at each budget
    n_pool: int = 0
    n_test: int = 0
    notes: list[str] = field(default_factory=list)

    def mean(self, strategy: str) -> np.ndarray:
        return np.mean(self.strategies[strategy], axis=0)

    def spread(self, strategy: str) -> np.ndarray:
        return np.std(self.strategies[strategy], axis=0)

    def to_dict(self) -> dict:
        return {"budgets": self.budgets, "strategies": self.strategies, "n_pool": self.n_pool,
                "n_test": self.n_test, "notes": self.notes}


def _probe_auc(features: np.ndarray, y: np.ndarray, chosen: list[int], test: np.ndarray, n_classes: int,
               seed: int) -> float:
    if len(np.unique(y[chosen])) < n_classes:
        return 0.5
    probe = fit_linear_probe(features[chosen], y[chosen], n_classes, seed=seed)
    return float(auc_score(y[test], probe.predict_proba(features[test])))


def one_curve(features: np.ndarray, space: np.ndarray, y: np.ndarray, pool: np.ndarray, test: np.ndarray,
              cluster_of: list[int], strategy: str, budgets: list[int], batch: int, seed: int) -> list[float]:
    """The test AUC at each budget as `strategy` chooses labels from `pool`, one batch at a time."""
    n_classes = int(y.max()) + 1
    sub_space, sub_clusters = space[pool], [cluster_of[i] for i in pool]
    known = np.full(len(pool), -1)
    chosen: list[int] = []
    out = []
    for budget in budgets:
        while len(chosen) < min(budget, len(pool)):
            take = min(batch, budget - len(chosen), len(pool) - len(chosen))
            _, picks = strategies.suggest(sub_space, known, take, n_classes, strategy,
                                          cluster_of=sub_clusters, seed=seed * 1000 + len(chosen))
            for s in picks:
                known[s.index] = y[pool[s.index]]
                chosen.append(int(pool[s.index]))
            if not picks:
                break
        out.append(_probe_auc(features, y, chosen, test, n_classes, seed))
    return out


def simulate(features: np.ndarray, y: np.ndarray, groups: list[str | None], cluster_of: list[int],
             names: tuple[str, ...] = ("random", "typical", "uncertain", "auto"), budgets=BUDGETS,
             batch: int = BATCH, seeds: int = SEEDS,
             on_progress: Callable[[int, int], None] | None = None) -> Curves:
    """Every strategy's curve on the labeled images `features` (N, D) with class indices `y` (N,)."""
    y = np.asarray(y)
    space = strategies.selection_space(features)
    linked = merge_groups(list(groups), cluster_of)
    curves = Curves(list(budgets), {name: [] for name in names})
    total, done = seeds * len(names), 0
    for seed in range(seeds):
        part = assign_splits([str(v) for v in y], linked, {"pool": 1 - TEST_FRACTION, "test": TEST_FRACTION}, seed)
        pool = np.array([i for i, p in enumerate(part) if p == "pool"])
        test = np.array([i for i, p in enumerate(part) if p == "test"])
        curves.n_pool, curves.n_test = len(pool), len(test)
        for name in names:
            curves.strategies[name].append(
                one_curve(features, space, y, pool, test, cluster_of, name, list(budgets), batch, seed))
            done += 1
            if on_progress:
                on_progress(done, total)
    if max(budgets) > curves.n_pool:
        curves.notes.append(f"The pool holds {curves.n_pool} images: budgets above it use them all.")
    return curves


def half_the_labels(curves: Curves, strategy: str, against: str = "random") -> list[dict]:
    """Where `strategy` with half the labels reaches what `against` reaches with all of them (mean over seeds)."""
    mean_s, mean_r = curves.mean(strategy), curves.mean(against)
    out = []
    for i, budget in enumerate(curves.budgets):
        if budget % 2 == 0 and budget // 2 in curves.budgets:
            half = curves.budgets.index(budget // 2)
            out.append({"labels": budget, "half": budget // 2, f"{against}_auc": float(mean_r[i]),
                        f"{strategy}_auc_at_half": float(mean_s[half]), "reached": bool(mean_s[half] >= mean_r[i])})
    return out


# -- on a labeled dataset of the workspace: `bench/label_efficiency.py` and the Label page's job -------------
def on_dataset(ws: Workspace, dataset_id: int, job_id: int, seeds: int = SEEDS, budgets=BUDGETS, batch: int = BATCH,
               on_progress: Callable[[int, int], None] | None = None) -> Curves:
    """Every strategy's curve on a labeled dataset, in pretrain run `job_id`'s backbone features."""
    space = load_space(ws, job_id, "features", dataset_id)
    rows = ws.store.images(dataset_id)
    classes = sorted({r["label"] for r in rows if r["label"] is not None})
    if len(classes) < 2:
        raise PirlError("The simulation needs a labeled dataset with at least two classes.")
    keep = [i for i, r in enumerate(rows) if r["label"] is not None]
    clusters = suggestions.near_copy_clusters(ws, dataset_id)
    return simulate(space.vectors.numpy()[keep], np.array([classes.index(rows[i]["label"]) for i in keep]),
                    [rows[i]["group_id"] for i in keep], [clusters[i] for i in keep],
                    budgets=budgets, batch=batch, seeds=seeds, on_progress=on_progress)


@dataclass
class SimulationConfig(Record):
    dataset_id: int
    pretrain_job: int
    seeds: int = SEEDS
    budgets: list[int] = field(default_factory=lambda: list(BUDGETS))
    batch: int = BATCH

    def validate(self) -> None:
        if self.seeds < 1 or self.batch < 1 or not self.budgets or min(self.budgets) < 1:
            raise PirlError("The simulation needs at least one seed, a batch of one or more and positive budgets.")


@dataclass
class SimulationOutcome(Record):
    budgets: list[int] = field(default_factory=list)
    strategies: dict = field(default_factory=dict)
    n_pool: int = 0
    n_test: int = 0
    notes: list[str] = field(default_factory=list)


def start_simulation(ws: Workspace, dataset_id: int, job_id: int, seeds: int = SEEDS) -> int:
    return queue.submit(ws, "label_simulation", SimulationConfig(dataset_id, job_id, seeds), dataset_id)


@job_kind("label_simulation", config=SimulationConfig, result=SimulationOutcome)
def simulation_job(ctx: JobContext) -> SimulationOutcome:
    cfg = ctx.config
    curves = on_dataset(ctx.ws, cfg.dataset_id, cfg.pretrain_job, cfg.seeds, cfg.budgets, cfg.batch,
                        lambda done, total: ctx.progress(done / total, f"{done} of {total} simulated labelings"))
    return SimulationOutcome(**curves.to_dict())
