import pytest
from streamlit.testing.v1 import AppTest

from pirl_core.data import ingest, sources
from tests.conftest import ROOT


def _page():
    return AppTest.from_file(str(ROOT / "app_pages/data.py"), default_timeout=60)


def test_data_page_empty_workspace(ws):
    at = _page().run()
    assert not at.exception
    assert any("No datasets yet" in i.value for i in at.info)


def test_import_a_server_folder_with_class_subfolders_shows_report_and_thumbnails(ws, demo_dir, monkeypatch):
    monkeypatch.setenv("PIRL_DATA_ROOTS", str(demo_dir))
    at = _page().run()
    at.text_input(key="folder").input(str(demo_dir / "labeled"))
    at.text_input(key="name-folder").input("derm-labeled")
    at.radio(key="labels-folder").set_value("Class sub-folders")
    at.button[2].click().run()  # the folder tab's Import button
    assert not at.exception, at.exception
    assert any("Imported **24** images" in s.value for s in at.success)
    assert ws.store.dataset("derm-labeled")["kind"] == "labeled"
    assert len(at.get("imgs")) >= 1 or at.get("image")  # the thumbnail grid
    assert at.selectbox(key="dataset").value == "derm-labeled"


def test_without_data_roots_server_folder_import_is_off_and_says_how_to_turn_it_on(ws, monkeypatch):
    monkeypatch.delenv("PIRL_DATA_ROOTS", raising=False)
    at = _page().run()
    assert not at.exception
    assert any("Importing a folder on the server is off" in i.value and "PIRL_DATA_ROOTS" in i.value for i in at.info)
    assert "folder" not in [t.key for t in at.text_input]


def test_folder_outside_allowed_roots_is_a_message_not_a_traceback(ws, tmp_path, monkeypatch):
    monkeypatch.setenv("PIRL_DATA_ROOTS", str(tmp_path / "allowed"))
    at = _page().run()
    at.text_input(key="folder").input("/etc")
    at.button[2].click().run()
    assert not at.exception
    assert any("outside the folders" in e.value for e in at.error)


def test_filled_workspace_lists_datasets_and_skipped_files(ws, demo_dir, tmp_path):
    import shutil

    d = tmp_path / "pool"
    shutil.copytree(demo_dir / "unlabeled", d)
    (d / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    ingest.ingest(ws, sources.folder_source(d, check_roots=False), "pool")
    at = _page().run()
    assert not at.exception
    assert at.dataframe[0].value["name"].tolist() == ["pool"]
    assert any("1 skipped file" in e.label for e in at.expander)


def test_the_data_page_says_how_much_disk_a_dataset_uses(ws, demo_dir):
    from pirl_core.data import datasets

    ds = ingest.ingest(ws, sources.folder_source(demo_dir / "unlabeled", check_roots=False), "pool").dataset_id
    originals = sum((ws.root / im["path"]).stat().st_size for im in ws.store.images(ds))
    caches = sum(f.stat().st_size for f in ws.cache.glob(f"dataset-{ds}-*.pngs"))
    n = len(ws.store.images(ds))
    assert 0 < caches <= n * 256 * 256 * 3  # the 256 px base cache, at most its 196,608 raw bytes an image
    assert datasets.disk_usage(ws, ds) == {"originals": originals, "caches": caches, "total": originals + caches}
    at = _page().run()
    assert not at.exception
    shown = f"({(originals + caches) / n / 1024:,.0f} KB an image: the original files"
    assert any(c.value.startswith("On disk: ") and shown in c.value for c in at.caption), [c.value for c in at.caption]


@pytest.mark.browser
def test_conflicting_labels_among_copies_are_listed_in_the_browser(ws, demo_dir, tmp_path, app_server, page):
    import shutil

    from tests.conftest import assert_no_exception, wait_for_app

    data = tmp_path / "lab"
    shutil.copytree(demo_dir / "labeled", data)
    shutil.copy(sorted((data / "benign").glob("*.png"))[0], data / "malignant" / "refiled.png")
    ingest.ingest(ws, sources.folder_source(data, check_roots=False), "lab", folder_labels=True)
    server = app_server(ws.root)
    for _ in range(2):  # a visit, then a reload
        page.goto(server.url + "/data")
        wait_for_app(page)
        page.get_by_text("1 set(s) of near-identical images carry different labels").wait_for(timeout=60_000)
        assert_no_exception(page)

