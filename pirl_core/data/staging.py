"""Where an import's images wait for its one commit: the stored copies (content-addressed, in the workspace), the
training cache being written, and the images-table rows, in a staging database of the import's own beside the
cache rather than in memory, so an archive of any size is read with the same memory. What an import that does
not commit wrote is removed when it closes, unless another import now uses the same file.
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from ..workspace.atomic import write_bytes_atomic
from ..workspace.folder import Workspace
from . import patients
from .image_cache import CACHE_SIZE, CacheWriter
from .sources import SourceFile, read_source


@dataclass
class Decoded:
    """One new image out of the decode stage: its source and bytes, their hash, its cache row and size."""

    src: SourceFile
    data: bytes
    digest: str
    row: np.ndarray  # (CACHE_SIZE, CACHE_SIZE, 3) uint8
    width: int
    height: int
    patient: str | None = None  # DICOM PatientID and StudyInstanceUID as read: hashed into a group, never stored
    study: str | None = None
    index: int = 0  # its place among the source's files


class FileStore:
    """One import's stored copies, cache and staged rows (and the hashes of the files read so far, `seen`, for
    byte-identical copies); see the module docstring."""

    def __init__(self, ws: Workspace):
        self.ws = ws
        tag = uuid.uuid4().hex  # never shared
        self.writer = CacheWriter(ws.cache / f".ingest-{tag}.pngs", CACHE_SIZE)
        self.staging_file = ws.cache / f".ingest-{tag}.db"
        self.db = sqlite3.connect(self.staging_file)
        self.db.executescript("""
            PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;
            CREATE TABLE staged (content_hash TEXT, path TEXT, orig_name TEXT, width INTEGER, height INTEGER,
                                 patient TEXT, study TEXT, created INTEGER, source_index INTEGER);
            CREATE TABLE seen (content_hash TEXT PRIMARY KEY, name TEXT);""")
        self.seen = SeenFiles(self.db)
        self._salt: bytes | None = None

    def add(self, item: Decoded) -> None:
        """Store one image and stage its images-table row (patient and study as pseudonyms only)."""
        suffix = Path(item.src.name).suffix.lower()
        suffix = suffix if re.fullmatch(r"\.[a-z0-9]{1,10}", suffix) else ".bin"  # the name's, if it is short
        stored = self.ws.images / item.digest[:2] / f"{item.digest}{suffix}"
        created = not stored.exists()
        if created:
            write_bytes_atomic(stored, item.data)
        self.writer.append(item.row)
        if (item.patient or item.study) and self._salt is None:
            self._salt = patients.salt(self.ws)
        self.db.execute("INSERT INTO staged VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", (
            item.digest, str(stored.relative_to(self.ws.root)), item.src.name, item.width, item.height,
            *patients.pseudonyms(self._salt or b"", item.patient, item.study), created, item.index))

    def __len__(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM staged").fetchone()[0]

    def first_name(self) -> str:
        """The first staged image's name, as the user knows it (the dataset's `source`)."""
        return self.db.execute("SELECT orig_name FROM staged ORDER BY rowid LIMIT 1").fetchone()[0]

    def rows(self) -> Iterator[dict]:
        """The images-table rows staged, in cache order, each with its patient group (without dataset, label,
        split)."""
        n_patients, n_studies = self.db.execute(
            "SELECT COUNT(DISTINCT patient), COUNT(DISTINCT study) FROM staged").fetchone()
        anonymised = patients.anonymised(n_patients, n_studies)
        for digest, path, name, width, height, patient, study in self.db.execute(
                "SELECT content_hash, path, orig_name, width, height, patient, study FROM staged ORDER BY rowid"):
            yield {"content_hash": digest, "path": path, "orig_name": name, "width": width, "height": height,
                   "group_id": patients.group(patient, study, anonymised)}

    def content_hash(self) -> str:
        """The hash of every image `seen` holds (those staged, and a pool's own), whatever their order."""
        h = hashlib.sha256()
        for (digest,) in self.db.execute("SELECT content_hash FROM seen ORDER BY content_hash"):
            h.update(digest.encode())
        return h.hexdigest()

    def restore_missing(self, files: Iterable[SourceFile]) -> None:
        """Inside the transaction: a concurrent import that failed may have removed a file this one found. Such a
        file is read again from the import's files (listed again: nothing of them was kept)."""
        missing = {i: path for path, i in self.db.execute("SELECT path, source_index FROM staged")
                   if not (self.ws.root / path).exists()}
        for i, src in enumerate(files if missing else ()):
            if i in missing:
                write_bytes_atomic(self.ws.root / missing[i], read_source(src))

    def committed(self) -> None:
        """The database now refers to every file written: none is removed at the close."""
        self.db.execute("UPDATE staged SET created = 0")

    def close(self) -> None:
        self.writer.close()
        self.writer.out_file.unlink(missing_ok=True)  # renamed away when the ingest committed
        created = [self.ws.root / p for (p,) in self.db.execute("SELECT path FROM staged WHERE created")]
        self.db.close()
        self.staging_file.unlink(missing_ok=True)
        if created:
            with self.ws.store.transaction():
                for path in created:
                    if not self.ws.store.image_file_used(path.stem):
                        path.unlink(missing_ok=True)


class SeenFiles:
    """The staging database's content hash -> name table, read and written as `decode_all`'s `seen` mapping."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def get(self, digest: str) -> str | None:
        row = self.db.execute("SELECT name FROM seen WHERE content_hash = ?", (digest,)).fetchone()
        return row[0] if row else None

    def __setitem__(self, digest: str, name: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO seen VALUES (?, ?)", (digest, name))

    def update(self, pairs: Iterable[tuple[str, str]]) -> None:
        self.db.executemany("INSERT OR REPLACE INTO seen VALUES (?, ?)", pairs)
