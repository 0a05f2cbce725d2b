"""A workspace that cannot be used is one clear sentence in the CLI and on every page, never a traceback."""

import os

from streamlit.testing.v1 import AppTest

from pirl_core.cli import main
from pirl_core.engine.config import PretrainConfig
from pirl_core.jobs import queue
from tests.conftest import ROOT


def test_a_damaged_database_is_one_sentence_in_the_cli_and_on_a_page(tmp_path, monkeypatch, capsys):
    root = tmp_path / "ws"
    root.mkdir()
    (root / "pirl.db").write_bytes(b"this is not a database, it was overwritten" * 100)
    assert main(["--workspace", str(root), "datasets"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: The workspace database") and "restore pirl.db from your own backups" in err
    assert "Traceback" not in err
    monkeypatch.setenv("PIRL_HOME", str(root))
    at = AppTest.from_file(str(ROOT / "app_pages/data.py"), default_timeout=60).run()
    assert not at.exception and any("is damaged" in e.value for e in at.error)
    assert not [e for e in at.error if str(root) in e.value]  # anyone may see this page: no server path


def test_a_file_where_the_workspace_should_be_is_one_sentence(tmp_path, capsys):
    (tmp_path / "ws").write_text("a file, not a folder")
    assert main(["--workspace", str(tmp_path / "ws"), "datasets"]) == 2
    assert "cannot be created or written" in capsys.readouterr().err


def test_a_resume_whose_checkpoint_was_deleted_says_so(ws, demo_dir):
    from pirl_core.data import ingest, sources

    pool = ingest.ingest(ws, sources.folder_source(demo_dir / "unlabeled", check_roots=False), "pool").dataset_id
    job_id = queue.submit(ws, "pretrain", PretrainConfig(image_size=32, epochs=1, batch_size=16).to_dict(), pool,
                         start_worker=False)
    queue.run_worker(ws, idle_exit_s=0)
    job = ws.store.job(job_id)
    os.remove(job["checkpoint"])
    ws.store.set_job_status_if(job_id, ["succeeded"], "interrupted")
    queue.resume(ws, job_id, start_worker=False)
    queue.run_worker(ws, idle_exit_s=0)
    job = ws.store.job(job_id)
    assert job["status"] == "failed" and "checkpoint of this run" in job["message"] and "is gone" in job["message"]


def test_a_new_workspace_is_its_owners_alone_and_an_existing_folder_keeps_its_permissions(tmp_path):
    from pirl_core.data import demo_data, ingest, sources
    from pirl_core.workspace.folder import Workspace

    ws = Workspace.open(tmp_path / "new" / "ws")
    demo_data.generate(tmp_path / "demo", n=4, unlabeled=4, size=40)
    ingest.ingest(ws, sources.folder_source(tmp_path / "demo" / "unlabeled", check_roots=False), "pool")
    mode = lambda p: os.stat(p).st_mode & 0o777  # noqa: E731
    assert mode(ws.root) == 0o700 and all(mode(ws.root / d) == 0o700 for d in Workspace.SUBDIRS)
    assert mode(ws.root / "pirl.db") == 0o600
    assert mode(ws.root / "pirl.db-wal") == 0o600  # SQLite gives its journal the database's permissions
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o750)  # the owner's choice: a group may read it
    Workspace.open(shared)
    assert mode(shared) == 0o750


def _damage(db, seed=0):
    """Garbage over every page but the first: the header opens, the tables do not."""
    import numpy as np

    data = bytearray(db.read_bytes())
    data[4096:] = np.random.default_rng(seed).integers(0, 256, len(data) - 4096, dtype=np.uint8).tobytes()
    db.write_bytes(bytes(data))


def test_a_database_damaged_after_it_opened_names_the_daily_copy_and_the_copy_restores_it(ws, demo_dir, capsys,
                                                                                        monkeypatch):
    import datetime as dt
    import shutil

    from pirl_core.data import ingest, sources

    ingest.ingest(ws, sources.folder_source(demo_dir / "unlabeled", check_roots=False), "pool")
    ws.store.close()
    copy = ws.root / "backups" / f"pirl-{dt.date.today().isoformat()}.db"
    assert copy.exists() and os.stat(copy).st_mode & 0o777 == 0o600
    assert main(["-w", str(ws.root), "datasets"]) == 0  # the copy was taken before the import: copy it again
    copy.unlink()
    assert main(["-w", str(ws.root), "datasets"]) == 0 and copy.exists()
    capsys.readouterr()
    _damage(ws.root / "pirl.db")
    assert main(["-w", str(ws.root), "datasets"]) == 2
    err = capsys.readouterr().err
    assert "is damaged" in err and str(copy) in err and "Traceback" not in err
    at = AppTest.from_file(str(ROOT / "studio.py"), default_timeout=60).run()
    assert not at.exception and any("is damaged" in e.value and str(ws.root) not in e.value for e in at.error)
    shutil.copy(copy, ws.root / "pirl.db")  # what the message says to do
    for leftover in ("pirl.db-wal", "pirl.db-shm"):
        (ws.root / leftover).unlink(missing_ok=True)
    assert main(["-w", str(ws.root), "datasets"]) == 0 and '"name": "pool"' in capsys.readouterr().out


def test_a_read_only_workspace_can_be_read_and_says_so_when_asked_to_change(ws, demo_dir, capsys, monkeypatch):
    from pirl_core.data import ingest, sources
    from pirl_core.workspace import store

    ingest.ingest(ws, sources.folder_source(demo_dir / "unlabeled", check_roots=False), "pool")
    ws.store.close()
    # as a reviewer's read-only copy looks to its reader (the tests run as root, whom permissions do not stop)
    monkeypatch.setattr(store.os, "access", lambda path, mode: not str(path).startswith(str(ws.root)))
    for command in (["datasets"], ["audit"], ["jobs"]):
        assert main(["-w", str(ws.root), *command]) == 0, command
    assert '"action": "import"' in capsys.readouterr().out
    assert main(["-w", str(ws.root), "ingest", str(demo_dir / "labeled"), "--name", "more"]) == 2
    err = capsys.readouterr().err
    assert "is read-only" in err and "Traceback" not in err
