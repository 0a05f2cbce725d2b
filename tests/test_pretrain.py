import numpy as np
import pytest
import torch

from pirl_core.data.image_cache import open_cache
from pirl_core.data.ingest import cache_folder
from pirl_core.engine import checkpoint
from pirl_core.engine.backbones import build_backbone
from pirl_core.engine.config import PretrainConfig
from pirl_core.engine.model import PirlModel
from pirl_core.engine.pretrain import Callbacks, pretrain
from pirl_core.engine.train_state import load_pretrained
from pirl_core.errors import PirlError


@pytest.fixture(scope="module")
def cache(demo_dir, tmp_path_factory):
    path, names, _ = cache_folder(demo_dir / "unlabeled", 37, tmp_path_factory.mktemp("cache") / "cache.pngs")
    return open_cache(path), names


def tiny(**kw):
    return PretrainConfig(**{"image_size": 32, "batch_size": 16, "epochs": 2, "lr": 0.05, "seed": 3,
                             "warmup_epochs": 0, **kw})


class Recorder(Callbacks):
    def __init__(self, stop_at=None):
        self.reports, self.stop_at = [], stop_at

    def on_step(self, report):
        self.reports.append(report)

    def should_stop(self):
        return self.stop_at is not None and len(self.reports) >= self.stop_at


def test_two_epochs_on_demo_data_lower_the_loss(cache, tmp_path):
    images, ids = cache
    rec = Recorder()
    result = pretrain(tiny(epochs=6), images, ids, tmp_path, rec)
    losses = [r.metrics["loss"] for r in rec.reports]
    assert result.status == "finished" and result.step == len(losses) == 18
    first, last = np.mean(losses[:3]), np.mean(losses[-3:])
    assert last < first - 0.1, (first, last)
    assert {"loss", "loss_jigsaw", "loss_image", "lr"} <= set(rec.reports[-1].metrics)


def test_stop_and_resume_equals_an_uninterrupted_run(cache, tmp_path):
    images, ids = cache
    straight = pretrain(tiny(), images, ids, tmp_path / "a")
    first = pretrain(tiny(), images, ids, tmp_path / "b", Recorder(stop_at=3))
    assert first.status == "stopped" and first.step == 3
    resumed = pretrain(tiny(), images, ids, tmp_path / "b")
    assert resumed.status == "finished" and resumed.step == straight.step == 6
    a, b = checkpoint.load(straight.checkpoint), checkpoint.load(resumed.checkpoint)
    for key in a["model"]:
        assert torch.allclose(a["model"][key].float(), b["model"][key].float(), atol=1e-5), key
    assert torch.allclose(a["bank"]["vectors"], b["bank"]["vectors"], atol=1e-5)
    assert resumed.last_metrics["loss"] == pytest.approx(straight.last_metrics["loss"], abs=1e-4)


def test_checkpoints_follow_the_interval_not_every_epoch(cache, tmp_path):
    """A checkpoint re-estimates BatchNorm on up to 1,024 whole images: every epoch, 7% of the training time of
    an 800-image pool (bench/checkpoint_cost.py). Checkpoints come every `checkpoint_every_s` and at the end."""
    images, ids = cache

    class Checkpoints(Recorder):
        def __init__(self):
            super().__init__()
            self.saved = []

        def on_checkpoint(self, path, step):
            self.saved.append(step)

    rare, often = Checkpoints(), Checkpoints()
    assert pretrain(tiny(epochs=4), images, ids, tmp_path / "rare", rare).step == 12
    assert rare.saved == [12]
    pretrain(tiny(epochs=2, checkpoint_every_s=0.0), images, ids, tmp_path / "often", often)
    assert often.saved == [1, 2, 3, 4, 5, 6]


def test_corrupt_checkpoint_is_a_clear_error_and_is_not_overwritten(cache, tmp_path):
    images, ids = cache
    (tmp_path / "last.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(PirlError, match="corrupt or truncated"):
        pretrain(tiny(), images, ids, tmp_path)
    assert (tmp_path / "last.pt").read_bytes() == b"not a checkpoint at all"


def test_a_crash_while_saving_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    good = checkpoint.save_atomic({"format": 1, "step": 1}, tmp_path / "last.pt")

    def crash(obj, f):
        f.write_bytes(b"half")  # a half-written temporary file
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError):
        checkpoint.save_atomic({"format": 1, "step": 2}, good)
    assert checkpoint.load(good)["step"] == 1
    assert list(tmp_path.iterdir()) == [good]


