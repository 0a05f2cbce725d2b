"""Pulling studies from a PACS into a new dataset, or into an unlabeled pool nothing has used yet: a background
job (the Data page) or a command (`pirl ingest --dicomweb`), that resumes where it stopped.

    the studies (chosen, or every match of a query) -> their instances (QIDO-RS; what holds no picture is named
    and never downloaded) -> each instance's file, several requests at once, written whole into the job's folder
    (WADO-RS) -> the usual import of those files (ingest.py), with each patient as the split group

Memory stays bounded by the number of requests in flight, not by the study count: every file goes to disk as it
arrives, and the import reads them back one at a time. A file is written under a temporary name and renamed, so
a pull killed at any moment leaves only whole files; a resumed pull keeps them and fetches the rest: every
instance once, none twice. The staged files are removed once the dataset is committed (the workspace keeps its
own copy of each image). Pulled into a pool that exists, a study the pool already holds is not pulled again.
"""

from __future__ import annotations

import json
import shutil
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..errors import PirlError
from ..jobs import queue
from ..jobs.queue import JobContext, job_kind
from ..jobs.records import Record
from ..workspace.atomic import write_bytes_atomic
from ..workspace.folder import Workspace
from . import ingest, labels, pacs, patients
from .sources import SourceFile

WORKERS = 4  # requests in flight: enough to hide a PACS's latency, few enough not to load it


@dataclass
class PullConfig(Record):
    server: str  # a configured server's name; a URL from the command line only
    dataset: str
    studies: list[str] = field(default_factory=list)  # StudyInstanceUIDs; empty: every match of `query`
    query: dict = field(default_factory=dict)
    workers: int = WORKERS
    label_attribute: str = ""  # optional labels from the header: a DICOM keyword or tag ...
    label_map: list = field(default_factory=list)  # ... and [[keyword, class], ...] (data/labels.py header_rule)

    def validate(self) -> None:
        if not self.dataset.strip():
            raise PirlError("Give the new dataset a name.")
        if not self.studies and not self.query:
            raise PirlError("Choose the studies to pull, or give a search that selects them (pulling a whole "
                            "PACS needs at least one search field).")
        if not 1 <= self.workers <= 32:
            raise PirlError("Between 1 and 32 requests at once.")
        if self.label_attribute or self.label_map:
            labels.header_rule(self.label_attribute, ", ".join(f"{k} = {c}" for k, c in self.label_map))


@dataclass
class PullOutcome(Record):
    dataset_id: int | None = None
    studies: int = 0
    instances: int = 0  # usable instances in those studies
    downloaded: int = 0  # fetched by this run
    reused: int = 0  # already in the job's folder from an earlier, interrupted run
    download_s: float = 0.0  # seconds spent fetching (the rest of a pull is the import)
    report: dict = field(default_factory=dict)  # the import's report (ingest.Report)


def _plan(srv: pacs.Server, client, uids: list[str], staging: Path, key: bytes, refused: list[dict],
          should_stop: Callable[[], bool]) -> list[tuple[pacs.Instance, str, Path]]:
    """(instance, name in the dataset, file in the staging folder) for every usable instance of the studies.
    Names carry pseudonyms of the study and instance, never their UIDs."""
    plan = []
    for uid in uids:
        if should_stop():
            break
        study = patients.hashed(key, uid, "study-")
        for inst in pacs.instances(srv, client, uid):
            name = f"{inst.modality}/{study}/{patients.hashed(key, inst.sop, '')}.dcm"
            if inst.unusable:
                refused.append({"name": name, "reason": f"{inst.unusable}: not imported"})
            else:
                plan.append((inst, name, staging / name))
    return plan


def _download(srv: pacs.Server, client, plan, workers: int, on_done: Callable[[int, int], None],
              should_stop: Callable[[], bool]) -> tuple[int, int]:
    """Fetch every planned file not already staged, `workers` at a time; returns (downloaded, reused)."""
    missing = [(inst, path) for inst, _, path in plan if not path.exists()]  # not staged by an earlier try
    reused = len(plan) - len(missing)

    def fetch(inst, path):
        write_bytes_atomic(path, pacs.retrieve(srv, client, inst))

    done, pending = 0, set()
    with ThreadPoolExecutor(workers) as pool:
        items = iter(missing)
        while True:
            while len(pending) < 2 * workers and not should_stop():
                item = next(items, None)
                if item is None:
                    break
                pending.add(pool.submit(fetch, *item))
            if not pending:
                return done, reused
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                future.result()  # a PacsError stops the pull: what is staged stays for the resume
                done += 1
            on_done(reused + done, len(plan))


