"""PIRL over several processes, on the CPU with gloo (what a GPU-less machine and CI run): the processes
together train like one process with the whole batch, the memory bank replicas stay identical, and a
run stops, resumes and changes its number of processes through the one-process checkpoint format."""

import json
import os
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from pirl_core.engine import checkpoint, distributed
from pirl_core.engine import views as V
from pirl_core.engine.config import PretrainConfig
from pirl_core.engine.memory_bank import MemoryBank
from pirl_core.engine.pretrain import Callbacks, pretrain

N_IMAGES = 40


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _join(rank: int, world: int, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    distributed.join("cpu")


def _images() -> np.ndarray:
    """Smooth random images (blobs), so that the network has something to learn."""
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (N_IMAGES, 5, 5, 3)).astype(np.float32)
    big = torch.nn.functional.interpolate(torch.from_numpy(small).permute(0, 3, 1, 2), size=37, mode="bilinear")
    return big.permute(0, 2, 3, 1).round().clamp(0, 255).to(torch.uint8).numpy()


def config(**kw) -> PretrainConfig:
    return PretrainConfig(**{"image_size": 32, "batch_size": 8, "epochs": 2, "lr": 0.01, "seed": 3,
                             "warmup_epochs": 0, "device": "cpu", "sync_bn": True, **kw})


class Recorder(Callbacks):
    def __init__(self, stop_at=None):
        self.steps, self.losses, self.stop_at = [], [], stop_at

    def on_step(self, report):
        self.steps.append(report.step)
        self.losses.append(report.metrics["loss"])

    def should_stop(self):
        return self.stop_at is not None and len(self.steps) >= self.stop_at


def _train(rank, world, port, out, kw, stop_at, result_file, bn_sums=False):
    """One process of a run; writes its loss curve and its memory bank replica. `bn_sums`: BatchNorm computes its
    training statistics from sums, as the synchronised CPU layer does (the same rounding in one process)."""
    _join(rank, world, port)
    if bn_sums:
        native = nn.BatchNorm2d.forward
        nn.BatchNorm2d.forward = lambda self, x: (distributed.CpuSyncBatchNorm.synchronised(self, x)
                                                  if self.training else native(self, x))
    banks = []
    update = MemoryBank.update

    def spy(self, index, embeddings):
        update(self, index, embeddings)
        banks[:] = [self]

    MemoryBank.update = spy
    rec = Recorder(stop_at if rank == 0 else None)  # only process 0 decides to stop
    result = pretrain(config(**kw), _images(), list(range(N_IMAGES)), out, rec)
    torch.save({"steps": rec.steps, "losses": rec.losses, "bank": banks[0].vectors.clone(), "status": result.status,
                "step": result.step}, f"{result_file}.{rank}")
    distributed.leave()


def run(world: int, out, tmp_path, stop_at=None, bn_sums=False, **kw) -> list[dict]:
    """A run with `world` CPU processes; each process's record."""
    result_file = tmp_path / f"result-{_port()}"
    mp.spawn(_train, args=(world, _port(), str(out), kw, stop_at, str(result_file), bn_sums), nprocs=world)
    return [torch.load(f"{result_file}.{r}") for r in range(world)]


def test_the_processes_views_together_are_the_one_process_batch():
    images = torch.rand(8, 3, 37, 37)
    sizes = V.ViewSizes.for_image_size(32)
    builders = {"image": lambda x, gen, part: V.image_view(x, 32, gen, (0.3, 1), part=part),
                "jigsaw": lambda x, gen, part: V.jigsaw_view(x, sizes, gen, part=part)[0],
                "rotation": lambda x, gen, part: V.rotation_view(x, 32, gen, part=part)[0],
                "scan": lambda x, gen, part: V.jigsaw_view(x, sizes, gen, part=part, augment="scan", blur_px=1.0)[0]}
    for name, build in builders.items():
        whole = build(images, torch.Generator().manual_seed(5), None)
        parts = [build(images[o:o + 4], torch.Generator().manual_seed(5), (o, 8)) for o in (0, 4)]
        assert torch.equal(torch.cat(parts), whole), name


def _batchnorm(rank, world, port, x, r, out):
    _join(rank, world, port)
    torch.manual_seed(0)
    bn = distributed.sync_batchnorm(nn.Sequential(nn.BatchNorm2d(3)), torch.device("cpu"))[0]
    assert isinstance(bn, distributed.CpuSyncBatchNorm)
    mine = slice(rank * 4, rank * 4 + 4)
    xs = x[mine].clone().requires_grad_()
    y = bn(xs)
    (y * r[mine]).sum().div(4).backward()  # this process's mean; DDP averages over processes
    grad_w = bn.weight.grad.clone()
    torch.distributed.all_reduce(grad_w)
    torch.save({"y": y.detach(), "grad_w": grad_w / world, "running_var": bn.running_var.clone()}, f"{out}.{rank}")
    distributed.leave()


