"""The app in a real browser: `streamlit run` on a free port, headless Chromium through Playwright."""

import pytest

from tests.conftest import assert_no_exception, uploader, wait_for_app

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
    uploader(page, "Images (PNG").set_input_files([str(f) for f in files])
    page.get_by_text(files[0].name).first.wait_for(timeout=30_000)
    page.get_by_label("Dataset name").first.fill("browser-upload")
    page.get_by_role("button", name="Import").first.click()
    page.get_by_text("Imported 12 images into browser-upload").wait_for(timeout=60_000)
    wait_for_app(page)
    page.locator('[data-testid="stImage"] img').nth(11).wait_for(timeout=30_000)  # the thumbnail grid
    assert_no_exception(page)
    # opened by URL on a fresh server, the page still runs inside studio.py's navigation and sidebar
    nav = page.locator('[data-testid="stSidebarNav"]').inner_text()
    assert "Pretrain" in nav and "shared" not in nav
    page.get_by_text("No job running.").wait_for()
    page.screenshot(path=str(tmp_path / "data.png"), full_page=True)


def _curve_points(page) -> int:
    return page.evaluate(
        "() => { const p = document.querySelector('.js-plotly-plot'); return p && p.data ? p.data[0].x.length : 0 }")


def test_pretrain_from_the_page_live_curve_reload_and_cancel(app_server, page, tmp_path, demo_dir):
    import time

    from pirl_core.data import ingest, sources
    from pirl_core.workspace.folder import Workspace

    ws = Workspace(tmp_path / "ws")
    ingest.ingest(ws, sources.folder_source(demo_dir / "unlabeled", check_roots=False), "pool")
    server = app_server(ws.root)
    page.goto(server.url + "/pretrain")
    wait_for_app(page)
    page.get_by_test_id("stExpander").get_by_text("Advanced settings").click()
    for label, value in (("Image size (px)", "96"), ("Epochs", "40"), ("Batch size", "8")):
        box = page.get_by_role("spinbutton", name=label)  # the default start: efficientnet_lite0 from ImageNet
        box.fill(value)
        box.press("Enter")  # Enter in a field starts nothing: a run starts from its button
    time.sleep(3)
    assert ws.store.jobs() == [] and page.get_by_text("Queued pretraining run").count() == 0
    page.get_by_role("button", name="Start pretraining").click()
    page.get_by_text("Queued pretraining run #1").wait_for(timeout=30_000)

    page.wait_for_function("() => document.querySelector('.js-plotly-plot')", timeout=90_000)
    first = _curve_points(page)
    deadline = time.time() + 60
    while _curve_points(page) <= first and time.time() < deadline:
        time.sleep(1)
    assert _curve_points(page) > first, "the live curve did not gain points"

    page.reload()
    wait_for_app(page)
    page.get_by_text("Run #1 · play_circle running").wait_for(timeout=30_000)
    page.get_by_role("button", name="Cancel").click()
    page.get_by_text("Run #1 · stop_circle cancelled").wait_for(timeout=30_000)
    assert_no_exception(page)
    page.screenshot(path=str(tmp_path / "pretrain.png"), full_page=True)
    assert ws.store.job(1)["status"] == "cancelled"


def test_with_sign_in_on_anonymous_sees_only_the_form_and_a_viewer_cannot_reach_export(app_server, page, tmp_path,
                                                                                        demo_dir):
    from pirl_core.access import users
    from pirl_core.data import ingest, sources
    from pirl_core.workspace.folder import Workspace

    ws = Workspace(tmp_path / "ws")
    ingest.ingest(ws, sources.folder_source(demo_dir / "unlabeled", check_roots=False), "pool")
    users.add_user(ws, "victor", "viewer password", "viewer")
    server = app_server(ws.root)
    for path in ("", "/data", "/export"):  # every URL: the form, nothing of the workspace
        page.goto(server.url + path)
        wait_for_app(page)
        page.get_by_role("textbox", name="Password").wait_for()
        assert page.get_by_text("pool").count() == 0 and page.locator('[data-testid="stSidebarNav"]').count() == 0
        assert_no_exception(page)
    sign_in(page, "victor", "viewer password")
    page.get_by_text("Signed in as victor (viewer)").wait_for(timeout=30_000)
    nav = page.locator('[data-testid="stSidebarNav"]').inner_text()
    assert "Compare" in nav and "Export" not in nav
    page.get_by_role("link", name="Data").click()
    wait_for_app(page)
    page.get_by_text("Importing images needs an editor").wait_for()
    assert page.locator('[data-testid="stFileUploader"]').count() == 0
    page.get_by_role("link", name="Pretrain").click()
    wait_for_app(page)
    page.get_by_text("Starting a pretraining run needs an editor").wait_for()
    assert page.get_by_role("button", name="Start pretraining").count() == 0
    assert_no_exception(page)
    assert page.js_errors == []


def _anonymous_status(url: str) -> int:
    import urllib.error
    import urllib.request

    try:
        return urllib.request.urlopen(url, timeout=10).status
    except urllib.error.HTTPError as exc:
        return exc.code


