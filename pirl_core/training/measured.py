"""What the product's pretraining defaults were measured to be worth: the one place the app, the README's table
and the docstrings take these figures from (tests/test_structure.py checks the README against them).

Each figure is from BUSI (780 breast-ultrasound images, malignant vs rest and 3 classes) on a 2-core CPU, linear
probe, duplicate-aware 5 x 5-fold, but those of SECOND_TASK and the *_SECOND_TASK tables (cxr256, viral vs
bacterial pneumonia, patient-aware folds); docs/results.md has the tables, the dates and the commands. Plain
constants: the command line quotes them without importing torch.
"""

from __future__ import annotations

COMMAND = "python bench/compare_quality.py ../shared/data/busi256 --modes linear"  # --random-minutes 30: RANDOM_START

# The CPU default, ImageNet+PIRL: efficientnet_lite0 from ImageNet, 128 px, 60 epochs (COMMAND, 2026-12-05).
CPU_DEFAULT = {
    "images": 780, "minutes": 35.3, "epochs": 60,  # engine/config.py CPU_EPOCHS (tests/test_structure.py)
    "auc": {"binary": 0.930, "3-class": 0.927},
    "imagenet_auc": {"binary": 0.877, "3-class": 0.875},
    "gain_over_imagenet": {"binary": 0.053, "3-class": 0.052},
    "half_epochs_gain": 0.037,  # binary, the earlier default of 30 epochs
}

# The same default on a second task: cxr256 viral vs bacterial pneumonia (1,113 chest X-rays of 782 children).
SECOND_TASK = {"task": "viral vs bacterial pneumonia on chest X-rays", "images": 1500, "auc": 0.775,
               "imagenet_auc": 0.741, "gain_over_imagenet": 0.034}

# The default again with only the seed changed (`pirl pretrain --seed N`), each on its task's folds (2026-12-07;
# docs/results.md "How much one pretraining varies"): ImageNet+PIRL's AUC with every label and with 10 % of them,
# and its gain over ImageNet with every label. The figures above are seed 0's.
OTHER_SEEDS = {1: {"auc": 0.927, "auc_10": 0.821, "gain_over_imagenet": 0.050},
               2: {"auc": 0.917, "auc_10": 0.819, "gain_over_imagenet": 0.039}}
OTHER_SEEDS_SECOND_TASK = {1: {"auc": 0.789, "auc_10": 0.728, "gain_over_imagenet": 0.048}}

# augment="scan" (brightness, contrast, gamma, blur) instead of the paper's "photo", otherwise the CPU default, on the
# binary task's folds (2026-12-05; docs/results.md "Augmentations for grayscale scans").
SCAN_AUGMENT = {"auc": 0.919, "photo_auc": CPU_DEFAULT["auc"]["binary"]}
SCAN_AUGMENT_SECOND_TASK = {"auc": 0.795, "photo_auc": SECOND_TASK["auc"]}  # on SECOND_TASK's folds (2026-12-06)

# The input size of pretraining and of the comparison (a run is probed at the size it was trained at), otherwise the
# CPU default, binary task, the default run's folds (2026-12-06; docs/results.md "The input size of pretraining"):
# ImageNet+PIRL's AUC with every label and with 10 % of them, and the pretraining's minutes for 780 images alone on
# a 2-core CPU (160 px: from the speed of its last quarter, run alone, 17 images/s).
IMAGE_SIZES = {
    96: {"auc": 0.925, "auc_10": 0.847, "minutes": 23},
    128: {"auc": CPU_DEFAULT["auc"]["binary"], "auc_10": 0.849, "minutes": round(CPU_DEFAULT["minutes"])},
    160: {"auc": 0.935, "auc_10": 0.815, "minutes": 45},
}
# The same sizes on SECOND_TASK's folds (96 px 2026-12-06, 160 px 2026-12-07), minutes for its 1,500 images alone on
# the same CPU (160 px ran on a faster 2-core box: its minutes there times the ratio of the default's speed on BUSI).
IMAGE_SIZES_SECOND_TASK = {
    96: {"auc": 0.793, "auc_10": 0.724, "minutes": 48},
    128: {"auc": SECOND_TASK["auc"], "auc_10": 0.717, "minutes": 77},
    160: {"auc": 0.785, "auc_10": 0.722, "minutes": 83},
}

