"""Bringing images into the workspace, as a pipeline of named stages:

    sources (sources.py) -> decoded images (`decode_all`) -> stored files (`FileStore`)
    -> labels and groups (`labels_and_groups`, labels.py; patients from DICOM headers, patients.py)
    -> splits (`split`) -> one transaction (`commit`)

Every file is checked (see `image_io.decode`); a bad file is skipped with its reason, never fatal. Exact
duplicates (same bytes) are imported once and reported. Images are copied into the workspace (content-addressed,
so the source can go away) and decoded once into a 256 px training cache. The database sees the whole dataset in
one transaction at the end: a crash or a cancel leaves no half dataset, and ingesting the same files again
changes nothing. Until then the rows wait on disk (staging.py), so an unlabeled archive of any size is read with
the same memory. A new source (a PACS, a labeling loop) is a new list of `SourceFile`s, not a new branch here.
"""

from __future__ import annotations

import hashlib
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Collection, Iterable, Iterator, Sized

import numpy as np

from ..access import audit
from ..errors import BadImage, Cancelled, PirlError
from ..workspace.folder import Workspace
from . import duplicates
from .image_cache import (
    CACHE_SIZE,
    CacheWriter,
    cache_files,
    cache_path,
    dataset_cache,
    open_cache,
    resize_row,
    square_resize,
)
from .image_io import decode
from .labels import check_labels, folder_label, match_labels, read_labels_csv
from .sources import SourceFile, folder_source, read_source
from .splits import assign_splits
from .staging import Decoded, FileStore, SeenFiles

SPLIT_FRACTIONS = {"train": 0.7, "val": 0.15, "test": 0.15}
MAX_NOTES = 100  # notes on single files (a DICOM's windowing, say) kept in a report


@dataclass
class Report:
    dataset: str
    dataset_id: int | None = None
    imported: int = 0
    duplicates: list[dict] = field(default_factory=list)  # {"name", "same_as"}
    skipped: list[dict] = field(default_factory=list)  # {"name", "reason"}
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    labels: dict[str, int] = field(default_factory=dict)
    label_conflicts: list[dict] = field(default_factory=list)  # near-copies with different labels
    unchanged: bool = False

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


# -- decoded images --------------------------------------------------------------------------
def decode_all(files: Iterable[SourceFile], report: Report,
               on_progress: Callable[[int, int, str], None] | None = None,
               should_stop: Callable[[], bool] | None = None,
               seen: dict[str, str] | SeenFiles | None = None) -> Iterator[Decoded]:
    """Each file read and decoded, one at a time; a byte-identical copy is reported once, a bad file skipped
    with its reason (one bad file or zip member never aborts an import). `seen` (content hash -> name) holds
    the files read so far, and any the import must not take again (a pool's own images)."""
    seen = {} if seen is None else seen
    total = len(files) if isinstance(files, Sized) else 0
    for i, src in enumerate(files):
        if should_stop and should_stop():
            raise Cancelled()
        if on_progress:
            on_progress(i, total, src.name)
        try:
            data = read_source(src)
            digest = hashlib.sha256(data).hexdigest()
            same_as = seen.get(digest)
            if same_as is not None:
                report.duplicates.append({"name": src.name, "same_as": same_as})
                continue
            decoded = decode(data, src.name)
        except BadImage as exc:
            report.skipped.append({"name": src.name, "reason": str(exc)})
            continue
        except Exception as exc:  # noqa: BLE001
            report.skipped.append({"name": src.name, "reason": f"cannot be read ({type(exc).__name__}: {exc})"})
            continue
        seen[digest] = src.name
        if decoded.note and len(report.notes) < MAX_NOTES:
            report.notes.append(f"{src.name}: {decoded.note}")
        yield Decoded(src, data, digest, square_resize(decoded.image, CACHE_SIZE), decoded.image.width,
                      decoded.image.height, decoded.patient, decoded.study, i)
    if on_progress:
        on_progress(total, total, "")


