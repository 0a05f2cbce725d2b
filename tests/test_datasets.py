"""Renaming and deleting datasets: what depends on one is named first and goes with it."""

import pytest
from streamlit.testing.v1 import AppTest

from pirl_core.data import datasets, ingest, sources
from pirl_core.engine.config import PretrainConfig
from pirl_core.errors import PirlError
from pirl_core.evaluation import compare
from pirl_core.jobs import queue
from tests.conftest import ROOT


@pytest.fixture
def filled(ws, demo_dir, monkeypatch):
    monkeypatch.setattr(queue, "ensure_worker", lambda ws: None)  # jobs stay queued: nothing trains here
    ingest.ingest(ws, sources.folder_source(demo_dir / "unlabeled", check_roots=False), "pool")
    ingest.ingest(ws, sources.folder_source(demo_dir / "labeled", check_roots=False), "lab", folder_labels=True)
    run = queue.submit(ws, "pretrain", PretrainConfig(image_size=32, epochs=1, batch_size=16).to_dict(),
                      ws.store.dataset("pool")["id"], start_worker=False)
    queue.run_worker(ws, idle_exit_s=0)  # a tiny run, done in seconds
    cid = compare.start(ws, compare.CompareRequest(labeled="lab", pretrain_jobs=[run], inits=["scratch"], folds=0,
                                                   fractions=[1.0]))
    return ws, run, cid


def _cancel_all(ws):
    for job in ws.store.jobs(statuses=queue.ACTIVE):
        queue.cancel(ws, job["id"])


def test_deleting_names_its_dependents_refuses_while_they_run_and_takes_them_along(filled):
    ws, run, cid = filled
    dep = datasets.dependents(ws, "lab")
    assert dep["comparisons"] == [cid] and len(dep["finetunes"]) == 1 and dep["runs"] == []
    assert datasets.describe(dep) == f"1 comparison(s) (#{cid}), 1 finetune job(s)"
    with pytest.raises(PirlError, match="queued or running; cancel them first"):
        datasets.delete(ws, "lab")
    _cancel_all(ws)
    lab_files = [ws.root / im["path"] for im in ws.store.images(ws.store.dataset("lab")["id"])]
    assert datasets.delete(ws, "lab") == f"1 comparison(s) (#{cid}), 1 finetune job(s)"
    assert ws.store.dataset("lab") is None and compare.comparisons(ws) == []
    assert [j["id"] for j in ws.store.jobs()] == [run]  # the pool's run stays
    assert not any(p.exists() for p in lab_files) and not list(ws.cache.glob("dataset-2-*"))
    assert ws.store.audit()[0]["action"] == "delete dataset"
    datasets.delete(ws, "pool")
    assert ws.store.datasets() == [] and ws.store.jobs() == [] and not list(ws.images.rglob("*.png"))


def test_rename_keeps_everything_and_refuses_a_taken_name(filled):
    ws, run, cid = filled
    lab_id = ws.store.dataset("lab")["id"]
    datasets.rename(ws, "lab", "derm-labeled")
    assert ws.store.dataset("derm-labeled")["id"] == lab_id
    assert datasets.dependents(ws, "derm-labeled")["comparisons"] == [cid]
    with pytest.raises(PirlError, match="already exists"):
        datasets.rename(ws, "derm-labeled", "pool")


def test_the_data_page_renames_and_deletes_after_saying_what_goes(filled):
    ws, run, cid = filled
    _cancel_all(ws)
    at = AppTest.from_file(str(ROOT / "app_pages/data.py"), default_timeout=60).run()
    at.selectbox(key="dataset").set_value("lab").run()
    lab_id = ws.store.dataset("lab")["id"]
    at.text_input(key=f"rename-{lab_id}").input("derm lab")
    at.button(key=f"rename-button-{lab_id}").click().run()
    assert not at.exception
    assert at.selectbox(key="dataset").value == "derm lab" and any("Renamed lab" in s.value for s in at.success)
    assert any(f"comparison(s) (#{cid})" in m.value for m in at.markdown)  # named before deleting
    assert at.button(key=f"delete-button-{lab_id}").disabled
    at.checkbox(key=f"delete-sure-{lab_id}").check().run()
    at.button(key=f"delete-button-{lab_id}").click().run()
    assert not at.exception
    assert any("Deleted derm lab" in s.value for s in at.success) and ws.store.dataset("derm lab") is None