# How long, otherwise the CPU default, each on its task's default folds (docs/results.md "How long"): ImageNet+PIRL's
# AUC with every label and with 10 % of them, and minutes alone on a 2-core CPU (an epoch takes the same time at any
# length: the 30-epoch minutes are half the 60-epoch run's, the 120-epoch ones twice). BUSI's 30 and 60 epochs were one
# comparison (2026-12-05), its 120 (2026-12-07) on the same folds; cxr256's 30 epochs (2026-12-03) and 60 (2026-12-05)
# on the same folds.
EPOCHS = {
    30: {"auc": 0.914, "auc_10": 0.821, "minutes": 18},
    60: IMAGE_SIZES[128],
    120: {"auc": 0.934, "auc_10": 0.831, "minutes": 71},
}
EPOCHS_SECOND_TASK = {
    30: {"auc": 0.768, "auc_10": 0.714, "minutes": 39},
    60: IMAGE_SIZES_SECOND_TASK[128],
}

# The pretext, otherwise the CPU default, on the default run's folds (2026-12-06; docs/results.md "Pretexts at the
# default"): ImageNet+PIRL's AUC with every label and with 10 % of them (malignant vs rest), and the pretraining's
# minutes for 780 images alone on a 2-core CPU.
PRETEXTS = {
    "jigsaw": IMAGE_SIZES[128],  # the default run
    "rotation": {"auc": 0.927, "auc_10": 0.854, "minutes": 34},
    "jigsaw+rotation": {"auc": 0.937, "auc_10": 0.850, "minutes": 52},
}
# The same on SECOND_TASK's folds (2026-12-07), minutes for its 1,500 images alone on the same CPU (jigsaw+rotation
# ran on a faster 2-core box: its minutes there times the ratio of the default's speed on BUSI on the two boxes).
PRETEXTS_SECOND_TASK = {
    "jigsaw": IMAGE_SIZES_SECOND_TASK[128],  # the default run
    "rotation": {"auc": 0.764, "auc_10": 0.715, "minutes": 68},
    "jigsaw+rotation": {"auc": 0.772, "auc_10": 0.697, "minutes": 90},
}

# Which layers adapt: the backbone learning at a share of the heads' rate (`pirl pretrain --backbone-lr-scale`, command
# line only), otherwise the default (60 epochs), each pair on one task's folds: ImageNet+PIRL's AUC with every label
# and with 10 % of them. On BUSI both runs in one comparison, the default's being its seed-2 run (2026-12-07;
# docs/results.md "Which layers adapt, at 60 epochs on BUSI"; at 30 epochs the slower backbone had gained nothing over
# ImageNet there); on SECOND_TASK (2026-12-07, "Which layers adapt, on the second task").
BACKBONE_LR_SCALES = {1: OTHER_SEEDS[2], 0.1: {"auc": 0.906, "auc_10": 0.834}}
BACKBONE_LR_SCALES_SECOND_TASK = {1: IMAGE_SIZES_SECOND_TASK[128], 0.1: {"auc": 0.768, "auc_10": 0.716}}

# What ImageNet+PIRL's linear probe reads (2026-12-07; docs/results.md "ImageNet features kept beside PIRL's"): the
# pretrained backbone's features alone (every figure above) against them beside the ImageNet backbone's
# (engine/backbones.py SideBySide, the probe since then), each pair on the same folds: AUC with every label and with
# 10 % of them. bench/side_by_side.py gives them.
SIDE_BY_SIDE = {
    "seed 0 again": {"alone": {"auc": 0.923, "auc_10": 0.833}, "side_by_side": {"auc": 0.925, "auc_10": 0.857}},
    "seed 2": {"alone": OTHER_SEEDS[2], "side_by_side": {"auc": 0.925, "auc_10": 0.834}},
    "120 epochs": {"alone": EPOCHS[120], "side_by_side": {"auc": 0.939, "auc_10": 0.841}},
}
SIDE_BY_SIDE_SECOND_TASK = {
    "seed 0 again": {"alone": {"auc": 0.772, "auc_10": 0.737}, "side_by_side": {"auc": 0.784, "auc_10": 0.723}},
    "jigsaw+rotation": {"alone": PRETEXTS_SECOND_TASK["jigsaw+rotation"],
                        "side_by_side": {"auc": 0.777, "auc_10": 0.710}},
}

# Two runs read together: one linear probe on both runs' features beside the ImageNet ones (the Compare page's
# "together" arm, SideBySide of three backbones), on the same folds (2026-12-07; docs/results.md "Two runs read
# together"; bench/side_by_side.py WS RUN1,RUN2 --together): AUC with every label and with 10 % of them of each run
# beside ImageNet, of both together, and of ImageNet's features alone.
TOGETHER = {"runs": "two seeds of the default",
            "each": [SIDE_BY_SIDE["seed 2"]["side_by_side"], SIDE_BY_SIDE["seed 0 again"]["side_by_side"]],
            "together": {"auc": 0.932, "auc_10": 0.850}, "imagenet": {"auc": 0.877, "auc_10": 0.796}}
