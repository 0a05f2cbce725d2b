"""The one evaluation preset: an image file -> the model's input, with exactly the pixels that
training, Compare, Explore and `pirl predict` use for the same image.

decode (DICOM windowing as at ingestion) -> the 256 px square base cache -> the derived cache
for the training size -> the deterministic evaluation view (resize, ImageNet normalisation).
"""

from __future__ import annotations

import numpy as np
import torch

from ..engine.model import eval_batches
from .image_cache import CACHE_SIZE, cache_size_for, resize_row, square_resize
from .image_io import decode


def describe(image_size: int) -> str:
    """The preset in words, for model cards."""
    return (f"shorter side to {CACHE_SIZE} px and centre square crop, then {cache_size_for(image_size)} px, "
            f"then {image_size} px (bilinear, antialiased), then ImageNet mean/std normalisation")


def cache_row(data: bytes, name: str, image_size: int) -> np.ndarray:
    """File bytes -> the uint8 (S, S, 3) row the cache holds for this training size (what a person is shown)."""
    return resize_row(square_resize(decode(data, name).image, CACHE_SIZE), cache_size_for(image_size))


def model_input(data: bytes, name: str, image_size: int) -> torch.Tensor:
    """File bytes -> normalised (1, 3, image_size, image_size). Raises BadImage for an unusable file."""
    return next(eval_batches(cache_row(data, name, image_size)[None], image_size))
