"""Comparisons: scratch vs ImageNet vs PIRL vs ImageNet+PIRL on one labeled set, fairly.

A comparison queues one finetune job per initialisation ("arm"). Every arm uses the same
images, splits or folds, label subsets, augmentation, epochs, optimiser and seed; only the
starting weights differ. Each job trains on the training part, selects its epoch on the
validation part, and only then predicts the test part. With k folds, every labeled image is
a test image exactly once (out-of-fold predictions); the paired test compares arms on the
same images.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np

from ..data import duplicates
from ..data.image_cache import cache_size_for, dataset_cache
from ..data.labels import class_order
from ..data.splits import assign_folds, assign_splits, nested_subset
from ..engine import checkpoint
from ..engine.backbones import REGISTRY, SideBySide, build_backbone, imagenet_weights_problem, parts_of
from ..engine.batchnorm import recompute_bn_stats
from ..engine.choices import INITS
from ..engine.finetune import FinetuneConfig, finetune, predict, probe_classifier
from ..engine.linear_probe import fit_linear_probe, validation_probs
from ..engine.metrics import auc_score
from ..engine.model import embed_dataset
from ..engine.train_state import load_pretrained
from ..errors import PirlError
from ..jobs import queue, records
from ..jobs.queue import JobContext, job_kind
from ..jobs.records import Record
from ..training import pretraining
from ..workspace.folder import Workspace
from . import labels_saved
from .statistics import auc_with_ci, outcome, paired_bootstrap_p, roc_points, verdict, youden_threshold

BASELINES = ("scratch", "imagenet")


@dataclass
class CompareRequest:
    labeled: str
    pretrain_jobs: list[int]
    mode: str = "linear"
    inits: list[str] = field(default_factory=lambda: list(INITS))
    folds: int | None = None  # None: 5 under 2,000 labeled images, else the fixed split; 0: fixed split
    fractions: list[float] | None = None  # None: default_fractions(the number of labeled images)
    seed: int = 0
    epochs: int | None = None
    repeats: int | None = None  # None: 5 x k-fold for a linear probe on under 2,000 images, else 1
    together: bool = True  # several ImageNet-started runs, linear probe: one more arm reading them all (TOGETHER)


@dataclass
class ComparisonConfig(Record):
    """What every arm of a comparison shares: the labeled set, splits or folds, label fractions, training."""

    labeled_dataset_id: int
    labeled: str
    backbone: str
    image_size: int
    folds: int  # 0: the dataset's fixed split
    fractions: list[float]
    seed: int
    finetune: FinetuneConfig
    repeats: int = 1
    bn_dataset_id: int | None = None  # the pool whose whole images give a scratch arm its BatchNorm statistics
    classes: list[str] = field(default_factory=list)  # model order, the positive class last; empty: name order
    duplicate_aware: bool = True  # near-copies share a fold (off only in benchmarks of what that changes)

    def __post_init__(self):
        if isinstance(self.finetune, dict):
            self.finetune = FinetuneConfig.from_dict(self.finetune)

    def validate(self) -> None:
        if not self.fractions or not all(0 < f <= 1 for f in self.fractions):
            raise PirlError("Label fractions must be in (0, 1].")

    @property
    def full_fraction(self) -> float:
        """The label fraction the headline figures are at: all the labels, or the largest fraction asked."""
        return 1.0 if 1.0 in self.fractions else max(self.fractions)


@dataclass
class FinetuneJob(ComparisonConfig):
    """One arm's finetune job: the comparison's settings and the arm's starting weights."""

    label: str = ""  # the arm's name on the page ("ImageNet+PIRL #3")
    init: str = "scratch"  # one of INITS
    pretrain_job: int | None = None
    pretext: str | None = None
    more_pretrain_jobs: list[int] = field(default_factory=list)  # read together with pretrain_job's (TOGETHER)

    def validate(self) -> None:
        super().validate()
        if self.init not in INITS:
            raise PirlError(f"Unknown initialisation {self.init!r}; choose from {', '.join(INITS)}.")
        if self.init in ("pirl", "imagenet+pirl") and self.pretrain_job is None:
            raise PirlError(f"The {self.init} arm needs a pretrain run.")
        if self.more_pretrain_jobs and (self.init != "imagenet+pirl" or self.finetune.mode != "linear"):
            raise PirlError("Several pretrain runs are read together only by ImageNet+PIRL's linear probe.")

    @property
    def pretrain_jobs(self) -> list[int]:
        return [self.pretrain_job, *self.more_pretrain_jobs] if self.pretrain_job is not None else []


