"""Background jobs: a queue in the workspace database, run by a worker OS process.

* `submit` queues a job and starts a worker if none is running: there is no daemon to
  remember. The worker (`python -m pirl_core.jobs.worker`) holds `worker.lock` in the workspace,
  runs queued jobs one at a time in order (one training job per device), and exits when the
  queue has been empty for a while (`pirl worker --forever` keeps it up on a server).
* A running job heartbeats every couple of seconds. A job whose worker died (killed,
  machine restarted) is found by `reap` from its dead pid or silent heartbeat and marked
  interrupted; `resume` queues it again and it continues from its last checkpoint.
* `cancel` is honoured at the next step boundary, within seconds, after a checkpoint.

Why no library: the queue must live in the workspace's SQLite file (a refresh, a second
tab, a restarted server all read the same rows), need no broker process, and report
heartbeats and metrics into the same database. Celery, RQ and Dramatiq need Redis or
RabbitMQ; Huey's SQLite backend has no heartbeats, cancel or resume of a running task.
What is here is ~200 lines over `workspace/store.py`.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Callable

from ..access import audit
from ..errors import Interrupted, PirlError
from ..workspace.folder import Workspace
from ..workspace.store import ACTIVE_STATES, JOB_STATES
from . import records

HEARTBEAT_S = 2.0
STALE_AFTER_S = 20.0
ACTIVE = ACTIVE_STATES  # ("queued", "running")
FINISHED = tuple(s for s in JOB_STATES if s not in ACTIVE_STATES)  # succeeded, failed, cancelled, interrupted
RESUMABLE = ("interrupted", "cancelled", "failed")


@dataclass(frozen=True)
class Kind:
    """A job kind: its function and the types of its config and result (jobs/records.py)."""

    name: str
    run: Callable[[JobContext], object]
    config: type
    result: type


# kind name -> Kind. Job kinds register here with @job_kind; the worker entry point (jobs/worker.py) imports
# jobs/kinds.py, which registers them all.
KINDS: dict[str, Kind] = {}


def job_kind(name: str, *, config: type, result: type):
    """Register a job function with the types of its config and result, declared beside it."""
    def register(fn):
        KINDS[name] = Kind(name, fn, config, result)
        return fn

    return register


def kind_of(name: str) -> Kind:
    if name not in KINDS:
        raise PirlError(f"Unknown job kind {name!r} (known here: {', '.join(KINDS) or 'none'}).")
    return KINDS[name]


def config_of(job: dict):
    """A job row's config, typed (the kind's config type), migrated from the schema it was written at."""
    return records.load(kind_of(job["kind"]).config, job["config"])


def result_of(job: dict):
    """A job row's result so far, typed; every field is empty until the job reports it."""
    return records.load(kind_of(job["kind"]).result, job["result"])


def _merged_result(job: dict, update: dict | object) -> dict:
    """The stored result with `update` (fields, or a result record) merged in, checked against the kind's type."""
    fields = update.to_dict() if hasattr(update, "to_dict") else dict(update)
    return records.dump(records.load(kind_of(job["kind"]).result, {**job["result"], **fields}))


@dataclass
class JobContext:
    """What a job kind gets: its workspace, row, typed config and folder, and ways to report back."""

    ws: Workspace
    job: dict
    folder: Path
    _cancel: threading.Event = field(default_factory=threading.Event)

    @cached_property
    def config(self):
        return config_of(self.job)

    def should_stop(self) -> bool:
        return self._cancel.is_set()

    def metrics(self, step: int, epoch: float | None, values: dict[str, float]) -> None:
        self.ws.store.add_metrics(self.job["id"], step, epoch, values)

    def progress(self, fraction: float, message: str, **result) -> None:
        fields = {"progress": max(0.0, min(1.0, fraction)), "message": message}
        if result:
            fields["result"] = self.job["result"] = _merged_result(self.job, result)
        self.ws.store.update_job(self.job["id"], **fields)


def job_folder(ws: Workspace, job_id: int) -> Path:
    return ws.checkpoints / f"job-{job_id}"


# -- the queue (pages and CLI) ---------------------------------------------------------------
def submit(ws: Workspace, kind: str, config, dataset_id: int | None = None, start_worker: bool = True) -> int:
    """Queue a job; `config` is the kind's config type (or its fields), parsed and checked here, once."""
    config_type = kind_of(kind).config
    record = config if isinstance(config, config_type) else records.load(config_type, config)
    job_id = ws.store.add_job(kind, records.dump(record), dataset_id)
    audit.record(ws, f"queue {kind}", f"job #{job_id}", f"dataset #{dataset_id}" if dataset_id else "")
    if start_worker:
        ensure_worker(ws)
    return job_id


def cancel(ws: Workspace, job_id: int) -> str:
    """Cancel a queued job at once, or ask a running one to stop at its next step. Returns the new state."""
    store = ws.store
    job = _get(ws, job_id)
    if store.set_job_status_if(job_id, ["queued"], "cancelled", finished_at=time.time(),
                               message="cancelled before it started"):
        return "cancelled"
    if job["status"] == "running":
        store.update_job(job_id, cancel_requested=1, message="cancelling ...")
        audit.record(ws, "cancel", f"job #{job_id}")
        return "cancelling"
    raise PirlError(f"Job {job_id} is {job['status']}; only queued or running jobs can be cancelled.")