def test_synchronised_batchnorm_on_the_cpu_normalises_over_the_whole_batch(tmp_path):
    x, r = torch.randn(8, 3, 4, 4) * 3 + 1, torch.randn(8, 3, 4, 4)
    mp.spawn(_batchnorm, args=(2, _port(), x, r, str(tmp_path / "bn")), nprocs=2)
    got = [torch.load(tmp_path / f"bn.{k}") for k in range(2)]
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(3)
    whole = x.clone().requires_grad_()
    y = bn(whole)
    (y * r).sum().div(8).backward()
    assert torch.allclose(torch.cat([g["y"] for g in got]), y.detach(), atol=1e-5)
    assert torch.allclose(got[0]["grad_w"], bn.weight.grad, atol=1e-5)
    assert torch.allclose(got[0]["running_var"], bn.running_var, atol=1e-5)
    assert torch.equal(got[0]["running_var"], got[1]["running_var"])


def test_two_processes_with_half_batches_train_like_one_process_with_the_whole_batch(tmp_path):
    """The reference computes BatchNorm statistics from sums as the synchronised CPU layer does (PyTorch's
    kernel rounds differently), and the loss curve is compared at a tiny learning rate: at lr 0.01 this
    small problem amplifies rounding to 0.1 in the loss within five steps (one process on 1 vs 2 threads
    too), which would hide a real difference. Even at 1e-5, other rounding (a matrix product over half the rows)
    drifts by up to 1e-3 over ten steps, through the memory bank; a real difference is far larger from the first
    step on (BatchNorm over each process's half batch: 0.04 at step 1, 0.08-0.4 after). One step at a normal
    learning rate checks the gradients."""
    one = run(1, tmp_path / "one", tmp_path, bn_sums=True, lr=1e-5)[0]
    two = run(2, tmp_path / "two", tmp_path, lr=1e-5)
    # Every step of the one-process run, and every image once per epoch across the processes.
    assert two[0]["steps"] == one["steps"] == list(range(1, 11))
    assert two[0]["losses"][0] == pytest.approx(one["losses"][0], abs=1e-5)
    assert np.allclose(two[0]["losses"], one["losses"], atol=3e-3), (two[0]["losses"], one["losses"])
    # Every process applied the same bank updates: the replicas are bit-identical, and the one-process bank.
    assert torch.equal(two[0]["bank"], two[1]["bank"])
    assert torch.allclose(two[0]["bank"], one["bank"], atol=2e-3)  # the same rounding drift

    run(1, tmp_path / "one-step", tmp_path, bn_sums=True, lr=0.05, max_steps=1)
    run(2, tmp_path / "two-step", tmp_path, lr=0.05, max_steps=1)
    a, b = (checkpoint.load(tmp_path / name / "last.pt")["model"] for name in ("one-step", "two-step"))
    assert a.keys() == b.keys()  # the one-process checkpoint format
    for key in a:
        if "running" not in key and "num_batches" not in key:
            assert torch.allclose(a[key], b[key], atol=2e-5), key


def test_a_stop_reaches_every_process_and_the_run_resumes_without_a_gap(tmp_path):
    straight = run(2, tmp_path / "straight", tmp_path)
    stopped = run(2, tmp_path / "run", tmp_path, stop_at=3)
    assert [p["status"] for p in stopped] == ["stopped", "stopped"] and stopped[1]["step"] == 3
    resumed = run(2, tmp_path / "run", tmp_path)
    assert resumed[0]["steps"] == list(range(4, 11))
    assert np.allclose(stopped[0]["losses"] + resumed[0]["losses"], straight[0]["losses"], atol=1e-4)
    assert torch.allclose(resumed[0]["bank"], straight[0]["bank"], atol=1e-5)


def test_a_run_checkpointed_by_two_processes_resumes_in_one(tmp_path):
    stopped = run(2, tmp_path / "run", tmp_path, stop_at=5)
    assert stopped[0]["step"] == 5
    resumed = run(1, tmp_path / "run", tmp_path)[0]
    assert resumed["status"] == "finished" and resumed["steps"] == list(range(6, 11))
    assert checkpoint.load(tmp_path / "run" / "last.pt")["step"] == 10


@pytest.mark.parametrize("nproc, batch, problem", [(3, 4, "cannot be shared by 3 processes"),
                                                    (0, 8, "between 1 and 1024")])
def test_impossible_process_counts_are_named(nproc, batch, problem):
    with pytest.raises(Exception, match=problem):
        PretrainConfig(nproc=nproc, batch_size=batch).validate(100)


