"""The job kinds the worker runs. Each takes a JobContext and returns its result dict.

pretrain is here; finetune lives with the comparison it serves (compare.py).
"""

from __future__ import annotations

from . import compare  # noqa: F401  (registers the finetune kind)
from .engine.pretrain import Callbacks, PretrainConfig, StepReport, pretrain
from .errors import PirlError
from .fmt import duration
from .image_cache import cache_size_for
from .ingest import dataset_cache
from .jobs import JobContext, job_kind


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
                          f"epoch {r.epoch}/{r.epochs} · step {r.step}/{r.total_steps} · "
                          f"{r.images_per_s:.1f} img/s · ETA {duration(r.eta_s)}",
                          step=r.step, total_steps=r.total_steps, epoch=r.epoch, epochs=r.epochs,
                          images_per_s=r.images_per_s, eta_s=r.eta_s)

    def on_checkpoint(self, path, step: int) -> None:
        self.ctx.ws.store.update_job(self.ctx.job["id"], checkpoint=str(path))

    def should_stop(self) -> bool:
        return self.ctx.should_stop()


@job_kind("pretrain")
def pretrain_job(ctx: JobContext) -> dict:
    store = ctx.ws.store
    dataset_id = ctx.job["dataset_id"]
    if dataset_id is None or store.dataset(dataset_id) is None:
        raise PirlError("The dataset of this run no longer exists.")
    config = PretrainConfig.from_dict(ctx.config)
    rows = store.images(dataset_id)
    config.validate(len(rows))
    ctx.progress(0.0, "preparing the image cache")
    images = dataset_cache(ctx.ws, dataset_id, cache_size_for(config.image_size))
    result = pretrain(config, images, [r["id"] for r in rows], ctx.folder, _JobCallbacks(ctx))
    return {"checkpoint": result.checkpoint, "steps": result.step, "total_steps": result.total_steps,
            "last": result.last_metrics, "images_per_s": result.images_per_s, "n_images": len(rows)}