def pull(ws: Workspace, cfg: PullConfig, folder: Path, on_progress: Callable[[float, str], None] | None = None,
         should_stop: Callable[[], bool] = lambda: False, allow_any_url: bool = False) -> PullOutcome:
    """Pull `cfg`'s studies into the new dataset `cfg.dataset`; `folder` keeps what is staged between tries."""
    report = on_progress or (lambda fraction, message: None)
    existing = ws.store.dataset(cfg.dataset.strip())
    marker = folder / "target.json"  # whether the dataset existed when this pull first started
    if not marker.exists():
        write_bytes_atomic(marker, json.dumps({"existed": existing is not None}).encode())
    if existing is not None and not json.loads(marker.read_text())["existed"]:
        shutil.rmtree(folder / "staged", ignore_errors=True)  # this pull's own dataset, committed before it stopped
        return PullOutcome(dataset_id=existing["id"], instances=existing["n_images"],
                           report=ingest.Report(existing["name"], existing["id"], unchanged=True).to_dict())
    if existing is not None and cfg.label_attribute:
        raise PirlError(f"{cfg.dataset.strip()!r} exists; labels from the header make a new labeled set: choose "
                        "a new name.")
    if existing is not None:
        ingest.check_addable(ws, existing, cfg.dataset.strip())  # before minutes of downloading, not after
    srv = pacs.server(cfg.server, allow_any_url)
    client = pacs.connect(srv)
    report(0.0, f"Listing the studies on {srv.label} ...")
    uids = cfg.studies or [s.uid for s in pacs.search(srv, cfg.query).studies]
    if not uids:
        raise pacs.PacsError("The search matches no study on the PACS: nothing to pull. Widen the search.")
    key, staging, refused = patients.salt(ws), folder / "staged", []
    if existing is not None:  # a study the pool already holds is not pulled again
        held = {im["orig_name"].split("/")[1] for im in ws.store.images(existing["id"])
                if im["orig_name"].count("/") == 2}
        uids = [u for u in uids if patients.hashed(key, u, "study-") not in held]
    plan = _plan(srv, client, uids, staging, key, refused, should_stop)
    outcome = PullOutcome(studies=len(uids), instances=len(plan))
    if should_stop():
        return outcome
    started = time.monotonic()
    outcome.downloaded, outcome.reused = _download(
        srv, client, plan, cfg.workers,
        lambda n, total: report(0.8 * n / max(total, 1), f"{n} of {total} images from {len(uids)} studies"),
        should_stop)
    outcome.download_s = round(time.monotonic() - started, 2)
    if should_stop():
        return outcome
    if not plan and existing is not None and not refused:
        outcome.dataset_id, outcome.report = existing["id"], ingest.Report(cfg.dataset, existing["id"],
                                                                           unchanged=True).to_dict()
        return outcome  # every study is in the pool already
    if not plan:
        raise PirlError(f"The {len(uids)} studies hold no image that can be used"
                        + (f" ({refused[0]['reason']})." if refused else "."))
    files = [SourceFile(name, path.read_bytes) for _, name, path in plan]
    labels_csv = None
    if cfg.label_attribute:
        labels_csv = labels.header_labels_csv([name for _, name, _ in plan], [
            labels.header_label(path, cfg.label_attribute, cfg.label_map) for _, _, path in plan])
    importing = lambda i, n, _: report(0.8 + 0.2 * i / max(n, 1), f"importing {i} of {n}")  # noqa: E731
    if existing is not None:
        result = ingest.add_to(ws, existing["name"], files, refused, importing, should_stop)
    else:
        result = ingest.ingest(ws, files, cfg.dataset, labels_csv=labels_csv, pre_skipped=refused,
                               should_stop=should_stop, on_progress=importing)
    shutil.rmtree(staging, ignore_errors=True)
    outcome.dataset_id, outcome.report = result.dataset_id, result.to_dict()
    return outcome


def start(ws: Workspace, cfg: PullConfig) -> int:
    """Queue a pull as a background job (the Data page)."""
    return queue.submit(ws, "pacs_pull", cfg)


@job_kind("pacs_pull", config=PullConfig, result=PullOutcome)
def pull_job(ctx: JobContext) -> PullOutcome:
    return pull(ctx.ws, ctx.config, ctx.folder, lambda fraction, message: ctx.progress(fraction, message),
                ctx.should_stop)
