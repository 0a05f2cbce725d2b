"""The pretrain service: start a PIRL run on a dataset (validated, then queued), list runs, and the
job kind the worker runs for it. Pages and the CLI both start runs here."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..data import duplicates
from ..data.image_cache import cache_size_for, dataset_cache
from ..engine import distributed
from ..engine.backbones import REGISTRY
from ..engine.config import AUGMENTS, PRETEXTS, PretrainConfig
from ..engine.optim import resolve_device
from ..engine.pretrain import Callbacks, StepReport, pretrain
from ..errors import Interrupted, PirlError
from ..fmt import duration
from ..jobs import queue
from ..jobs.queue import JobContext, job_kind
from ..jobs.records import Record
from ..workspace.folder import Workspace

BACKBONES = tuple(REGISTRY)
RESULT_FILE, ERROR_FILE = "result.json", "error.txt"  # what process 0 of a torchrun launch leaves for the worker
__all__ = ["AUGMENTS", "BACKBONES", "PRETEXTS", "PretrainConfig", "default_config", "runs", "start",
           "start_another_seed", "start_like", "to_read_together"]


def default_config(**overrides) -> PretrainConfig:
    """The defaults for this machine (see PretrainConfig.defaults_for)."""
    return PretrainConfig.defaults_for("auto", **overrides)


def visible_gpus() -> int:
    return torch.cuda.device_count()


def start(ws: Workspace, dataset: str | int, config: PretrainConfig) -> int:
    """Validate `config` against the dataset, queue the run, and start a worker. Returns the job id."""
    row = ws.store.dataset(dataset)
    if row is None:
        names = ", ".join(d["name"] for d in ws.store.datasets()) or "none yet: import images first"
        raise PirlError(f"No dataset named {dataset!r} (datasets: {names}).")
    config.validate(row["n_images"])
    gpus = visible_gpus()
    if config.nnodes == 1 and config.nproc > 1 and resolve_device(config.device).type == "cuda" and config.nproc > gpus:
        raise PirlError(f"{config.nproc} GPU processes asked for, {gpus} GPUs here: use --nproc {gpus} "
                        "(or --device cpu for CPU processes).")
    job_id = queue.submit(ws, "pretrain", config, row["id"], start_worker=config.nnodes == 1)
    if config.nnodes > 1:
        ws.store.update_job(job_id, message=f"waiting for its cluster launch on {config.nnodes} machines "
                                            "(README: Scaling); workers leave it alone")
    return job_id


def cluster_command(ws: Workspace, job_id: int, config: PretrainConfig) -> str:
    """What each machine of a cluster runs for a run queued with nnodes > 1 (README: Scaling has a Slurm script).
    HEAD is the first machine's address; the workspace must be on storage every machine sees."""
    return (f"torchrun --nnodes {config.nnodes} --nproc-per-node {config.nproc} --rdzv-id pirl-{job_id} "
            f"--rdzv-backend c10d --rdzv-endpoint HEAD:29500 -m pirl_core.training.pretrain_rank "
            f"--workspace {ws.root} --job {job_id}")


def start_like(ws: Workspace, job_id: int, **changes) -> int:
    """A new run with the settings and images of run `job_id`, some settings changed."""
    job = ws.store.job(job_id)
    if job is None or job["kind"] != "pretrain":
        raise PirlError(f"No pretrain run #{job_id}.")
    return start(ws, job["dataset_id"], dataclasses.replace(queue.config_of(job), **changes))


def to_read_together(ws: Workspace, backbone: str) -> dict | None:
    """The run a second seed would join (Compare's 'together' arm): the one finished ImageNet-started run of
    `backbone`, when there is exactly one and no pretraining is queued or running; else None."""
    every = runs(ws)
    finished = [j for j in every if j["status"] == "succeeded" and has_checkpoint(j)
                and queue.config_of(j).pretrained_imagenet and queue.config_of(j).backbone == backbone]
    if len(finished) != 1 or any(j["status"] in queue.ACTIVE for j in every):
        return None
    return finished[0]


def start_another_seed(ws: Workspace, job_id: int) -> int:
    """Run `job_id` again with the next unused seed (the settings and images unchanged)."""
    used = {queue.config_of(j).seed for j in runs(ws)}
    return start_like(ws, job_id, seed=next(s for s in itertools.count(queue.config_of(ws.store.job(job_id)).seed)
                                            if s not in used))