@dataclass
class FinetuneOutcome(Record):
    """A finetune job's result: its classes, one entry per (repeat, fold, fraction) with the test predictions,
    and the model file a bundle is exported from."""

    classes: list[str] = field(default_factory=list)
    runs: list[dict] = field(default_factory=list)  # repeat, fold, fraction, n_train, image_ids, y, probs, ...
    model: str | None = None


# The label-efficiency curve: finer at the low end on small sets, where a few hundred labels are the whole budget.
SMALL_SET_FRACTIONS = (0.05, 0.1, 0.25, 0.5, 1.0)
LARGE_SET_FRACTIONS = (0.1, 0.25, 0.5, 1.0)
MIN_LABELS_PER_CLASS = 5  # a fraction that leaves fewer training labels in a class measures noise
MAX_FINETUNES_PER_ARM = 40  # full finetuning trains one network per fold, repeat and fraction: bounded here


def default_fractions(counts: dict[str, int]) -> list[float]:
    """The label fractions a comparison measures by default: every fraction that leaves at least
    MIN_LABELS_PER_CLASS training labels in the smallest class (about 80% of a class trains in 5-fold CV)."""
    n = sum(counts.values())
    smallest = min(counts.values()) if counts else 0
    return [f for f in (SMALL_SET_FRACTIONS if n < 2000 else LARGE_SET_FRACTIONS)
            if f == 1.0 or f * 0.8 * smallest >= MIN_LABELS_PER_CLASS]


def fits_per_arm(folds: int, repeats: int, fractions: int) -> int:
    """How many probes or networks each start trains: one per fold (or the fixed split), repeat and fraction."""
    return max(1, folds) * (repeats if folds else 1) * fractions


def default_folds(n_labeled: int) -> int:
    return 5 if n_labeled < 2000 else 0


def default_repeats(mode: str, folds: int, n_labeled: int) -> int:
    """Repeated k-fold so a small set's AUC does not hinge on one deal of the folds; the linear probe is
    cheap enough to repeat, full finetuning is not."""
    return 5 if mode == "linear" and folds and n_labeled < 2000 else 1


def imagenet_problem(backbone: str, download: bool = False) -> str | None:
    """None when ImageNet weights for `backbone` can be had, else what to do. Looks at files only unless
    `download` (starting a comparison may fetch them; rendering a page never does)."""
    if backbone not in REGISTRY:
        return f"unknown backbone {backbone!r}"
    if not download:
        return imagenet_weights_problem(backbone)
    try:
        build_backbone(backbone, pretrained=True)
        return None
    except PirlError as exc:
        return str(exc)