TOGETHER_SECOND_TASK = {"runs": "two seeds of the default",
                        "each": [SIDE_BY_SIDE_SECOND_TASK["seed 0 again"]["side_by_side"],
                                 {"auc": 0.797, "auc_10": 0.732}],  # seed 1, a new run
                        "together": {"auc": 0.791, "auc_10": 0.728}, "imagenet": {"auc": 0.741, "auc_10": 0.657}}

# PIRL from random weights: resnet18 at 96 px for 30 minutes; the mean gain over untrained features of four seeds
# (bench/linear_probe.py --start random --minutes 30 --seed 0..3), which ranged as RANDOM_START["seed_range"].
RANDOM_START = {
    "minutes": 30, "epochs": "65-80",
    "mean_gain": {"binary": 0.081, "3-class": 0.073},
    "seed_range": (0.03, 0.10),
    "seeds": 4,
    "product_gain": {"binary": 0.088, "3-class": 0.058},  # one run: COMMAND --random-minutes 30 (2026-11)
}


def cpu_default_sentence() -> str:
    """What the Pretrain page says about the default start."""
    d, t = CPU_DEFAULT, SECOND_TASK
    return (f"PIRL continues from ImageNet features and adapts them to your images: pays off in about "
            f"{d['epochs']} epochs (on a 2-core CPU, about {d['images']} images: about {round(d['minutes'])} minutes, "
            f"+{d['gain_over_imagenet']['binary']:.3f} AUC over ImageNet features alone on breast ultrasound, "
            f"{_gains(OTHER_SEEDS)}; +{t['gain_over_imagenet']:.3f} on {t['task']}, "
            f"{_gains(OTHER_SEEDS_SECOND_TASK)}; {d['epochs'] // 2} epochs gave "
            f"+{d['half_epochs_gain']:.3f} on breast ultrasound).")


def random_start_sentence() -> str:
    """What the Pretrain page says about a random start."""
    low, high = RANDOM_START["seed_range"]
    return (f"PIRL learns everything from your images: it needs many steps. On a 2-core CPU, "
            f"{RANDOM_START['minutes']} minutes (resnet18 at 96 px, set under Advanced settings; about 800 images: "
            f"{RANDOM_START['epochs']} epochs) beat untrained features by about "
            f"{RANDOM_START['mean_gain']['binary']:.2f} AUC on a two-class task and "
            f"{RANDOM_START['mean_gain']['3-class']:.2f} on a three-class one ({RANDOM_START['seeds']} runs; one run "
            f"varies from about {low:.2f} to {high:.2f}); shorter runs gave less.")


def augment_sentence() -> str:
    """The Pretrain page's help for the augmentation choice."""
    a, b = SCAN_AUGMENT, SCAN_AUGMENT_SECOND_TASK
    return ("How the two views of an image differ in brightness, contrast, colour and sharpness. AUC of scan against "
            f"photo: {a['auc']:.3f} against {a['photo_auc']:.3f} on breast ultrasound, {b['auc']:.3f} against "
            f"{b['photo_auc']:.3f} on {SECOND_TASK['task']}. The scan views did not do better on both by "
            "more than one run varies, so photo stays the default.")


def image_size_sentence() -> str:
    """The Pretrain page's help for the image size."""
    return ("The side in pixels that images are trained and compared at; larger is slower. AUC of ImageNet+PIRL on "
            f"a 2-core CPU: {_both_tasks(IMAGE_SIZES, IMAGE_SIZES_SECOND_TASK, ' px')}. 128 px is the default: no size "
            "did better on both by more than one run varies; 96 px did as well on both in about two thirds of the "
            "time, the choice when time is short.")


def epochs_sentence() -> str:
    """The Pretrain page's help for the number of epochs: what a longer run buys."""
    return ("How many times the run goes through every image; the minutes grow in step. AUC of ImageNet+PIRL on a "
            f"2-core CPU: {_both_tasks(EPOCHS, EPOCHS_SECOND_TASK, ' epochs')}. {CPU_DEFAULT['epochs']} is the "
            f"default: it did better than {CPU_DEFAULT['epochs'] // 2} on both tasks, and "
            f"{CPU_DEFAULT['epochs'] * 2} did no better than it on breast ultrasound by more than one run varies.")


def pretext_sentence() -> str:
    """The Pretrain page's help for the pretext."""
    return ("What the two views of an image differ by, which the features learn to ignore. AUC of ImageNet+PIRL on "
            f"a 2-core CPU: {_both_tasks(PRETEXTS, PRETEXTS_SECOND_TASK)}. Rotation and jigsaw+rotation matched jigsaw "
            "on breast ultrasound and fell behind it on chest X-rays, whose orientation never changes, so the "
            "paper's jigsaw stays the default; jigsaw+rotation also takes up to half as long again.")


