"""The PIRL pretraining loop: config, model, resumable training.

Everything a run needs to continue lives in one checkpoint: backbone, heads, optimiser,
step, memory bank with its image ids, and RNG state. Data order and augmentation are drawn
from generators seeded by (seed, epoch) and (seed, step), so a run stopped anywhere and
resumed gives the same result as one that never stopped.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import PirlError
from . import checkpoint as ckpt
from .backbones import REGISTRY, Backbone, build_backbone
from .heads import ImageHead, PatchHead
from .loss import pirl_loss
from .memory_bank import MemoryBank
from .views import ViewSizes, eval_view, image_view, jigsaw_view, rotation_view, to_float

CHECKPOINT_FORMAT = 1
# Base learning rate per 256 images. The paper's 0.03 is for 200+ epoch runs; at the short CPU budgets
# here (15 epochs of ~1,000 images: under 200 steps) 8x that learned clearly more on BUSI (linear probe,
# resnet18 from random: 0.70 at 0.03, 0.77-0.78 at 0.24; bench/linear_probe.py --lr ...).
LR_PER_256 = 0.24
PRETEXTS = ("jigsaw", "rotation", "jigsaw+rotation")
PRETEXT_HELP = {
    "jigsaw": "the paper's choice: invariance to shuffling 3x3 patches; learns local structure and texture",
    "rotation": "invariance to 90/180/270 degree rotation; fits images whose orientation means nothing "
                "(dermoscopy, histology, cells), not chest X-rays or ultrasound with a fixed probe side",
    "jigsaw+rotation": "both: combining pretext transforms helped in the PIRL paper",
}


@dataclass
class PretrainConfig:
    backbone: str = "resnet18"
    pretrained_imagenet: bool = False
    weights_path: str | None = None
    image_size: int = 96
    patch_size: int | None = None  # default: the paper's 64/224 of the image size
    epochs: int = 15
    batch_size: int = 64
    lr: float | None = None  # default: LR_PER_256 per 256 images
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    negatives: int | None = None  # default: min(N - 1, 16384)
    temperature: float = 0.07
    pretext: str = "jigsaw"  # "jigsaw", "rotation" or "jigsaw+rotation"
    pretext_weight: float = 0.5  # lambda: the transformed views' terms together; the image term gets 1 - lambda
    rotation_share: float = 0.5  # jigsaw+rotation: the share of lambda that goes to the rotation term
    bank_momentum: float = 0.5
    bank_init: str = "features"  # "features": a forward pass fills the bank; "random"
    seed: int = 0
    num_workers: int = 0
    device: str = "auto"
    channels_last: bool = True
    compile: bool = False
    checkpoint_every_s: float = 300.0
    max_steps: int | None = None  # stop early (benchmarks, smoke tests)

    @classmethod
    def defaults_for(cls, device: str = "auto", **overrides) -> PretrainConfig:
        """CPU: resnet18 at 96 px, 15 epochs (minutes on ~1,000 images on a 2-core laptop).
        GPU: the paper's resnet50 at 224 px, batch 256, 200 epochs."""
        if resolve_device(device).type == "cuda":
            base = dict(backbone="resnet50", image_size=224, batch_size=256, epochs=200, num_workers=4)
        else:
            base = {}
        return cls(device=device, **{**base, **overrides})

    @classmethod
    def from_dict(cls, data: dict) -> PretrainConfig:
        data = dict(data)
        if "jigsaw_weight" in data:  # runs made before the rotation pretext existed
            data["pretext_weight"] = data.pop("jigsaw_weight")
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

    def negatives_for(self, n_images: int) -> int:
        return self.negatives if self.negatives is not None else min(n_images - 1, 16384)

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
        if self.batch_size < 2:
            problems.append(f"batch size must be at least 2, got {self.batch_size}")
        if self.lr is not None and not self.lr > 0:
            problems.append(f"learning rate must be positive, got {self.lr}")
        if not 0 < self.temperature <= 10:
            problems.append(f"temperature must be in (0, 10], got {self.temperature}")
        if self.pretext not in PRETEXTS:
            problems.append(f"pretext must be one of {', '.join(PRETEXTS)}, got {self.pretext!r}")
        if not 0 <= self.pretext_weight <= 1:
            problems.append(f"lambda (pretext weight) must be in [0, 1], got {self.pretext_weight}")
        if not 0 <= self.rotation_share <= 1:
            problems.append(f"rotation share must be in [0, 1], got {self.rotation_share}")
        if not 0 <= self.bank_momentum < 1:
            problems.append(f"bank momentum must be in [0, 1), got {self.bank_momentum}")
        if self.bank_init not in ("features", "random"):
            problems.append(f"bank init must be 'features' or 'random', got {self.bank_init!r}")
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


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise PirlError("CUDA was asked for but no GPU is available here; use device 'cpu' or 'auto'.")
    return torch.device(name)