def sign_in(page, name: str, password: str) -> None:
    page.get_by_role("textbox", name="User name").fill(name)
    page.get_by_role("textbox", name="Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def test_thumbnails_and_metrics_reach_only_a_signed_in_browser(app_server, page, tmp_path, demo_dir):
    """A thumbnail's /media address fetched without the browser's pass, before sign-in or after sign-out is
    refused; the signed-in browser gets it (and the metrics)."""
    from pirl_core.access import users
    from pirl_core.data import ingest, sources
    from pirl_core.workspace.folder import Workspace

    ws = Workspace(tmp_path / "ws")
    ingest.ingest(ws, sources.folder_source(demo_dir / "unlabeled", check_roots=False), "pool")
    users.add_user(ws, "erin", "editor password", "editor")
    server = app_server(ws.root)
    assert _anonymous_status(server.url + "/_stcore/metrics") == 403
    page.goto(server.url + "/data")
    wait_for_app(page)
    assert page.request.get(server.url + "/_stcore/metrics").status == 403  # a pass, not yet signed in
    sign_in(page, "erin", "editor password")
    page.get_by_text("Signed in as erin (editor)").wait_for(timeout=30_000)
    thumbnail = page.locator('[data-testid="stImage"] img').first
    thumbnail.wait_for(timeout=30_000)
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=thumbnail.element_handle())
    src = thumbnail.get_attribute("src")
    media = src if src.startswith("http") else server.url + src
    assert "/media/" in media
    assert page.request.get(media).status == 200
    assert page.request.get(server.url + "/_stcore/metrics").status == 200
    assert _anonymous_status(media) == 403  # the same address from anywhere else: no image
    page.get_by_role("button", name="Sign out").click()
    page.get_by_role("textbox", name="Password").wait_for(timeout=30_000)
    assert page.request.get(media).status == 403
    assert_no_exception(page)


EVIL = "![x](http://evil.example/t.png)"
LINK = "<img src=http://evil.example/x> www.evil.example"  # GitHub Markdown makes links of bare addresses


def test_user_text_is_shown_as_text_and_no_request_leaves_the_machine(app_server, page, tmp_path, demo_dir):
    """A label and a dataset name written as Markdown images, and a label with bare addresses, stay text (no
    link, no stray backslash); the browser fetches nothing from another host (the page icon and fonts
    included)."""
    from pirl_core.data import ingest, sources
    from pirl_core.workspace.folder import Workspace

    files = sorted((demo_dir / "labeled").rglob("*.png"))[:12]
    csv = "filename,label\n" + "".join(f"{f.name},{[EVIL, 'benign', LINK][i % 3]}\n" for i, f in enumerate(files))
    ws = Workspace(tmp_path / "ws")
    ingest.ingest(ws, sources.upload_source([(f.name, f.read_bytes()) for f in files]), EVIL, labels_csv=csv)
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    server = app_server(ws.root)
    for path in ("", "/data", "/pretrain", "/compare", "/explore", "/predict", "/export"):
        page.goto(server.url + path)
        wait_for_app(page)
        page.wait_for_timeout(1000)  # the page icon is fetched late: a Material icon came from a font CDN
        assert_no_exception(page)
    page.goto(server.url + "/data")
    wait_for_app(page)
    page.get_by_text("Class balance by split").first.wait_for()
    assert page.get_by_text(EVIL).count() >= 1  # shown as the text it is
    assert LINK in page.inner_text("body").replace("\u2060", "")  # as typed, with invisible word joiners
    assert page.locator('img[src*="evil.example"]').count() == 0
    assert page.locator('a[href*="evil.example"]').count() == 0
    elsewhere = sorted({u for u in requests if not u.startswith(server.url) and not u.startswith(("data:", "blob:"))})
    assert elsewhere == []


def test_upload_a_folder_with_class_sub_folders_from_the_browser(app_server, page, tmp_path, demo_dir):
    import shutil

    from pirl_core.workspace.folder import Workspace

    folder = tmp_path / "derm-set"
    shutil.copytree(demo_dir / "labeled", folder)  # benign/ and malignant/
    server = app_server(tmp_path / "ws")
    page.goto(server.url + "/data")
    wait_for_app(page)
    page.get_by_text("a folder", exact=True).click()
    page.get_by_text("A folder of images").wait_for()
    uploader(page, "A folder of images").set_input_files(str(folder))
    page.get_by_text("_00000.png").first.wait_for(timeout=30_000)  # the file chips (names shortened)
    page.get_by_label("Dataset name").first.fill("derm-set")
    page.get_by_role("radiogroup", name="Labels").first.get_by_text("Class sub-folders").click()
    page.get_by_role("button", name="Import").first.click()
    page.get_by_text("Imported 24 images into derm-set").wait_for(timeout=60_000)
    assert_no_exception(page)
    ws = Workspace.open(tmp_path / "ws")
    assert ws.store.class_counts(ws.store.dataset("derm-set")["id"]) == {"benign": 12, "malignant": 12}
