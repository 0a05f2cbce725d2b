"""`torchrun ... -m pirl_core.training.pretrain_rank --workspace DIR --job ID`: one process of a PIRL run that spans
several processes (GPUs) or machines.

The worker starts it for `pirl pretrain --nproc N` on one machine (torchrun --standalone). On a cluster it is
what every machine runs (README: Scaling): the job was queued with `--nnodes`, which workers leave alone, and
process 0 claims it and finishes it as a worker would (heartbeat, cancel, final state). Process 0 reports to
the workspace and writes the checkpoints; the others train.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from ..engine import distributed
from ..engine.pretrain import Callbacks
from ..errors import PirlError
from ..jobs import queue
from ..jobs.queue import JobContext
from ..workspace.folder import Workspace
from . import pretraining


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workspace", required=True)
    ap.add_argument("--job", type=int, required=True)
    args = ap.parse_args(argv)
    ws = Workspace(args.workspace)
    job = ws.store.job(args.job)
    if job is None or job["kind"] != "pretrain":
        raise SystemExit(f"No pretrain job {args.job} in {args.workspace}.")
    world = distributed.join(queue.config_of(job).device)
    try:
        if world.main and job["status"] == "queued":  # launched by hand on a cluster: this process runs the job
            claimed = ws.store.claim_job(job["id"], os.getpid())
            if claimed is None:
                raise SystemExit(f"Job {job['id']} was taken by another process.")
            queue.run_job(ws, claimed)
            return 0 if ws.store.job(job["id"])["status"] in ("succeeded", "cancelled") else 1
        ctx = JobContext(ws, job, queue.job_folder(ws, job["id"]))
        if not world.main:
            pretraining.train(ctx, Callbacks())
            return 0
        try:
            result = pretraining.train(ctx, pretraining.ProcessCallbacks(ctx))
        except PirlError as exc:  # the worker shows it as the job's message
            (ctx.folder / pretraining.ERROR_FILE).write_text(str(exc))
            raise
        (ctx.folder / pretraining.RESULT_FILE).write_text(json.dumps(result))
        return 0
    finally:
        distributed.leave()


if __name__ == "__main__":
    sys.exit(main())
