"""Training caches: every image decoded and resized once into one uint8 array on disk.

A 3000x2000 JPEG is decoded once at ingestion, never each epoch. The cache is a `.npy` file
of shape (N, S, S, 3), written as a stream of rows and read through a memory map, so 20,000
images never sit in memory at once (writing through a memory map would count every written page
in the process's resident memory: 2 GB for 5,000 images, ingest and final copy together).
"""

from __future__ import annotations

import shutil
import threading
import uuid
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image, ImageOps

from ..workspace.folder import Workspace

CACHE_SIZE = 256  # px; every dataset's base cache. Caches for smaller sizes are derived from it, never decoded again


def cache_size_for(image_size: int) -> int:
    """Cached resolution for training at `image_size`: the paper's 256 for 224, proportionally."""
    return int(round(image_size * 256 / 224))


def square_resize(img: Image.Image, size: int) -> np.ndarray:
    """Resize the shorter side to `size`, centre-crop a square; RGB uint8 (size, size, 3)."""
    return np.asarray(ImageOps.fit(img.convert("RGB"), (size, size), Image.BILINEAR, centering=(0.5, 0.5)))


def resize_row(row: np.ndarray, size: int) -> np.ndarray:
    """A base-cache row (CACHE_SIZE px) at the size of a derived cache."""
    if row.shape[0] == size:
        return np.asarray(row)
    return np.asarray(Image.fromarray(np.asarray(row)).resize((size, size), Image.BILINEAR, reducing_gap=None))


class CacheWriter:
    """Appends (size, size, 3) uint8 rows to a side file; `finish()` writes the `.npy` (header, then
    the rows copied in large blocks) under a temporary name and renames it into place. Leaving the
    `with` block (or `close()`) without `finish()` (an error, a cancel) removes every file it made.
    Side files carry a name of their own, so two writers building the same cache (two processes, or two
    browser sessions: threads of one server) never collide; the last rename wins with identical content."""

    def __init__(self, out_file: str | Path, size: int):
        self.out_file, self.size, self.rows = Path(out_file), size, 0
        tag = uuid.uuid4().hex
        self._rows_file = self.out_file.with_name(f"{self.out_file.name}.{tag}.rows")
        self._part_file = self.out_file.with_name(f"{self.out_file.name}.{tag}.part.npy")
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


# numpy parses a .npy header with `ast.literal_eval`, and CPython 3.11's parser is not safe when threads (browser
# sessions of one server) parse at once: "SystemError: AST constructor recursion depth mismatch".
_HEADER_LOCK = threading.Lock()


def open_cache(path: str | Path) -> np.ndarray:
    with _HEADER_LOCK:  # a header read and a memory map: microseconds
        return np.load(path, mmap_mode="r")


def cache_path(ws: Workspace, dataset_id: int, size: int = CACHE_SIZE) -> Path:
    return ws.cache / f"dataset-{dataset_id}-{size}.npy"


def dataset_cache(ws: Workspace, dataset_id: int, size: int = CACHE_SIZE) -> np.ndarray:
    """The dataset's images as (N, size, size, 3) uint8, in image-id order; derived from the 256 px
    cache (no decoding) and kept on disk the first time a size is asked for."""
    path = cache_path(ws, dataset_id, size)
    if path.exists():
        return open_cache(path)
    base = open_cache(cache_path(ws, dataset_id))
    with CacheWriter(path, size) as writer:
        for row in base:
            writer.append(resize_row(row, size))
        writer.finish()
    return open_cache(path)


def iter_thumbnails(ws: Workspace, dataset_id: int, image_rows: list[dict], size: int = 128) -> Iterator:
    """(row, RGB array) for the given image rows, read from the training cache."""
    ids = [im["id"] for im in ws.store.images(dataset_id)]
    position = {image_id: i for i, image_id in enumerate(ids)}
    cache = dataset_cache(ws, dataset_id, size)
    for row in image_rows:
        yield row, np.asarray(cache[position[row["id"]]])