# -- labels and groups, splits ---------------------------------------------------------------
def labels_and_groups(names: list[str], folder_labels: bool, table: dict | None, report: Report,
                      patient_groups: list[str | None] | None = None) -> tuple[list[str | None], list[str | None]]:
    """Each image's label and group, from its class folder or the CSV; CSV rows that match nothing are warned.
    An image the CSV gives no group takes its patient's (`patient_groups`, from the DICOM header)."""
    patient_groups = patient_groups or [None] * len(names)
    if folder_labels:
        return [folder_label(n) for n in names], patient_groups
    if table is None:
        return [None] * len(names), patient_groups
    labels, groups, unknown = match_labels(names, table)
    if unknown:
        report.warnings.append(f"{len(unknown)} file name(s) in the CSV match no imported image: "
                               + ", ".join(unknown[:5]) + (" ..." if len(unknown) > 5 else ""))
    return labels, [g if g is not None else p for g, p in zip(groups, patient_groups)]


def refiled_copies(report: Report, names: list[str], labels: list[str | None], folder_labels: bool,
                   table: dict | None) -> list[dict]:
    """Byte-identical files (imported once) whose copies were filed under another label."""
    copies = [d["name"] for d in report.duplicates]
    copy_labels = [folder_label(n) for n in copies] if folder_labels else match_labels(copies, table)[0]
    label_of = dict(zip(names, labels))
    return [{"images": [(d["same_as"], label_of[d["same_as"]]), (d["name"], lab)]}
            for d, lab in zip(report.duplicates, copy_labels) if lab is not None and lab != label_of[d["same_as"]]]


def split(labels: list[str | None], groups: list[str | None], signatures: np.ndarray, names: list[str], seed: int,
          report: Report, conflicts: list[dict] = ()) -> list[str | None]:
    """Check the labels, then the fixed train/val/test split with near-copies kept together. Near-copies
    that carry different labels (and `conflicts` found before, among byte-identical files) are reported."""
    report.labels, warnings = check_labels(labels)
    report.warnings += warnings
    cluster_of = duplicates.clusters(signatures)
    linked = len(cluster_of) - len(set(cluster_of))
    if linked:
        report.notes.append(f"{linked} image(s) are near-copies of another image: each copy shares its twin's "
                            "split (and fold), so no copy sits in training while its twin is tested.")
    report.label_conflicts = [*conflicts, *duplicates.label_conflicts(names, labels, cluster_of)]
    if report.label_conflicts:
        report.warnings.append(
            f"{len(report.label_conflicts)} set(s) of near-identical images carry different labels, e.g. "
            + "; ".join(" = ".join(f"{n} ({lab})" for n, lab in c["images"][:3]) for c in report.label_conflicts[:3])
            + ". Check these labels: the Data page lists them all.")
    return assign_splits(labels, duplicates.merge_groups(groups, cluster_of), SPLIT_FRACTIONS, seed)


# -- one transaction -------------------------------------------------------------------------
def commit(ws: Workspace, report: Report, stored: FileStore, files: Iterable[SourceFile], images: Iterable[dict],
           kind: str, seed: int, content_hash: str) -> int:
    """The dataset, its images, its skipped files and its cache, all at once or not at all."""
    store = ws.store
    with store.transaction():
        stored.restore_missing(files)
        try:
            dataset_id = store.add_dataset(report.dataset, kind=kind, source=stored.first_name(), info={
                "cache_size": CACHE_SIZE, "split_seed": seed, "notes": report.notes[:MAX_NOTES],
                "label_conflicts": report.label_conflicts, "labels": report.labels,
                "duplicates": len(report.duplicates)})
        except sqlite3.IntegrityError:  # another import took the name while this one decoded
            raise PirlError(f"Another import created a dataset named {report.dataset!r} while this one ran; "
                            "nothing was imported. Import again under another name.") from None
        store.update_dataset(dataset_id, content_hash=content_hash, n_images=len(stored))
        store.add_images({**im, "dataset_id": dataset_id} for im in images)
        store.add_skipped(dataset_id, [(s["name"], s["reason"]) for s in report.skipped])
        stored.writer.finish().replace(cache_path(ws, dataset_id))
    stored.committed()
    return dataset_id


