"""Grad-CAM ("where is the model looking"): captum's LayerGradCam on the last layer that still has a
spatial map, upsampled to the input and scaled to [0, 1] per image. Backbones side by side: each one's map, summed
before the ReLU (the logit is the sum of what each backbone's features contribute)."""

from __future__ import annotations

import torch
from captum.attr import LayerAttribution, LayerGradCam
from torch import nn

from .backbones import SideBySide


def last_spatial_layer(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """The last module, in execution order, whose output is a feature map larger than 1 x 1 (resnet: layer4;
    efficientnet: the final 1x1 convolution block), found by running `x` once."""
    done: list[tuple[nn.Module, tuple]] = []
    hooks = [m.register_forward_hook(lambda m, i, o: done.append((m, tuple(o.shape))
                                                                 if isinstance(o, torch.Tensor) else None))
             for m in model.modules() if m is not model]
    try:
        with torch.no_grad():
            model(x[:1])
    finally:
        for h in hooks:
            h.remove()
    spatial = [m for m, shape in filter(None, done) if len(shape) == 4 and shape[2] * shape[3] > 1]
    if not spatial:
        raise ValueError("the model has no layer with a spatial feature map")
    return spatial[-1]


def gradcam(model: nn.Module, x: torch.Tensor, target: int | list[int]) -> torch.Tensor:
    """(N, H, W) heatmaps in [0, 1] for class `target` (one per image, or one for all) of inputs x (N, 3, H, W)."""
    model.eval()
    backbone = getattr(model, "backbone", None)
    layers = [last_spatial_layer(part, x) for part in (backbone.parts if isinstance(backbone, SideBySide) else [model])]
    targets = [target] * len(x) if isinstance(target, int) else list(target)
    with torch.enable_grad():
        attributions = sum(LayerGradCam(model, layer).attribute(x, target=targets) for layer in layers)
    heat = LayerAttribution.interpolate(attributions.detach().clamp_min(0), tuple(x.shape[-2:]),
                                        interpolate_mode="bilinear")[:, 0]
    peak = heat.flatten(1).max(1).values.clamp_min(1e-12)
    return heat / peak[:, None, None]
