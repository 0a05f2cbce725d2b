"""The first-run demo pipeline: pretrain -> compare -> export, queued jobs that run in order."""

from streamlit.testing.v1 import AppTest

from pirl_core import demo
from pirl_core.data import ingest, sources
from pirl_core.evaluation import compare
from pirl_core.jobs import queue
from tests.conftest import ROOT


def test_the_demo_pipeline_pretrains_compares_and_exports_in_order(ws, demo_dir, monkeypatch):
    monkeypatch.setattr(queue, "ensure_worker", lambda ws: None)  # this test runs the worker itself
    ingest.ingest(ws, sources.folder_source(demo_dir / "unlabeled", check_roots=False), demo.POOL)
    ingest.ingest(ws, sources.folder_source(demo_dir / "labeled", check_roots=False), demo.LABELED,
                  folder_labels=True)
    demo.start_pipeline(ws, backbone="resnet18", pretrained_imagenet=False, image_size=32, batch_size=16, epochs=1)
    assert [s["status"] for s in demo.pipeline_status(ws)] == ["queued", "waiting", "waiting"]
    at = AppTest.from_file(str(ROOT / "app_pages/home.py"), default_timeout=60).run()
    assert any("Demo pipeline" in s.value for s in at.subheader)
    queue.run_worker(ws, idle_exit_s=0)
    assert [s["status"] for s in demo.pipeline_status(ws)] == ["succeeded"] * 3
    (comparison,) = compare.comparisons(ws)
    assert comparison["result"]["summary"]["complete"]
    assert len(ws.store.exports()) == 1 and ws.store.exports()[0]["info"]["kind"] == "finetune"
    at = AppTest.from_file(str(ROOT / "app_pages/home.py"), default_timeout=60).run()
    assert not at.exception and any("synthetic" in i.value for i in at.info)
    assert any("cannot show: whether PIRL helps on your scans" in i.value for i in at.info)