def backbone_lr_scale_sentence() -> str:
    """The command line's help for --backbone-lr-scale."""
    busi, cxr = BACKBONE_LR_SCALES, BACKBONE_LR_SCALES_SECOND_TASK
    return ("the backbone's learning rate as a share of the heads' (default 1: every layer learns at one rate). AUC of "
            "ImageNet+PIRL at " + " / ".join(map(str, busi)) + ", with every label and with a tenth: on breast "
            f"ultrasound {_per_choice(busi, 'auc')}, {_per_choice(busi, 'auc_10')}; on "
            f"{SECOND_TASK['task']} {_per_choice(cxr, 'auc')}, {_per_choice(cxr, 'auc_10')}. A tenth did no better "
            "on either task (in half the epochs on breast ultrasound it was no better than ImageNet features), so "
            "1 stays the default.")


def side_by_side_sentence() -> str:
    """The Compare page's help for the starts: what each is, and what ImageNet+PIRL's probe reads."""
    def pairs(table: dict, key: str) -> str:
        return " and ".join(f"{f['alone'][key]:.3f} -> {f['side_by_side'][key]:.3f}" for f in table.values())

    def gains(runs, key: str) -> str:
        g = [f["side_by_side"][key] - f["alone"][key] for f in runs]
        return f"by {min(g):.3f} to {max(g):.3f}"

    busi, cxr = SIDE_BY_SIDE, SIDE_BY_SIDE_SECOND_TASK
    return ("Scratch: random weights. ImageNet: the ImageNet weights. PIRL: pretrained on your images from random "
            "weights. ImageNet+PIRL: pretrained on your images from the ImageNet weights; its linear probe reads those "
            "features beside the ImageNet ones it started from, which keep what pretraining moved away from. AUC of "
            "the pretrained features alone -> side by side, run by run: on breast ultrasound "
            f"{pairs(busi, 'auc')} with every label, {pairs(busi, 'auc_10')} with a tenth; on {SECOND_TASK['task']} "
            f"{pairs(cxr, 'auc')} with every label, {pairs(cxr, 'auc_10')} with a tenth. Higher with every label in "
            f"every run on both tasks ({gains([*busi.values(), *cxr.values()], 'auc')}); with a tenth, higher on "
            f"breast ultrasound ({gains(busi.values(), 'auc_10')}) and level on chest X-rays.")


def together_sentence() -> str:
    """The Compare page's help for reading several runs together."""
    def figures(table: dict, key: str) -> str:
        return (" and ".join(f"{f[key]:.3f}" for f in table["each"]) + f" -> {table['together'][key]:.3f} (ImageNet "
                f"{table['imagenet'][key]:.3f})")

    busi, cxr = TOGETHER, TOGETHER_SECOND_TASK
    return ("With two or more ImageNet+PIRL runs chosen (the same settings, another seed; with one such run, a button "
            "under the form starts the second), one more linear probe reads every run's features beside the ImageNet "
            "ones. Runs of one recipe differ by chance, most with few labels, and which run is the better one is not "
            "known in advance; read together, the figure was at or above the two runs' average every time, and above "
            "both with every label on breast ultrasound. AUC of two runs, "
            f"each beside ImageNet -> both: on breast ultrasound ({busi['runs']}) {figures(busi, 'auc')} with every "
            f"label, {figures(busi, 'auc_10')} with a tenth; on {SECOND_TASK['task']} ({cxr['runs']}) "
            f"{figures(cxr, 'auc')} with every label, {figures(cxr, 'auc_10')} with a tenth. Each run costs its own "
            "pretraining time.")


def _both_tasks(first: dict, second: dict, unit: str = "") -> str:
    """'on breast ultrasound (N images), FIGURES; on the second task (M images), FIGURES'."""
    return (f"on breast ultrasound ({CPU_DEFAULT['images']} images), {_figures(first, unit)}; "
            f"on {SECOND_TASK['task']} ({SECOND_TASK['images']:,} images), {_figures(second, unit)}")


def _figures(table: dict, unit: str = "") -> str:
    """'CHOICE: AUC with every label, AUC with a tenth, about M minutes; ...' for a table of measured choices."""
    return "; ".join(f"{choice}{unit}: {f['auc']:.3f} with every label, {f['auc_10']:.3f} with a tenth, about "
                     f"{f['minutes']} minutes" for choice, f in table.items())


def _gains(runs: dict) -> str:
    """'+0.050 with another seed' or '+0.050 and +0.039 with other seeds': the gains over ImageNet of such runs."""
    gains = [f"+{f['gain_over_imagenet']:.3f}" for f in runs.values()]
    if len(gains) == 1:
        return f"{gains[0]} with another seed"
    return f"{', '.join(gains[:-1])} and {gains[-1]} with other seeds"


def _per_choice(table: dict, key: str) -> str:
    """'0.919 / 0.877': one figure for each choice of a table, in its order."""
    return " / ".join(f"{f[key]:.3f}" for f in table.values())