# -- the job runner: `pirl pretrain --nproc 2 --device cpu` ------------------------------------------------------
@pytest.fixture
def pool(ws, demo_dir):
    from pirl_core.data import ingest, sources

    return ingest.ingest(ws, sources.folder_source(demo_dir / "unlabeled", check_roots=False), "pool").dataset_id


def _job_config(**kw) -> dict:
    return config(**{"batch_size": 8, "epochs": 10, "max_steps": 24, "checkpoint_every_s": 0.0, "nproc": 2,
                     **kw}).to_dict()


def _training_processes(job_id: int) -> list[int]:
    """The pids of a job's training processes (torchrun's children, not torchrun itself)."""
    pids = []
    for entry in os.scandir("/proc"):
        try:
            cmd = open(f"/proc/{entry.name}/cmdline", "rb").read().split(b"\0")
        except OSError:
            continue
        if (b"pirl_core.training.pretrain_rank" in cmd and b"torch.distributed.run" not in cmd
                and cmd[cmd.index(b"--job") + 1] == str(job_id).encode()):
            pids.append(int(entry.name))
    return pids


def test_a_two_process_job_cancels_resumes_and_is_interrupted_when_a_process_dies(ws, pool):
    from pirl_core.engine.train_state import load_pretrained
    from pirl_core.jobs import queue
    from tests.test_jobs import loss_steps, wait_for

    job_id = queue.submit(ws, "pretrain", _job_config(), pool)
    wait_for(lambda: len(loss_steps(ws, job_id)) >= 3, timeout=240)
    queue.cancel(ws, job_id)  # reaches both processes through process 0
    job = queue.wait(ws, job_id, poll_s=0.2, timeout_s=120)
    assert job["status"] == "cancelled", job["message"]
    stopped_at = checkpoint.load(job["checkpoint"])["step"]
    assert loss_steps(ws, job_id) == list(range(1, stopped_at + 1))

    queue.resume(ws, job_id)
    wait_for(lambda: len(loss_steps(ws, job_id)) >= stopped_at + 2, timeout=240)
    os.kill(_training_processes(job_id)[-1], 9)
    job = queue.wait(ws, job_id, poll_s=0.2, timeout_s=120)
    assert job["status"] == "interrupted" and "Resume to continue" in job["message"]
    assert not _training_processes(job_id)  # torchrun stopped the other process too

    queue.resume(ws, job_id)
    job = queue.wait(ws, job_id, poll_s=0.2, timeout_s=240)
    assert job["status"] == "succeeded", job["error"] or job["message"]
    assert loss_steps(ws, job_id) == list(range(1, 25))  # every step once: no gap, no repeat
    assert job["result"]["processes"] == 2 and job["result"]["steps"] == 24
    model, cfg, bank = load_pretrained(job["checkpoint"])
    assert len(bank) == 48 and cfg.nproc == 2


def test_a_cluster_launch_claims_its_queued_job_and_workers_leave_it_alone(ws, pool):
    import subprocess
    import sys

    from pirl_core.jobs import queue

    job_id = queue.submit(ws, "pretrain", _job_config(max_steps=4), pool, start_worker=False)
    assert ws.store.claim_next_job(os.getpid()) is not None  # (a one-machine job: a worker takes it) ...
    ws.store.set_job_status_if(job_id, ["running"], "queued")
    cluster = queue.submit(ws, "pretrain", {**_job_config(), "nnodes": 2}, pool, start_worker=False)
    assert ws.store.claim_next_job(os.getpid())["id"] == job_id  # ... a cluster job stays for its launch
    assert ws.store.job(cluster)["status"] == "queued"
    ws.store.set_job_status_if(job_id, ["running"], "queued")
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                    "-m", "pirl_core.training.pretrain_rank", "--workspace", str(ws.root), "--job", str(job_id)],
                   check=True, timeout=300, cwd=ws.root)
    job = ws.store.job(job_id)
    assert job["status"] == "succeeded" and job["result"]["processes"] == 2


def test_cli_queues_a_cluster_run_and_prints_what_each_machine_runs(ws, pool, capsys):
    from pirl_core.cli import main

    assert main(["--workspace", str(ws.root), "pretrain", "--dataset", "pool", "--nproc", "4", "--nnodes", "2",
                 "--device", "cpu", "--backbone", "resnet18", "--image-size", "32", "--batch-size", "16"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["status"] == "queued" and out["run_on_each_machine"].startswith("torchrun --nnodes 2 --nproc-per-node 4")
    assert f"--job {out['job']}" in out["run_on_each_machine"] and str(ws.root) in out["run_on_each_machine"]
    job = ws.store.job(out["job"])
    assert job["config"]["nproc"] == 4 and "cluster launch" in job["message"]
    assert ws.store.claim_next_job(os.getpid()) is None  # no worker takes it