# -- the pipeline ----------------------------------------------------------------------------
def ingest(ws: Workspace, files: Collection[SourceFile], name: str, *, folder_labels: bool = False,
           labels_csv: bytes | str | Path | None = None, seed: int = 0,
           pre_skipped: list[dict] | None = None,
           on_progress: Callable[[int, int, str], None] | None = None,
           should_stop: Callable[[], bool] | None = None) -> Report:
    """Import `files` (a list, or a folder's listing: read once, and listed again only to restore a file another
    import removed meanwhile) as dataset `name`. See the module docstring for the stages and the guarantees. An
    unlabeled pool streams: nothing is kept in memory per image. A labeled set keeps its names, labels and
    near-copy signatures (4 KB an image) for the split."""
    name = name.strip()
    if not name:
        raise PirlError("Give the dataset a name.")
    report = Report(dataset=name, skipped=list(pre_skipped or []))
    labeled = folder_labels or labels_csv is not None
    table = read_labels_csv(labels_csv) if labels_csv is not None and not folder_labels else None
    if labeled:  # label problems surface before minutes of decoding
        check_labels(labels_and_groups([f.name for f in files], folder_labels, table, Report(name))[0])
    stored = FileStore(ws)
    try:
        signatures = []  # pixel signatures, for near-copy-aware splits
        for item in decode_all(files, report, on_progress, should_stop, stored.seen):
            stored.add(item)
            if labeled:
                signatures.append(duplicates.signature(item.row))
        if not len(stored):
            raise PirlError(f"No usable image among {len(files)} file(s); nothing was imported. "
                            + (f"First problem: {report.skipped[0]['name']}: {report.skipped[0]['reason']}"
                               if report.skipped else ""))
        content_hash = stored.content_hash()
        existing = ws.store.dataset(name)
        if existing is not None:
            if existing["content_hash"] != content_hash:
                raise PirlError(f"A dataset named {name!r} already exists with other images. Choose another name.")
            report.dataset_id, report.unchanged = existing["id"], True
            report.labels = ws.store.class_counts(existing["id"])
            return report
        images: Iterable[dict] = ({**r, "label": None, "split": None} for r in stored.rows())
        if labeled:
            rows = list(stored.rows())
            names = [r["orig_name"] for r in rows]
            labels, groups = labels_and_groups(names, folder_labels, table, report, [r["group_id"] for r in rows])
            splits = split(labels, groups, np.stack(signatures), names, seed, report,
                           refiled_copies(report, names, labels, folder_labels, table))
            images = [{**r, "label": lab, "group_id": grp, "split": sp}
                      for r, lab, grp, sp in zip(rows, labels, groups, splits)]
        report.dataset_id = commit(ws, report, stored, files, images, "labeled" if labeled else "unlabeled", seed,
                                   content_hash)
        report.imported = len(stored)
        audit.record(ws, "import", name, f"{report.imported} images, {len(report.skipped)} skipped")
        return report
    finally:
        stored.close()


def check_addable(ws: Workspace, row: dict | None, dataset: str) -> None:
    """Raise unless `row` is an unlabeled pool nothing has used yet (so adding images changes no run's data)."""
    if row is None:
        raise PirlError(f"No dataset named {dataset!r}.")
    if row["kind"] != "unlabeled":
        raise PirlError(f"{dataset!r} is a labeled set with a fixed split; add images to a new dataset instead.")
    if any(j["dataset_id"] == row["id"] for j in ws.store.jobs()) or ws.store.label_batches(row["id"]):
        raise PirlError(f"{dataset!r} has been pretrained on or labeled; adding images would change what those "
                        "runs saw. Add them to a new dataset.")


