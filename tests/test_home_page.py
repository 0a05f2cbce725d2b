from streamlit.testing.v1 import AppTest

from tests.conftest import ROOT


def _run(page="app_pages/home.py"):
    at = AppTest.from_file(str(ROOT / page), default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    return at


def test_home_on_an_empty_workspace(ws):
    at = _run()
    assert at.title[0].value == "PIRL Studio"
    assert [m.value for m in at.metric] == ["0", "0", "0", "0"]
    assert any("No datasets yet" in i.value for i in at.info)


def test_home_on_a_filled_workspace(ws):
    s = ws.store
    ds = s.add_dataset("skin-pool")
    s.add_images([dict(dataset_id=ds, content_hash=f"h{i}", path=f"p{i}", orig_name=f"{i}.png") for i in range(5)])
    labeled = s.add_dataset("skin-labeled")  # three of the same images again, now labeled
    s.add_images([dict(dataset_id=labeled, content_hash=f"h{i}", path=f"p{i}", orig_name=f"{i}.png", label="a")
                  for i in range(3)])
    s.add_job("pretrain", {"epochs": 1}, dataset_id=ds)
    at = _run()
    assert [m.value for m in at.metric][:3] == ["2", "5", "1"]  # each image counted once
    tables = [df.value for df in at.dataframe]
    assert sorted(tables[0]["name"].tolist()) == ["skin-labeled", "skin-pool"]
    assert tables[1]["status"].tolist() == ["queued"]


def test_entry_point_runs_the_home_page_opening_the_workspace_once(ws, monkeypatch):
    from pirl_core.workspace.folder import Workspace

    opened = []
    real_open = Workspace.open.__func__
    monkeypatch.setattr(Workspace, "open",
                        classmethod(lambda cls, *a, **k: opened.append(1) or real_open(cls, *a, **k)))
    at = _run("studio.py")
    assert at.title[0].value == "PIRL Studio"
    assert len(opened) == 1  # studio.py's, shared with the page (and the sidebar badge) for this run
    at.run()
    assert len(opened) == 2  # one more for the next run, not a stale handle


def test_the_demo_notice_stops_saying_synthetic_only_once_real_images_are_imported(ws):
    from pirl_core import demo

    for name in (demo.POOL, demo.LABELED):
        ws.store.add_dataset(name)
    at = _run()
    assert any("synthetic demo images, not patient data" in i.value for i in at.info)
    ws.store.add_dataset("breast-us")
    at = _run()
    assert not any("not patient data" in i.value for i in at.info)
    assert any("Beside your own images, the demo's synthetic sets" in c.value for c in at.caption)
