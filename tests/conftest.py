"""Shared fixtures: temporary workspaces, demo images, and a real Streamlit server + Chromium."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

# `make test` runs the modules on two pytest-xdist workers (-n 2 --dist loadfile): the cores are shared between
# them, so each worker and the processes it starts (CLI commands, job workers, torchrun) train on its share of
# the threads, not all of them (two workers of two threads each on two cores slow every step).
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))

import pirl_core.jobs.kinds  # noqa: F401  (registers the job kinds for workers run in the test process)

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("PIRL_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]


# Modules whose tests train past a few steps or start many processes: `make test-fast` (-m "not slow and not
# browser") leaves them to `make test`. Chosen from `pytest --durations=40` on this 2-core machine.
SLOW_MODULES = {"test_distributed", "test_demo_pipeline", "test_compare", "test_compare_page", "test_export",
                "test_predict", "test_retrieval"}
SLOW_TESTS = {"test_sigkill_mid_epoch_then_resume_finishes_without_gaps_or_repeats",
              "test_eight_concurrent_imports_into_one_workspace_all_land",
              "test_the_compile_option_trains_like_the_plain_network_and_keeps_the_checkpoint_format",
              "test_ci_covers_the_true_auc_at_about_its_nominal_rate",
              "test_cli_suggest_label_and_compare_round_trip",
              "test_the_label_page_draws_the_simulated_strategies_of_a_labeled_set",
              "test_pirl_ingest_dicomweb_killed_halfway_and_run_again_has_every_instance_once",
              "test_two_epochs_on_demo_data_lower_the_loss",
              "test_stop_and_resume_equals_an_uninterrupted_run",
              "test_a_run_with_a_time_budget_records_its_epochs_and_resumes_with_them",
              "test_checkpoints_follow_the_interval_not_every_epoch",
              "test_cli_progress_in_a_log_file_is_a_few_plain_lines",
              "test_two_sessions_see_the_same_running_job_with_its_curve",
              "test_a_server_that_stalls_mid_study_fails_clearly_and_the_resumed_pull_fetches_only_the_rest",
              "test_start_a_run_from_the_form_queues_a_job",  # these two train a run to its end through a worker
              "test_start_a_rotation_run_from_the_page_and_see_it_listed",
              "test_mutated_png_jpeg_tiff_bmp_and_dicom_files_are_all_named_skips_or_decoded"}  # the fuzz bench


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.module.__name__.rsplit(".", 1)[-1] in SLOW_MODULES or item.originalname in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)


_MAIN = sys.modules["__main__"]


@pytest.fixture(autouse=True)
def _main_module_restored():
    """AppTest runs a page as `__main__` and leaves it in sys.modules; a process started with multiprocessing's
    spawn (mp.spawn, a spawn Pool) would re-run that page in the child and die. Every test starts and ends
    with the interpreter's own `__main__`."""
    sys.modules["__main__"] = _MAIN
    yield
    sys.modules["__main__"] = _MAIN


