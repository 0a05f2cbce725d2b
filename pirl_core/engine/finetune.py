"""A classifier on a (pretrained or not) backbone, and full finetuning of it.

* `Classifier`: backbone -> fixed feature standardisation -> linear head. A linear probe
  (engine/linear_probe.py) becomes one with `probe_classifier`.
* `finetune`: backbone and head train together on augmented views: SGD, momentum 0.9, cosine
  schedule, class-weighted cross-entropy; the epoch with the best validation AUC is kept (the
  test images are never seen here). Pretrained backbones get the transfer recipe (slower
  backbone, warm-up).
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, fields
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import PirlError
from .backbones import Backbone
from .linear_probe import LinearProbe
from .metrics import auc_score
from .model import embed_dataset
from .optim import lr_at, param_groups, resolve_device, set_lr
from .views import image_view, to_float

BACKBONE_LR_SCALE = 0.1  # a pretrained backbone learns 10x slower than the new head


@dataclass
class FinetuneConfig:
    """How a comparison trains each arm: a linear probe on frozen features (engine/linear_probe.py) or full
    finetuning here."""

    mode: str = "linear"  # "linear" (frozen backbone) or "finetune"
    image_size: int = 96
    epochs: int | None = None  # full finetune (the linear probe has none); default 20
    batch_size: int = 32
    lr: float | None = None  # full finetune: the head's learning rate; default 0.01
    weight_decay: float = 1e-4
    patience: int | None = None  # epochs without a better val AUC before stopping; default epochs // 3
    seed: int = 0
    device: str = "auto"

    @classmethod
    def from_dict(cls, data: dict) -> FinetuneConfig:
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise PirlError(f"Unknown finetune settings: {', '.join(sorted(unknown))}")
        return cls(**data)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def n_epochs(self) -> int:
        return self.epochs or 20

    @property
    def learning_rate(self) -> float:
        return self.lr or 0.01

    def validate(self) -> None:
        problems = []
        if self.mode not in ("linear", "finetune"):
            problems.append(f"mode must be 'linear' or 'finetune', got {self.mode!r}")
        if self.epochs is not None and self.epochs < 1:
            problems.append("epochs must be at least 1")
        if self.batch_size < 2:
            problems.append("batch size must be at least 2")
        if not 32 <= self.image_size <= 1024:
            problems.append("image size must be between 32 and 1024 px")
        if problems:
            raise PirlError("Invalid finetune settings: " + "; ".join(problems) + ".")


class Classifier(nn.Module):
    """backbone -> feature standardisation (fixed; set from the training features of a linear
    probe, identity otherwise) -> linear head."""

    def __init__(self, backbone: Backbone, n_classes: int):
        super().__init__()
        self.backbone = backbone
        self.register_buffer("feature_mean", torch.zeros(backbone.dim))
        self.register_buffer("feature_std", torch.ones(backbone.dim))
        self.head = nn.Linear(backbone.dim, n_classes)

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        return self.head((features - self.feature_mean) / self.feature_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.backbone(x))


def class_weights(y: np.ndarray, n_classes: int) -> torch.Tensor:
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    weights = np.where(counts > 0, counts.sum() / (n_classes * np.maximum(counts, 1)), 0.0)
    return torch.tensor(weights, dtype=torch.float32)


@torch.no_grad()
def predict(model: Classifier, images: np.ndarray, size: int, device: torch.device | None = None) -> np.ndarray:
    """Class probabilities (N, C) from the deterministic evaluation view."""
    device = device or next(model.parameters()).device
    model.eval()
    feats = embed_dataset(model.backbone, images, size, device)
    return torch.softmax(model.classify(feats.to(device)), dim=1).cpu().numpy()


def probe_classifier(backbone: Backbone, probe: LinearProbe) -> Classifier:
    """The backbone with a fitted linear probe as one network (what Export packages)."""
    model = Classifier(backbone, len(probe.bias))
    with torch.no_grad():
        model.feature_mean.copy_(torch.as_tensor(probe.mean))
        model.feature_std.copy_(torch.as_tensor(probe.scale))
        model.head.weight.copy_(torch.as_tensor(probe.weight))
        model.head.bias.copy_(torch.as_tensor(probe.bias))
    return model.eval()


def _validation(model: Classifier, x_val: np.ndarray, y_val: np.ndarray, size: int, device) -> tuple[float, float]:
    """AUC and cross-entropy of the model on the validation part."""
    val_probs = predict(model, x_val, size, device)
    return auc_score(y_val, val_probs), float(F.cross_entropy(torch.log(torch.as_tensor(val_probs) + 1e-8).float(),
                                                              torch.as_tensor(y_val, dtype=torch.long)))


def finetune(backbone: Backbone, n_classes: int, train: tuple[np.ndarray, np.ndarray],
             val: tuple[np.ndarray, np.ndarray], config: FinetuneConfig,
             on_epoch: Callable[[int, dict], None] | None = None,
             should_stop: Callable[[], bool] | None = None, pretrained: bool = False) -> tuple[Classifier, list[dict]]:
    """Train backbone and head together; returns the model at its best validation epoch and the per-epoch
    history. A `pretrained` backbone gets the transfer recipe: a learning rate BACKBONE_LR_SCALE times the
    head's, after a one-epoch linear warm-up (the same for every pretrained start, ImageNet or PIRL)."""
    config.validate()
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    model = Classifier(backbone, n_classes).to(device)
    (x_train, y_train), (x_val, y_val) = train, val
    y_t = torch.as_tensor(y_train, dtype=torch.long)
    weights = class_weights(y_train, n_classes).to(device)
    epochs = config.n_epochs
    patience = config.patience or max(5, epochs // 3)
    scale = {model.backbone: BACKBONE_LR_SCALE} if pretrained else None
    optimizer = torch.optim.SGD(param_groups(model, config.weight_decay, scale), lr=config.learning_rate,
                                momentum=0.9)
    batch = min(config.batch_size, len(y_train))
    steps_per_epoch = max(1, len(y_train) // batch)
    total = steps_per_epoch * epochs
    warmup = steps_per_epoch if pretrained else 0
    gen = torch.Generator().manual_seed(config.seed)
    history: list[dict] = []
    best_auc, best_state, since_best, step = -1.0, None, 0, 0
    for epoch in range(1, epochs + 1):
        if should_stop and should_stop():
            break
        model.train()
        order = torch.randperm(len(y_train), generator=gen)
        losses = []
        for b in range(steps_per_epoch):
            rows = np.sort(order[b * batch:(b + 1) * batch].numpy())
            x = image_view(to_float(torch.from_numpy(np.array(x_train[rows]))), config.image_size, gen,
                           scale=(0.35, 1.0), jitter=(0.2, 0.2, 0.1, 0.0), p_gray=0.0)
            loss = F.cross_entropy(model(x.to(device)), y_t[rows].to(device), weight=weights)
            set_lr(optimizer, lr_at(step, total, warmup, config.learning_rate))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            step += 1
        val_auc, val_loss = _validation(model, x_val, y_val, config.image_size, device)
        record = {"epoch": epoch, "train_loss": float(np.mean(losses)), "val_loss": val_loss, "val_auc": val_auc}
        history.append(record)
        if on_epoch:
            on_epoch(epoch, record)
        if np.isnan(val_auc) or val_auc > best_auc:
            best_auc, best_state, since_best = (val_auc if not np.isnan(val_auc) else best_auc,
                                                copy.deepcopy(model.state_dict()), 0)
        else:
            since_best += 1
            if since_best >= patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return model, history