def start(ws: Workspace, req: CompareRequest) -> int:
    """Validate, queue one finetune job per arm, and record the comparison. Returns its id."""
    store = ws.store
    dataset = store.dataset(req.labeled)
    if dataset is None:
        raise PirlError(f"No dataset named {req.labeled!r}.")
    counts = store.class_counts(dataset["id"])
    if len(counts) < 2:
        raise PirlError(f"{req.labeled!r} has no labels with at least 2 classes; attach labels on the Data page.")
    unknown = set(req.inits) - set(INITS)
    if unknown:
        raise PirlError(f"Unknown initialisations {sorted(unknown)}; choose from {', '.join(INITS)}.")
    fractions = default_fractions(counts) if req.fractions is None else req.fractions
    if not fractions or not all(0 < f <= 1 for f in fractions):
        raise PirlError("Label fractions must be in (0, 1].")
    runs = []
    for job_id in req.pretrain_jobs:
        job = store.job(job_id)
        if job is None or job["kind"] != "pretrain" or not job["checkpoint"]:
            raise PirlError(f"Pretrain run #{job_id} has no checkpoint yet.")
        runs.append(job)
    if not runs:
        raise PirlError("Choose a finished pretrain run.")
    run_configs = {r["id"]: queue.config_of(r) for r in runs}
    backbone, image_size = run_configs[runs[0]["id"]].backbone, run_configs[runs[0]["id"]].image_size
    if any((c.backbone, c.image_size) != (backbone, image_size) for c in run_configs.values()):
        raise PirlError("All compared pretrain runs must share backbone and image size.")
    n_labeled = sum(counts.values())
    folds = default_folds(n_labeled) if req.folds is None else req.folds
    if folds == 1 or folds > min(counts.values()):
        raise PirlError(f"{folds} folds need at least {folds} images in every class; the smallest has "
                        f"{min(counts.values())}. Use fewer folds (0 = the fixed split).")

    notes, arms = [], []
    wants_imagenet = {"imagenet", "imagenet+pirl"} & set(req.inits)
    imagenet_missing = imagenet_problem(backbone, download=True) if wants_imagenet else None
    if "scratch" in req.inits:
        arms.append({"label": "scratch", "init": "scratch"})
    if "imagenet" in req.inits:
        if imagenet_missing:
            notes.append(f"ImageNet skipped: {imagenet_missing}")
        else:
            arms.append({"label": "ImageNet", "init": "imagenet"})
    for run in runs:
        from_imagenet = run_configs[run["id"]].pretrained_imagenet
        init = "imagenet+pirl" if from_imagenet else "pirl"
        if init in req.inits:
            pretext = run_configs[run["id"]].pretext
            name = f"{'ImageNet+PIRL' if from_imagenet else 'PIRL'} #{run['id']}"
            if len({c.pretext for c in run_configs.values()}) > 1:
                name += f" ({pretext})"
            arms.append({"label": name, "init": init, "pretrain_job": run["id"], "pretext": pretext})
    together = [a for a in arms if a["init"] == "imagenet+pirl"]
    if req.together and req.mode == "linear" and len(together) > 1:
        arms.append({"label": "ImageNet+PIRL " + "+".join(f"#{a['pretrain_job']}" for a in together) + " together",
                     "init": "imagenet+pirl", "pretrain_job": together[0]["pretrain_job"],
                     "more_pretrain_jobs": [a["pretrain_job"] for a in together[1:]],
                     "pretext": together[0]["pretext"]})
    if "pirl" in req.inits and not any(a["init"] == "pirl" for a in arms):
        notes.append("PIRL (from random weights) needs a pretrain run started from random weights; "
                     + ", ".join(f"#{r['id']}" for r in runs) + " started from ImageNet weights, so "
                     + ("it is compared as ImageNet+PIRL." if "imagenet+pirl" in req.inits else
                        "no PIRL arm was run (add ImageNet+PIRL to compare it)."))
    if "imagenet+pirl" in req.inits and not any(a["init"] == "imagenet+pirl" for a in arms):
        notes.append("ImageNet+PIRL needs a pretrain run started from ImageNet weights "
                     "(tick 'Start from ImageNet weights' on the Pretrain page); none was chosen.")
    if not arms:
        raise PirlError("Nothing to compare: " + " ".join(notes))

    repeats = req.repeats or default_repeats(req.mode, folds, n_labeled)
    trainings = fits_per_arm(folds, repeats, len(set(fractions)))
    if req.mode == "finetune" and trainings > MAX_FINETUNES_PER_ARM:
        raise PirlError(f"Full finetuning with {len(set(fractions))} label fractions and {max(1, folds)} folds trains "
                        f"{trainings} networks per start, over the limit of {MAX_FINETUNES_PER_ARM}: choose fewer "
                        "fractions or folds, or the linear probe.")
    config = ComparisonConfig(labeled_dataset_id=dataset["id"], labeled=req.labeled, backbone=backbone,
                              image_size=image_size, folds=folds, repeats=repeats if folds else 1,
                              fractions=sorted(set(fractions)), seed=req.seed, bn_dataset_id=runs[0]["dataset_id"],
                              classes=class_order(counts, dataset["info"].get("positive")),
                              finetune=FinetuneConfig(mode=req.mode, image_size=image_size, epochs=req.epochs,
                                                      seed=req.seed))
    for arm in arms:
        job = FinetuneJob(**vars(config), **arm)
        arm["job_id"] = queue.submit(ws, "finetune", job, dataset["id"], start_worker=False)
    comparison = {"kind": "comparison", "created": time.time(), "config": records.dump(config),
                  "request": asdict(req),
                  "arms": arms, "notes": notes, "classes": config.classes}
    comparison_id = store.add_evaluation(None, comparison)
    queue.ensure_worker(ws)
    return comparison_id


