import os
import shutil
import signal
import time

import pytest

from pirl_core.data import ingest, sources
from pirl_core.engine.config import PretrainConfig
from pirl_core.errors import PirlError
from pirl_core.jobs import queue


@pytest.fixture
def pool(ws, demo_dir):
    report = ingest.ingest(ws, sources.folder_source(demo_dir / "unlabeled", check_roots=False), "pool")
    return report.dataset_id


def tiny(**kw):
    return PretrainConfig(**{"image_size": 32, "batch_size": 8, "epochs": 1, "seed": 1, **kw}).to_dict()


def wait_for(predicate, timeout=120, every=0.1):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError("timed out")


def loss_steps(ws, job_id):
    return [m["step"] for m in ws.store.metrics(job_id, ["loss"])]


def test_queue_runs_jobs_in_order_to_success(ws, pool):
    first = queue.submit(ws, "pretrain", tiny(), pool, start_worker=False)
    second = queue.submit(ws, "pretrain", tiny(seed=2), pool, start_worker=False)
    assert queue.run_worker(ws, idle_exit_s=0) == 2
    a, b = ws.store.job(first), ws.store.job(second)
    assert a["status"] == b["status"] == "succeeded"
    assert a["started_at"] < a["finished_at"] <= b["started_at"]
    assert loss_steps(ws, first) == list(range(1, 7))  # 48 images / batch 8
    assert os.path.exists(a["result"]["checkpoint"]) and a["progress"] == 1.0


