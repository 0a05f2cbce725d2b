"""Training caches: every image decoded and resized once, kept on disk as lossless PNG bytes.

A 3000x2000 JPEG is decoded once at ingestion, never each epoch. A cache is one file per dataset and size:
each image's PNG (one channel when its three are equal, as in nearly every medical image), then an index of
where each starts. Indexing it decodes only the rows asked for, so 20,000 images never sit in memory at
once, and a row costs about a fifth of its raw bytes on disk (40 KB at the 256 px base for BUSI and the
chest X-rays instead of 196,608; 13 KB at 146 px instead of 63,948: `python bench/ingest.py DATA --large 0`,
`python bench/pool_step.py DATA`), never more than those raw bytes and a PNG's framing (under 1 KB).
The pixels are exactly the ones decoded: PNG is lossless, so training sees what an array would hold.
Caches written before this format (`.npy` arrays) are still read; adding images to a dataset rewrites its.
"""

from __future__ import annotations

import io
import struct
import threading
import uuid
from array import array
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image, ImageOps

from ..workspace.folder import Workspace

CACHE_SIZE = 256  # px; every dataset's base cache. Caches for smaller sizes are derived from it, never decoded again
MAGIC = b"PIRLPNG1"
_HEAD = struct.Struct("<8sI")  # magic, image size
_FOOT = struct.Struct("<QQ8s")  # rows, where the index starts, magic
_ENCODE_AHEAD = 8  # rows being encoded in the background while the writer's caller decodes the next ones


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


def encode_row(row: np.ndarray) -> bytes:
    """A cache row as PNG (zlib level 1: a third of level 6's time for 5% more bytes); grey rows as one channel."""
    grey = bool((row[..., 0] == row[..., 1]).all() and (row[..., 0] == row[..., 2]).all())
    out = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(row[..., 0] if grey else row)).save(out, "PNG", compress_level=1)
    return out.getvalue()


def decode_row(data: bytes | memoryview) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


class CacheWriter:
    """Appends (size, size, 3) uint8 rows, encoded in a background thread (PIL's PNG encoder releases the GIL, so
    it overlaps the caller's decoding of the next image); `finish()` writes the index and renames the file into
    place. Leaving the `with` block (or `close()`) without `finish()` (an error, a cancel) removes what it made.
    The partial file carries a name of its own, so two writers building the same cache (two processes, or two
    browser sessions: threads of one server) never collide; the last rename wins with identical content."""

    def __init__(self, out_file: str | Path, size: int):
        self.out_file, self.size, self.rows = Path(out_file), size, 0
        self._part_file = self.out_file.with_name(f"{self.out_file.name}.{uuid.uuid4().hex}.part")
        self._stream = open(self._part_file, "wb")
        self._stream.write(_HEAD.pack(MAGIC, size))
        self._offsets = array("Q", [_HEAD.size])  # 8 bytes a row: all a writer keeps per image
        self._encoder = ThreadPoolExecutor(1, thread_name_prefix="cache-png")
        self._pending: deque = deque()

    def append(self, row: np.ndarray) -> None:
        if row.shape != (self.size, self.size, 3) or row.dtype != np.uint8:
            raise ValueError(f"cache rows are ({self.size}, {self.size}, 3) uint8, got {row.shape} {row.dtype}")
        self._pending.append(self._encoder.submit(encode_row, np.array(row)))
        self.rows += 1
        while len(self._pending) > _ENCODE_AHEAD:
            self._write(self._pending.popleft().result())

    def _write(self, data: bytes) -> None:
        self._stream.write(data)
        self._offsets.append(self._offsets[-1] + len(data))

    def flush(self) -> None:
        """Wait for the rows being encoded and write them."""
        while self._pending:
            self._write(self._pending.popleft().result())

    def finish(self) -> Path:
        self.flush()
        self._stream.write(np.asarray(self._offsets, "<u8").tobytes())
        self._stream.write(_FOOT.pack(self.rows, self._offsets[-1], MAGIC))
        self._stream.close()
        self._encoder.shutdown()
        self._part_file.replace(self.out_file)
        return self.out_file

    def close(self) -> None:
        for pending in self._pending:
            pending.cancel()
        self._pending.clear()
        self._encoder.shutdown()
        self._stream.close()
        self._part_file.unlink(missing_ok=True)

    def __enter__(self) -> CacheWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class PackedImages:
    """A cache file as (N, size, size, 3) uint8 images, decoded when indexed: by position, slice, or an array of
    positions (the parts of the ndarray interface the trainers and pages use); `np.asarray` decodes them all.
    Pickled (a DataLoader worker) as its path."""

    dtype = np.dtype(np.uint8)
    ndim = 4

    def __init__(self, path: str | Path):
        self.path = Path(path)
        raw = np.memmap(self.path, np.uint8, "r")
        magic, size = _HEAD.unpack(raw[:_HEAD.size].tobytes())
        rows, index_at, end_magic = _FOOT.unpack(raw[-_FOOT.size:].tobytes())
        if magic != MAGIC or end_magic != MAGIC:
            raise ValueError(f"{self.path} is not a complete image cache")
        self._raw, self._offsets = raw, np.frombuffer(raw[index_at:index_at + 8 * (rows + 1)], "<u8")
        self.shape = (rows, size, size, 3)

    def __len__(self) -> int:
        return self.shape[0]

    def _row(self, i: int) -> np.ndarray:
        return decode_row(self._raw[self._offsets[i]:self._offsets[i + 1]])

    def __getitem__(self, key):
        n = len(self)
        if isinstance(key, (int, np.integer)):
            if not -n <= key < n:
                raise IndexError(f"image {key} of a cache of {n}")
            return self._row(int(key) % n)
        positions = range(*key.indices(n)) if isinstance(key, slice) else np.asarray(key)
        if isinstance(positions, np.ndarray) and positions.dtype == bool:
            positions = np.flatnonzero(positions)
        out = np.empty((len(positions), *self.shape[1:]), np.uint8)
        for j, i in enumerate(positions):
            out[j] = self[int(i)]
        return out

    def __iter__(self) -> Iterator[np.ndarray]:
        return (self._row(i) for i in range(len(self)))

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        whole = self[:]
        return whole if dtype is None else whole.astype(dtype)

    def __reduce__(self):
        return PackedImages, (self.path,)