def comparison_config(comparison_record: dict) -> ComparisonConfig:
    """A comparison record's shared settings, typed."""
    return records.load(ComparisonConfig, comparison_record["config"])


def comparisons(ws: Workspace) -> list[dict]:
    return [e for e in ws.store.evaluations() if e["result"].get("kind") == "comparison"]


def comparison(ws: Workspace, comparison_id: int) -> dict:
    """One comparison's record (request, config, arms, notes, and its summary once complete)."""
    row = next((e for e in comparisons(ws) if e["id"] == comparison_id), None)
    if row is None:
        raise PirlError(f"No comparison {comparison_id}.")
    return row["result"]


def scores_by_job(ws: Workspace) -> dict[int, dict]:
    """finetune job id -> its result-table entry (AUC with CI) in the completed comparison it belongs to."""
    scores = {}
    for comp in comparisons(ws):
        job_of = {a["label"]: a["job_id"] for a in comp["result"]["arms"]}
        for entry in (comp["result"].get("summary") or {}).get("table", []):
            if entry["arm"] in job_of:
                scores[job_of[entry["arm"]]] = entry
    return scores


MIN_PER_CLASS = 10


def _validation_threshold(y: np.ndarray, probs: np.ndarray | None) -> float | None:
    """The Youden threshold of a binary model on its validation predictions; None with fewer than
    MIN_PER_CLASS of a class (a threshold chosen on a handful of images means nothing)."""
    if probs is None or probs.shape[1] != 2 or np.bincount(y, minlength=2).min() < MIN_PER_CLASS:
        return None
    return round(youden_threshold(y, probs), 4)


def decision_threshold(ws: Workspace, job_id: int) -> dict | None:
    """For a binary model: the probability of the second class above which the exported model (the first
    fold's, on all its training labels) calls it. Chosen on validation predictions of that model's own
    training part, never on test images: the Youden index (the best sensitivity + specificity) on the
    out-of-inner-fold predictions of the linear probe, or on the validation split of a full finetune."""
    job = ws.store.job(job_id)
    runs = queue.result_of(job).runs if job else []
    exported = next((r for r in runs if r["fraction"] == max(x["fraction"] for x in runs)), None)
    if exported is None or exported.get("val_threshold") is None:
        return None
    part = ("out-of-fold predictions of an inner cross-validation on its training images"
            if queue.config_of(job).finetune.mode == "linear" else "predictions on its validation split")
    return {"value": exported["val_threshold"],
            "how": f"chosen on {part}, never on test images: the threshold with the best sensitivity + "
                   "specificity (Youden index)"}