class PirlModel(nn.Module):
    """Backbone + image_head f + patch_head g (the rotation pretext reuses f)."""

    def __init__(self, backbone: Backbone):
        super().__init__()
        self.backbone = backbone
        self.image_head = ImageHead(backbone.dim)
        self.patch_head = PatchHead(backbone.dim)

    def embed_images(self, x: torch.Tensor) -> torch.Tensor:
        return self.image_head(self.backbone(x))

    def embed_jigsaw(self, patches: torch.Tensor, memory_format=torch.contiguous_format) -> torch.Tensor:
        """patches (B, 9, 3, p, p) -> (B, 128)."""
        return self.patch_head(self.backbone(patches.flatten(0, 1).contiguous(memory_format=memory_format)))


@dataclass
class StepReport:
    step: int
    total_steps: int
    epoch: int
    epochs: int
    metrics: dict[str, float]
    images_per_s: float
    eta_s: float


class Callbacks:
    """What the job runner hooks into. Override any of these."""

    def on_start(self, step: int, total_steps: int) -> None:
        """Called once before training; `step` > 0 when resuming from a checkpoint."""

    def on_step(self, report: StepReport) -> None:
        pass

    def on_checkpoint(self, path: Path, step: int) -> None:
        pass

    def should_stop(self) -> bool:
        return False


@dataclass
class PretrainResult:
    checkpoint: str
    status: str  # "finished" or "stopped"
    step: int
    total_steps: int
    last_metrics: dict[str, float] = field(default_factory=dict)
    images_per_s: float = 0.0


