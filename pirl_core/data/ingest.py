"""Bringing images into the workspace: from a server folder, a zip, or uploaded files.

Every file is checked (see `image_io.decode`); a bad file is skipped with its reason, never
fatal. Exact duplicates (same bytes) are imported once and reported. Images are copied into
the workspace (content-addressed, so the source can go away) and decoded once into a 256 px
training cache. The database sees the whole dataset in one transaction at the end: a crash
or a cancel leaves no half dataset, and ingesting the same files again changes nothing.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import stat
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable

import numpy as np

from ..access import audit
from ..errors import BadImage, Cancelled, PirlError
from ..workspace.atomic import write_bytes_atomic
from ..workspace.folder import Workspace
from . import duplicates
from .image_cache import CACHE_SIZE, CacheWriter, cache_path, dataset_cache, resize_row, square_resize
from .image_io import decode
from .splits import assign_splits

MAX_ZIP_FILES = 200_000
MAX_ZIP_BYTES = 50 * 1024**3
SPLIT_FRACTIONS = {"train": 0.7, "val": 0.15, "test": 0.15}


@dataclass
class SourceFile:
    name: str  # relative path as the user knows it ("benign/benign (1).png")
    read: Callable[[], bytes]


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


# -- sources ---------------------------------------------------------------------------------
def allowed_roots() -> list[Path]:
    """Folders on this machine that imports may read: PIRL_DATA_ROOTS (os.pathsep-separated). None set:
    importing a server folder from the browser is off; the command line imports what it is given."""
    raw = os.environ.get("PIRL_DATA_ROOTS", "")
    return [Path(r).expanduser().resolve() for r in raw.split(os.pathsep) if r.strip()]


def max_file_bytes() -> int:
    """The largest single file (or zip member) an import reads: PIRL_MAX_FILE_MB, default 512 MB."""
    return int(float(os.environ.get("PIRL_MAX_FILE_MB") or 512) * 1024**2)


def _mb(n: int) -> str:
    return f"{n / 1024**2:.3g} MB"


def _inside(path: Path, roots: list[Path]) -> bool:
    return any(path == r or r in path.parents for r in roots)


def _refused(name: str, reason: str) -> SourceFile:
    """An entry the import lists as skipped, with its reason, instead of reading it."""
    def read() -> bytes:
        raise BadImage(reason)
    return SourceFile(name, read)


def folder_source(folder: str | Path, check_roots: bool = True, include_hidden: bool = False) -> list[SourceFile]:
    """Every file under `folder`, in name order. Where PIRL_DATA_ROOTS is set, the folder and every file in it
    (links resolved) must lie inside those roots; what resolves outside is refused by name. `check_roots`
    (the browser): with no roots set, refuse. Hidden files and folders, links to folders, broken links,
    link loops, special files, unreadable folders and files over the size cap come back as entries that
    the import lists as skipped, with the reason: nothing is left out in silence."""
    roots = allowed_roots()
    folder = Path(folder).expanduser().resolve()
    if check_roots and not roots:
        raise PirlError("Importing a folder on the server is off. To turn it on, set PIRL_DATA_ROOTS to the "
                        "folders it may read (separated by ':') and restart the app; or upload the files.")
    if roots and not _inside(folder, roots):
        raise PirlError(f"{folder} is outside the folders this app may read ({', '.join(map(str, roots))}). "
                        f"Set PIRL_DATA_ROOTS to allow it.")
    if not folder.is_dir():
        raise PirlError(f"{folder} is not a folder.")
    cap, out = max_file_bytes(), []
    problems: list[OSError] = []
    for top, dirs, names in os.walk(folder, onerror=problems.append):
        base = Path(top)
        for d in list(dirs):
            rel = (base / d).relative_to(folder)
            if (d.startswith(".") or d == "__MACOSX") and not include_hidden:
                dirs.remove(d)
                out.append(_refused(rel.as_posix() + "/", "hidden folder: skipped"))
            elif (base / d).is_symlink():
                out.append(_refused(rel.as_posix() + "/", "link to a folder: not followed (import that folder "
                                                           "itself)"))
        dirs.sort()
        for n in names:
            out.append(_file_entry(base / n, (base / n).relative_to(folder).as_posix(), roots, cap, include_hidden))
    for exc in problems:
        name = Path(exc.filename).relative_to(folder).as_posix() if exc.filename else str(folder)
        out.append(_refused(name + "/", f"folder cannot be read ({exc.strerror or exc})"))
    return sorted(out, key=lambda f: f.name)


def _file_entry(path: Path, name: str, roots: list[Path], cap: int, include_hidden: bool) -> SourceFile:
    if _hidden(PurePosixPath(name).parts) and not include_hidden:
        return _refused(name, "hidden file: skipped")
    try:
        real = path.resolve(strict=True)
        info = real.stat()
    except FileNotFoundError:
        return _refused(name, "broken link: its target does not exist")
    except (RuntimeError, OSError) as exc:
        return _refused(name, f"cannot follow ({getattr(exc, 'strerror', None) or exc})")
    if roots and not _inside(real, roots):
        return _refused(name, "links to a file outside the folders this app may read: refused")
    if not stat.S_ISREG(info.st_mode):
        return _refused(name, "not a regular file (a device, pipe or socket)")
    if info.st_size > cap:
        return _refused(name, f"{_mb(info.st_size)}, over the {_mb(cap)} cap per file (PIRL_MAX_FILE_MB)")
    return SourceFile(name, real.read_bytes)


def _hidden(parts) -> bool:
    return any(part.startswith(".") or part == "__MACOSX" for part in parts)


def zip_source(zip_file, max_files: int = MAX_ZIP_FILES, max_bytes: int = MAX_ZIP_BYTES
               ) -> tuple[list[SourceFile], list[dict]]:
    """Entries of a zip (path or file object) and the entries refused for their path."""
    try:
        zf = zipfile.ZipFile(zip_file)
    except zipfile.BadZipFile:
        raise PirlError("The file is not a valid zip archive.") from None
    entries = [i for i in zf.infolist() if not i.is_dir()]
    if len(entries) > max_files:
        raise PirlError(f"The zip holds {len(entries):,} files, over the limit of {max_files:,}. Split it.")
    total = sum(i.file_size for i in entries)
    if total > max_bytes:
        raise PirlError(f"The zip unpacks to {total / 1e9:.1f} GB, over the limit of {max_bytes / 1e9:.1f} GB "
                        f"(a zip bomb, or a set to ingest from a server folder instead).")
    files, refused, cap = [], [], max_file_bytes()
    for info in entries:
        path = PurePosixPath(info.filename.replace("\\", "/"))
        if not path.parts or path.name in ("", "."):
            refused.append({"name": info.filename, "reason": "no file name in the zip entry: not extracted"})
            continue
        if path.is_absolute() or ".." in path.parts or info.filename.startswith(("/", "\\")) or ":" in path.parts[0]:
            refused.append({"name": info.filename, "reason": "unsafe path in zip (absolute or '..'): not extracted"})
            continue
        if _hidden(path.parts):
            refused.append({"name": info.filename, "reason": "hidden file: skipped"})
            continue
        if info.file_size > cap:
            refused.append({"name": info.filename, "reason": f"unpacks to {_mb(info.file_size)}, over the {_mb(cap)} "
                                                             "cap per file (PIRL_MAX_FILE_MB)"})
            continue
        files.append(SourceFile(path.as_posix(), lambda info=info: _read_entry(zf, info)))
    return files, refused


def _read_entry(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    with zf.open(info) as f:
        data = f.read(info.file_size + 1)
    if len(data) > info.file_size:
        raise BadImage("zip entry larger than its header claims")
    return data


def _read(src: SourceFile) -> bytes:
    try:
        return src.read()
    except OSError as exc:
        raise BadImage(f"cannot read file ({exc.strerror or exc})") from None


def upload_source(files: list[tuple[str, bytes]]) -> list[SourceFile]:
    return [SourceFile(name, lambda data=data: data) for name, data in files]


# -- labels ----------------------------------------------------------------------------------
def read_labels_csv(data: bytes | str | Path) -> dict[str, tuple[str, str | None]]:
    """filename -> (label, group) from a CSV with columns filename,label[,group]. UTF-8 (or Windows-1252 as
    spreadsheets save it); two rows that give one file different labels are an error naming them."""
    if isinstance(data, Path) or (isinstance(data, str) and "\n" not in data and Path(data).is_file()):
        data = Path(data).read_bytes()
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            try:
                text = data.decode("cp1252")
            except UnicodeDecodeError:
                raise PirlError("The labels CSV is not text in UTF-8 or Windows-1252; save it as CSV UTF-8.") from None
    else:
        text = data
    reader = csv.DictReader(io.StringIO(text))
    cols = [c.strip().lower() for c in reader.fieldnames or []]
    if "filename" not in cols or "label" not in cols:
        raise PirlError(f"The labels CSV needs the columns filename,label (optionally group); it has "
                        f"{', '.join(cols) or 'none'}.")
    out: dict[str, tuple[str, str | None]] = {}
    conflicts = []
    for row in reader:
        row = {k.strip().lower(): (v or "").strip() for k, v in row.items() if k}
        name = _csv_path(row["filename"])
        if name and row["label"]:
            entry = (row["label"], row.get("group") or None)
            if name in out and out[name] != entry:
                conflicts.append(f"{name} ({out[name][0]} / {entry[0]})")
            out[name] = entry
    if conflicts:
        raise PirlError(f"The labels CSV gives {len(conflicts)} file(s) two different labels or groups: "
                        + ", ".join(conflicts[:5]) + (" ..." if len(conflicts) > 5 else "") + ". Keep one row each.")
    if not out:
        raise PirlError("The labels CSV has no rows with both a filename and a label.")
    return out


def _csv_path(name: str) -> str:
    return PurePosixPath(name.replace("\\", "/")).as_posix().removeprefix("./") if name else ""


def _match_labels(names: list[str], table: dict[str, tuple[str, str | None]]) -> tuple[list, list, list[str]]:
    """Match CSV rows to images by their full relative path; a bare file name only where it names one image
    (a name that matches several is an error naming them). Returns labels, groups, unknown rows."""
    by_path = {n: i for i, n in enumerate(names)}
    by_base: dict[str, list[int]] = {}
    for i, n in enumerate(names):
        by_base.setdefault(PurePosixPath(n).name, []).append(i)
    labels, groups = [None] * len(names), [None] * len(names)
    unknown, ambiguous = [], []
    for fname, (label, group) in table.items():
        if fname in by_path:
            hits = [by_path[fname]]
        else:
            hits = by_base.get(fname, []) if "/" not in fname else []
            if len(hits) > 1:
                ambiguous.append(f"{fname} ({', '.join(names[i] for i in hits[:3])})")
                continue
        if not hits:
            unknown.append(fname)
        for i in hits:
            labels[i], groups[i] = label, group
    if ambiguous:
        raise PirlError(f"{len(ambiguous)} file name(s) in the labels CSV match several images: "
                        + "; ".join(ambiguous[:5]) + ". Give the path inside the folder (e.g. benign/1.png).")
    return labels, groups, unknown


def check_labels(labels: list[str | None], report: Report) -> None:
    """Errors for a set that cannot be split; warnings for what the user should know."""
    counts: dict[str, int] = {}
    for lab in labels:
        if lab is not None:
            counts[lab] = counts.get(lab, 0) + 1
    missing = sum(1 for lab in labels if lab is None)
    if missing:
        report.warnings.append(f"{missing} image(s) have no label; they are kept for pretraining but not used "
                               f"for finetuning or evaluation.")
    if len(counts) < 2:
        raise PirlError(f"A labeled set needs at least 2 classes; found {len(counts)} "
                        f"({', '.join(counts) or 'none'}).")
    small = {c: n for c, n in counts.items() if n < 3}
    if small:
        raise PirlError("Each class needs at least 3 images (one each for train, validation and test): "
                        + ", ".join(f"{c} has {n}" for c, n in small.items()) + ".")
    few = {c: n for c, n in counts.items() if n < 20}
    if few:
        report.warnings.append("Few images in " + ", ".join(f"{c} ({n})" for c, n in few.items())
                               + ": test AUCs will have wide confidence intervals.")
    report.labels = dict(sorted(counts.items()))


def _folder_label(name: str) -> str | None:
    parts = PurePosixPath(name).parts
    return parts[-2] if len(parts) > 1 else None


def _split(labels: list[str | None], groups: list[str | None], signatures: np.ndarray, names: list[str], seed: int,
           report: Report, conflicts: list[dict] = ()) -> list[str | None]:
    """Check the labels, then the fixed train/val/test split with near-copies kept together. Near-copies
    that carry different labels (and `conflicts` found before, among byte-identical files) are reported."""
    check_labels(labels, report)
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


# -- the ingest ------------------------------------------------------------------------------
def ingest(ws: Workspace, files: list[SourceFile], name: str, *, folder_labels: bool = False,
           labels_csv: bytes | str | Path | None = None, seed: int = 0,
           pre_skipped: list[dict] | None = None,
           on_progress: Callable[[int, int, str], None] | None = None,
           should_stop: Callable[[], bool] | None = None) -> Report:
    """Import `files` as dataset `name`. See the module docstring for the guarantees."""
    name = name.strip()
    if not name:
        raise PirlError("Give the dataset a name.")
    report = Report(dataset=name, skipped=list(pre_skipped or []))
    store = ws.store
    existing = store.dataset(name)

    accepted: list[dict] = []  # one per new image, in cache order
    labeled = folder_labels or labels_csv is not None
    table = read_labels_csv(labels_csv) if labels_csv is not None and not folder_labels else None
    if labeled:  # label problems (an ambiguous CSV row, a class of one image) surface before minutes of decoding
        names_given = [f.name for f in files]
        check_labels([_folder_label(n) for n in names_given] if folder_labels
                     else _match_labels(names_given, table)[0], Report(dataset=name))
    signatures: list[np.ndarray] = []  # pixel signatures, for near-duplicate-aware splits of a labeled set
    seen: dict[str, str] = {}
    created: list[Path] = []  # stored files this import wrote (others may come to share them)
    source_of: dict[str, SourceFile] = {}
    writer = CacheWriter(ws.cache / f".ingest-{uuid.uuid4().hex}.npy", CACHE_SIZE)  # one per import, never shared
    try:
        for i, src in enumerate(files):
            if should_stop and should_stop():
                raise Cancelled()
            if on_progress:
                on_progress(i, len(files), src.name)
            try:
                data = _read(src)
                digest = hashlib.sha256(data).hexdigest()
                if digest in seen:
                    report.duplicates.append({"name": src.name, "same_as": seen[digest]})
                    continue
                decoded = decode(data, src.name)
            except BadImage as exc:
                report.skipped.append({"name": src.name, "reason": str(exc)})
                continue
            except Exception as exc:  # noqa: BLE001  one bad file or zip member never aborts an import
                report.skipped.append({"name": src.name, "reason": f"cannot be read ({type(exc).__name__}: {exc})"})
                continue
            seen[digest] = src.name
            if decoded.note:
                report.notes.append(f"{src.name}: {decoded.note}")
            suffix = Path(src.name).suffix.lower() or ".bin"
            stored = ws.images / digest[:2] / f"{digest}{suffix}"
            if not stored.exists():
                write_bytes_atomic(stored, data)
                created.append(stored)
            row = square_resize(decoded.image, CACHE_SIZE)
            writer.append(row)
            if labeled:
                signatures.append(duplicates.signature(row))
            accepted.append({"content_hash": digest, "path": str(stored.relative_to(ws.root)),
                             "orig_name": src.name, "width": decoded.image.width, "height": decoded.image.height})
            source_of[digest] = src
        if on_progress:
            on_progress(len(files), len(files), "")
        if not accepted:
            raise PirlError(f"No usable image among {len(files)} file(s); nothing was imported. "
                            + (f"First problem: {report.skipped[0]['name']}: {report.skipped[0]['reason']}"
                               if report.skipped else ""))

        content_hash = hashlib.sha256("".join(sorted(a["content_hash"] for a in accepted)).encode()).hexdigest()
        if existing is not None:
            if existing["content_hash"] == content_hash:
                report.dataset_id, report.unchanged = existing["id"], True
                report.imported = 0
                report.labels = store.class_counts(existing["id"])
                return report
            raise PirlError(f"A dataset named {name!r} already exists with other images. Choose another name.")

        names = [a["orig_name"] for a in accepted]
        labels: list[str | None] = [None] * len(accepted)
        groups: list[str | None] = [None] * len(accepted)
        if folder_labels:
            labels = [_folder_label(n) for n in names]
        elif table is not None:
            labels, groups, unknown = _match_labels(names, table)
            if unknown:
                report.warnings.append(f"{len(unknown)} file name(s) in the CSV match no imported image: "
                                       + ", ".join(unknown[:5]) + (" ..." if len(unknown) > 5 else ""))
        kind = "unlabeled"
        splits: list[str | None] = [None] * len(accepted)
        if labeled:
            copies = [d["name"] for d in report.duplicates]  # byte-identical files, imported once
            copy_labels = [_folder_label(n) for n in copies] if folder_labels else _match_labels(copies, table)[0]
            label_of = dict(zip(names, labels))
            refiled = [{"images": [(d["same_as"], label_of[d["same_as"]]), (d["name"], lab)]}
                       for d, lab in zip(report.duplicates, copy_labels)
                       if lab is not None and lab != label_of[d["same_as"]]]
            splits = _split(labels, groups, np.stack(signatures), names, seed, report, refiled)
            kind = "labeled"

        with store.transaction():
            for a in accepted:  # a concurrent import that failed may have removed a file this one found stored
                if not (ws.root / a["path"]).exists():
                    write_bytes_atomic(ws.root / a["path"], _read(source_of[a["content_hash"]]))
            dataset_id = store.add_dataset(name, kind=kind, source=files[0].name if files else None, info={
                "cache_size": CACHE_SIZE, "split_seed": seed, "notes": report.notes[:100],
                "label_conflicts": report.label_conflicts,
                "labels": report.labels, "duplicates": len(report.duplicates)})
            store.update_dataset(dataset_id, content_hash=content_hash, n_images=len(accepted))
            store.add_images({**a, "dataset_id": dataset_id, "label": lab, "group_id": grp, "split": sp}
                             for a, lab, grp, sp in zip(accepted, labels, groups, splits))
            store.add_skipped(dataset_id, [(s["name"], s["reason"]) for s in report.skipped])
            writer.finish().replace(cache_path(ws, dataset_id))
        report.dataset_id, report.imported = dataset_id, len(accepted)
        audit.record(ws, "import", name, f"{len(accepted)} images, {len(report.skipped)} skipped")
        created.clear()  # now referenced by the database
        return report
    finally:
        writer.close()
        writer.out_file.unlink(missing_ok=True)  # renamed away when the ingest committed
        if created:  # files copied by an ingest that did not commit, unless another import now uses them
            with store.transaction():
                for path in created:
                    if not store.image_file_used(path.stem):
                        path.unlink(missing_ok=True)


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
    labels, groups, unknown = _match_labels([im["orig_name"] for im in images], read_labels_csv(labels_csv))
    if unknown:
        report.warnings.append(f"{len(unknown)} file name(s) in the CSV match no image of {dataset!r}: "
                               + ", ".join(unknown[:5]) + (" ..." if len(unknown) > 5 else ""))
    thumbs = dataset_cache(ws, row["id"], duplicates.SIGNATURE_SIZE)
    splits = _split(labels, groups, np.stack([duplicates.signature(t) for t in thumbs]),
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
                row = square_resize(decode(_read(src), src.name).image, CACHE_SIZE)
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