# -- the finetune job --------------------------------------------------------------------------
def _backbone_for(arm: FinetuneJob, ws: Workspace):
    """The arm's starting backbone. ImageNet+PIRL's linear probe reads the run's features (every run's, together)
    beside the ImageNet ones the runs started from (SideBySide, measured.SIDE_BY_SIDE and TOGETHER)."""
    if arm.init == "scratch":
        return build_backbone(arm.backbone)
    if arm.init == "imagenet":
        return build_backbone(arm.backbone, pretrained=True)
    pretrained = [load_pretrained(ws.store.job(j)["checkpoint"])[0].backbone for j in arm.pretrain_jobs]
    if arm.init == "imagenet+pirl" and arm.finetune.mode == "linear":
        return SideBySide([*pretrained, build_backbone(arm.backbone, pretrained=True)])
    return pretrained[0]


def split_groups(ws: Workspace, dataset_id: int, rows: list[dict]) -> list[str | None]:
    """Each image's group for splitting: the user's group joined with its near-copies (duplicates.py)."""
    position = {r["id"]: i for i, r in enumerate(ws.store.images(dataset_id))}
    thumbs = dataset_cache(ws, dataset_id, duplicates.SIGNATURE_SIZE)
    signatures = np.stack([duplicates.signature(thumbs[position[r["id"]]]) for r in rows])
    return duplicates.merge_groups([r["group_id"] for r in rows], duplicates.clusters(signatures))


def data_splits(rows: list[dict], groups: list[str | None], folds: int, seed: int, repeats: int = 1) -> list[dict]:
    """Per repeat and fold (or the fixed split): positions of train, val and test images in `rows`.
    Each repeat deals the folds anew; a group never straddles train, val and test."""
    labels = [r["label"] for r in rows]
    if not folds:
        by_split = {s: [i for i, r in enumerate(rows) if r["split"] == s] for s in ("train", "val", "test")}
        return [{"repeat": 0, "fold": None, **by_split}]
    out = []
    for rep in range(repeats):
        fold_of = assign_folds(labels, groups, folds, seed + 1000 * rep)
        for k in range(folds):
            rest = [i for i in range(len(rows)) if fold_of[i] != k]
            inner = assign_splits([labels[i] for i in rest], [groups[i] for i in rest], {"train": 0.82, "val": 0.18},
                                  seed + 1000 * rep + k)
            out.append({"repeat": rep, "fold": k, "train": [i for i, s in zip(rest, inner) if s == "train"],
                        "val": [i for i, s in zip(rest, inner) if s == "val"],
                        "test": [i for i in range(len(rows)) if fold_of[i] == k]})
    return out


def _bn_reference(ws: Workspace, cfg: FinetuneJob, backbone) -> None:
    """The scratch arm gets BatchNorm statistics of whole images of the unlabeled pool: a random network probed
    through running statistics it never estimated sees every image alike (a chance-level AUC). The ImageNet arm
    keeps ImageNet's: re-estimating them on the pool lowered its probe AUC on BUSI (0.814 -> 0.780 binary,
    0.835 -> 0.813 3-class; bench/linear_probe.py --no-pretrain)."""
    if cfg.init == "scratch" and cfg.bn_dataset_id is not None:
        pool = dataset_cache(ws, cfg.bn_dataset_id, cache_size_for(cfg.image_size))
        recompute_bn_stats(backbone, pool, cfg.image_size, seed=cfg.seed)


