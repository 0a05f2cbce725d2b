"""Supervised training of a classifier on a (pretrained or not) backbone.

* linear probe: the backbone is frozen; its features of every image are computed once and a
  linear layer is trained on them (fast, and the purest test of a representation).
* finetune: backbone and linear layer train together on augmented views.

Both use the same optimiser (SGD, momentum 0.9, cosine schedule), class-weighted
cross-entropy for imbalance, and keep the epoch with the best validation AUC (early stopping
on the validation split only: the test images are never seen here).
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, fields
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score
from torch import nn

from ..errors import PirlError
from .backbones import Backbone
from .pretrain import lr_at, param_groups, resolve_device
from .views import eval_view, image_view, to_float


@dataclass
class FinetuneConfig:
    mode: str = "linear"  # "linear" (frozen backbone) or "finetune"
    image_size: int = 96
    epochs: int | None = None  # default: 100 linear, 20 finetune
    batch_size: int = 32
    lr: float | None = None  # default: 0.1 linear, 0.01 finetune
    weight_decay: float = 1e-4
    patience: int | None = None  # epochs without a better val AUC before stopping; default epochs // 3
    seed: int = 0
    device: str = "auto"

    @classmethod
    def from_dict(cls, data: dict) -> FinetuneConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def n_epochs(self) -> int:
        return self.epochs or (100 if self.mode == "linear" else 20)

    @property
    def learning_rate(self) -> float:
        return self.lr or (0.1 if self.mode == "linear" else 0.01)

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


def auc_score(y: np.ndarray, probs: np.ndarray) -> float:
    """Binary AUC of the positive class, or macro one-vs-rest AUC for more classes."""
    if len(np.unique(y)) < 2:
        return float("nan")
    if probs.shape[1] == 2:
        return float(roc_auc_score(y, probs[:, 1]))
    return float(roc_auc_score(y, probs, multi_class="ovr", average="macro", labels=list(range(probs.shape[1]))))


def class_weights(y: np.ndarray, n_classes: int) -> torch.Tensor:
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    weights = np.where(counts > 0, counts.sum() / (n_classes * np.maximum(counts, 1)), 0.0)
    return torch.tensor(weights, dtype=torch.float32)


@torch.no_grad()
def _features(backbone: nn.Module, images: np.ndarray, size: int, device: torch.device, batch: int = 128):
    backbone.eval()
    out = []
    for start in range(0, len(images), batch):
        x = eval_view(to_float(torch.from_numpy(np.array(images[start:start + batch]))), size).to(device)
        out.append(backbone(x).float().cpu())
    return torch.cat(out)


@torch.no_grad()
def predict(model: Classifier, images: np.ndarray, size: int, device: torch.device | None = None) -> np.ndarray:
    """Class probabilities (N, C) from the deterministic evaluation view."""
    device = device or next(model.parameters()).device
    model.eval()
    feats = _features(model.backbone, images, size, device)
    return torch.softmax(model.classify(feats.to(device)), dim=1).cpu().numpy()


def finetune(backbone: Backbone, n_classes: int, train: tuple[np.ndarray, np.ndarray],
             val: tuple[np.ndarray, np.ndarray], config: FinetuneConfig,
             on_epoch: Callable[[int, dict], None] | None = None,
             should_stop: Callable[[], bool] | None = None) -> tuple[Classifier, list[dict]]:
    """Train a classifier; returns the model at its best validation epoch and the per-epoch history."""
    config.validate()
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    model = Classifier(backbone, n_classes).to(device)
    (x_train, y_train), (x_val, y_val) = train, val
    y_t = torch.as_tensor(y_train, dtype=torch.long)
    weights = class_weights(y_train, n_classes).to(device)
    epochs = config.n_epochs
    patience = config.patience or max(5, epochs // 3)
    linear = config.mode == "linear"
    if linear:
        for p in model.backbone.parameters():
            p.requires_grad_(False)
        f_train = _features(model.backbone, x_train, config.image_size, device)
        f_val = _features(model.backbone, x_val, config.image_size, device)
        model.feature_mean.copy_(f_train.mean(0))
        std = f_train.std(0)
        model.feature_std.copy_(std.clamp_min(0.05 * float(std.mean()) + 1e-6))  # dead features: no blow-up
    trainable = model.head if linear else model
    optimizer = torch.optim.SGD(param_groups(trainable, config.weight_decay), lr=config.learning_rate, momentum=0.9)
    batch = min(config.batch_size, len(y_train))
    steps_per_epoch = max(1, len(y_train) // batch)
    total = steps_per_epoch * epochs
    gen = torch.Generator().manual_seed(config.seed)
    history: list[dict] = []
    best_auc, best_state, since_best, step = -1.0, None, 0, 0
    for epoch in range(1, epochs + 1):
        if should_stop and should_stop():
            break
        model.train(not linear)
        order = torch.randperm(len(y_train), generator=gen)
        losses = []
        for b in range(steps_per_epoch):
            idx = order[b * batch:(b + 1) * batch]
            if linear:
                logits = model.classify(f_train[idx].to(device))
            else:
                rows = np.sort(idx.numpy())
                idx = torch.from_numpy(rows)
                x = image_view(to_float(torch.from_numpy(np.array(x_train[rows]))), config.image_size, gen,
                               scale=(0.35, 1.0), jitter=(0.2, 0.2, 0.1, 0.0), p_gray=0.0)
                logits = model(x.to(device))
            loss = F.cross_entropy(logits, y_t[idx].to(device), weight=weights)
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, total, 0, config.learning_rate)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            step += 1
        model.eval()
        with torch.no_grad():
            if linear:
                val_probs = torch.softmax(model.classify(f_val.to(device)), 1).cpu().numpy()
            else:
                val_probs = predict(model, x_val, config.image_size, device)
        val_auc = auc_score(y_val, val_probs)
        val_loss = float(F.cross_entropy(torch.log(torch.as_tensor(val_probs) + 1e-8).float(),
                                         torch.as_tensor(y_val, dtype=torch.long)))
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
