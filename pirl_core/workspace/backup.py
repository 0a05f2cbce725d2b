"""Daily copies of the workspace database, and what to say when it is damaged or read-only.

`backups/pirl-YYYY-MM-DD.db` in the workspace, taken with SQLite's online backup (consistent while other
processes write) the first time the workspace is opened on a day, the newest KEEP kept, each its owner's
alone (0600: the database holds password hashes and the audit log). Only the database: images, caches and
checkpoints are files in the folder that a damaged database does not touch.
"""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
from pathlib import Path

FOLDER = "backups"
KEEP = 7


def _backups(root: Path) -> list[Path]:
    return sorted((root / FOLDER).glob("pirl-????-??-??.db"))


def daily(root: Path, conn: sqlite3.Connection) -> Path | None:
    """Today's copy of the database behind `conn`, made now if there is none yet; None where it cannot be."""
    target = root / FOLDER / f"pirl-{dt.date.today().isoformat()}.db"
    if target.exists():
        return target
    tmp = target.with_name(f".{target.name}.{os.getpid()}.part")
    try:
        target.parent.mkdir(mode=0o700, exist_ok=True)
        os.close(os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600))
        copy = sqlite3.connect(tmp)
        try:
            conn.backup(copy)
        finally:
            copy.close()
        os.replace(tmp, target)
    except (OSError, sqlite3.Error):  # a full disk or a damaged database: no copy today, the work goes on
        tmp.unlink(missing_ok=True)
        return None
    for old in _backups(root)[:-KEEP]:
        old.unlink(missing_ok=True)
    return target


def damaged(root: Path, exc: Exception) -> str:
    """What to do about a damaged database, naming the newest copy."""
    copies = _backups(root)
    restore = (f"The newest copy is {copies[-1]} (of {copies[-1].stem.removeprefix('pirl-')}): stop PIRL Studio "
               f"and its workers, move {root / 'pirl.db'} aside and copy that file in its place; what changed since "
               "that day is lost, the images and checkpoints in the folder are kept."
               if copies else f"There is no copy in {root / FOLDER}: restore pirl.db from your own backups, or move "
                              "it aside to start a fresh workspace in this folder.")
    return f"The workspace database {root / 'pirl.db'} is damaged ({exc}). {restore}"


def explain(root: Path, exc: sqlite3.Error) -> str:
    """One sentence for a database error met while using the workspace: read-only, busy, full or damaged."""
    text = str(exc).lower()
    if "readonly" in text or "read-only" in text:
        return (f"The workspace {root} is read-only: reading it works (pirl datasets, pirl jobs, pirl audit, the "
                "app's pages), changing it does not. Make the folder and pirl.db writable, or work on a copy.")
    if "locked" in text or "busy" in text:
        return f"The workspace database is busy ({exc}): another process holds it for too long; try again."
    if "full" in text:
        return f"The disk that holds the workspace {root} is full ({exc}): free some space and try again."
    return damaged(root, exc)