def resume(ws: Workspace, job_id: int, start_worker: bool = True) -> None:
    """Queue an interrupted, cancelled or failed job again; it continues from its last checkpoint."""
    job = _get(ws, job_id)
    if not ws.store.set_job_status_if(job_id, list(RESUMABLE), "queued",
                                      finished_at=None, cancel_requested=0, message="queued to resume",
                                      created_at=time.time()):
        raise PirlError(f"Job {job_id} is {job['status']}; only interrupted, cancelled or failed jobs resume.")
    audit.record(ws, "resume", f"job #{job_id}")
    if start_worker:
        ensure_worker(ws)


def _get(ws: Workspace, job_id: int) -> dict:
    job = ws.store.job(job_id)
    if job is None:
        raise PirlError(f"No job {job_id} in this workspace.")
    return job


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (killed, not yet reaped by its parent) is dead
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[-1][:1] != "Z"
    except OSError:
        return True


def reap(ws: Workspace) -> list[int]:
    """Mark running jobs whose worker is gone as interrupted. Cheap; pages call it on every render."""
    store = ws.store
    now = time.time()
    gone = [j for j in store.running_jobs()
            if not _pid_alive(j["pid"]) or (j["heartbeat_at"] or 0) < now - STALE_AFTER_S]
    for job in gone:
        store.set_job_status_if(job["id"], ["running"], "interrupted", finished_at=now,
                                message="worker stopped (killed or machine restarted): resume to continue")
    return [j["id"] for j in gone]


def worker_running(ws: Workspace) -> bool:
    with open(ws.root / "worker.lock", "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
        return False


def ensure_worker(ws: Workspace) -> bool:
    """Start a worker process for this workspace unless one is running. Returns whether one started."""
    reap(ws)
    if worker_running(ws):
        return False
    log = open(ws.logs / "worker.log", "ab")
    subprocess.Popen([sys.executable, "-m", "pirl_core.jobs.worker", "--workspace", str(ws.root)],
                     stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                     start_new_session=True, cwd=ws.root)
    log.close()
    return True


def wait(ws: Workspace, job_id: int, on_update: Callable[[dict], None] | None = None,
         poll_s: float = 1.0, timeout_s: float | None = None) -> dict:
    """Follow a job until it finishes (restarting a worker if it dies while the job is queued)."""
    deadline = time.time() + timeout_s if timeout_s else None
    last_start = time.monotonic()
    while True:
        reap(ws)
        job = _get(ws, job_id)
        if on_update:
            on_update(job)
        if job["status"] in FINISHED:
            return job
        if job["status"] == "queued" and time.monotonic() - last_start > 10:
            ensure_worker(ws)  # the worker died before taking the job
            last_start = time.monotonic()
        if deadline and time.time() > deadline:
            raise TimeoutError(f"job {job_id} still {job['status']} after {timeout_s} s")
        time.sleep(poll_s)


# -- the worker ------------------------------------------------------------------------------
def run_worker(ws: Workspace, forever: bool = False, idle_exit_s: float = 5.0) -> int:
    """Run queued jobs in order until the queue stays empty for `idle_exit_s` (or forever)."""
    lock = open(ws.root / "worker.lock", "a")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return 0  # another worker serves this workspace
    done = 0
    idle_since = time.monotonic()
    try:
        while True:
            reap(ws)
            job = ws.store.claim_next_job(os.getpid())
            if job is None:
                if not forever and time.monotonic() - idle_since > idle_exit_s:
                    return done
                time.sleep(0.5)
                continue
            run_job(ws, job)
            done += 1
            idle_since = time.monotonic()
    finally:
        fcntl.flock(lock, fcntl.LOCK_UN)
        lock.close()


def run_job(ws: Workspace, job: dict) -> None:
    """Run one claimed job in this process: heartbeat, cancel, and the final state."""
    store = ws.store
    folder = job_folder(ws, job["id"])
    folder.mkdir(parents=True, exist_ok=True)
    ctx = JobContext(ws, job, folder)
    beating = threading.Event()

    def heartbeat():
        beat_store = Workspace(ws.root).store  # its own connection
        while not beating.wait(HEARTBEAT_S / 2):
            beat_store.update_job(job["id"], heartbeat_at=time.time())
            row = beat_store.job(job["id"])
            if row and row["cancel_requested"]:
                ctx._cancel.set()
        beat_store.close()

    thread = threading.Thread(target=heartbeat, daemon=True)
    thread.start()
    try:
        result = _merged_result(ctx.job, kind_of(job["kind"]).run(ctx))
        if ctx.should_stop():
            store.update_job(job["id"], status="cancelled", finished_at=time.time(), result=result,
                             message="cancelled: resume to continue from its checkpoint")
        else:
            store.update_job(job["id"], status="succeeded", finished_at=time.time(), result=result, progress=1.0,
                             message="finished")
    except Interrupted as exc:
        store.update_job(job["id"], status="interrupted", finished_at=time.time(), message=str(exc))
    except PirlError as exc:
        store.update_job(job["id"], status="failed", finished_at=time.time(), message=str(exc), error=str(exc))
    except Exception as exc:
        store.update_job(job["id"], status="failed", finished_at=time.time(),
                         message=f"{type(exc).__name__}: {exc}", error=traceback.format_exc())
    finally:
        beating.set()
        thread.join()
