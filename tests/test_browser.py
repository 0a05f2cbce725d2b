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