def add_to(ws: Workspace, dataset: str, files: Collection[SourceFile], pre_skipped: list[dict] | None = None,
           on_progress: Callable[[int, int, str], None] | None = None,
           should_stop: Callable[[], bool] | None = None) -> Report:
    """Add `files` to an unlabeled pool nothing has used yet (a second pull from a PACS): its images keep their
    ids and rows, the new ones follow; an image the pool already holds is reported, not added. One transaction."""
    row = ws.store.dataset(dataset)
    check_addable(ws, row, dataset)
    report = Report(dataset=dataset, dataset_id=row["id"], skipped=list(pre_skipped or []))
    stored = FileStore(ws)
    try:
        stored.seen.update(ws.store.image_names(row["id"]))  # the pool's own images are copies, not new ones
        for item in decode_all(files, report, on_progress, should_stop, stored.seen):
            stored.add(item)
        if not len(stored):
            report.unchanged = True
            return report
        new_rows = stored.writer.finish()
        with ws.store.transaction():
            stored.restore_missing(files)
            ws.store.add_images({**r, "dataset_id": row["id"], "label": None, "split": None} for r in stored.rows())
            ws.store.update_dataset(row["id"], n_images=row["n_images"] + len(stored),
                                    content_hash=stored.content_hash())
            ws.store.add_skipped(row["id"], [(s["name"], s["reason"]) for s in report.skipped])
            with CacheWriter(cache_path(ws, row["id"]), CACHE_SIZE) as writer:
                for source in (dataset_cache(ws, row["id"]), open_cache(new_rows)):
                    for cached in source:
                        writer.append(np.asarray(cached))
                writer.finish()
        stored.committed()
        for derived in cache_files(ws, row["id"]):  # smaller sizes (and an older format's base): made again
            if derived != cache_path(ws, row["id"]):
                derived.unlink(missing_ok=True)
        report.imported = len(stored)
        audit.record(ws, "add images", dataset, f"{report.imported} images, {len(report.skipped)} skipped")
        return report
    finally:
        stored.close()


def stored_files(ws: Workspace, images: list[dict]) -> list[SourceFile]:
    """Images already in the workspace as the files of another import (stored once, by content)."""
    return [SourceFile(im["orig_name"], lambda path=ws.root / im["path"]: path.read_bytes()) for im in images]


def attach_labels(ws: Workspace, dataset: str, labels_csv: bytes | str | Path, seed: int = 0) -> Report:
    """Attach a filename,label[,group] CSV to an ingested, not yet labeled dataset, and split it."""
    store = ws.store
    row = store.dataset(dataset)
    if row is None:
        raise PirlError(f"No dataset named {dataset!r}.")
    images = store.images(row["id"])
    if any(im["split"] for im in images):
        raise PirlError(f"{dataset!r} already has labels and a fixed split; ingest a new dataset to relabel.")
    report = Report(dataset=dataset, dataset_id=row["id"])
    labels, groups, unknown = match_labels([im["orig_name"] for im in images], read_labels_csv(labels_csv))
    if unknown:
        report.warnings.append(f"{len(unknown)} file name(s) in the CSV match no image of {dataset!r}: "
                               + ", ".join(unknown[:5]) + (" ..." if len(unknown) > 5 else ""))
    groups = [g if g is not None else im["group_id"] for g, im in zip(groups, images)]  # patients stay grouped
    thumbs = dataset_cache(ws, row["id"], duplicates.SIGNATURE_SIZE)
    splits = split(labels, groups, np.stack([duplicates.signature(t) for t in thumbs]),
                    [im["orig_name"] for im in images], seed, report)
    with store.transaction():
        store.set_image_fields((im["id"], {"label": lab, "group_id": grp, "split": sp})
                               for im, lab, grp, sp in zip(images, labels, groups, splits))
        store.update_dataset(row["id"], kind="labeled", info={**row["info"], "labels": report.labels,
                                                               "split_seed": seed,
                                                               "label_conflicts": report.label_conflicts})
    audit.record(ws, "attach labels", dataset, f"{sum(lab is not None for lab in labels)} labeled")
    return report


def cache_folder(folder: str | Path, size: int, out_file: str | Path,
                 on_progress: Callable[[int, int], None] | None = None) -> tuple[Path, list[str], list[dict]]:
    """A plain folder (no workspace dataset) decoded into a training cache, the way ingest decodes it
    (DICOM included): returns the cache file, the names of the images in it, and the skipped files."""
    files = folder_source(folder, check_roots=False)
    names, skipped = [], []
    with CacheWriter(out_file, size) as writer:
        for i, src in enumerate(files):
            try:
                row = square_resize(decode(read_source(src), src.name).image, CACHE_SIZE)
            except BadImage as exc:
                skipped.append({"name": src.name, "reason": str(exc)})
                continue
            writer.append(resize_row(row, size))
            names.append(src.name)
            if on_progress:
                on_progress(i + 1, len(files))
        if not names:
            raise PirlError(f"No usable image under {folder} ({len(files)} file(s), {len(skipped)} unreadable).")
        writer.finish()
    return Path(out_file), names, skipped