def test_impossible_settings_are_named_up_front(cache, tmp_path):
    images, ids = cache
    with pytest.raises(PirlError) as err:
        pretrain(tiny(negatives=len(ids), temperature=0, batch_size=1), images, ids, tmp_path)
    msg = str(err.value)
    assert f"N - 1 = {len(ids) - 1}" in msg and "temperature" in msg and "batch size" in msg
    assert not (tmp_path / "last.pt").exists()


def test_a_slower_backbone_keeps_closer_to_its_starting_weights_while_the_heads_learn(cache, tmp_path):
    images, ids = cache
    torch.manual_seed(3)  # the start TrainState builds for seed 3
    start = PirlModel(build_backbone("resnet18", False, None)).state_dict()
    names = {n for n, _ in PirlModel(build_backbone("resnet18", False, None)).named_parameters()}

    def moved(scale):
        model = checkpoint.load(pretrain(tiny(epochs=1, backbone_lr_scale=scale), images, ids,
                                         tmp_path / str(scale)).checkpoint)["model"]
        dist = {part: sum(float((model[n] - start[n]).norm() ** 2) for n in names if n.startswith(part)) ** 0.5
                for part in ("backbone.", "image_head.", "patch_head.")}
        return dist

    full, slow = moved(1.0), moved(0.1)
    assert slow["backbone."] < 0.3 * full["backbone."], (slow, full)
    assert slow["image_head."] > 0.5 * full["image_head."] and slow["patch_head."] > 0.5 * full["patch_head."]
    with pytest.raises(PirlError, match="backbone's share of the learning rate"):
        tiny(backbone_lr_scale=0).validate()


def test_load_pretrained_returns_model_and_bank_with_ids(cache, tmp_path):
    images, ids = cache
    result = pretrain(tiny(epochs=1), images, ids, tmp_path)
    model, config, bank = load_pretrained(result.checkpoint)
    assert config.image_size == 32 and bank.ids == ids and bank.vectors.shape == (len(ids), 128)
    assert torch.allclose(bank.vectors.norm(dim=1), torch.ones(len(ids)), atol=1e-5)


def test_cli_pretrain_on_a_folder_skips_bad_files_and_prints_json(demo_dir, tmp_path, capsys):
    import json
    import shutil

    from pirl_core.cli import main

    data = tmp_path / "data"
    shutil.copytree(demo_dir / "unlabeled", data)
    (data / "broken.png").write_bytes(b"\x89PNG not really")
    code = main(["pretrain", "--data", str(data), "--backbone", "resnet18", "--no-pretrained-imagenet",
                 "--image-size", "32", "--epochs", "1", "--batch-size", "16", "--out", str(tmp_path / "run")])
    assert code == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["status"] == "finished" and out["steps"] == 3
    assert [s["name"] for s in out["skipped"]] == ["broken.png"]
    assert (tmp_path / "run" / "last.pt").exists()