# numpy parses a .npy header with `ast.literal_eval`, and CPython 3.11's parser is not safe when threads (browser
# sessions of one server) parse at once: "SystemError: AST constructor recursion depth mismatch".
_HEADER_LOCK = threading.Lock()


def open_cache(path: str | Path) -> PackedImages | np.ndarray:
    """A cache file, this format's or an earlier `.npy` array's (memory-mapped)."""
    with open(path, "rb") as f:
        if f.read(len(MAGIC)) == MAGIC:
            return PackedImages(path)
    with _HEADER_LOCK:  # a header read and a memory map: microseconds
        return np.load(path, mmap_mode="r")


def cache_path(ws: Workspace, dataset_id: int, size: int = CACHE_SIZE) -> Path:
    return ws.cache / f"dataset-{dataset_id}-{size}.pngs"


def cache_files(ws: Workspace, dataset_id: int) -> list[Path]:
    """Every cache of a dataset on disk, at every size and in either format."""
    return [p for p in ws.cache.glob(f"dataset-{dataset_id}-*") if p.suffix in (".pngs", ".npy")]


def _existing(ws: Workspace, dataset_id: int, size: int) -> Path | None:
    path = cache_path(ws, dataset_id, size)
    older = path.with_suffix(".npy")
    return path if path.exists() else older if older.exists() else None


def dataset_cache(ws: Workspace, dataset_id: int, size: int = CACHE_SIZE) -> PackedImages | np.ndarray:
    """The dataset's images as (N, size, size, 3) uint8, in image-id order; derived from the 256 px
    cache (no decoding of the originals) and kept on disk the first time a size is asked for."""
    path = _existing(ws, dataset_id, size)
    if path is not None:
        return open_cache(path)
    base_path = _existing(ws, dataset_id, CACHE_SIZE)
    if base_path is None:
        raise FileNotFoundError(f"The training cache of dataset {dataset_id} is missing from {ws.cache}.")
    base = open_cache(base_path)
    with CacheWriter(cache_path(ws, dataset_id, size), size) as writer:
        for row in base:
            writer.append(resize_row(row, size))
        writer.finish()
    return open_cache(cache_path(ws, dataset_id, size))


def iter_thumbnails(ws: Workspace, dataset_id: int, image_rows: list[dict], size: int = 128) -> Iterator:
    """(row, RGB array) for the given image rows, read from the training cache."""
    ids = [im["id"] for im in ws.store.images(dataset_id)]
    position = {image_id: i for i, image_id in enumerate(ids)}
    cache = dataset_cache(ws, dataset_id, size)
    for row in image_rows:
        yield row, np.asarray(cache[position[row["id"]]])
