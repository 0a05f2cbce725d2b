import hashlib

import numpy as np
from PIL import Image

from pirl_core.cli import main
from pirl_core.data import demo_data


def _digest(folder):
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*.png"))}


def test_same_seed_same_images_other_seed_other_images(tmp_path):
    demo_data.generate(tmp_path / "a", n=6, seed=3, unlabeled=4, size=48)
    demo_data.generate(tmp_path / "b", n=6, seed=3, unlabeled=4, size=48)
    demo_data.generate(tmp_path / "c", n=6, seed=4, unlabeled=4, size=48)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a").values() != _digest(tmp_path / "c").values()


def test_classes_balanced_and_images_valid(tmp_path):
    summary = demo_data.generate(tmp_path, n=31, seed=0, unlabeled=10, classes=3, size=64)
    assert summary["labeled"] == {"benign": 11, "atypical": 10, "malignant": 10}
    for name, count in summary["labeled"].items():
        files = sorted((tmp_path / "labeled" / name).glob("*.png"))
        assert len(files) == count
        with Image.open(files[0]) as im:
            assert im.size == (64, 64) and im.mode == "RGB"
    assert len(list((tmp_path / "unlabeled").glob("*.png"))) == 10


def test_classes_do_not_differ_in_mean_brightness(tmp_path):
    demo_data.generate(tmp_path, n=80, seed=0, unlabeled=0, size=64)
    means = {c: np.array([np.asarray(Image.open(p)).mean() for p in (tmp_path / "labeled" / c).glob("*.png")])
             for c in ("benign", "malignant")}
    gap = abs(means["benign"].mean() - means["malignant"].mean())
    assert gap < 0.5 * means["benign"].std(), "brightness alone would separate the classes"


def test_cli_demo_data(tmp_path, capsys):
    assert main(["demo-data", str(tmp_path), "--n", "4", "--unlabeled", "2", "--size", "32"]) == 0
    assert '"unlabeled": 2' in capsys.readouterr().out
    assert len(list(tmp_path.rglob("*.png"))) == 6


def test_demo_workspace_is_filled_and_its_pipeline_queued_once(ws, monkeypatch):
    from pirl_core import demo
    from pirl_core.demo import ensure_demo_workspace
    from pirl_core.jobs import queue

    monkeypatch.setattr(queue, "ensure_worker", lambda ws: None)  # queued, not run, here
    ensure_demo_workspace(ws, log=lambda m: None)
    first = [(d["name"], d["images"], d["labeled"]) for d in ws.store.datasets()]
    ensure_demo_workspace(ws, log=lambda m: None)
    assert [(d["name"], d["images"], d["labeled"]) for d in ws.store.datasets()] == first
    assert sorted(first) == [("demo-labeled", 120, 120), ("demo-unlabeled", 400, 0)]
    assert sorted(j["kind"] for j in ws.store.jobs()) == ["demo_compare", "pretrain"]
    (run,) = ws.store.jobs(kind="pretrain")  # the CPU default's start, at a length that learns in minutes
    config = run["config"]
    assert (config["backbone"], config["pretrained_imagenet"]) == ("efficientnet_lite0", True)
    assert (config["epochs"], config["image_size"], config["batch_size"]) == (10, 96, 32)
    assert demo.pipeline_status(ws)[0]["step"] == "Pretrain PIRL on the demo pool (10 epochs)"