def test_cli_pretrain_bad_settings_is_one_line_not_a_traceback(demo_dir, capsys):
    from pirl_core.cli import main

    assert main(["pretrain", "--data", str(demo_dir / "unlabeled"), "--negatives", "100000"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: Invalid pretrain settings") and "Traceback" not in err


@pytest.mark.parametrize("pretext", ["rotation", "jigsaw+rotation"])
def test_other_pretexts_run_end_to_end_from_the_cli(demo_dir, tmp_path, capsys, pretext):
    import json

    from pirl_core.cli import main
    from pirl_core.engine import checkpoint

    assert main(["pretrain", "--data", str(demo_dir / "unlabeled"), "--pretext", pretext, "--backbone", "resnet18",
                 "--no-pretrained-imagenet", "--image-size", "32",
                 "--epochs", "1", "--batch-size", "16", "--out", str(tmp_path / "run")]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["status"] == "finished" and "loss_rotation" in out["last"]
    assert ("loss_jigsaw" in out["last"]) == (pretext == "jigsaw+rotation")
    assert checkpoint.load(tmp_path / "run" / "last.pt")["config"]["pretext"] == pretext


def test_a_random_start_fills_the_memory_bank_with_distinct_embeddings(tmp_path):
    """efficientnet_lite0 at random init maps every image to one embedding under its untrained BatchNorm
    running statistics; a bank filled that way gives the loss nothing to learn from (it sat at ln N)."""
    images = np.random.default_rng(0).integers(0, 256, (24, 104, 104, 3), dtype=np.uint8)
    config = PretrainConfig(backbone="efficientnet_lite0", image_size=96, batch_size=2, max_steps=1, seed=0)
    pretrain(config, images, list(range(24)), tmp_path)
    bank = checkpoint.load(tmp_path / "last.pt")["bank"]["vectors"]
    cosine = bank @ bank.T  # one step moved 2 of the 24 rows; the rest are as the fill left them
    assert cosine[~torch.eye(len(bank), dtype=bool)].median() < 0.99


def test_the_default_learning_rate_scales_with_the_batch():
    assert PretrainConfig(batch_size=64).learning_rate == pytest.approx(0.06)
    assert PretrainConfig(batch_size=256, lr=0.03).learning_rate == 0.03


def test_a_checkpoint_keeps_batchnorm_statistics_of_whole_images(cache, tmp_path):
    """Eval-mode features of a finished run equal those under statistics estimated afresh on whole images:
    the jigsaw patches seen in training left no trace in them."""
    import copy

    from pirl_core.engine.batchnorm import recompute_bn_stats
    from pirl_core.engine.model import embed_dataset

    images, ids = cache
    result = pretrain(tiny(epochs=1), images, ids, tmp_path)
    model, config, _ = load_pretrained(result.checkpoint)
    fresh = copy.deepcopy(model.backbone)
    recompute_bn_stats(fresh, images, config.image_size)
    assert torch.allclose(embed_dataset(model.backbone, images, 32), embed_dataset(fresh, images, 32), rtol=1e-3,
                          atol=1e-3)  # memory formats round differently

    mixed = load_pretrained(pretrain(tiny(epochs=1, bn_stats="training"), images, ids, tmp_path / "old").checkpoint)[0]
    assert not torch.allclose(embed_dataset(mixed.backbone, images, 32), embed_dataset(fresh, images, 32), atol=1e-2)


def test_frozen_batchnorm_statistics_normalise_as_in_training_but_stay_put():
    from torch import nn

    from pirl_core.engine.batchnorm import frozen_bn_stats

    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).train()
    x = torch.randn(8, 3, 10, 10) * 3 + 1
    before = net[1].running_mean.clone()
    with frozen_bn_stats(net):
        out = net(x)
    assert torch.equal(net[1].running_mean, before) and net[1].momentum == 0.1
    assert torch.allclose(out, net(x), atol=1e-6)  # the same batch statistics normalised both
    assert not torch.equal(net[1].running_mean, before)


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_a_time_budget_becomes_whole_epochs_from_the_measured_step_time():
    from pirl_core.engine.budget import TimeBudget

    clock = FakeClock()
    budget = TimeBudget(600.0, steps_per_epoch=10, max_steps=None, clock=clock)
    for step_seconds in (9.0, 2.0, 2.0, 2.0, 2.0, 2.0):  # a slow first step (warm-up), then 2 s a step
        clock.now += step_seconds
        decided = budget.after_step()
    assert decided
    # 600 s * 0.95 = 570 s; 19 s spent on 6 steps; 551 s left at 2 s a step = 275 more steps: 281 -> 28 epochs
    assert budget.plan(6) == 280
    assert not budget.after_step()  # planned once from the first steps; epoch ends take over


def test_a_time_budget_is_replanned_at_epoch_ends_when_the_machine_slows_down_or_speeds_up():
    from pirl_core.engine.budget import TimeBudget

    clock = FakeClock()
    budget = TimeBudget(600.0, steps_per_epoch=10, max_steps=None, clock=clock)
    clock.now = 20.0  # the first epoch: 2 s a step
    assert budget.plan(10, epoch_end=True) == 300  # 580 s left / 2 s = 290 steps more
    clock.now = 80.0  # another job started: 6 s a step
    # recent epochs: 80 s over 20 steps = 4 s a step; 520 s left = 130 steps more: 150
    assert budget.plan(20, epoch_end=True) == 150
    clock.now = 90.0  # the other job ended: 1 s a step
    # 90 s over 30 steps = 3 s a step; 510 s left = 170 more: 200
    assert budget.plan(30, epoch_end=True) == 200
    clock.now = 700.0  # over budget: the run ends here, never before the step it reached
    assert budget.plan(40, epoch_end=True) == 40


def test_a_resumed_time_budget_counts_the_time_already_spent():
    from pirl_core.engine.budget import TimeBudget

    clock = FakeClock()
    budget = TimeBudget(600.0, steps_per_epoch=10, max_steps=None, step=50, spent=500.0, decided=True, clock=clock)
    assert not budget.after_step()
    clock.now = 20.0  # 10 steps at 2 s: 80 s left = 40 steps more
    assert budget.plan(60, epoch_end=True) == 100


def test_a_time_budget_run_says_it_is_timing_its_first_steps_then_shows_its_plan(cache, tmp_path):
    from pirl_core.engine.budget import TimeBudget

    images, ids = cache
    rec = Recorder()
    pretrain(tiny(epochs=30, time_budget_s=60, max_steps=6), images, ids, tmp_path, rec)
    first_plan = next(i for i, r in enumerate(rec.reports) if r.planned)  # the first steps timed, or an epoch's end
    timing, planned = rec.reports[:first_plan], rec.reports[first_plan:]
    assert 1 <= len(timing) < TimeBudget.PROBE_STEPS
    for r in timing:  # before the plan: no epochs or ETA from the configured epochs, the budget's time left instead
        assert not r.planned and 0 <= r.eta_s <= 60
        assert r.position() == f"step {r.step} · timing the first steps to plan the epochs that fit the time"
    assert [r.eta_s for r in timing] == sorted((r.eta_s for r in timing), reverse=True)  # the budget runs down
    assert planned and all(r.planned and r.position() == f"epoch {r.epoch}/{r.epochs} · step {r.step}/{r.total_steps}"
                           for r in planned)


def test_moving_the_end_of_the_schedule_continues_the_cosine_without_a_jump():
    from pirl_core.engine.optim import CosineSchedule, lr_at

    schedule = CosineSchedule(1.0, warmup=10, total=100)
    assert [schedule.lr(s) for s in (0, 9, 10, 55, 99)] == [lr_at(s, 100, 10, 1.0) for s in (0, 9, 10, 55, 99)]
    before = schedule.lr(40)
    schedule.retarget(40, 200)
    assert schedule.lr(40) == pytest.approx(before)
    assert schedule.lr(41) < before and schedule.lr(41) == pytest.approx(before, abs=0.01)
    assert schedule.lr(200) == pytest.approx(0.0) and schedule.lr(150) > 0.01
    schedule.retarget(120, 130)
    assert schedule.lr(130) == pytest.approx(0.0)


def test_a_run_with_a_time_budget_records_its_epochs_and_resumes_with_them(cache, tmp_path):
    import time

    images, ids = cache
    started = time.perf_counter()
    result = pretrain(tiny(epochs=1000, time_budget_s=10), images, ids, tmp_path)
    wall = time.perf_counter() - started
    state = checkpoint.load(result.checkpoint)
    assert state["budget_decided"] and result.total_steps % 3 == 0 and result.total_steps < 3000
    assert state["schedule"]["total"] == result.total_steps and 0 < state["budget_spent_s"] <= wall
    # The budget holds, unless the one epoch a run always trains outlasts it (a busy machine: 20 s was seen)
    assert state["budget_spent_s"] < 15 or result.total_steps == 3, (state["budget_spent_s"], result.total_steps)
    resumed = pretrain(tiny(epochs=1000, time_budget_s=10), images, ids, tmp_path)
    assert resumed.total_steps == result.total_steps and resumed.step == result.step


def test_the_compile_option_trains_like_the_plain_network_and_keeps_the_checkpoint_format(cache, tmp_path):
    """torch.compile (the training passes only; it needs a C++ compiler on the CPU, which `make test` installs)."""
    images, ids = cache
    plain, compiled = Recorder(), Recorder()
    pretrain(tiny(epochs=1, max_steps=2), images, ids, tmp_path / "plain", plain)
    pretrain(tiny(epochs=1, max_steps=2, compile=True), images, ids, tmp_path / "compiled", compiled)
    assert compiled.reports[0].metrics["loss"] == pytest.approx(plain.reports[0].metrics["loss"], abs=1e-3)
    a, b = checkpoint.load(tmp_path / "plain" / "last.pt"), checkpoint.load(tmp_path / "compiled" / "last.pt")
    assert a["model"].keys() == b["model"].keys() and a["config"]["compile"] is False and b["config"]["compile"]


def test_the_scan_augmentation_runs_end_to_end_from_the_cli_and_is_kept_with_the_run(demo_dir, tmp_path, capsys):
    import json

    from pirl_core.cli import main
    from pirl_core.engine import checkpoint

    assert main(["pretrain", "--data", str(demo_dir / "unlabeled"), "--augment", "scan", "--backbone", "resnet18",
                 "--no-pretrained-imagenet", "--image-size", "32", "--epochs", "1", "--batch-size", "16",
                 "--out", str(tmp_path / "run")]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["status"] == "finished"
    assert checkpoint.load(tmp_path / "run" / "last.pt")["config"]["augment"] == "scan"
    with pytest.raises(PirlError, match="augment must be one of photo, scan, got 'colour'"):
        PretrainConfig(augment="colour").validate()
