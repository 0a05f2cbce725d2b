"""Pretraining settings: one dataclass, its defaults for the machine, and its validation."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from ..errors import PirlError
from .backbones import REGISTRY
from .choices import AUGMENTS, PRETEXTS
from .optim import resolve_device
from .views import ViewSizes

# Base learning rate per 256 images. The paper's 0.03 is for 200+ epoch runs; at the short CPU budgets
# here (15 epochs of ~1,000 images: under 200 steps) 8x that learned clearly more on BUSI (linear probe,
# resnet18 from random: 0.70 at 0.03, 0.77-0.78 at 0.24; bench/linear_probe.py --lr ...).
LR_PER_256 = 0.24
# What the BatchNorm running statistics of a checkpoint describe (engine/batchnorm.py):
# "whole_images": re-estimated on whole images (evaluation view) at every checkpoint;
# "image_pass": updated during training by the image-view pass only (the jigsaw patch pass leaves them);
# "training": updated by every pass, patches included (what the reference implementation does).
BN_STATS = ("whole_images", "image_pass", "training")
# From random weights on a CPU budget, the paper's smallest crop (0.08 of the image) is a 27 px region of a 96 px
# image, upscaled: a positive pair a network that knows nothing yet cannot match. At equal minutes (resnet18,
# 96 px, 9 min, BUSI, linear probe binary / 3-class) 0.08 gave 0.749 / 0.717, 0.3 gave 0.792 / 0.750, 0.5 gave
# 0.794 / 0.743 (bench/linear_probe.py --start random --min-scale ...; docs/results.md).
RANDOM_START_MIN_CROP = 0.3
# Epochs on a CPU. From ImageNet weights 15 epochs (180 steps of BUSI's 780 images) left the loss falling (4.83);
# 30 epochs (3.78, 16.5 min on 2 cores) probed at 0.905 / 0.910 against 0.873 / 0.875 after 15 and 0.864 / 0.864
# for ImageNet alone (binary / 3-class, lite0 at 128 px; bench/linear_probe.py --start imagenet --sizes 128
# --epochs 15 / 30): the adaptation was half done. 60 epochs (loss 2.28) went on paying on both tasks: BUSI
# malignant vs rest 0.930 against 0.914 at 30 and 0.877 for ImageNet; cxr256 viral vs bacterial 0.775 against 0.768
# at 30 and 0.741 (bench/compare_quality.py, linear, 5 x 5-fold; docs/results.md "How long"). Twice the minutes.
CPU_EPOCHS = 60
MAX_NEGATIVES = 16384  # the paper draws 32000; 16384 keeps a CPU step cheap
# Synchronised BatchNorm by default below this many images per process: BatchNorm statistics of small
# per-GPU batches are noisy, and the contrastive loss can read them as a shortcut (SimCLR, MoCo v3 sync).
SYNC_BN_BELOW = 64


@dataclass
class PretrainConfig:
    backbone: str = "resnet18"
    pretrained_imagenet: bool = False
    weights_path: str | None = None
    image_size: int = 96
    patch_size: int | None = None  # default: the paper's 64/224 of the image size
    epochs: int = 15
    time_budget_s: float | None = None  # pretrain for this long: the epochs follow from the measured step time
    batch_size: int = 64
    lr: float | None = None  # default: LR_PER_256 per 256 images
    backbone_lr_scale: float = 1.0  # the backbone learns at this share of the heads' rate (< 1 keeps more ImageNet)
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    min_crop_scale: float = 0.08  # the image view's RandomResizedCrop scale (min, 1); the paper's 0.08 at 224 px
    augment: str = "photo"  # the views' photometric augmentation: "photo" (the paper's) or "scan" (choices.py)
    negatives: int | None = None  # default: min(N - 1, MAX_NEGATIVES)
    temperature: float = 0.07
    pretext: str = "jigsaw"  # "jigsaw", "rotation" or "jigsaw+rotation"
    pretext_weight: float = 0.5  # lambda: the transformed views' terms together; the image term gets 1 - lambda
    rotation_share: float = 0.5  # jigsaw+rotation: the share of lambda that goes to the rotation term
    bank_momentum: float = 0.5
    bank_init: str = "features"  # "features": a forward pass fills the bank; "random"
    exclude_copies: bool = True  # near-copies of an image are not its negatives (the caller finds them)
    bn_stats: str = "whole_images"  # BatchNorm running statistics a checkpoint keeps; see BN_STATS
    seed: int = 0
    num_workers: int = 0
    device: str = "auto"
    channels_last: bool = True
    compile: bool = False  # torch.compile the backbone (README: Scaling says where it pays)
    nproc: int = 1  # processes (one per GPU, or CPU processes with gloo); more than 1 runs under torchrun
    nnodes: int = 1  # machines; more than 1 is launched on the cluster (README: Scaling), not by a worker
    sync_bn: bool | None = None  # BatchNorm over the global batch; default: on below SYNC_BN_BELOW per process
    checkpoint_every_s: float = 300.0
    max_steps: int | None = None  # stop early (benchmarks, smoke tests)

    @classmethod
    def defaults_for(cls, device: str = "auto", **overrides) -> PretrainConfig:
        """The product's defaults on this machine (the dataclass's own defaults are the plain, small ones).

        CPU: domain-adaptive PIRL: efficientnet_lite0 from its offline ImageNet weights, 128 px, CPU_EPOCHS
        epochs. From random weights PIRL needs far longer (30 minutes of resnet18 at 96 px; what that gained
        on BUSI is in training/measured.py) and larger smallest crops (RANDOM_START_MIN_CROP; docs/results.md).
        128 px: ImageNet features of lite0 probe at 0.814 / 0.864 / 0.850 (binary) and 0.835 / 0.864 / 0.858
        (3-class) at 96 / 128 / 160 px on BUSI (bench/linear_probe.py --sizes); 128 costs 1.8x the pixels of 96,
        160 costs 2.8x for less. PIRL itself at 96 or 160 px did no better on either task (training/measured.py
        IMAGE_SIZES, IMAGE_SIZES_SECOND_TASK).
        GPU: the paper's resnet50 at 224 px, batch 256, 200 epochs."""
        if resolve_device(device).type == "cuda":
            base = dict(backbone="resnet50", image_size=224, batch_size=256, epochs=200, num_workers=4)
        else:
            base = dict(backbone="efficientnet_lite0", pretrained_imagenet=True, image_size=128, epochs=CPU_EPOCHS)
            if not overrides.get("pretrained_imagenet", True) and not overrides.get("weights_path"):
                base["min_crop_scale"] = RANDOM_START_MIN_CROP
        return cls(device=device, **{**base, **overrides})

    @classmethod
    def from_dict(cls, data: dict) -> PretrainConfig:
        data = dict(data)
        if "jigsaw_weight" in data:  # runs made before the rotation pretext existed
            data["pretext_weight"] = data.pop("jigsaw_weight")
        data.setdefault("bn_stats", "training")  # runs made before BatchNorm statistics were re-estimated
        data.setdefault("exclude_copies", False)  # runs made before near-copies left the negatives
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise PirlError(f"Unknown pretrain settings: {', '.join(sorted(unknown))}")
        return cls(**data)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def view_sizes(self) -> ViewSizes:
        """The paper's proportions, with patches no smaller than the backbone accepts."""
        default = ViewSizes.for_image_size(self.image_size).patch
        minimum = REGISTRY[self.backbone].min_input if self.backbone in REGISTRY else 8
        return ViewSizes.for_image_size(self.image_size, self.patch_size or max(default, minimum))

    @property
    def distort(self) -> dict:
        """The views' photometric settings: the augmentation, and the largest blur in pixels (SimCLR's 2 px at 224)."""
        return {"augment": self.augment, "blur_px": 2.0 * self.image_size / 224}

    @property
    def loss_weights(self) -> dict[str, float]:
        """One weight per InfoNCE term; they sum to one."""
        lam = self.pretext_weight
        if self.pretext == "jigsaw":
            views = {"jigsaw": lam}
        elif self.pretext == "rotation":
            views = {"rotation": lam}
        else:
            views = {"jigsaw": lam * (1 - self.rotation_share), "rotation": lam * self.rotation_share}
        return {**views, "image": 1 - lam}

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else LR_PER_256 * self.batch_size / 256

    def sync_bn_for(self, per_process_batch: int) -> bool:
        return self.sync_bn if self.sync_bn is not None else per_process_batch < SYNC_BN_BELOW

    def negatives_for(self, n_images: int) -> int:
        return self.negatives if self.negatives is not None else min(n_images - 1, MAX_NEGATIVES)

    def validate(self, n_images: int | None = None) -> None:
        """Raise PirlError naming every impossible setting at once."""
        problems = []
        if self.backbone not in REGISTRY:
            problems.append(f"backbone {self.backbone!r} is not one of {', '.join(REGISTRY)}")
        if not 32 <= self.image_size <= 1024:
            problems.append(f"image size {self.image_size} must be between 32 and 1024 px")
        else:
            try:
                patch = self.view_sizes.patch
                minimum = REGISTRY[self.backbone].min_input if self.backbone in REGISTRY else 8
                if patch < minimum:
                    problems.append(f"{self.backbone} needs patches of at least {minimum} px; "
                                    f"{patch} px is too small (use a larger image size or patch size)")
            except ValueError as exc:
                problems.append(str(exc) + f" (image size {self.image_size} px"
                                + (f" is too small for {self.backbone}: use at least 96 px)"
                                   if self.backbone in REGISTRY and REGISTRY[self.backbone].min_input > 8 else ")"))
        if self.epochs < 1:
            problems.append(f"epochs must be at least 1, got {self.epochs}")
        if self.time_budget_s is not None and not self.time_budget_s >= 10:
            problems.append(f"a time budget must be at least 10 seconds, got {self.time_budget_s}")
        if not 0 < self.min_crop_scale <= 1:
            problems.append(f"the smallest crop must be a share of the image in (0, 1], got {self.min_crop_scale}")
        if self.batch_size < 2:
            problems.append(f"batch size must be at least 2, got {self.batch_size}")
        if not (1 <= self.nproc <= 1024 and 1 <= self.nnodes <= 1024):
            problems.append(f"processes and machines must be between 1 and 1024, got {self.nproc} and {self.nnodes}")
        elif self.batch_size < 2 * self.nproc * self.nnodes:
            problems.append(f"a batch of {self.batch_size} cannot be shared by {self.nproc * self.nnodes} processes: "
                            f"use a batch of at least {2 * self.nproc * self.nnodes}")
        if self.lr is not None and not self.lr > 0:
            problems.append(f"learning rate must be positive, got {self.lr}")
        if not 0 < self.backbone_lr_scale <= 1:
            problems.append("the backbone's share of the learning rate must be in (0, 1], "
                            f"got {self.backbone_lr_scale}")
        if not 0 < self.temperature <= 10:
            problems.append(f"temperature must be in (0, 10], got {self.temperature}")
        for name, value, allowed in (("augment", self.augment, AUGMENTS), ("pretext", self.pretext, PRETEXTS),
                                     ("BatchNorm statistics", self.bn_stats, BN_STATS),
                                     ("bank init", self.bank_init, ("features", "random"))):
            if value not in allowed:
                problems.append(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
        if not 0 <= self.pretext_weight <= 1:
            problems.append(f"lambda (pretext weight) must be in [0, 1], got {self.pretext_weight}")
        if not 0 <= self.rotation_share <= 1:
            problems.append(f"rotation share must be in [0, 1], got {self.rotation_share}")
        if not 0 <= self.bank_momentum < 1:
            problems.append(f"bank momentum must be in [0, 1), got {self.bank_momentum}")
        if n_images is not None:
            if n_images < 3:
                problems.append(f"PIRL needs at least 3 images, the data has {n_images}")
            elif self.negatives is not None and not 1 <= self.negatives <= n_images - 1:
                problems.append(f"negatives must be between 1 and N - 1 = {n_images - 1} "
                                f"for {n_images} images, got {self.negatives}")
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda"):
            problems.append(f"device must be auto, cpu or cuda[:N], got {self.device!r}")
        if problems:
            raise PirlError("Invalid pretrain settings: " + "; ".join(problems) + ".")
