"""Ingestion speed and memory: a real folder, generated large JPEGs, zip bombs, concurrent imports.

    python bench/ingest.py ../shared/data/busi256 --large 5000 --large-size 2000
    python bench/ingest.py --large 0 --bombs --concurrent 8
    python bench/ingest.py --large 0 --archive 10000 100000

--archive: a generated archive of N images (two thirds JPEG, one third PNG, 64 to 640 px, 2% byte-identical
copies, 0.5% damaged files), each N imported in a process of its own: images/s, peak memory (the pixels stream,
the folder is listed as it is read, the rows wait in the import's staging database: flat in N), disk per image
(stored originals and cache).
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import shutil
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from pirl_core.data import datasets, ingest, sources
from pirl_core.workspace.folder import Workspace


def _disk(ws: Workspace, dataset_id: int) -> str:
    """Disk an image: its stored original and its training caches (every size made so far)."""
    usage = datasets.disk_usage(ws, dataset_id)
    n = max(ws.store.dataset(dataset_id)["n_images"], 1)
    return f"disk an image: original {usage['originals'] / n / 1024:.0f} KB, cache {usage['caches'] / n / 1024:.1f} KB"


def run(label: str, folder: Path, tmp: Path) -> None:
    ws = Workspace(tmp / f"ws-{label}")
    files = sources.folder_source(folder, check_roots=False)
    t = time.perf_counter()
    report = ingest.ingest(ws, files, label)
    seconds = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{label:10s} {len(files):6d} files  {report.imported:6d} imported  {len(report.skipped)} skipped  "
          f"{len(files) / seconds:7.1f} images/s  peak RSS {peak:.0f} MiB  {_disk(ws, report.dataset_id)}")


def bombs(tmp: Path) -> None:
    """A 1 GiB member in a ~1 MB zip, and 20 members of 100 MB each: peak RSS must stay near the baseline
    (members over the per-file cap are refused from the zip's header, never read)."""
    for label, members in (("1 GiB member", {"bomb.png": 1 << 30}), ("20 x 100 MB", {f"m{i}.png": 100 << 20
                                                                                      for i in range(20)})):
        path = tmp / f"{label.replace(' ', '_')}.zip"
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
            for name, size in members.items():
                with zf.open(name, "w", force_zip64=True) as f:
                    block = bytes(16 << 20)
                    for _ in range(size // len(block)):
                        f.write(block)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        files, refused = sources.zip_source(path, max_bytes=1 << 40)
        ws = Workspace(tmp / f"ws-{label[:2]}")
        try:
            ingest.ingest(ws, files, "bomb", pre_skipped=refused)
        except ingest.PirlError as exc:  # nothing usable: the expected end
            outcome = str(exc)[:60]
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"zip bomb {label:12s} zip {path.stat().st_size / 1e6:6.1f} MB  refused {len(refused)}  "
              f"peak RSS {before:.0f} -> {peak:.0f} MiB  ({outcome})")


def _import(args) -> int:
    root, folder, name = args
    return ingest.ingest(Workspace(root), sources.folder_source(folder, check_roots=False), name).imported


def concurrent(tmp: Path, n: int) -> None:
    """n imports into one workspace at once, sharing half their files: failures and files lost."""
    rng = np.random.default_rng(1)
    for k in range(n):
        (tmp / "src" / f"set{k}").mkdir(parents=True)
        for i in range(30):
            Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8) if i % 2 else
                            np.full((64, 64, 3), i, np.uint8)).save(tmp / "src" / f"set{k}" / f"{i}.png")
    root = tmp / "ws-concurrent"
    Workspace.open(root)
    t = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(n) as pool:
        outcomes = pool.map_async(_import, [(root, tmp / "src" / f"set{k}", f"set{k}") for k in range(n)])
        try:
            imported, failures = outcomes.get(), 0
        except Exception as exc:  # noqa: BLE001
            imported, failures = [], 1
            print(f"an import failed: {exc}")
    ws = Workspace.open(root)
    lost = sum(not (ws.root / im["path"]).exists() for d in ws.store.datasets() for im in ws.store.images(d["id"]))
    print(f"{n} concurrent imports: {len(ws.store.datasets())} datasets, {sum(imported)} images, "
          f"{failures} failed, {lost} files lost, {time.perf_counter() - t:.1f} s")


def archive(folder: Path, n: int) -> None:
    """n generated files in sub-folders of 1,000: mixed sizes and formats, some copies, some damaged."""
    rng = np.random.default_rng(n)
    base = rng.integers(0, 255, (80, 80, 3), dtype=np.uint8)
    for i in range(n):
        path = folder / f"{i // 1000:04d}" / f"img_{i:07d}.{'jpg' if i % 3 else 'png'}"
        path.parent.mkdir(exist_ok=True)
        if i % 200 == 199:
            path.write_bytes(b"\x89PNG\r\n\x1a\n damaged")
        elif i % 50 == 49:
            path.write_bytes((folder / "0000" / "img_0000001.jpg").read_bytes())
        else:
            side = int(rng.integers(64, 641))
            img = np.roll(base, (i % 80, i // 80 % 80), axis=(0, 1)) // 2 + rng.integers(0, 128, 3, dtype=np.uint8)
            Image.fromarray(img.astype(np.uint8)).resize((side, int(side * rng.uniform(0.75, 1.33)))).save(
                path, compress_level=1)  # zlib's fastest: writing 10^4 files took 691 s at the default level 6


def _archive_ingest(args) -> tuple[int, int, float, float, str]:
    root, folder = args
    ws = Workspace(root)
    files = sources.folder_source(folder, check_roots=False)
    t = time.perf_counter()
    report = ingest.ingest(ws, files, "archive")
    seconds = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return report.imported, len(report.skipped), seconds, peak, _disk(ws, report.dataset_id)


def archives(tmp: Path, sizes: list[int]) -> None:
    for n in sizes:
        folder = tmp / f"archive-{n}"
        folder.mkdir()
        t = time.perf_counter()
        archive(folder, n)
        made = time.perf_counter() - t
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            imported, skipped, seconds, peak, disk = pool.apply(_archive_ingest, ((tmp / f"ws-archive-{n}", folder),))
        print(f"archive of {n:,} files (made in {made:.0f} s): {imported:,} imported, {skipped} skipped, "
              f"{n / seconds:.0f} files/s, peak RSS {peak:,.0f} MiB, {disk}", flush=True)
        shutil.rmtree(folder)
        shutil.rmtree(tmp / f"ws-archive-{n}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("folder", nargs="?")
    ap.add_argument("--large", type=int, default=5000, help="how many large JPEGs to generate (0: none)")
    ap.add_argument("--large-size", type=int, default=2000)
    ap.add_argument("--bombs", action="store_true", help="zip bombs: peak memory")
    ap.add_argument("--concurrent", type=int, default=0, help="this many imports into one workspace at once")
    ap.add_argument("--archive", type=int, nargs="*", default=[], help="generated archives of these sizes")
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
        if args.bombs:
            bombs(tmp)
        if args.concurrent:
            concurrent(tmp, args.concurrent)
        if args.archive:
            archives(tmp, args.archive)


if __name__ == "__main__":
    main()
