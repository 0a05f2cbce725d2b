"""Training caches: every image decoded and resized once into one uint8 array on disk.

A 3000x2000 JPEG is decoded once at ingestion, never each epoch. The cache is a `.npy` file
of shape (N, S, S, 3), written as a stream of rows and read through a memory map, so 20,000
images never sit in memory at once (writing through a memory map would count every written page
in the process's resident memory: 2 GB for 5,000 images, ingest and final copy together).
"""

from __future__ import annotations

import os
import shutil
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
    with CacheWriter(out_file, size) as writer:
        for i, src in enumerate(sources):
            with load(src) as img:
                writer.append(square_resize(img, size))
            if on_progress and (i % 16 == 0 or i == count - 1):
                on_progress(i + 1, count)
        writer.finish()
    return open_cache(out_file)


class CacheWriter:
    """Appends (size, size, 3) uint8 rows to a side file; `finish()` writes the `.npy` (header, then
    the rows copied in large blocks) under a temporary name and renames it into place. Leaving the
    `with` block (or `close()`) without `finish()` (an error, a cancel) removes every file it made.
    Side files carry the process id, so two processes building the same cache do not collide."""

    def __init__(self, out_file: str | Path, size: int):
        self.out_file, self.size, self.rows = Path(out_file), size, 0
        self._rows_file = self.out_file.with_name(f"{self.out_file.name}.{os.getpid()}.rows")
        self._part_file = self.out_file.with_name(f"{self.out_file.name}.{os.getpid()}.part.npy")
        self._stream = open(self._rows_file, "wb")

    def append(self, row: np.ndarray) -> None:
        if row.shape != (self.size, self.size, 3) or row.dtype != np.uint8:
            raise ValueError(f"cache rows are ({self.size}, {self.size}, 3) uint8, got {row.shape} {row.dtype}")
        self._stream.write(np.ascontiguousarray(row).data)
        self.rows += 1

    def finish(self) -> Path:
        self._stream.close()
        with open(self._part_file, "wb") as out, open(self._rows_file, "rb") as rows:
            np.lib.format.write_array_header_1_0(
                out, {"descr": "|u1", "fortran_order": False, "shape": (self.rows, self.size, self.size, 3)})
            shutil.copyfileobj(rows, out, 16 << 20)
        self._part_file.replace(self.out_file)
        self._rows_file.unlink()
        return self.out_file

    def close(self) -> None:
        self._stream.close()
        self._rows_file.unlink(missing_ok=True)
        self._part_file.unlink(missing_ok=True)

    def __enter__(self) -> CacheWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_cache(path: str | Path) -> np.ndarray:
    return np.load(path, mmap_mode="r")


def folder_images(folder: str | Path) -> list[Path]:
    """Image files under `folder`, recursively, in a stable order."""
    folder = Path(folder)
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
