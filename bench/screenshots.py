"""The README's screenshots, from a real workspace (bench/screenshot_workspace.py builds it): every page fully
drawn in headless Chromium, written to OUT as 1-home.png ... 8-export.png.

    python bench/screenshots.py pirl-screenshots ../shared/data/busi256 docs/screenshots
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]


def _serve(workspace: Path, port: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.port",
                             str(port), "--server.headless", "true", "--server.fileWatcherType", "none"],
                            cwd=ROOT, env={**os.environ, "PIRL_HOME": str(workspace)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=1)
            return proc
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise SystemExit("streamlit did not start")


def _drawn(page) -> None:
    """Streamlit done running, no skeleton or spinner left, every Plotly chart rendered."""
    page.wait_for_selector('[data-testid="stApp"]')
    page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')"
                           " && !document.querySelector('[data-testid=\"stSkeleton\"]')"
                           " && !document.querySelector('[data-testid=\"stSpinner\"]')", timeout=300_000)
    page.wait_for_timeout(1500)  # plotly's and the images' last paint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workspace", type=Path)
    parser.add_argument("data", type=Path, help="the folder the workspace was built from (Predict uploads from it)")
    parser.add_argument("out", type=Path)
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    server = _serve(args.workspace.resolve(), args.port)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=os.environ.get("PIRL_TEST_CHROMIUM", "/usr/bin/chromium"),
                                        args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1800})

            def shot(link: str | None, expect: str, name: str, images: int = 0) -> None:
                if link:
                    page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name=link).click()
                page.get_by_text(expect).first.wait_for(timeout=300_000)
                if images:  # thumbnails and heatmaps arrive after the text: wait for the last of them
                    page.locator('[data-testid="stImage"] img').nth(images - 1).wait_for(timeout=300_000)
                _drawn(page)
                page.screenshot(path=str(args.out / f"{name}.png"), full_page=True)
                print("wrote", args.out / f"{name}.png", flush=True)

            page.goto(f"http://127.0.0.1:{args.port}")
            shot(None, "7 · Export a model", "1-home")
            shot("Data", "Add images", "2-data")
            shot("Pretrain", "chance", "3-pretrain")
            shot("Label", "Most similar images already labeled", "4-label")
            shot("Compare", "Calibration", "5-compare")
            shot("Explore", "Page (of", "6-explore", images=18)
            page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name="Predict").click()
            page.get_by_text("a folder").first.wait_for(timeout=120_000)
            with tempfile.TemporaryDirectory() as tmp:
                picks = [*sorted((args.data / "malignant").glob("*.png"))[:2],
                         *sorted((args.data / "benign").glob("*.png"))[:2]]
                for f in picks:
                    shutil.copy(f, Path(tmp) / f.name)
                page.get_by_text("a folder").click()
                page.get_by_text("A folder of images").wait_for()
                page.get_by_test_id("stFileUploader").filter(has_text="A folder of images").locator(
                    'input[type="file"]').set_input_files(tmp)
                shot(None, "4 image(s):", "7-predict", images=4)
            shot("Export", "Model to export", "8-export")
            browser.close()
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
