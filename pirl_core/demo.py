"""The ready-made demo workspace behind `make run` / `pirl app --demo`: synthetic images, ingested, then a
short pipeline in the background (pretrain -> compare -> export) so that every page has something real to
show within minutes of the first start.

The pipeline is three queued jobs, run in order by the one worker: the pretraining run; `demo_compare`, which
starts the comparison (its finetune jobs queue behind it) and then queues `demo_export`, which therefore
runs once they are done and exports the best initialisation."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from .data import demo_data, ingest, sources
from .errors import PirlError
from .evaluation import compare
from .jobs import queue
from .jobs.queue import JobContext, job_kind
from .jobs.records import Record
from .models import export
from .training import pretraining
from .workspace.folder import Workspace

DEMO_N, DEMO_UNLABELED, DEMO_SEED = 120, 400, 0
POOL, LABELED = "demo-unlabeled", "demo-labeled"
# The CPU default's start (efficientnet_lite0 from ImageNet), at a size and length that learn in minutes: 3 epochs of
# batch 64 at 128 px (18 steps) ended at loss 7.15, above chance (ln 400 = 5.99: "too short to judge PIRL"); 10
# epochs of batch 32 at 96 px (120 steps, a quarter of the pixels a step) fall below chance from the 37th step on.
DEMO_PRETRAIN = {"epochs": 10, "image_size": 96, "batch_size": 32}


def ensure_demo_workspace(ws: Workspace, log: Callable[[str], None] = print, pipeline: bool = True,
                          **pretrain_settings) -> None:
    """Generate the demo images and ingest them (an unlabeled pool and a labeled set) once, and on the first
    start queue the demo pipeline; a second call does nothing."""
    folder = ws.root / "demo-data"
    if not (folder / "unlabeled").exists():
        log(f"Writing demo images to {folder} ...")
        demo_data.generate(folder, n=DEMO_N, seed=DEMO_SEED, unlabeled=DEMO_UNLABELED)
    for name, sub, labels in ((POOL, "unlabeled", False), (LABELED, "labeled", True)):
        if ws.store.dataset(name) is None:
            log(f"Ingesting {name} ...")
            report = ingest.ingest(ws, sources.folder_source(folder / sub, check_roots=False), name,
                                   folder_labels=labels)
            info = ws.store.dataset(report.dataset_id)["info"]
            ws.store.update_dataset(report.dataset_id, info={**info, "synthetic": True})  # the model card says so
    if pipeline and not ws.store.jobs():
        log("Queueing the demo pipeline: pretrain -> compare -> export (a few minutes) ...")
        start_pipeline(ws, **pretrain_settings)


def start_pipeline(ws: Workspace, **pretrain_settings) -> int:
    """Queue a short PIRL run on the demo pool, then the comparison and the export. Returns the run's id."""
    config = pretraining.default_config(**{**DEMO_PRETRAIN, **pretrain_settings})
    run = queue.submit(ws, "pretrain", config, ws.store.dataset(POOL)["id"], start_worker=False)
    queue.submit(ws, "demo_compare", DemoCompare(run), ws.store.dataset(LABELED)["id"])
    return run


def pipeline_status(ws: Workspace) -> list[dict] | None:
    """The demo pipeline's steps with their states, for Home; None when no pipeline was queued."""
    chain = {j["kind"]: j for j in ws.store.jobs() if j["kind"] in ("demo_compare", "demo_export")}
    if "demo_compare" not in chain:
        return None
    starter = chain["demo_compare"]
    run = ws.store.job(queue.config_of(starter).pretrain_job)
    arms = [ws.store.job(i)["status"] for i in queue.result_of(starter).finetune_jobs]
    epochs = queue.config_of(run).epochs if run else DEMO_PRETRAIN["epochs"]
    if starter["status"] != "succeeded" or not arms:
        comparing = "waiting" if starter["status"] == "queued" else starter["status"]
    else:
        comparing = next((s for s in ("failed", "running", "queued") if s in arms), "succeeded")
    return [{"step": f"Pretrain PIRL on the demo pool ({epochs} epochs)",
             "status": run["status"] if run else "missing"},
            {"step": "Compare the initialisations on the labeled demo set", "status": comparing},
            {"step": "Export the best model", "status": chain["demo_export"]["status"] if "demo_export" in chain
             else "waiting"}]


@dataclass
class DemoCompare(Record):
    pretrain_job: int


@dataclass
class DemoCompareOutcome(Record):
    comparison: int | None = None
    finetune_jobs: list[int] = field(default_factory=list)


@dataclass
class DemoExport(Record):
    comparison: int


@dataclass
class DemoExportOutcome(Record):
    """What export_finetune reports about the bundle it wrote."""

    path: str | None = None
    kind: str | None = None
    init: str | None = None
    label: str | None = None
    size_bytes: int | None = None
    public_key: str | None = None
    test_images: int | None = None
    max_abs_prob_diff_torchscript: float | None = None
    max_abs_prob_diff_onnx: float | None = None
    test_metrics: dict | None = None


@job_kind("demo_compare", config=DemoCompare, result=DemoCompareOutcome)
def demo_compare_job(ctx: JobContext) -> DemoCompareOutcome:
    run = ctx.config.pretrain_job
    if (ctx.ws.store.job(run) or {}).get("status") != "succeeded":
        raise PirlError(f"The demo pretraining run #{run} did not finish; the demo comparison cannot start.")
    inits = [i for i in compare.INITS if not (i.startswith("imagenet") and compare.imagenet_problem(
        queue.config_of(ctx.ws.store.job(run)).backbone))]
    cid = compare.start(ctx.ws, compare.CompareRequest(labeled=LABELED, pretrain_jobs=[run], inits=inits,
                                                       mode="linear", folds=3, fractions=[0.25, 1.0]))
    arms = compare.comparison(ctx.ws, cid)["arms"]
    queue.submit(ctx.ws, "demo_export", DemoExport(cid), start_worker=False)  # runs after the arms
    return DemoCompareOutcome(cid, [a["job_id"] for a in arms])


@job_kind("demo_export", config=DemoExport, result=DemoExportOutcome)
def demo_export_job(ctx: JobContext) -> dict:
    summary = compare.summarize(ctx.ws, ctx.config.comparison)
    arms = {a["label"]: a["job_id"] for a in compare.comparison(ctx.ws, ctx.config.comparison)["arms"]}
    best = max(summary["table"], key=lambda e: e["auc"])
    return export.export_finetune(ctx.ws, arms[best["arm"]])
