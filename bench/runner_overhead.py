"""Training images/s through the job runner (worker process, heartbeats, metric rows) against the
engine called directly, same config and data, one run each; then the delay from Cancel to the
worker stopping.

    python bench/runner_overhead.py [--images 256] [--image-size 64] [--epochs 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from pirl_core.data import demo_data, ingest, sources
from pirl_core.data.image_cache import cache_size_for, dataset_cache
from pirl_core.engine.config import PretrainConfig
from pirl_core.engine.pretrain import pretrain
from pirl_core.jobs import queue
from pirl_core.workspace.folder import Workspace


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        demo_data.generate(tmp / "demo", n=2, unlabeled=args.images, size=128)
        ws = Workspace(tmp / "ws")
        report = ingest.ingest(ws, sources.folder_source(tmp / "demo" / "unlabeled", check_roots=False), "pool")
        config = PretrainConfig(image_size=args.image_size, epochs=args.epochs, batch_size=args.batch_size)
        rows = ws.store.images(report.dataset_id)
        images = dataset_cache(ws, report.dataset_id, cache_size_for(args.image_size))

        direct = pretrain(config, images, [r["id"] for r in rows], tmp / "direct")
        job_id = queue.submit(ws, "pretrain", config.to_dict(), report.dataset_id)
        job = queue.wait(ws, job_id, poll_s=0.5)
        assert job["status"] == "succeeded", job
        runner = job["result"]["images_per_s"]
        print(f"{args.images} images, {args.image_size} px, {args.epochs} epochs, batch {args.batch_size}")
        print(f"  engine directly : {direct.images_per_s:6.1f} img/s")
        print(f"  via job runner  : {runner:6.1f} img/s   ratio {runner / direct.images_per_s:.3f}")

        long = PretrainConfig(**{**config.to_dict(), "epochs": 50})
        job_id = queue.submit(ws, "pretrain", long.to_dict(), report.dataset_id)
        while (ws.store.job(job_id)["result"] or {}).get("step", 0) < 3:
            time.sleep(0.2)
        t0 = time.perf_counter()
        queue.cancel(ws, job_id)
        job = queue.wait(ws, job_id, poll_s=0.05)
        print(f"  cancel -> {job['status']} in {time.perf_counter() - t0:.2f} s (checkpoint {job['checkpoint']})")


if __name__ == "__main__":
    main()
