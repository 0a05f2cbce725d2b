"""Splits, label subsets and run-time estimates, tested directly."""

import dataclasses

import pytest
import torch

from pirl_core.data.splits import assign_folds, nested_subset
from pirl_core.engine.config import PretrainConfig
from pirl_core.training import planning


def test_folds_are_stratified_and_keep_every_group_whole():
    labels = ["a"] * 40 + ["b"] * 20
    groups = [f"p{i // 2}" for i in range(60)]  # patients with two images each
    fold = assign_folds(labels, groups, 5, seed=3)
    assert set(fold) == set(range(5))
    for g in set(groups):
        assert len({fold[i] for i in range(60) if groups[i] == g}) == 1
    for k in range(5):
        members = [labels[i] for i in range(60) if fold[i] == k]
        assert members.count("a") == 8 and members.count("b") == 4
    assert assign_folds(labels, groups, 5, seed=3) == fold and assign_folds(labels, groups, 5, seed=4) != fold


def test_nested_subsets_grow_with_the_fraction_and_keep_every_class():
    labels = ["a"] * 30 + ["b"] * 10
    small, mid, full = (set(nested_subset(labels, f, seed=1)) for f in (0.1, 0.5, 1.0))
    assert small < mid < full == set(range(40))
    assert {labels[i] for i in small} == {"a", "b"} and len(mid) == 20


def test_estimate_uses_a_past_run_of_the_same_setting_or_says_it_is_a_guess(ws, monkeypatch):
    config = PretrainConfig(backbone="resnet18", image_size=96, epochs=2, batch_size=10, device="cpu")
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    seconds, source = planning.estimate_seconds(ws.store, config, 100)
    assert "estimate" in source and seconds == pytest.approx(2 * 100 / planning.cpu_rate("resnet18", 96) + 5)
    job = ws.store.add_job("pretrain", config.to_dict())
    ws.store.update_job(job, status="succeeded", result={"images_per_s": 20.0})
    seconds, source = planning.estimate_seconds(ws.store, config, 100)
    assert source == f"measured in run #{job}" and seconds == pytest.approx(200 / 20 + 5)


def test_the_estimate_before_a_first_run_is_the_rate_measured_through_the_product(ws, monkeypatch):
    """The CPU default (efficientnet_lite0, 128 px, 60 epochs) on BUSI's 780 images: 30 epochs took 16.7 minutes."""
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    config = PretrainConfig.defaults_for("cpu")
    seconds, _ = planning.estimate_seconds(ws.store, config, 780)
    assert 30 * 60 < seconds < 36 * 60
    random_start = PretrainConfig.defaults_for("cpu", backbone="resnet18", image_size=96, pretrained_imagenet=False)
    seconds, _ = planning.estimate_seconds(ws.store, random_start, 780)
    assert seconds == pytest.approx(12 * 64 * random_start.epochs / 29.6 + 5)


def test_a_random_start_on_a_cpu_gets_larger_smallest_crops_than_an_imagenet_start():
    from pirl_core.engine.config import RANDOM_START_MIN_CROP, PretrainConfig

    assert PretrainConfig.defaults_for("cpu").min_crop_scale == 0.08  # ImageNet start: the paper's crops
    assert PretrainConfig.defaults_for("cpu").epochs == 60  # 30 left a gain on both tasks (config.CPU_EPOCHS)
    assert PretrainConfig.defaults_for("cpu", pretrained_imagenet=False).min_crop_scale == RANDOM_START_MIN_CROP
    assert PretrainConfig.defaults_for("cpu", pretrained_imagenet=False, min_crop_scale=0.2).min_crop_scale == 0.2


def test_the_estimate_counts_what_the_pretext_costs(ws, monkeypatch):
    """jigsaw+rotation trains on one view more: a jigsaw run's speed, or the benchmark's, must not promise its time."""
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    jigsaw = PretrainConfig(backbone="resnet18", image_size=96, epochs=2, batch_size=10, device="cpu")
    both = dataclasses.replace(jigsaw, pretext="jigsaw+rotation")
    cost = planning.pretext_cost("jigsaw+rotation")
    assert cost > 1.4 and planning.pretext_cost("jigsaw") == 1
    for config, factor in ((jigsaw, 1), (both, cost)):  # before any run: the benchmark, a jigsaw rate
        assert planning.estimate_seconds(ws.store, config, 100)[0] == pytest.approx(
            200 / planning.cpu_rate("resnet18", 96) * factor + 5)
    job = ws.store.add_job("pretrain", jigsaw.to_dict())
    ws.store.update_job(job, status="succeeded", result={"images_per_s": 20.0})
    assert planning.estimate_seconds(ws.store, both, 100) == (
        pytest.approx(200 / 20 * cost + 5), f"measured in run #{job} with jigsaw, scaled to jigsaw+rotation")
    newer = ws.store.add_job("pretrain", both.to_dict())  # a run of the same pretext wins, whatever came before
    ws.store.update_job(newer, status="succeeded", result={"images_per_s": 12.0})
    assert planning.estimate_seconds(ws.store, both, 100) == (pytest.approx(200 / 12 + 5), f"measured in run #{newer}")
    again = ws.store.add_job("pretrain", jigsaw.to_dict())  # the newest is jigsaw: still the same pretext's run
    ws.store.update_job(again, status="succeeded", result={"images_per_s": 30.0})
    assert planning.estimate_seconds(ws.store, both, 100)[1] == f"measured in run #{newer}"
    assert planning.estimate_seconds(ws.store, jigsaw, 100)[1] == f"measured in run #{again}"
