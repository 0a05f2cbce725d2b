import os
import time

import torch
from streamlit.testing.v1 import AppTest

from pirl_core.data import ingest, sources
from pirl_core.engine.config import PretrainConfig
from pirl_core.fmt import duration
from pirl_core.jobs import queue
from pirl_core.training import planning, pretraining
from tests.conftest import ROOT


def _page():
    return AppTest.from_file(str(ROOT / "app_pages/pretrain.py"), default_timeout=60)


def _small_random_start(at):
    """resnet18 from random weights: runs at 32 px (the CPU default, efficientnet_lite0, needs larger images)."""
    at.selectbox(key="pt-backbone").set_value("resnet18")
    at.radio(key="pt-start").set_value("random weights")
    return at


def _pool(ws, demo_dir):
    return ingest.ingest(ws, sources.folder_source(demo_dir / "unlabeled", check_roots=False), "pool").dataset_id


def test_empty_workspace_points_to_the_data_page(ws):
    at = _page().run()
    assert not at.exception and "Data page" in at.info[0].value


def test_the_form_says_what_each_start_needs_before_it_is_submitted(ws, demo_dir):
    """Choosing a start inside the form reruns nothing until submit: the guidance for every start is shown."""
    _pool(ws, demo_dir)
    at = _page().run()
    text = " ".join(c.value for c in at.caption)
    assert "adapts them to your images" in text and "learns everything from your images" in text


def test_each_dataset_says_how_long_a_run_at_the_defaults_takes_before_it_starts(ws, demo_dir, monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)  # the estimate's 2-core benchmark, as measured
    _pool(ws, demo_dir)
    at = _page().run()
    seconds, _ = planning.estimate_seconds(ws.store, pretraining.default_config(), 48)
    assert seconds > 60  # 60 epochs of 48 images: the sentence is a figure, not a placeholder
    expected = f"pool (48 images; about {duration(seconds)} at the defaults)"
    assert at.selectbox(key="pretrain-dataset").options == [expected]


def test_start_a_run_from_the_form_queues_a_job(ws, demo_dir):
    _pool(ws, demo_dir)
    at = _small_random_start(_page().run())
    at.number_input(key="pt-size").set_value(32)
    at.number_input(key="pt-epochs").set_value(1)
    at.number_input(key="pt-batch").set_value(16)
    at.selectbox(key="pt-augment").set_value("scan")
    at.button[0].click().run()
    assert not at.exception, at.exception
    assert any("Queued pretraining run #1" in t.value for t in at.toast)  # a toast: a banner would outlive the run
    job = ws.store.job(1)
    assert job["config"]["image_size"] == 32 and job["config"]["epochs"] == 1 and job["config"]["augment"] == "scan"
    assert queue.wait(ws, 1, timeout_s=120)["status"] == "succeeded"


def test_impossible_settings_are_a_message(ws, demo_dir):
    _pool(ws, demo_dir)
    at = _page().run()
    at.number_input(key="pt-negatives").set_value(5000)
    at.button[0].click().run()
    assert not at.exception
    assert any("negatives must be between 1 and N - 1 = 47" in e.value for e in at.error)
    assert ws.store.jobs() == []


def test_two_sessions_see_the_same_running_job_with_its_curve(ws, demo_dir):
    ds = _pool(ws, demo_dir)
    config = PretrainConfig(image_size=32, batch_size=8, epochs=30).to_dict()
    job_id = queue.submit(ws, "pretrain", config, ds)
    deadline = time.time() + 120
    while len(ws.store.metrics(job_id, ["loss"])) < 2 and time.time() < deadline:
        time.sleep(0.2)
    first, second = _page().run(), _page().run()
    for at in (first, second):
        assert not at.exception
        assert any(f"Run #{job_id}" in h.value and "running" in h.value for h in at.subheader)
        assert at.get("plotly_chart")
    # cancel from one session; the other sees it
    first.button(key=f"cancel-{job_id}").click().run()
    job = queue.wait(ws, job_id, poll_s=0.2, timeout_s=30)
    assert job["status"] == "cancelled"
    second.run()
    assert any("cancelled" in h.value for h in second.subheader)


def test_a_failed_run_shows_its_error_and_traceback(ws, demo_dir):
    ds = _pool(ws, demo_dir)
    job_id = queue.submit(ws, "pretrain", PretrainConfig(image_size=32).to_dict(), ds, start_worker=False)
    ws.store.update_job(job_id, status="failed", message="RuntimeError: boom",
                        error="Traceback (most recent call last):\n  ...\nRuntimeError: boom")
    at = _page().run()
    assert not at.exception
    assert any("failed: RuntimeError: boom" in e.value for e in at.error)
    assert any("traceback" in e.label for e in at.expander)
    assert at.button(key=f"resume-{job_id}")