def test_sigkill_mid_epoch_then_resume_finishes_without_gaps_or_repeats(ws, pool):
    config = tiny(epochs=3, checkpoint_every_s=0.0)  # a checkpoint after every step
    job_id = queue.submit(ws, "pretrain", config, pool)
    wait_for(lambda: len(loss_steps(ws, job_id)) >= 4)
    pid = ws.store.job(job_id)["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: queue.reap(ws) or ws.store.job(job_id)["status"] == "interrupted", timeout=30)
    assert ws.store.job(job_id)["status"] == "interrupted"

    queue.resume(ws, job_id)
    job = queue.wait(ws, job_id, poll_s=0.2, timeout_s=180)
    assert job["status"] == "succeeded", job["error"]
    assert loss_steps(ws, job_id) == list(range(1, 19))  # 3 epochs x 6 steps, each once
    assert job["result"]["steps"] == 18


def test_cancel_stops_within_seconds_and_leaves_a_usable_checkpoint(ws, pool):
    from pirl_core.engine.train_state import load_pretrained

    job_id = queue.submit(ws, "pretrain", tiny(epochs=50), pool)
    wait_for(lambda: len(loss_steps(ws, job_id)) >= 2)
    t0 = time.time()
    assert queue.cancel(ws, job_id) == "cancelling"
    job = queue.wait(ws, job_id, poll_s=0.1, timeout_s=60)
    # honoured at the first step after the next heartbeat (HEARTBEAT_S): seconds; the bound leaves room for a
    # machine busy with other work, and the run stopped long before its 50 epochs
    assert job["status"] == "cancelled" and time.time() - t0 < 30
    assert len(loss_steps(ws, job_id)) < 50 * 6
    model, config, bank = load_pretrained(job["checkpoint"])
    assert bank.vectors.shape[0] == 48


def test_cancel_of_a_queued_job_is_immediate(ws, pool):
    job_id = queue.submit(ws, "pretrain", tiny(), pool, start_worker=False)
    assert queue.cancel(ws, job_id) == "cancelled"
    with pytest.raises(PirlError, match="only queued or running"):
        queue.cancel(ws, job_id)


def test_invalid_config_fails_with_a_readable_error(ws, pool):
    job_id = queue.submit(ws, "pretrain", tiny(negatives=10_000), pool, start_worker=False)
    queue.run_worker(ws, idle_exit_s=0)
    job = ws.store.job(job_id)
    assert job["status"] == "failed"
    assert job["message"].startswith("Invalid pretrain settings: negatives must be between 1 and N - 1 = 47")
    assert "Traceback" not in job["error"]


def test_an_exception_in_training_is_stored_with_its_traceback(ws, pool):
    job_id = queue.submit(ws, "pretrain", tiny(), pool, start_worker=False)
    for f in ws.cache.glob("*.pngs"):
        f.unlink()  # the training cache vanished under the job
    queue.run_worker(ws, idle_exit_s=0)
    job = ws.store.job(job_id)
    assert job["status"] == "failed"
    assert "Traceback (most recent call last)" in job["error"] and "FileNotFoundError" in job["error"]


def test_a_dead_worker_without_heartbeat_is_marked_interrupted(ws, pool):
    job_id = queue.submit(ws, "pretrain", tiny(), pool, start_worker=False)
    ws.store.claim_next_job(pid=os.getpid())  # alive pid, but the heartbeat goes silent
    ws.store.update_job(job_id, heartbeat_at=time.time() - 3600)
    assert queue.reap(ws) == [job_id]
    assert ws.store.job(job_id)["status"] == "interrupted"


def test_a_pretrain_job_keeps_near_copies_out_of_each_others_negatives(ws, demo_dir, tmp_path):
    from PIL import Image

    from pirl_core.engine import checkpoint

    folder = tmp_path / "pool"
    shutil.copytree(demo_dir / "unlabeled", folder)
    original = sorted(folder.iterdir())[0]
    Image.open(original).convert("RGB").save(folder / "re-exported.jpg", quality=90)  # the same scan, re-encoded
    pool = ingest.ingest(ws, sources.folder_source(folder, check_roots=False), "pool").dataset_id
    job_id = queue.submit(ws, "pretrain", tiny(), pool, start_worker=False)
    queue.run_worker(ws, idle_exit_s=0)
    bank = checkpoint.load(ws.store.job(job_id)["result"]["checkpoint"])["bank"]
    names = {r["id"]: r["orig_name"] for r in ws.store.images(pool)}
    cluster = {names[i]: c for i, c in zip(bank["ids"], bank["copies"])}
    assert cluster[original.name] == cluster["re-exported.jpg"]
    assert len(set(cluster.values())) == len(cluster) - 1  # every other image is its own


# Job rows exactly as the release before typed records (2026-12-01) wrote them: plain dicts, no schema.
OLD_PRETRAIN_CONFIG = {**PretrainConfig(image_size=32, batch_size=8, epochs=2).to_dict()}
OLD_PRETRAIN_RESULT = {"step": 12, "total_steps": 12, "epoch": 2, "epochs": 2, "images_per_s": 41.5, "eta_s": 0.0,
                       "checkpoint": "/gone/last.pt", "steps": 12, "last": {"loss": 3.21, "lr": 0.0},
                       "n_images": 48, "processes": 1}
OLD_FINETUNE_CONFIG = {"labeled_dataset_id": 2, "labeled": "lab", "backbone": "efficientnet_lite0", "image_size": 32,
                       "folds": 3, "repeats": 1, "fractions": [0.25, 1.0], "seed": 0, "bn_dataset_id": 1,
                       "finetune": {"mode": "linear", "image_size": 32, "epochs": None, "batch_size": 32, "lr": None,
                                    "weight_decay": 0.0001, "patience": None, "seed": 0, "device": "auto"},
                       "label": "ImageNet+PIRL #1", "init": "imagenet+pirl", "pretrain_job": 1, "pretext": "jigsaw"}


def test_a_workspace_from_the_release_before_typed_records_opens_and_shows_its_runs(ws, pool):
    from streamlit.testing.v1 import AppTest

    from tests.conftest import ROOT

    run = ws.store.add_job("pretrain", OLD_PRETRAIN_CONFIG, pool)
    ws.store.update_job(run, status="succeeded", result=OLD_PRETRAIN_RESULT)
    arm = ws.store.add_job("finetune", OLD_FINETUNE_CONFIG, pool)
    assert queue.config_of(ws.store.job(run)).image_size == 32
    assert queue.result_of(ws.store.job(run)).last["loss"] == 3.21
    assert queue.config_of(ws.store.job(arm)).finetune.mode == "linear"  # typed all the way down
    at = AppTest.from_file(str(ROOT / "app_pages/pretrain.py"), default_timeout=60).run()
    assert not at.exception
    table = at.dataframe[0].value
    assert list(table["run"]) == [run] and list(table["final loss"]) == ["3.210"]


def test_job_records_carry_their_schema_and_refuse_what_they_do_not_know(ws, pool):
    job_id = queue.submit(ws, "pretrain", tiny(), pool, start_worker=False)
    assert ws.store.job(job_id)["config"]["schema"] == 1
    with pytest.raises(PirlError, match="learning_rte"):
        queue.submit(ws, "pretrain", {**tiny(), "learning_rte": 0.1}, pool, start_worker=False)
    with pytest.raises(PirlError, match="Unknown FinetuneJob field.*folds_"):
        queue.submit(ws, "finetune", {**OLD_FINETUNE_CONFIG, "folds_": 3}, pool, start_worker=False)
    newer = ws.store.add_job("finetune", {**OLD_FINETUNE_CONFIG, "schema": 99}, pool)
    with pytest.raises(PirlError, match="newer PIRL Studio"):
        queue.config_of(ws.store.job(newer))