def param_groups(modules: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on weights only: none on BatchNorm parameters or biases."""
    decay, no_decay = [], []
    for p in modules.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_at(step: int, total: int, warmup: int, base: float) -> float:
    """Linear warm-up, then cosine decay to zero."""
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _step_generator(seed: int, *keys: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed, *keys]).generate_state(1)[0]))


class _Batches(torch.utils.data.Dataset):
    """Batch i of an epoch: its bank indices and its uint8 images, gathered from the cache."""

    def __init__(self, images: np.ndarray, order: torch.Tensor, batch_size: int, start: int):
        self.images, self.order, self.batch_size, self.start = images, order, batch_size, start

    def __len__(self) -> int:
        return len(self.order) // self.batch_size - self.start

    def __getitem__(self, i: int):
        idx = self.order[(self.start + i) * self.batch_size:(self.start + i + 1) * self.batch_size]
        rows = np.sort(idx.numpy())  # sorted reads from the memory map
        return torch.from_numpy(rows), torch.from_numpy(np.array(self.images[rows]))


@torch.no_grad()
def embed_dataset(model: PirlModel, images: np.ndarray, image_size: int, device: torch.device,
                  batch_size: int = 128, head: bool = True, channels_last: bool = True,
                  batch_stats: bool = False) -> torch.Tensor:
    """f(v) (head=True) or pooled backbone features for every cached image, deterministic view.

    `batch_stats` normalises with each batch's statistics, as training does, instead of the
    BatchNorm running averages (which a random init has not estimated yet); batches are then of
    near-equal size, never a lone image."""
    was_training = model.training
    model.eval()
    if batch_stats:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.train()
    out = []
    for rows in np.array_split(np.arange(len(images)), math.ceil(len(images) / batch_size)):
        x = eval_view(to_float(torch.from_numpy(np.array(images[rows[0]:rows[-1] + 1]))), image_size)
        x = x.to(device, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        out.append((model.embed_images(x) if head else model.backbone(x)).float().cpu())
    model.train(was_training)
    return torch.cat(out)


def pretrain(config: PretrainConfig, images: np.ndarray, ids: list, out_dir: str | Path,
             callbacks: Callbacks | None = None, resume: bool = True) -> PretrainResult:
    """Train PIRL on cached uint8 images (N, S, S, 3); checkpoints go to `out_dir/last.pt`.

    With `resume` and an existing checkpoint the run continues from it.
    """
    callbacks = callbacks or Callbacks()
    n = len(images)
    config.validate(n)
    if len(ids) != n:
        raise PirlError(f"{len(ids)} image ids for {n} images")
    device = resolve_device(config.device)
    out_dir = Path(out_dir)
    ckpt_path = out_dir / "last.pt"
    torch.manual_seed(config.seed)

    model = PirlModel(build_backbone(config.backbone, config.pretrained_imagenet, config.weights_path)).to(device)
    fmt = torch.channels_last if config.channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    optimizer = torch.optim.SGD(param_groups(model, config.weight_decay), lr=config.learning_rate,
                                momentum=config.momentum)
    sizes = config.view_sizes
    batch = min(config.batch_size, n)
    steps_per_epoch = n // batch
    total_steps = steps_per_epoch * config.epochs
    if config.max_steps:
        total_steps = min(total_steps, config.max_steps)
    warmup = min(int(config.warmup_epochs * steps_per_epoch), total_steps // 2)
    negatives = config.negatives_for(n)
    weights = config.loss_weights

    step = 0
    if resume and ckpt_path.exists():
        state = ckpt.load(ckpt_path, map_location=device)
        if state["bank"]["ids"] != list(ids):
            raise PirlError(f"Checkpoint {ckpt_path} was trained on other images; cannot resume on these.")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        bank = MemoryBank.from_state_dict(state["bank"]).to(device)
        step = state["step"]
        torch.set_rng_state(state["rng"]["torch"])
    else:
        if config.bank_init == "features":
            # A random init has no BatchNorm running statistics yet: normalising with them gave every
            # image the same embedding (a collapsed bank that the loss cannot learn from).
            random_start = not (config.pretrained_imagenet or config.weights_path)
            vectors = embed_dataset(model, images, config.image_size, device, channels_last=config.channels_last,
                                    batch_stats=random_start)
        else:
            vectors = torch.randn(n, 128, generator=_step_generator(config.seed, 3))
        bank = MemoryBank(vectors, ids, config.bank_momentum).to(device)

    amp_dtype = None
    if device.type == "cuda":
        amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    train_step = _make_step(model, optimizer, scaler, bank, weights, negatives, config, sizes, device, fmt, amp_dtype)
    if config.compile:
        train_step = torch.compile(train_step)

    def save() -> None:
        ckpt.save_atomic({
            "format": CHECKPOINT_FORMAT, "kind": "pirl", "config": config.to_dict(), "step": step,
            "total_steps": total_steps, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "bank": bank.state_dict(), "rng": {"torch": torch.get_rng_state()},
            "last_metrics": last}, ckpt_path)
        callbacks.on_checkpoint(ckpt_path, step)

    last: dict[str, float] = {}
    callbacks.on_start(step, total_steps)
    model.train()
    t_start, seen, last_save = time.perf_counter(), 0, time.monotonic()
    status = "finished"
    while step < total_steps:
        epoch, in_epoch = divmod(step, steps_per_epoch)
        order = torch.randperm(n, generator=_step_generator(config.seed, 1, epoch))
        loader = torch.utils.data.DataLoader(
            _Batches(images, order, batch, in_epoch), batch_size=None, shuffle=False,
            num_workers=config.num_workers, persistent_workers=False)
        for index, batch_u8 in loader:
            if callbacks.should_stop():
                status = "stopped"
                break
            lr = lr_at(step, total_steps, warmup, config.learning_rate)
            for group in optimizer.param_groups:
                group["lr"] = lr
            last = train_step(index, batch_u8, _step_generator(config.seed, 2, step)) | {"lr": lr}
            step += 1
            seen += len(index)
            rate = seen / (time.perf_counter() - t_start)
            callbacks.on_step(StepReport(step, total_steps, epoch + 1, config.epochs, last, rate,
                                         (total_steps - step) * batch / max(rate, 1e-9)))
            if time.monotonic() - last_save > config.checkpoint_every_s:
                save()
                last_save = time.monotonic()
            if step >= total_steps:
                break
        if status == "stopped":
            break
        save()  # every epoch (and at the end)
        last_save = time.monotonic()
    if status == "stopped":
        save()
    return PretrainResult(str(ckpt_path), status, step, total_steps, last,
                          seen / max(time.perf_counter() - t_start, 1e-9))


def _make_step(model, optimizer, scaler, bank, weights, negatives, config, sizes, device, fmt, amp_dtype):
    def train_step(index: torch.Tensor, batch_u8: torch.Tensor, gen: torch.Generator) -> dict[str, float]:
        x = to_float(batch_u8)
        v_image = image_view(x, config.image_size, gen)
        neg = bank.sample_negatives(index, negatives, gen)
        index = index.to(device)
        views = {}
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            f = model.embed_images(v_image.to(device, non_blocking=True, memory_format=fmt))
            if "jigsaw" in weights:
                v_jigsaw, _ = jigsaw_view(x, sizes, gen)
                views["jigsaw"] = model.embed_jigsaw(v_jigsaw.to(device, non_blocking=True), memory_format=fmt)
            if "rotation" in weights:  # the rotated view goes through the same image head f
                v_rotation, _ = rotation_view(x, config.image_size, gen)
                views["rotation"] = model.embed_images(v_rotation.to(device, non_blocking=True, memory_format=fmt))
        views["image"] = f
        loss, terms = pirl_loss({k: v.float() for k, v in views.items()}, weights, bank.vectors[index],
                                bank.vectors[neg.candidates.to(device)], neg.keep.to(device), config.temperature)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        bank.update(index, f)
        return {"loss": loss.item(), **{f"loss_{k}": v.item() for k, v in terms.items()}}

    return train_step


def load_pretrained(checkpoint_path: str | Path) -> tuple[PirlModel, PretrainConfig, MemoryBank]:
    """The model, config and memory bank of a finished (or stopped) run."""
    state = ckpt.load(checkpoint_path)
    config = PretrainConfig.from_dict(state["config"])
    model = PirlModel(build_backbone(config.backbone))
    model.load_state_dict(state["model"])
    return model, config, MemoryBank.from_state_dict(state["bank"])
