"""Renaming and deleting datasets. A deletion names what depends on the dataset first (pretraining runs on it,
comparisons on it with their finetune jobs) and removes them with it; exported bundles stay (they are files
the user took away). Nothing is deleted while one of those jobs is queued or running."""

from __future__ import annotations

import shutil

from ..access import audit
from ..errors import PirlError
from ..jobs import queue
from ..workspace.folder import Workspace
from .image_cache import cache_files


def _dataset(ws: Workspace, name: str) -> dict:
    row = ws.store.dataset(name)
    if row is None:
        raise PirlError(f"No dataset named {name!r}.")
    return row


def rename(ws: Workspace, name: str, new_name: str) -> None:
    row, new_name = _dataset(ws, name), new_name.strip()
    if not new_name:
        raise PirlError("Give the dataset a name.")
    if new_name != name and ws.store.dataset(new_name) is not None:
        raise PirlError(f"A dataset named {new_name!r} already exists.")
    ws.store.update_dataset(row["id"], name=new_name)
    audit.record(ws, "rename dataset", name, f"to {new_name}")


def dependents(ws: Workspace, name: str) -> dict[str, list[int]]:
    """Job and comparison ids that go with the dataset: pretraining runs on it, comparisons of it and their
    finetune jobs; `active`: those of its jobs still queued or running."""
    row = _dataset(ws, name)
    own = [j for j in ws.store.jobs() if j["dataset_id"] == row["id"]]
    comparisons = [e["id"] for e in ws.store.evaluations() if e["result"].get("kind") == "comparison"
                   and e["result"].get("config", {}).get("labeled_dataset_id") == row["id"]]
    return {"runs": [j["id"] for j in own if j["kind"] == "pretrain"],
            "finetunes": [j["id"] for j in own if j["kind"] == "finetune"],
            "comparisons": comparisons,
            "active": [j["id"] for j in own if j["status"] in queue.ACTIVE]}


def describe(dep: dict[str, list[int]]) -> str:
    """What a deletion takes with it, in words."""
    def ids(values):
        return ", ".join(f"#{v}" for v in values)

    parts = [f"{len(dep['runs'])} pretraining run(s) ({ids(dep['runs'])})" if dep["runs"] else "",
             f"{len(dep['comparisons'])} comparison(s) ({ids(dep['comparisons'])})" if dep["comparisons"] else "",
             f"{len(dep['finetunes'])} finetune job(s)" if dep["finetunes"] else ""]
    return ", ".join(p for p in parts if p) or "nothing else"


def delete(ws: Workspace, name: str) -> str:
    """Delete the dataset, its images (files no other dataset uses), caches and dependents. Returns what went."""
    row, dep = _dataset(ws, name), dependents(ws, name)
    if dep["active"]:
        raise PirlError(f"Jobs {', '.join(f'#{j}' for j in dep['active'])} on {name!r} are queued or running; "
                        "cancel them first.")
    job_ids = dep["runs"] + dep["finetunes"]
    hashes = {im["content_hash"]: im["path"] for im in ws.store.images(row["id"])}
    ws.store.delete_dataset(row["id"], job_ids, dep["comparisons"])
    for path in cache_files(ws, row["id"]):
        path.unlink(missing_ok=True)
    for job_id in job_ids:
        shutil.rmtree(queue.job_folder(ws, job_id), ignore_errors=True)
    for digest, path in hashes.items():
        if not ws.store.image_file_used(digest):
            (ws.root / path).unlink(missing_ok=True)
    gone = describe(dep)
    audit.record(ws, "delete dataset", name, f"{row['n_images']} images; with {gone}")
    return gone


def set_positive(ws: Workspace, name: str, label: str) -> None:
    """The class a labeled set's figures are about (sensitivity, PPV, the ROC, the threshold); comparisons
    started from now on use it, earlier ones keep the class they were run with."""
    row = _dataset(ws, name)
    classes = ws.store.class_counts(row["id"])
    if label not in classes:
        raise PirlError(f"{label!r} is not a class of {name!r} ({', '.join(classes)}).")
    ws.store.update_dataset(row["id"], info={**row["info"], "positive": label})
    audit.record(ws, "positive class", name, label)


def disk_usage(ws: Workspace, dataset_id: int) -> dict:
    """Bytes on disk a dataset uses: its stored original files (shared with another dataset holding the same file)
    and its training caches (`image_cache`: lossless PNG, about 40 KB an image at the 256 px base for ultrasound
    and X-ray, plus derived sizes)."""
    files = [ws.root / im["path"] for im in ws.store.images(dataset_id)]
    originals = sum(f.stat().st_size for f in files if f.exists())
    caches = sum(f.stat().st_size for f in cache_files(ws, dataset_id))
    return {"originals": originals, "caches": caches, "total": originals + caches}


def describe_disk(usage: dict, n_images: int) -> str:
    gib = usage["total"] / 2**30
    size = f"{gib:.1f} GB" if gib >= 1 else f"{usage['total'] / 2**20:.0f} MB"
    per = usage["total"] / max(n_images, 1) / 1024
    return (f"On disk: {size} ({per:,.0f} KB an image: the original files "
            f"{usage['originals'] / 2**20:,.0f} MB, the training caches {usage['caches'] / 2**20:,.0f} MB).")