@job_kind("finetune", config=FinetuneJob, result=FinetuneOutcome)
def finetune_job(ctx: JobContext) -> FinetuneOutcome:
    ws, cfg = ctx.ws, ctx.config
    store = ws.store
    dataset_id = cfg.labeled_dataset_id
    all_rows = store.images(dataset_id)
    position = {r["id"]: i for i, r in enumerate(all_rows)}
    rows = [r for r in all_rows if r["label"] is not None]
    classes = cfg.classes or sorted({r["label"] for r in rows})
    y = np.array([classes.index(r["label"]) for r in rows])
    images = dataset_cache(ws, dataset_id, cache_size_for(cfg.image_size))
    at = np.array([position[r["id"]] for r in rows])
    ft = cfg.finetune
    groups = split_groups(ws, dataset_id, rows) if cfg.duplicate_aware else [r["group_id"] for r in rows]
    group_codes = np.unique([g if g is not None else f"\0{i}" for i, g in enumerate(groups)], return_inverse=True)[1]
    splits = data_splits(rows, groups, cfg.folds, cfg.seed, cfg.repeats)
    plan = [(s, f) for s in splits for f in cfg.fractions]
    results, step = [], 0
    linear = ft.mode == "linear"
    if linear:  # frozen features: computed once, shared by every fold and repeat
        ctx.progress(0.0, f"{cfg.label}: features of {len(rows)} images")
        backbone = _backbone_for(cfg, ws)
        _bn_reference(ws, cfg, backbone)
        features = embed_dataset(backbone, images[at], cfg.image_size).numpy()  # `at` is in cache order

    def subset(idx):
        idx = np.sort(np.asarray(idx, dtype=int))
        return images[at[idx]], y[idx]

    for n, (split, fraction) in enumerate(plan):
        if ctx.should_stop():
            break
        train_idx = np.asarray(split["train"])
        train_idx = train_idx[nested_subset([rows[i]["label"] for i in train_idx], fraction, cfg.seed)]
        val_idx = np.asarray(split["val"], dtype=int)
        test_idx = np.sort(np.asarray(split["test"], dtype=int))
        where = (f"fold {split['fold'] + 1}/{cfg.folds}" + (f", repeat {split['repeat'] + 1}"
                 if cfg.repeats > 1 else "")) if split["fold"] is not None else "fixed split"
        ctx.progress(n / len(plan), f"{cfg.label}: {where}, {fraction:.0%} of the training labels")
        if linear:  # the validation part joins training: the inner cross-validation picks the regularisation
            fit_idx = np.sort(np.concatenate([train_idx, val_idx[nested_subset([rows[i]["label"] for i in val_idx],
                                                                              fraction, cfg.seed)]]))
            probe = fit_linear_probe(features[fit_idx], y[fit_idx], len(classes), group_codes[fit_idx], cfg.seed)
            probs = probe.predict_proba(features[test_idx])
            val_y = y[fit_idx]
            val_probs = validation_probs(features[fit_idx], val_y, probe, group_codes[fit_idx], cfg.seed)
            model = probe_classifier(backbone, probe)
            step += 1
            ctx.metrics(step, n + 1, {"val_auc": max(probe.cv_auc.values(), default=float("nan"))})
            history = [{"val_auc": v} for v in probe.cv_auc.values()]
            n_train = len(fit_idx)
        else:
            def on_epoch(epoch, record, n=n):
                nonlocal step
                step += 1
                ctx.metrics(step, epoch, {k: v for k, v in record.items() if k != "epoch" and v == v})

            model, history = finetune(_backbone_for(cfg, ws), len(classes), subset(train_idx),
                                      subset(val_idx), ft, on_epoch, ctx.should_stop,
                                      pretrained=cfg.init != "scratch")
            probs = predict(model, images[at[test_idx]], cfg.image_size)  # the test part, seen only now
            val_images, val_y = subset(val_idx)
            val_probs = predict(model, val_images, cfg.image_size)
            n_train = len(train_idx)
        if fraction == max(cfg.fractions) and not (ctx.folder / "model.pt").exists():
            # The exported model: the first (fold's) model trained on all its training labels.
            checkpoint.save_atomic({"format": checkpoint.FORMAT, "kind": "classifier",
                                    "state_dict": model.state_dict(), "classes": classes, "backbone": cfg.backbone,
                                    "parts": parts_of(model.backbone),
                                    "image_size": cfg.image_size, "fold": split["fold"], "n_train": int(n_train),
                                    "test_image_ids": [rows[i]["id"] for i in test_idx]}, ctx.folder / "model.pt")
        results.append({"repeat": split["repeat"], "fold": split["fold"], "fraction": fraction,
                        "n_train": int(n_train), "image_ids": [rows[i]["id"] for i in test_idx],
                        "y": y[test_idx].tolist(), "probs": np.round(probs, 6).tolist(),
                        "test_auc": auc_score(y[test_idx], probs),
                        "val_threshold": _validation_threshold(val_y, val_probs),
                        "best_val_auc": max((h["val_auc"] for h in history if h["val_auc"] == h["val_auc"]),
                                            default=None), "epochs_run": len(history)})
    return FinetuneOutcome(classes, results, str(ctx.folder / "model.pt"))