@pytest.fixture
def ws(tmp_path, monkeypatch):
    """An empty workspace in a temporary folder, also set as PIRL_HOME."""
    from pirl_core.workspace.folder import Workspace

    monkeypatch.setenv("PIRL_HOME", str(tmp_path / "ws"))
    return Workspace(tmp_path / "ws")


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory) -> Path:
    """Small demo images: 24 labeled (2 classes) + 48 unlabeled, 64 px."""
    from pirl_core.data import demo_data

    out = tmp_path_factory.mktemp("demo")
    demo_data.generate(out, n=24, seed=1, unlabeled=48, size=64)
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class StreamlitServer:
    def __init__(self, workspace: Path, log: Path):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        env = {**os.environ, "PIRL_HOME": str(workspace)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.port", str(self.port),
             "--server.headless", "true", "--server.fileWatcherType", "none"],
            cwd=ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
        deadline = time.time() + 120  # app.py loads torch and the services before it serves
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"streamlit exited early:\n{log.read_text()}")
            try:
                urllib.request.urlopen(self.url + "/_stcore/health", timeout=1)
                return
            except OSError:
                time.sleep(0.3)
        raise RuntimeError(f"streamlit did not become healthy in 120 s:\n{log.read_text()}")

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture
def app_server(tmp_path):
    """Factory: start `streamlit run app.py` on a free port over a given workspace folder."""
    servers = []

    def start(workspace: Path) -> StreamlitServer:
        server = StreamlitServer(workspace, tmp_path / f"streamlit-{len(servers)}.log")
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory):
    """A real Orthanc PACS (DICOMweb plugin) on loopback, loaded with `tests.orthanc.archive()`. Under CI a
    missing Orthanc fails, never skips."""
    from tests import orthanc as pacs_server

    if not (Path(pacs_server.ORTHANC).exists() and Path(pacs_server.PLUGIN).exists()):
        if os.environ.get("CI"):
            pytest.fail("Orthanc or its DICOMweb plugin is not installed: the install step is broken")
        pytest.skip("Orthanc not installed (apt-get install orthanc orthanc-dicomweb)")
    server = pacs_server.Orthanc(tmp_path_factory.mktemp("orthanc"))
    datasets, server.expected = pacs_server.archive()
    server.store(datasets)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def browser():
    """Headless Debian Chromium through Playwright. Under CI a missing browser fails, never skips."""
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"Chromium not found at {CHROMIUM}: the install step is broken")
        pytest.skip(f"Chromium not found at {CHROMIUM} (install it: apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, tmp_path):
    """A fresh browser page; on teardown a screenshot is saved under the test's tmp dir."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.js_errors = errors
    yield pg
    pg.screenshot(path=str(tmp_path / "final.png"), full_page=True)
    context.close()


def wait_for_app(pg, timeout: float = 30_000) -> None:
    """Wait until Streamlit finished running the script (no 'running' status widget)."""
    pg.wait_for_selector('[data-testid="stApp"]', timeout=timeout)
    pg.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=timeout)


def uploader(pg, label: str):
    """The file input of the uploader labelled `label`: a page can hold several uploaders (tabs render
    them all), and which one is first in the page while the script still runs is not fixed."""
    return pg.get_by_test_id("stFileUploader").filter(has_text=label).locator('input[type="file"]')


def assert_no_exception(pg) -> None:
    exc = pg.locator('[data-testid="stException"]')
    assert exc.count() == 0, exc.first.inner_text()


def compared_workspace(root: Path, demo_dir: Path, **request):
    """A workspace with a pool, a labeled set, a finished resnet18 PIRL run and one finished
    scratch-vs-PIRL comparison. Returns (workspace, pretrain job id, comparison id, arms)."""
    from pirl_core.data import ingest, sources
    from pirl_core.engine.config import PretrainConfig
    from pirl_core.evaluation import compare
    from pirl_core.jobs import queue
    from pirl_core.workspace.folder import Workspace

    ws = Workspace(root)
    pool = ingest.ingest(ws, sources.folder_source(demo_dir / "unlabeled", check_roots=False), "pool").dataset_id
    ingest.ingest(ws, sources.folder_source(demo_dir / "labeled", check_roots=False), "lab", folder_labels=True)
    run = queue.submit(ws, "pretrain", PretrainConfig(image_size=32, epochs=1, batch_size=16).to_dict(), pool,
                      start_worker=False)
    queue.run_worker(ws, idle_exit_s=0)
    cid = compare.start(ws, compare.CompareRequest(labeled="lab", pretrain_jobs=[run], inits=["scratch", "pirl"],
                                                   **{"fractions": [1.0], **request}))
    arms = next(c for c in compare.comparisons(ws) if c["id"] == cid)["result"]["arms"]
    for arm in arms:
        assert queue.wait(ws, arm["job_id"], timeout_s=300)["status"] == "succeeded"
    compare.summarize(ws, cid, n_boot=100)
    return ws, run, cid, arms
