"""The app in a real browser: `streamlit run` on a free port, headless Chromium through Playwright."""

import pytest

from tests.conftest import assert_no_exception, wait_for_app

pytestmark = pytest.mark.browser


def test_home_renders_in_chromium(app_server, page, tmp_path):
    server = app_server(tmp_path / "ws")
    page.goto(server.url)
    wait_for_app(page)
    page.get_by_text("PIRL Studio").first.wait_for()
    page.get_by_text("No datasets yet").wait_for()
    assert_no_exception(page)
    page.screenshot(path=str(tmp_path / "home.png"), full_page=True)
    assert (tmp_path / "home.png").stat().st_size > 1000
    assert page.js_errors == []


def test_upload_images_on_the_data_page(app_server, page, tmp_path, demo_dir):
    server = app_server(tmp_path / "ws")
    page.goto(server.url + "/data")
    wait_for_app(page)
    files = sorted((demo_dir / "unlabeled").glob("*.png"))[:12]
    page.locator('[data-testid="stFileUploader"] input[type="file"]').first.set_input_files([str(f) for f in files])
    page.get_by_text(files[0].name).first.wait_for(timeout=30_000)
    page.get_by_label("Dataset name").first.fill("browser-upload")
    page.get_by_role("button", name="Import").first.click()
    page.get_by_text("Imported 12 images into browser-upload").wait_for(timeout=60_000)
    wait_for_app(page)
    page.locator('[data-testid="stImage"] img').nth(11).wait_for(timeout=30_000)  # the thumbnail grid
    assert_no_exception(page)
    page.screenshot(path=str(tmp_path / "data.png"), full_page=True)