def test_start_a_rotation_run_from_the_page_and_see_it_listed(ws, demo_dir):
    _pool(ws, demo_dir)
    at = _small_random_start(_page().run())
    at.radio(key="pt-pretext").set_value("rotation")
    at.number_input(key="pt-size").set_value(32)
    at.number_input(key="pt-epochs").set_value(1)
    at.number_input(key="pt-batch").set_value(16)
    at.button[0].click().run()
    assert not at.exception
    assert ws.store.job(1)["config"]["pretext"] == "rotation"
    job = queue.wait(ws, 1, timeout_s=120)
    assert job["status"] == "succeeded" and "loss_rotation" in job["result"]["last"]
    at.run()
    assert at.dataframe[0].value["pretext"].tolist() == ["rotation"]


def test_a_run_with_no_loss_yet_shows_a_dash_in_the_runs_table(ws, demo_dir):
    ds = _pool(ws, demo_dir)
    queue.submit(ws, "pretrain", PretrainConfig(image_size=32, batch_size=16, epochs=1).to_dict(), ds,
                start_worker=False)
    at = _page().run()
    assert at.dataframe[0].value["final loss"].tolist() == ["—"]  # not "None"


def test_a_run_just_started_is_the_one_shown_and_says_whether_it_learns(ws, demo_dir):
    ds = _pool(ws, demo_dir)
    old = queue.submit(ws, "pretrain", PretrainConfig(image_size=32, batch_size=16, epochs=1).to_dict(), ds,
                      start_worker=False)
    ws.store.add_metrics(old, 1, 0.5, {"loss": 2.0, "lr": 0.01})  # one logged step, far below ln 48 = 3.87
    at = _page().run()
    at.selectbox(key="pretrain-run").set_value(old).run()
    assert any("Loss 2.00, well below chance: the run is learning (chance 3.87)." in m.value for m in at.markdown)
    figure = at.get("plotly_chart")[0].proto.spec
    assert '"mode":"markers"' in figure and "chance (nothing learned): 3.87" in figure  # a point, the chance line
    at = _small_random_start(at)
    at.number_input(key="pt-size").set_value(32)
    at.number_input(key="pt-epochs").set_value(1)
    at.button[0].click().run()
    assert not at.exception
    assert at.selectbox(key="pretrain-run").value == old + 1


def test_with_several_gpus_the_page_offers_them_and_the_run_uses_them(ws, demo_dir, monkeypatch):
    from pirl_core.training import pretraining

    _pool(ws, demo_dir)
    at = _page().run()
    assert not [w for w in at.number_input if w.key == "pt-gpus"]  # one GPU or none: no choice to make
    monkeypatch.setattr(pretraining, "visible_gpus", lambda: 4)
    monkeypatch.setattr(queue, "ensure_worker", lambda ws: False)
    at = _small_random_start(_page().run())
    assert at.number_input(key="pt-gpus").value == 4
    at.number_input(key="pt-gpus").set_value(2)
    at.button[0].click().run()
    assert not at.exception, at.exception
    assert ws.store.job(1)["config"]["nproc"] == 2


def test_the_loss_verdict_tells_below_at_and_above_chance_apart():
    from pirl_core.training.pretraining import learning_verdict

    assert "well below chance" in learning_verdict(3.0, 5.0)
    assert "below chance: the run has started" in learning_verdict(4.7, 5.0)
    assert "at chance" in learning_verdict(5.05, 5.0)
    above = learning_verdict(6.3, 5.0)  # 1.3 above chance, as a run whose loss rose
    assert "above chance" in above and "at chance" not in above


def test_a_run_whose_loss_stayed_at_chance_is_named_too_short_to_judge(ws):

    dataset = ws.store.add_dataset("pool")
    ws.store.update_dataset(dataset, n_images=100)
    flat = queue.submit(ws, "pretrain", PretrainConfig(image_size=32, epochs=1).to_dict(), dataset,
                        start_worker=False)
    chance = pretraining.chance_loss(ws.store.job(flat), 100)
    ws.store.add_metrics(flat, 1, 0.5, {"loss": chance + 0.2})
    ws.store.add_metrics(flat, 2, 1.0, {"loss": chance + 1.3})
    why = pretraining.learned_nothing(ws, flat)
    assert why.startswith(f"pretraining run #{flat} is too short to judge PIRL") and "above chance" in why
    learning = queue.submit(ws, "pretrain", PretrainConfig(image_size=32, epochs=1).to_dict(), dataset,
                            start_worker=False)
    ws.store.add_metrics(learning, 1, 1.0, {"loss": 0.6 * chance})
    assert pretraining.learned_nothing(ws, learning) is None


def test_a_fresh_visit_shows_the_running_run_and_a_never_started_run_offers_to_start_again(ws, demo_dir):
    ds = _pool(ws, demo_dir)
    running = queue.submit(ws, "pretrain", PretrainConfig(image_size=32).to_dict(), ds, start_worker=False)
    ws.store.update_job(running, status="running", pid=os.getpid(), heartbeat_at=time.time())  # alive
    later = queue.submit(ws, "pretrain", PretrainConfig(image_size=32).to_dict(), ds, start_worker=False)
    queue.cancel(ws, later)  # cancelled before it started: newer than the running run, and no checkpoint
    at = _page().run()
    assert not at.exception
    assert at.selectbox(key="pretrain-run").value == running
    at.selectbox(key="pretrain-run").set_value(later).run()
    assert at.button(key=f"resume-{later}").label == "Start it again"
