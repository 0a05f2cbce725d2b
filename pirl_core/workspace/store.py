"""The workspace database: schema, forward migrations and every query.

This is the only module that writes SQL. Everything else calls the methods of `Store`.
The database is SQLite in WAL mode, opened through sqlite-utils; several processes (the app,
the CLI, training workers) read and write it at once.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

import sqlite_utils

from ..errors import SchemaTooNew, WorkspaceUnusable
from . import backup

JOB_STATES = ("queued", "running", "succeeded", "failed", "cancelled", "interrupted")
ACTIVE_STATES = ("queued", "running")


def _v1(db: sqlite_utils.Database) -> None:
    db.executescript(
        """
        CREATE TABLE datasets (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            kind TEXT NOT NULL DEFAULT 'unlabeled',
            source TEXT,
            content_hash TEXT,
            n_images INTEGER NOT NULL DEFAULT 0,
            created_at REAL NOT NULL,
            info TEXT NOT NULL DEFAULT '{}'
        );
        CREATE TABLE images (
            id INTEGER PRIMARY KEY,
            dataset_id INTEGER NOT NULL REFERENCES datasets(id) ON DELETE CASCADE,
            content_hash TEXT NOT NULL,
            path TEXT NOT NULL,
            orig_name TEXT NOT NULL,
            width INTEGER,
            height INTEGER,
            label TEXT,
            split TEXT,
            group_id TEXT,
            created_at REAL NOT NULL,
            UNIQUE (dataset_id, content_hash)
        );
        CREATE INDEX images_dataset ON images(dataset_id);
        CREATE TABLE jobs (
            id INTEGER PRIMARY KEY,
            kind TEXT NOT NULL,
            dataset_id INTEGER REFERENCES datasets(id),
            config TEXT NOT NULL DEFAULT '{}',
            status TEXT NOT NULL DEFAULT 'queued',
            created_at REAL NOT NULL,
            started_at REAL,
            finished_at REAL,
            progress REAL NOT NULL DEFAULT 0,
            message TEXT,
            error TEXT,
            result TEXT NOT NULL DEFAULT '{}'
        );
        CREATE TABLE metrics (
            id INTEGER PRIMARY KEY,
            job_id INTEGER NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
            step INTEGER NOT NULL,
            epoch REAL,
            name TEXT NOT NULL,
            value REAL NOT NULL,
            time REAL NOT NULL
        );
        CREATE INDEX metrics_job ON metrics(job_id, name, step);
        CREATE TABLE evaluations (
            id INTEGER PRIMARY KEY,
            job_id INTEGER REFERENCES jobs(id) ON DELETE CASCADE,
            created_at REAL NOT NULL,
            result TEXT NOT NULL DEFAULT '{}'
        );
        CREATE TABLE exports (
            id INTEGER PRIMARY KEY,
            job_id INTEGER REFERENCES jobs(id),
            path TEXT NOT NULL,
            created_at REAL NOT NULL,
            info TEXT NOT NULL DEFAULT '{}'
        );
        """
    )


def _v2(db: sqlite_utils.Database) -> None:
    """Worker bookkeeping for background jobs, and one metric row per (job, step, name)."""
    db.executescript(
        """
        ALTER TABLE jobs ADD COLUMN pid INTEGER;
        ALTER TABLE jobs ADD COLUMN heartbeat_at REAL;
        ALTER TABLE jobs ADD COLUMN checkpoint TEXT;
        DROP INDEX metrics_job;
        CREATE UNIQUE INDEX metrics_job_step ON metrics(job_id, name, step);
        CREATE TABLE skipped (
            id INTEGER PRIMARY KEY,
            dataset_id INTEGER NOT NULL REFERENCES datasets(id) ON DELETE CASCADE,
            name TEXT NOT NULL,
            reason TEXT NOT NULL
        );
        """
    )


def _v3(db: sqlite_utils.Database) -> None:
    """Cancel requests for running jobs."""
    db.execute("ALTER TABLE jobs ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0")


def _v4(db: sqlite_utils.Database) -> None:
    """Sign-in (local users with argon2 hashes, or identity-provider users given a role) and the audit log."""
    db.executescript(
        """
        CREATE TABLE users (
            name TEXT PRIMARY KEY,
            password_hash TEXT,
            role TEXT NOT NULL,
            created_at REAL NOT NULL
        );
        CREATE TABLE audit (
            id INTEGER PRIMARY KEY,
            time REAL NOT NULL,
            actor TEXT NOT NULL,
            action TEXT NOT NULL,
            target TEXT NOT NULL DEFAULT '',
            detail TEXT NOT NULL DEFAULT ''
        );
        """
    )


def _v5(db: sqlite_utils.Database) -> None:
    """The labeling loop: suggested batches, and every label an annotator gave (NULL: skipped, not sure)."""
    db.executescript(
        """
        CREATE TABLE label_batches (
            id INTEGER PRIMARY KEY,
            dataset_id INTEGER NOT NULL REFERENCES datasets(id) ON DELETE CASCADE,
            job_id INTEGER REFERENCES jobs(id) ON DELETE SET NULL,
            strategy TEXT NOT NULL,
            classes TEXT NOT NULL,
            items TEXT NOT NULL,
            created_by TEXT NOT NULL,
            created_at REAL NOT NULL
        );
        CREATE TABLE annotations (
            id INTEGER PRIMARY KEY,
            dataset_id INTEGER NOT NULL REFERENCES datasets(id) ON DELETE CASCADE,
            image_id INTEGER NOT NULL REFERENCES images(id) ON DELETE CASCADE,
            batch_id INTEGER REFERENCES label_batches(id) ON DELETE SET NULL,
            label TEXT,
            annotator TEXT NOT NULL,
            created_at REAL NOT NULL
        );
        CREATE INDEX annotations_dataset ON annotations(dataset_id, image_id);
        """
    )


MIGRATIONS = [_v1, _v2, _v3, _v4, _v5]
SCHEMA_VERSION = len(MIGRATIONS)


def _loads(text: str | None) -> Any:
    return json.loads(text) if text else {}


class Store:
    """Typed access to the workspace database."""

    def __init__(self, path: str | Path, migrate_to: int = SCHEMA_VERSION):
        self.path = Path(path)
        folder = self.path.parent
        self.read_only = self.path.exists() and not (os.access(folder, os.W_OK) and os.access(self.path, os.W_OK))
        try:
            if self.read_only:  # a copy to review: read as it is, nothing written (no journal, no migration)
                conn = sqlite3.connect(f"{self.path.as_uri()}?mode=ro&immutable=1", uri=True, check_same_thread=False,
                                       isolation_level=None)
            else:
                if not self.path.exists():  # created the owner's alone (SQLite gives its -wal and -shm the same)
                    os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
                conn = sqlite3.connect(str(self.path), timeout=60, check_same_thread=False, isolation_level=None)
                conn.execute("PRAGMA busy_timeout = 60000")
            conn.execute("PRAGMA foreign_keys = ON")
            self.db = sqlite_utils.Database(conn)
            if self.read_only:
                if self.version < SCHEMA_VERSION:
                    raise WorkspaceUnusable(f"The read-only workspace {folder} was written by an older PIRL Studio "
                                            "and cannot be updated: open a writable copy of it.")
            else:
                self.db.enable_wal()
                self._migrate(migrate_to)
                backup.daily(folder, conn)
        except OSError as exc:
            raise WorkspaceUnusable(f"The workspace database {self.path} cannot be created or opened "
                                    f"({exc.strerror or exc}). Point PIRL_HOME (or --workspace) at a folder you may "
                                    "write.") from None
        except sqlite3.DatabaseError as exc:  # not a database, damaged, read-only, busy or a full disk
            raise WorkspaceUnusable(backup.explain(folder, exc)) from None

    # -- schema --------------------------------------------------------------------------
    @property
    def version(self) -> int:
        return self.db.execute("PRAGMA user_version").fetchone()[0]

    def _migrate(self, target: int) -> None:
        current = self.version
        if current > SCHEMA_VERSION:
            raise SchemaTooNew(
                f"The workspace database {self.path} has schema version {current}, newer than this "
                f"PIRL Studio understands ({SCHEMA_VERSION}). Upgrade pirl-studio, or use another workspace."
            )
        for version in range(current + 1, target + 1):
            with self.transaction():
                MIGRATIONS[version - 1](self.db)
                self.db.execute(f"PRAGMA user_version = {version}")

    def transaction(self):
        """`with store.transaction():` runs the block as one all-or-nothing write. It takes the write lock
        at BEGIN (IMMEDIATE): a deferred transaction that reads and then writes while another process
        writes fails at once with "database is locked", past the busy timeout."""
        return _Transaction(self.db.conn)

    @property
    def journal_mode(self) -> str:
        return self.db.execute("PRAGMA journal_mode").fetchone()[0]

    def close(self) -> None:
        self.db.conn.close()

    # -- datasets ------------------------------------------------------------------------
    def datasets(self) -> list[dict]:
        rows = self.db.execute_returning_dicts(
            """SELECT d.*, COUNT(i.id) AS images, COUNT(i.label) AS labeled
               FROM datasets d LEFT JOIN images i ON i.dataset_id = d.id
               GROUP BY d.id ORDER BY d.created_at DESC"""
        )
        for row in rows:
            row["info"] = _loads(row["info"])
        return rows

    def dataset(self, name_or_id: str | int) -> dict | None:
        column = "id" if isinstance(name_or_id, int) else "name"
        rows = self.db.execute_returning_dicts(f"SELECT * FROM datasets WHERE {column} = ?", [name_or_id])
        if not rows:
            return None
        rows[0]["info"] = _loads(rows[0]["info"])
        return rows[0]

    def add_dataset(self, name: str, kind: str = "unlabeled", source: str | None = None,
                    info: dict | None = None) -> int:
        return self.db["datasets"].insert(
            dict(name=name, kind=kind, source=source, created_at=time.time(), info=json.dumps(info or {}))
        ).last_pk

    def update_dataset(self, dataset_id: int, **fields) -> None:
        if "info" in fields:
            fields["info"] = json.dumps(fields["info"])
        self.db["datasets"].update(dataset_id, fields)

    def delete_dataset(self, dataset_id: int, job_ids: list[int], evaluation_ids: list[int]) -> None:
        """The dataset with its images, the given jobs (metrics go with them) and evaluations, in one
        transaction; exports of those jobs stay listed, no longer tied to a job."""
        marks = lambda xs: ",".join("?" * len(xs))  # noqa: E731
        with self.transaction():
            if evaluation_ids:
                self.db.execute(f"DELETE FROM evaluations WHERE id IN ({marks(evaluation_ids)})", evaluation_ids)
            if job_ids:
                self.db.execute(f"UPDATE exports SET job_id = NULL WHERE job_id IN ({marks(job_ids)})", job_ids)
                self.db.execute(f"DELETE FROM evaluations WHERE job_id IN ({marks(job_ids)})", job_ids)
                self.db.execute(f"DELETE FROM jobs WHERE id IN ({marks(job_ids)})", job_ids)
            self.db.execute("DELETE FROM datasets WHERE id = ?", [dataset_id])

    # -- images --------------------------------------------------------------------------
    def add_images(self, rows: Iterable[dict]) -> None:
        now = time.time()
        self.db["images"].insert_all(({"created_at": now, **r} for r in rows), batch_size=500)

    def images(self, dataset_id: int, split: str | None = None, labeled_only: bool = False) -> list[dict]:
        sql = "SELECT * FROM images WHERE dataset_id = ?"
        args: list[Any] = [dataset_id]
        if split:
            sql += " AND split = ?"
            args.append(split)
        if labeled_only:
            sql += " AND label IS NOT NULL"
        return self.db.execute_returning_dicts(sql + " ORDER BY id", args)

    def image_names(self, dataset_id: int) -> Iterator[tuple[str, str]]:
        """(content hash, original name) of each image of a dataset, read as they are used."""
        yield from self.db.execute("SELECT content_hash, orig_name FROM images WHERE dataset_id = ? ORDER BY id",
                                   [dataset_id])

    def set_image_fields(self, updates: Iterable[tuple[int, dict]]) -> None:
        with self.transaction():
            for image_id, fields in updates:
                self.db["images"].update(image_id, fields)

    def distinct_images(self) -> int:
        """Images in the workspace, each counted once however many datasets hold it."""
        return self.db.execute("SELECT COUNT(DISTINCT content_hash) FROM images").fetchone()[0]

    def image_file_used(self, content_hash: str) -> bool:
        return self.db.execute("SELECT 1 FROM images WHERE content_hash = ? LIMIT 1", [content_hash]).fetchone() \
            is not None

    def class_counts(self, dataset_id: int) -> dict[str, int]:
        rows = self.db.execute(
            "SELECT label, COUNT(*) FROM images WHERE dataset_id = ? AND label IS NOT NULL GROUP BY label "
            "ORDER BY label", [dataset_id]).fetchall()
        return {label: n for label, n in rows}

    def add_skipped(self, dataset_id: int, rows: Iterable[tuple[str, str]]) -> None:
        self.db["skipped"].insert_all(
            ({"dataset_id": dataset_id, "name": n, "reason": r} for n, r in rows), batch_size=500)

    def skipped(self, dataset_id: int) -> list[dict]:
        return self.db.execute_returning_dicts(
            "SELECT name, reason FROM skipped WHERE dataset_id = ? ORDER BY id", [dataset_id])

    # -- jobs ----------------------------------------------------------------------------
    def add_job(self, kind: str, config: dict, dataset_id: int | None = None) -> int:
        return self.db["jobs"].insert(
            dict(kind=kind, config=json.dumps(config), dataset_id=dataset_id, status="queued",
                 created_at=time.time())
        ).last_pk

    def job(self, job_id: int) -> dict | None:
        rows = self.db.execute_returning_dicts("SELECT * FROM jobs WHERE id = ?", [job_id])
        return self._job_row(rows[0]) if rows else None

    def jobs(self, kind: str | None = None, statuses: Iterable[str] | None = None) -> list[dict]:
        sql, args = "SELECT * FROM jobs WHERE 1=1", []
        if kind:
            sql += " AND kind = ?"
            args.append(kind)
        if statuses:
            statuses = list(statuses)
            sql += f" AND status IN ({','.join('?' * len(statuses))})"
            args += statuses
        return [self._job_row(r) for r in self.db.execute_returning_dicts(sql + " ORDER BY id DESC", args)]

    @staticmethod
    def _job_row(row: dict) -> dict:
        row["config"] = _loads(row["config"])
        row["result"] = _loads(row["result"])
        return row

    def update_job(self, job_id: int, **fields) -> None:
        for key in ("config", "result"):
            if key in fields:
                fields[key] = json.dumps(fields[key])
        self.db["jobs"].update(job_id, fields)

    def claim_next_job(self, pid: int) -> dict | None:
        """Atomically move the oldest queued job to running, owned by `pid`. Runs over several machines
        (nnodes > 1) are left for their cluster launch (claim_job)."""
        with self.transaction():
            row = self.db.execute(
                "SELECT id FROM jobs WHERE status = 'queued' AND COALESCE(json_extract(config, '$.nnodes'), 1) <= 1 "
                "ORDER BY created_at, id LIMIT 1").fetchone()
            if row is None:
                return None
            self._claim(row[0], pid)
        return self.job(row[0])

    def claim_job(self, job_id: int, pid: int) -> dict | None:
        """Move queued job `job_id` to running, owned by `pid`; None if it is not queued."""
        with self.transaction():
            claimed = self._claim(job_id, pid)
        return self.job(job_id) if claimed else None

    def _claim(self, job_id: int, pid: int) -> bool:
        now = time.time()
        return self.db.execute(
            "UPDATE jobs SET status = 'running', pid = ?, started_at = COALESCE(started_at, ?), heartbeat_at = ?, "
            "error = NULL, cancel_requested = 0, message = 'starting' WHERE id = ? AND status = 'queued'",
            [pid, now, now, job_id]).rowcount > 0

    def set_job_status_if(self, job_id: int, expected: Iterable[str], status: str, **fields) -> bool:
        """Compare-and-set on a job's status; returns whether it changed."""
        expected = list(expected)
        sets = ", ".join(f"{k} = ?" for k in fields)
        cur = self.db.execute(
            f"UPDATE jobs SET status = ?{', ' + sets if sets else ''} "
            f"WHERE id = ? AND status IN ({','.join('?' * len(expected))})",
            [status, *fields.values(), job_id, *expected])
        return cur.rowcount > 0

    def running_jobs(self) -> list[dict]:
        return self.jobs(statuses=["running"])

    # -- metrics -------------------------------------------------------------------------
    def add_metrics(self, job_id: int, step: int, epoch: float | None, values: dict[str, float],
                    at: float | None = None) -> None:
        now = at or time.time()
        self.db.conn.executemany(
            "INSERT OR REPLACE INTO metrics (job_id, step, epoch, name, value, time) VALUES (?, ?, ?, ?, ?, ?)",
            [(job_id, step, epoch, name, float(value), now) for name, value in values.items()])

    def delete_metrics_after(self, job_id: int, step: int) -> None:
        self.db.execute("DELETE FROM metrics WHERE job_id = ? AND step > ?", [job_id, step])

    def metrics(self, job_id: int, names: Iterable[str] | None = None) -> list[dict]:
        sql, args = "SELECT step, epoch, name, value, time FROM metrics WHERE job_id = ?", [job_id]
        if names:
            names = list(names)
            sql += f" AND name IN ({','.join('?' * len(names))})"
            args += names
        return self.db.execute_returning_dicts(sql + " ORDER BY step, name", args)

    # -- evaluations and exports ---------------------------------------------------------
    def add_evaluation(self, job_id: int | None, result: dict) -> int:
        return self.db["evaluations"].insert(
            dict(job_id=job_id, created_at=time.time(), result=json.dumps(result))).last_pk

    def update_evaluation(self, evaluation_id: int, result: dict) -> None:
        self.db["evaluations"].update(evaluation_id, {"result": json.dumps(result)})

    def evaluations(self, job_id: int | None = None) -> list[dict]:
        sql, args = "SELECT * FROM evaluations", []
        if job_id is not None:
            sql, args = sql + " WHERE job_id = ?", [job_id]
        rows = self.db.execute_returning_dicts(sql + " ORDER BY id DESC", args)
        for row in rows:
            row["result"] = _loads(row["result"])
        return rows

    def add_export(self, job_id: int | None, path: str, info: dict) -> int:
        return self.db["exports"].insert(
            dict(job_id=job_id, path=path, created_at=time.time(), info=json.dumps(info))).last_pk

    def exports(self) -> list[dict]:
        rows = self.db.execute_returning_dicts("SELECT * FROM exports ORDER BY id DESC")
        for row in rows:
            row["info"] = _loads(row["info"])
        return rows

    # -- users and the audit log ---------------------------------------------------------
    def user(self, name: str) -> dict | None:
        rows = self.db.execute_returning_dicts("SELECT * FROM users WHERE name = ?", [name])
        return rows[0] if rows else None

    def users(self) -> list[dict]:
        return self.db.execute_returning_dicts("SELECT name, role, password_hash IS NOT NULL AS has_password, "
                                               "created_at FROM users ORDER BY name")

    def put_user(self, name: str, role: str, password_hash: str | None) -> None:
        self.db.execute("INSERT INTO users (name, password_hash, role, created_at) VALUES (?, ?, ?, ?) "
                        "ON CONFLICT(name) DO UPDATE SET password_hash = excluded.password_hash, "
                        "role = excluded.role", [name, password_hash, role, time.time()])

    def set_password_hash(self, name: str, password_hash: str) -> None:
        self.db.execute("UPDATE users SET password_hash = ? WHERE name = ?", [password_hash, name])

    def delete_user(self, name: str) -> bool:
        return self.db.execute("DELETE FROM users WHERE name = ?", [name]).rowcount > 0

    # -- labeling --------------------------------------------------------------------------
    def add_label_batch(self, dataset_id: int, job_id: int | None, strategy: str, classes: list[str],
                        items: list[dict], created_by: str) -> int:
        return self.db["label_batches"].insert(
            {"dataset_id": dataset_id, "job_id": job_id, "strategy": strategy, "classes": json.dumps(classes),
             "items": json.dumps(items), "created_by": created_by, "created_at": time.time()}).last_pk

    def label_batches(self, dataset_id: int) -> list[dict]:
        """The dataset's batches, newest first."""
        rows = self.db.execute_returning_dicts(
            "SELECT * FROM label_batches WHERE dataset_id = ? ORDER BY id DESC", [dataset_id])
        for row in rows:
            row["classes"], row["items"] = json.loads(row["classes"]), json.loads(row["items"])
        return rows

    def add_annotation(self, dataset_id: int, image_id: int, label: str | None, annotator: str,
                       batch_id: int | None = None) -> int:
        return self.db["annotations"].insert(
            {"dataset_id": dataset_id, "image_id": image_id, "batch_id": batch_id, "label": label,
             "annotator": annotator, "created_at": time.time()}).last_pk

    def delete_annotation(self, annotation_id: int) -> None:
        self.db.execute("DELETE FROM annotations WHERE id = ?", [annotation_id])

    def annotations(self, dataset_id: int) -> list[dict]:
        """Every label given in the dataset, oldest first."""
        return self.db.execute_returning_dicts(
            "SELECT * FROM annotations WHERE dataset_id = ? ORDER BY id", [dataset_id])

    def add_audit(self, actor: str, action: str, target: str = "", detail: str = "") -> None:
        self.db.execute("INSERT INTO audit (time, actor, action, target, detail) VALUES (?, ?, ?, ?, ?)",
                        [time.time(), actor, action, target, detail])

    def audit(self, limit: int = 500) -> list[dict]:
        return self.db.execute_returning_dicts("SELECT * FROM audit ORDER BY id DESC LIMIT ?", [limit])

    def audit_times(self, actions: list[str], since: float, target: str | None = None,
                    detail: str | None = None) -> list[tuple[float, str]]:
        """(time, action) of the entries with these actions since `since`, newest first; optionally only those
        with this target, or with this detail."""
        where, args = [f"action IN ({','.join('?' * len(actions))})", "time >= ?"], [*actions, since]
        for column, value in (("target", target), ("detail", detail)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        return [(r["time"], r["action"]) for r in self.db.execute_returning_dicts(
            f"SELECT time, action FROM audit WHERE {' AND '.join(where)} ORDER BY id DESC", args)]


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on an exception. Nested use joins the outer transaction."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn
        self.outer = False

    def __enter__(self):
        self.outer = not self.conn.in_transaction
        if self.outer:
            self.conn.execute("BEGIN IMMEDIATE")
        return self

    def __exit__(self, exc_type, exc, tb):
        if self.outer:
            self.conn.execute("ROLLBACK" if exc_type else "COMMIT")
        return False