def runs(ws: Workspace, with_checkpoint: bool = False) -> list[dict]:
    """Pretrain runs, newest first; `with_checkpoint`: only those a comparison or search can use (a checkpoint
    file that is there)."""
    return [j for j in ws.store.jobs(kind="pretrain") if not with_checkpoint or has_checkpoint(j)]


def has_checkpoint(job: dict) -> bool:
    return bool(job["checkpoint"]) and Path(job["checkpoint"]).is_file()


def checkpoint_gone(ws: Workspace) -> list[int]:
    """Runs that wrote a checkpoint whose file has since been deleted."""
    return [j["id"] for j in ws.store.jobs(kind="pretrain") if j["checkpoint"] and not has_checkpoint(j)]


def chance_loss(job: dict, n_images: int) -> float:
    """The InfoNCE loss of a network that has learned nothing: ln(K + 1) for K negatives per image."""
    return math.log(queue.config_of(job).negatives_for(n_images) + 1)


AT_CHANCE = 0.03  # a loss within 3% of chance is "at chance"


def learning_verdict(loss: float, chance: float) -> str:
    """Whether a run is learning, in one plain sentence: below, at or above chance."""
    if loss < 0.8 * chance:
        state = "well below chance: the run is learning"
    elif loss < (1 - AT_CHANCE) * chance:
        state = "below chance: the run has started to learn"
    elif loss <= (1 + AT_CHANCE) * chance:
        state = "at chance: nothing learned yet"
    else:
        state = ("above chance: worse than a network that learned nothing (still warming up, or the learning "
                 "rate is too high for this batch)")
    return f"Loss {loss:.2f}, {state} (chance {chance:.2f})."


def learned_nothing(ws: Workspace, job_id: int) -> str | None:
    """Why a run is too short to judge PIRL (its last loss at or above chance), or None if it learned."""
    job = ws.store.job(job_id)
    dataset = ws.store.dataset(job["dataset_id"]) if job and job["dataset_id"] else None
    losses = ws.store.metrics(job_id, ["loss"]) if dataset else []
    if not losses:
        return None
    chance, last = chance_loss(job, dataset["n_images"]), losses[-1]["value"]
    if last < (1 - AT_CHANCE) * chance:
        return None
    return (f"pretraining run #{job_id} is too short to judge PIRL: its loss ended at {last:.2f}, "
            f"{'at' if last <= (1 + AT_CHANCE) * chance else 'above'} chance ({chance:.2f}), so its features are "
            "no better than untrained ones. Pretrain longer (the Pretrain page says when a run is learning).")


class _JobCallbacks(Callbacks):
    def __init__(self, ctx: JobContext):
        self.ctx = ctx

    def on_start(self, step: int, total_steps: int) -> None:
        # Resuming: rows written after the checkpoint will be written again, identically.
        self.ctx.ws.store.delete_metrics_after(self.ctx.job["id"], step)
        self.ctx.progress(step / max(total_steps, 1), f"resuming at step {step}" if step else "training")

    def on_step(self, r: StepReport) -> None:
        self.ctx.metrics(r.step, r.step / max(r.total_steps, 1) * r.epochs,
                         {**r.metrics, "images_per_s": r.images_per_s})
        self.ctx.progress(r.step / r.total_steps,
                          f"{r.position()} · {r.images_per_s:.1f} img/s · ETA {duration(r.eta_s)}",
                          step=r.step, total_steps=r.total_steps, epoch=r.epoch, epochs=r.epochs,
                          images_per_s=r.images_per_s, eta_s=r.eta_s)

    def on_checkpoint(self, path, step: int) -> None:
        self.ctx.ws.store.update_job(self.ctx.job["id"], checkpoint=str(path))

    def should_stop(self) -> bool:
        return self.ctx.should_stop()


class ProcessCallbacks(_JobCallbacks):
    """Process 0 of a run the worker launched under torchrun: the worker's process owns the job, so a cancel
    (or the job no longer running: the worker was killed) is read from the workspace, at most once a second."""

    def __init__(self, ctx: JobContext):
        super().__init__(ctx)
        self._checked, self._stop = 0.0, False

    def should_stop(self) -> bool:
        if time.monotonic() - self._checked > 1.0:
            self._checked = time.monotonic()
            row = self.ctx.ws.store.job(self.ctx.job["id"])
            self._stop = row is None or bool(row["cancel_requested"]) or row["status"] != "running"
        return self._stop