# -- results -----------------------------------------------------------------------------------
def _pooled(runs: list[dict], fraction: float) -> tuple[list[int], np.ndarray, np.ndarray]:
    """Out-of-fold predictions at one label fraction, one row per image in id order; with repeated
    k-fold an image's probabilities are the mean of its repeats (each from a model that never saw it)."""
    by_image: dict[int, tuple[int, list]] = {}
    for r in runs:
        if r["fraction"] == fraction:
            for image_id, label, p in zip(r["image_ids"], r["y"], r["probs"]):
                by_image.setdefault(image_id, (label, []))[1].append(p)
    ids = sorted(by_image)
    y = np.array([by_image[i][0] for i in ids])
    probs = np.array([np.mean(by_image[i][1], axis=0) for i in ids])
    return ids, y, probs


def _efficiency(runs: list[dict], fractions: list[float], n_boot: int) -> dict:
    """Test AUC at each label fraction, and its bootstrap interval."""
    cis = {str(f): auc_with_ci(*_pooled(runs, f)[1:], n_boot=n_boot) for f in fractions}
    return {"efficiency": {f: c["auc"] for f, c in cis.items()},
            "efficiency_ci": {f: [c["ci_low"], c["ci_high"]] for f, c in cis.items()}}


def _labels_used(runs: list[dict], fraction: float) -> float:
    """The mean number of training labels a model at `fraction` was fitted on (over folds and repeats)."""
    return float(np.mean([r["n_train"] for r in runs if r["fraction"] == fraction]))


