import sqlite3
import subprocess
import sys

import pytest

from pirl_core.workspace import store as store_mod
from pirl_core.workspace.store import SCHEMA_VERSION, Store


def test_new_database_has_latest_schema_and_wal(tmp_path):
    s = Store(tmp_path / "pirl.db")
    assert s.version == SCHEMA_VERSION
    assert s.journal_mode == "wal"
    tables = set(s.db.table_names())
    assert {"datasets", "images", "jobs", "metrics", "evaluations", "exports", "skipped"} <= tables
    assert {"pid", "heartbeat_at", "checkpoint"} <= set(s.db["jobs"].columns_dict)


def test_migrates_an_old_database_forward_keeping_its_rows(tmp_path):
    old = Store(tmp_path / "pirl.db", migrate_to=1)
    assert old.version == 1
    ds = old.add_dataset("scans")
    old.db["jobs"].insert(dict(kind="pretrain", config="{}", status="succeeded", created_at=1.0))
    old.close()

    s = Store(tmp_path / "pirl.db")
    assert s.version == SCHEMA_VERSION
    assert s.dataset("scans")["id"] == ds
    assert s.jobs()[0]["status"] == "succeeded" and s.jobs()[0]["heartbeat_at"] is None


def test_refuses_a_database_from_a_newer_version(tmp_path):
    Store(tmp_path / "pirl.db").db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(store_mod.SchemaTooNew, match="newer"):
        Store(tmp_path / "pirl.db")


def test_failed_migration_leaves_the_old_version(tmp_path, monkeypatch):
    Store(tmp_path / "pirl.db", migrate_to=1).close()

    def broken(db):
        db.execute("ALTER TABLE jobs ADD COLUMN pid INTEGER")
        raise RuntimeError("boom")

    monkeypatch.setattr(store_mod, "MIGRATIONS", [store_mod.MIGRATIONS[0], broken])
    with pytest.raises(RuntimeError):
        Store(tmp_path / "pirl.db")
    conn = sqlite3.connect(tmp_path / "pirl.db")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    assert "pid" not in [r[1] for r in conn.execute("PRAGMA table_info(jobs)")]


WRITER = """
import sys
from pirl_core.workspace.store import Store
s = Store(sys.argv[1])
for i in range(300):
    s.add_metrics(int(sys.argv[2]), int(sys.argv[3]) + i, 0, {"loss": float(i), "lr": 0.1})
"""


def test_two_processes_writing_metrics_lose_no_row(tmp_path):
    # Plain subprocesses: multiprocessing's spawn would re-run whatever AppTest left as __main__.
    path = tmp_path / "pirl.db"
    s = Store(path)
    job = s.add_job("pretrain", {})
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(job), str(k * 1000)]) for k in range(2)]
    for p in procs:
        assert p.wait(120) == 0
    rows = s.metrics(job)
    assert len(rows) == 2 * 300 * 2
    assert len({(r["step"], r["name"]) for r in rows}) == len(rows)


def test_transaction_rolls_back_everything_on_error(tmp_path):
    s = Store(tmp_path / "pirl.db")
    with pytest.raises(ValueError):
        with s.transaction():
            ds = s.add_dataset("half")
            s.add_images([dict(dataset_id=ds, content_hash="h", path="p", orig_name="a.png")])
            raise ValueError("cancelled")
    assert s.datasets() == []
    assert s.db["images"].count == 0


def test_claim_next_job_takes_the_oldest_queued_once(tmp_path):
    s = Store(tmp_path / "pirl.db")
    first, second = s.add_job("pretrain", {"a": 1}), s.add_job("pretrain", {"a": 2})
    assert s.claim_next_job(pid=1)["id"] == first
    assert s.claim_next_job(pid=2)["id"] == second
    assert s.claim_next_job(pid=3) is None
    assert s.job(first)["status"] == "running" and s.job(first)["config"] == {"a": 1}
