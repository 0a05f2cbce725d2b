"""The whole flow, clicked in a real browser on demo data: Home -> Data -> Pretrain -> Compare -> Explore ->
Predict -> Export. Asserts what a user sees at each step and writes the screenshots the README shows
(`make screenshots` writes them to docs/screenshots; otherwise they go to the test's temporary folder)."""

import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import assert_no_exception, compared_workspace, uploader, wait_for_app

pytestmark = pytest.mark.browser


def test_the_whole_flow_in_the_browser(app_server, page, tmp_path, demo_dir):
    shots = Path(os.environ.get("PIRL_SCREENSHOTS") or tmp_path / "shots")
    shots.mkdir(parents=True, exist_ok=True)
    ws, run, cid, arms = compared_workspace(tmp_path / "ws", demo_dir, folds=3, mode="linear")
    server = app_server(ws.root)
    page.set_viewport_size({"width": 1400, "height": 2000})  # Streamlit scrolls inside: a tall window shows more

    def visit(link: str | None, expect: str, shot: str):
        if link:
            page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name=link).click()
        wait_for_app(page)
        page.get_by_text(expect).first.wait_for(timeout=60_000)
        wait_for_app(page)
        assert_no_exception(page)
        page.screenshot(path=str(shots / f"{shot}.png"), full_page=True)

    page.goto(server.url)
    visit(None, "Datasets", "1-home")
    step = page.get_by_text("7 · Export a model")  # the step names whole
    step.first.wait_for(timeout=30_000)  # a first visit can run the script twice: wait, don't race the rerun
    assert step.count() == 1

    visit("Data", "Add images", "2-data")
    files = sorted((demo_dir / "unlabeled").glob("*.png"))[:8]
    uploader(page, "Images (PNG").set_input_files([str(f) for f in files])
    page.get_by_text(files[0].name).first.wait_for(timeout=30_000)
    page.get_by_label("Dataset name").first.fill("more-scans")
    page.get_by_role("button", name="Import").first.click()
    page.get_by_text("Imported 8 images into more-scans").wait_for(timeout=60_000)
    assert_no_exception(page)

    visit("Pretrain", "Runs", "3-pretrain")
    page.get_by_text("chance").first.wait_for()  # the loss chart's chance line and the verdict

    visit("Compare", "Results", "4-compare")
    page.get_by_text(f"PIRL #{run} vs scratch").first.wait_for()  # the verdict sentence
    page.get_by_text("Calibration").first.wait_for()

    visit("Explore", "Neighbours", "5-explore")

    visit("Predict", "Decision", "6-predict-empty")
    folder = tmp_path / "new-scans"
    folder.mkdir()
    for f in sorted((demo_dir / "labeled").rglob("*.png"))[:4]:
        shutil.copy(f, folder / f.name)
    page.get_by_text("a folder").click()
    page.get_by_text("A folder of images").wait_for()
    uploader(page, "A folder of images").set_input_files(str(folder))
    page.get_by_text("4 image(s):").wait_for(timeout=60_000)
    page.locator('[data-testid="stImage"] img').nth(3).wait_for(timeout=30_000)
    visit(None, "Where the model looked", "6-predict")

    visit("Export", "Model to export", "7-export")
    page.get_by_role("button", name="Build bundle").click()
    page.get_by_text("Bundle ready").wait_for(timeout=120_000)
    page.get_by_role("button", name="Download").first.wait_for()
    visit(None, "Exports", "7-export")
    assert page.js_errors == []
    assert sorted(p.name for p in shots.glob("*.png")) == [
        "1-home.png", "2-data.png", "3-pretrain.png", "4-compare.png", "5-explore.png", "6-predict-empty.png",
        "6-predict.png", "7-export.png"]