def by_fraction(arm: dict, baseline: dict, fractions: list[float], n_boot: int) -> dict:
    """The paired test of `arm` against `baseline` at every label fraction, and the labels-saved reading of the
    curves (labels_saved.py), on the same test images."""
    pooled = {name: {f: _pooled(a["runs"], f) for f in fractions} for name, a in (("a", arm), ("b", baseline))}
    if any(not np.array_equal(pooled["a"][f][0], pooled["b"][f][0]) for f in fractions):
        return {}
    y = pooled["a"][fractions[0]][1]
    tests = {str(f): paired_bootstrap_p(y, pooled["a"][f][2], pooled["b"][f][2], n_boot=n_boot) for f in fractions}
    for test in tests.values():
        test["outcome"] = outcome(test)
    points = labels_saved.labels_saved(
        y, {f: pooled["a"][f][2] for f in fractions}, {f: pooled["b"][f][2] for f in fractions},
        {f: _labels_used(arm["runs"], f) for f in fractions}, {f: _labels_used(baseline["runs"], f) for f in fractions},
        n_boot=max(100, n_boot // 5))
    all_labels = _labels_used(baseline["runs"], max(fractions))
    sentence = labels_saved.sentence(arm["label"], baseline["label"], points[0], all_labels)
    for point in points:  # stored as JSON: "more than all of them" is null there
        point.update({k: None if point[k] == labels_saved.BEYOND else point[k]
                      for k in ("baseline_labels", "low", "high")})
    return {"arm": arm["label"], "baseline": baseline["label"], "tests": tests, "points": points,
            "all_labels": all_labels, "sentence": sentence}


def summarize(ws: Workspace, comparison_id: int, n_boot: int = 1000) -> dict:
    """Everything the Compare page shows, from the arms' stored predictions. Cached when complete."""
    comp = comparison(ws, comparison_id)
    if comp.get("summary"):
        return comp["summary"]
    store = ws.store
    arms, done = [], True
    for arm in comp["arms"]:
        job = store.job(arm["job_id"])
        arms.append({**arm, "status": job["status"], "progress": job["progress"], "message": job["message"],
                     "runs": queue.result_of(job).runs if job["status"] == "succeeded" else [],
                     "reads": queue.config_of(job).pretrain_jobs})
        done &= job["status"] in queue.FINISHED
    config = comparison_config(comp)
    full = config.full_fraction
    table, predictions = [], {}
    for arm in arms:
        if not arm["runs"]:
            continue
        ids, y, probs = _pooled(arm["runs"], full)
        order = np.argsort(ids)
        predictions[arm["label"]] = (np.asarray(ids)[order], y[order], probs[order])
        ci = auc_with_ci(y, probs, n_boot=n_boot)
        fold_aucs = [r["test_auc"] for r in arm["runs"] if r["fraction"] == full]
        entry = {"arm": arm["label"], "init": arm["init"], **ci, "fold_aucs": fold_aucs,
                 "fold_sd": float(np.std(fold_aucs)) if len(fold_aucs) > 1 else None,
                 "roc": {c: roc_points(y, probs, c) for c in range(probs.shape[1])},
                 **_efficiency(arm["runs"], config.fractions, max(50, n_boot // 4))}
        table.append(entry)
    for entry in table:  # PIRL arms against each baseline, on the same images
        if entry["init"] not in ("pirl", "imagenet+pirl"):
            continue
        entry["vs"] = {}
        ids_a, y_a, p_a = predictions[entry["arm"]]
        for other in table:
            if other["init"] in BASELINES or (entry["init"] == "imagenet+pirl" and other["init"] == "pirl"):
                ids_b, _, p_b = predictions[other["arm"]]
                if np.array_equal(ids_a, ids_b):
                    entry["vs"][other["arm"]] = paired_bootstrap_p(y_a, p_a, p_b, n_boot=2 * n_boot)
    verdicts = []
    for arm in arms:  # a run that learned nothing is said first: its verdicts are about untrained features
        why = next(filter(None, (pretraining.learned_nothing(ws, j) for j in arm["reads"])), None)
        if why and arm["runs"]:
            verdicts.append({"text": f"{arm['label']}: {why}", "outcome": "not learned"})
    for entry in table:
        entry["chance"] = entry["ci_low"] <= 0.5  # its interval holds 0.5: not better than chance
        first = "ImageNet" if entry["init"] == "imagenet+pirl" else "scratch"
        for other in sorted(entry.get("vs", {}), key=lambda o: o != first):
            test = entry["vs"][other]
            verdicts.append({"text": verdict(entry["arm"], other, test, 2 * n_boot), "outcome": outcome(test)})
    by_label = {a["label"]: a for a in arms if a["runs"]}
    saved = []
    if len(config.fractions) > 1:  # PIRL arms against the best baseline at full labels, fraction by fraction
        baselines = [e for e in table if e["init"] in BASELINES]
        for entry in (e for e in table if e["init"] in ("pirl", "imagenet+pirl") and baselines):
            best = max(baselines, key=lambda e: e["auc"])
            reading = by_fraction(by_label[entry["arm"]], by_label[best["arm"]], config.fractions,
                                   max(200, n_boot // 2))
            if reading:
                saved.append(reading)
    summary = {"arms": [{k: a[k] for k in ("label", "init", "job_id", "status", "progress", "message")}
                        for a in arms], "table": table, "verdicts": verdicts, "complete": done,
               "labels_saved": saved,
               "classes": comp["classes"],
               "predictions": {k: {"image_ids": v[0].tolist(), "y": v[1].tolist(), "probs": v[2].tolist()}
                               for k, v in predictions.items()}}
    if done:
        store.update_evaluation(comparison_id, {**comp, "summary": summary})
    return summary
