"""Convolutions that produce a single output position, run as one matrix product.

Backbones reduce their input 32-fold, so the jigsaw patches of a small image (27 px at 96 px) reach
the last stages as 1 x 1 or 2 x 2 maps, which the convolution pads with zeros: a 3 x 3 convolution
with padding 1 on a 1 x 1 map reads one real pixel and eight zeros. On a CPU, oneDNN's backward pass
does the work of every tap, at a fifth of its usual speed: the three 512 x 512 convolutions of
resnet18's layer4 took 0.76 s of the 1.6 s that the patches of 64 images cost (forward and backward,
2 cores); efficientnet_lite0's 5 x 5 depthwise convolutions, padded from 1 x 1 to 5 x 5, a third of
its patch pass. Only the taps that meet real pixels contribute, so when the output is one position it
is a linear map of that window with the matching slice of the weights (a product per channel for a
depthwise convolution): the same maths, the same gradients to float rounding. resnet18's patch pass runs
twice as fast, a PIRL step at 96 px 1.28x; efficientnet_lite0's step at 128 px 1.29x
(bench/pretrain_throughput.py). Larger outputs take the library's path.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def single_position(conv: nn.Conv2d, x: torch.Tensor, top: int, bottom: int, left: int,
                    right: int) -> torch.Tensor | None:
    """`conv` over `x` zero-padded by (top, bottom, left, right), computed from the real pixels only, when
    that gives one output position; None otherwise (the caller runs the convolution as usual)."""
    (kh, kw), (sh, sw), (h, w) = conv.kernel_size, conv.stride, x.shape[-2:]
    depthwise = conv.groups == conv.in_channels == conv.out_channels
    if ((kh, kw) == (1, 1) or conv.dilation != (1, 1) or conv.padding_mode != "zeros"
            or not (conv.groups == 1 or depthwise)
            or (h + top + bottom - kh) // sh != 0 or (w + left + right - kw) // sw != 0):
        return None
    rows, cols = min(h, kh - top), min(w, kw - left)  # the real pixels the one window reads
    window = x[:, :, :rows, :cols]
    weight = conv.weight[:, :, top:top + rows, left:left + cols]
    if depthwise:
        out = (window * weight[:, 0]).sum((2, 3))
        out = out + conv.bias if conv.bias is not None else out
    else:
        out = F.linear(window.flatten(1), weight.flatten(1), conv.bias)
    return out[:, :, None, None]


class SmallMap:
    """Mixed into a Conv2d class: single output positions skip the padding. Reads the convolution's own
    padding and, for efficientnet's "same" convolutions, the separate ZeroPad2d (`static_padding`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        extra = getattr(self, "static_padding", None)
        left, right, top, bottom = extra.padding if isinstance(extra, nn.ZeroPad2d) else (0, 0, 0, 0)
        if not isinstance(self.padding, str):
            (ph, pw) = self.padding
            out = single_position(self, x, top + ph, bottom + ph, left + pw, right + pw)
            if out is not None:
                return out
        return super().forward(x)


_CLASSES: dict[type, type] = {}


def use_small_map_convs(model: nn.Module) -> nn.Module:
    """Every convolution of `model` takes the single-position path, in place (parameters and state_dict
    untouched)."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d) and not isinstance(module, SmallMap):
            cls = type(module)
            module.__class__ = _CLASSES.setdefault(cls, type(f"SmallMap{cls.__name__}", (SmallMap, cls), {}))
    return model
