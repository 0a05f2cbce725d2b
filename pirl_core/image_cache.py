"""Training caches: every image decoded and resized once into one uint8 array on disk.

A 3000x2000 JPEG is decoded once at ingestion, never each epoch. The cache is a `.npy` file
of shape (N, S, S, 3), read through a memory map so 20,000 images never sit in memory at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable

import numpy as np
from PIL import Image, ImageOps

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}


def cache_size_for(image_size: int) -> int:
    """Cached resolution for training at `image_size`: the paper's 256 for 224, proportionally."""
    return int(round(image_size * 256 / 224))


def square_resize(img: Image.Image, size: int) -> np.ndarray:
    """Resize the shorter side to `size`, centre-crop a square; RGB uint8 (size, size, 3)."""
    return np.asarray(ImageOps.fit(img.convert("RGB"), (size, size), Image.BILINEAR, centering=(0.5, 0.5)))


def build_cache(sources: Iterable, count: int, size: int, out_file: str | Path,
                load: Callable[[object], Image.Image],
                on_progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Write `count` images from `sources` (each opened by `load`) into a (count, size, size, 3) .npy.

    Written under a temporary name and renamed when complete. Returns the array (memory-mapped).
    """
    out_file = Path(out_file)
    tmp = out_file.with_name(out_file.name + ".part.npy")
    arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(count, size, size, 3))
    for i, src in enumerate(sources):
        with load(src) as img:
            arr[i] = square_resize(img, size)
        if on_progress and (i % 16 == 0 or i == count - 1):
            on_progress(i + 1, count)
    arr.flush()
    del arr
    tmp.replace(out_file)
    return open_cache(out_file)


def open_cache(path: str | Path) -> np.ndarray:
    return np.load(path, mmap_mode="r")


def folder_images(folder: str | Path) -> list[Path]:
    """Image files under `folder`, recursively, in a stable order."""
    folder = Path(folder)
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
