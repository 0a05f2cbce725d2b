"""Ingestion speed and memory: a real folder, and generated large JPEGs.

    python bench/ingest.py ../shared/data/busi256 --large 5000 --large-size 2000
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from pirl_core import ingest
from pirl_core.workspace import Workspace


def run(label: str, folder: Path, tmp: Path) -> None:
    ws = Workspace(tmp / f"ws-{label}")
    files = ingest.folder_source(folder, check_roots=False)
    t = time.perf_counter()
    report = ingest.ingest(ws, files, label)
    seconds = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{label:10s} {len(files):6d} files  {report.imported:6d} imported  {len(report.skipped)} skipped  "
          f"{len(files) / seconds:7.1f} images/s  peak RSS {peak:.0f} MiB")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("folder", nargs="?")
    ap.add_argument("--large", type=int, default=5000, help="how many large JPEGs to generate (0: none)")
    ap.add_argument("--large-size", type=int, default=2000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.folder:
            run("folder", Path(args.folder), tmp)
        if args.large:
            big = tmp / "large"
            big.mkdir()
            rng = np.random.default_rng(0)
            base = rng.integers(0, 255, (args.large_size // 8, args.large_size // 8, 3), dtype=np.uint8)
            t = time.perf_counter()
            for i in range(args.large):
                shift = (i % base.shape[0], i // base.shape[0])  # distinct for every i: no duplicates
                img = Image.fromarray(np.roll(base, shift, axis=(0, 1))).resize((args.large_size, args.large_size))
                img.save(big / f"scan_{i:05d}.jpg", quality=90)
            print(f"(generated {args.large} JPEGs of {args.large_size} px in {time.perf_counter() - t:.0f} s)")
            run("large", big, tmp)


if __name__ == "__main__":
    main()