@dataclass
class PretrainOutcome(Record):
    """A pretrain job's result: progress fields while it runs, the final figures once it ends."""

    step: int | None = None
    total_steps: int | None = None
    epoch: int | None = None
    epochs: int | None = None
    images_per_s: float | None = None
    eta_s: float | None = None
    checkpoint: str | None = None  # the last checkpoint (the job row's `checkpoint` follows it while running)
    steps: int | None = None  # steps done when it ended
    last: dict[str, float] | None = None  # the last step's loss terms and learning rate
    n_images: int | None = None
    processes: int | None = None


@job_kind("pretrain", config=PretrainConfig, result=PretrainOutcome)
def pretrain_job(ctx: JobContext) -> dict:
    config = ctx.config
    if distributed.world().size == 1 and config.nproc > 1:
        return _run_processes(ctx, config)
    return train(ctx, _JobCallbacks(ctx))


def train(ctx: JobContext, callbacks: Callbacks) -> dict:
    """Train the job's run in this process (one of several under torchrun, or the only one)."""
    store = ctx.ws.store
    dataset_id = ctx.job["dataset_id"]
    if dataset_id is None or store.dataset(dataset_id) is None:
        raise PirlError("The dataset of this run no longer exists.")
    config = ctx.config
    rows = store.images(dataset_id)
    config.validate(len(rows))
    recorded = ctx.job.get("checkpoint")
    if recorded and not Path(recorded).exists():  # resuming: never restart at step 0 in silence
        raise PirlError(f"The checkpoint of this run ({recorded}) is gone, so it cannot resume where it stopped. "
                        "Start a new run with the same settings instead.")
    world = distributed.world()
    if world.main:
        ctx.progress(0.0, "preparing the image cache")
        images = dataset_cache(ctx.ws, dataset_id, cache_size_for(config.image_size))
    distributed.barrier()  # the other processes open the cache process 0 made
    if not world.main:
        images = dataset_cache(ctx.ws, dataset_id, cache_size_for(config.image_size))
    if world.main and config.exclude_copies:
        ctx.progress(0.0, f"finding near-copies among {len(rows)} images")
    copies = duplicates.image_clusters(images) if config.exclude_copies else None  # the same in every process
    result = pretrain(config, images, [r["id"] for r in rows], ctx.folder, callbacks, copies=copies)
    return {"checkpoint": result.checkpoint, "steps": result.step, "total_steps": result.total_steps,
            "last": result.last_metrics, "images_per_s": result.images_per_s, "n_images": len(rows),
            "processes": world.size}


def _run_processes(ctx: JobContext, config: PretrainConfig) -> dict:
    """The run as `config.nproc` processes on this machine (torchrun --standalone), followed to its end. A cancel
    reaches every process through process 0; a process that dies stops them all and the job is interrupted."""
    ctx.progress(0.0, "preparing the image cache")
    dataset_cache(ctx.ws, ctx.job["dataset_id"], cache_size_for(config.image_size))
    for name in (RESULT_FILE, ERROR_FILE):
        (ctx.folder / name).unlink(missing_ok=True)
    log = ctx.folder / "processes.log"
    ctx.progress(0.0, f"starting {config.nproc} training processes")
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={config.nproc}",
             "-m", "pirl_core.training.pretrain_rank", "--workspace", str(ctx.ws.root), "--job", str(ctx.job["id"])],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=ctx.ws.root)
    try:
        proc.wait()
    finally:
        if proc.poll() is None:  # this worker is being stopped: so are its training processes
            proc.terminate()
    if proc.returncode == 0 and (ctx.folder / RESULT_FILE).exists():
        return json.loads((ctx.folder / RESULT_FILE).read_text())
    if (ctx.folder / ERROR_FILE).exists():
        raise PirlError((ctx.folder / ERROR_FILE).read_text())
    raise Interrupted(f"A training process stopped (exit code {proc.returncode}; output in {log}). "
                      "Resume to continue from the last checkpoint.")
