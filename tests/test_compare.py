import dataclasses
import hashlib
import json

import numpy as np
import pytest
import torch

from pirl_core.data import image_cache, ingest, sources
from pirl_core.engine.config import PretrainConfig
from pirl_core.engine.train_state import load_pretrained
from pirl_core.errors import PirlError
from pirl_core.evaluation import compare
from pirl_core.jobs import queue


@pytest.fixture(scope="module")
def setup(demo_dir, tmp_path_factory):
    from pirl_core.workspace.folder import Workspace

    ws = Workspace(tmp_path_factory.mktemp("compare") / "ws")
    pool = ingest.ingest(ws, sources.folder_source(demo_dir / "unlabeled", check_roots=False), "pool").dataset_id
    ingest.ingest(ws, sources.folder_source(demo_dir / "labeled", check_roots=False), "lab", folder_labels=True)
    # efficientnet_lite0: its ImageNet weights install with the package, so every arm can run offline
    run = queue.submit(ws, "pretrain", PretrainConfig(backbone="efficientnet_lite0", image_size=96, epochs=1,
                                                     batch_size=16).to_dict(), pool, start_worker=False)
    inet = queue.submit(ws, "pretrain", PretrainConfig(backbone="efficientnet_lite0", image_size=96, epochs=1,
                                                      batch_size=16, pretrained_imagenet=True).to_dict(), pool,
                       start_worker=False)
    queue.run_worker(ws, idle_exit_s=0)
    return ws, run, inet


def test_comparison_runs_every_initialisation_and_stores_results(setup, monkeypatch):
    ws, run, inet = setup
    cid = compare.start(ws, compare.CompareRequest(labeled="lab", pretrain_jobs=[run, inet], folds=3,
                                                   fractions=[0.5, 1.0]))
    monkeypatch.setattr(queue, "ensure_worker", lambda ws: None)
    queue.run_worker(ws, idle_exit_s=0)
    summary = compare.summarize(ws, cid, n_boot=100)
    assert summary["complete"]
    arms = {e["arm"]: e for e in summary["table"]}
    assert set(arms) == {"scratch", "ImageNet", f"PIRL #{run}", f"ImageNet+PIRL #{inet}"}
    for e in arms.values():
        assert 0 <= e["auc"] <= 1 and e["ci_low"] <= e["auc"] <= e["ci_high"]
        # a linear probe on 24 images: 5 repeats of 3-fold CV, every image tested once per repeat
        assert e["n"] == 24 and len(e["fold_aucs"]) == 15 and set(e["efficiency"]) == {"0.5", "1.0"}
    assert set(arms[f"PIRL #{run}"]["vs"]) == {"scratch", "ImageNet"}
    assert set(arms[f"ImageNet+PIRL #{inet}"]["vs"]) == {"scratch", "ImageNet", f"PIRL #{run}"}
    # A run whose loss ended at or above chance is said first; then the paired verdicts, scratch first.
    from pirl_core.training import pretraining

    unlearned = [j for j in (run, inet) if pretraining.learned_nothing(ws, j)]
    said_first = [v for v in summary["verdicts"] if v["outcome"] == "not learned"]
    assert summary["verdicts"][:len(said_first)] == said_first and len(said_first) == len(unlearned)
    paired = summary["verdicts"][len(said_first):]
    assert paired[0]["text"].startswith(f"PIRL #{run} vs scratch: AUC ")
    assert any(v["text"].startswith(f"ImageNet+PIRL #{inet} vs ImageNet: AUC ") for v in paired)
    assert {v["outcome"] for v in paired} <= {"better", "worse", "unclear"}
    # labels saved: each PIRL arm against the best baseline, at every fraction, on the same images
    saved = {r["arm"]: r for r in summary["labels_saved"]}
    assert set(saved) == {f"PIRL #{run}", f"ImageNet+PIRL #{inet}"}
    best = max((e for e in summary["table"] if e["init"] in compare.BASELINES), key=lambda e: e["auc"])["arm"]
    reading = saved[f"PIRL #{run}"]
    assert reading["baseline"] == best and set(reading["tests"]) == {"0.5", "1.0"}
    assert [p["fraction"] for p in reading["points"]] == [0.5, 1.0]
    assert reading["points"][0]["labels"] < reading["points"][1]["labels"]  # half the training labels, in folds
    assert reading["sentence"].startswith(f"With {reading['points'][0]['labels']:.0f} labels, PIRL #{run} reaches ")
    stored = ws.store.evaluations()[0]["result"]
    assert stored["summary"]["complete"] and json.dumps(stored, allow_nan=False)  # cached in the workspace


def test_no_test_image_reaches_training_or_model_selection(setup, monkeypatch):
    ws, run, _ = setup
    seen = []
    real = compare.finetune

    def spy(backbone, n_classes, train, val, config, *a, **k):
        seen.append({name: {hashlib.sha1(np.asarray(im).tobytes()).hexdigest() for im in arr[0]}
                     for name, arr in (("train", train), ("val", val))})
        return real(backbone, n_classes, train, val, config, *a, **k)

    monkeypatch.setattr(compare, "finetune", spy)
    cid = compare.start(ws, compare.CompareRequest(labeled="lab", pretrain_jobs=[run], mode="finetune",
                                                   inits=["scratch"], folds=3, fractions=[0.5, 1.0], epochs=1))
    monkeypatch.setattr(queue, "ensure_worker", lambda ws: None)
    queue.run_worker(ws, idle_exit_s=0)  # in this process, so the spy sees every training call
    summary = compare.summarize(ws, cid, n_boot=50)
    cache = image_cache.dataset_cache(ws, ws.store.dataset("lab")["id"], 110)
    rows = ws.store.images(ws.store.dataset("lab")["id"])
    pos = {r["id"]: i for i, r in enumerate(rows)}
    job = ws.store.job(next(a["job_id"] for a in summary["arms"] if a["label"] == "scratch"))
    assert len(job["result"]["runs"]) == len(seen) == 6
    for k, r in enumerate(job["result"]["runs"]):
        test_hashes = {hashlib.sha1(np.asarray(cache[pos[i]]).tobytes()).hexdigest() for i in r["image_ids"]}
        assert not test_hashes & seen[k]["train"] and not test_hashes & seen[k]["val"]
        assert not seen[k]["train"] & seen[k]["val"]


def test_pirl_arm_loads_the_pretrained_backbone(setup):
    ws, run, _ = setup
    arm = compare.FinetuneJob(labeled_dataset_id=1, labeled="lab", backbone="efficientnet_lite0", image_size=32,
                              folds=0, fractions=[1.0], seed=0, finetune={}, init="pirl", pretrain_job=run)
    backbone = compare._backbone_for(arm, ws)
    model, _, _ = load_pretrained(ws.store.job(run)["checkpoint"])
    for (name, a), (_, b) in zip(backbone.state_dict().items(), model.backbone.state_dict().items()):
        assert torch.equal(a, b), name
    scratch = compare._backbone_for(dataclasses.replace(arm, init="scratch", pretrain_job=None), ws)
    assert not torch.equal(scratch.trunk._conv_stem.weight, backbone.trunk._conv_stem.weight)


def test_the_imagenet_pirl_probe_reads_the_pirl_features_beside_imagenets(setup):
    """The ImageNet+PIRL linear arm keeps what ImageNet knew beside what the pool taught: its features are the PIRL
    run's and the ImageNet backbone's, concatenated. Full finetuning trains the PIRL backbone alone."""
    ws, _, inet = setup
    arm = compare.FinetuneJob(labeled_dataset_id=1, labeled="lab", backbone="efficientnet_lite0", image_size=96,
                              folds=0, fractions=[1.0], seed=0, finetune={}, init="imagenet+pirl", pretrain_job=inet)
    x = torch.rand(2, 3, 96, 96)
    pirl, _, _ = load_pretrained(ws.store.job(inet)["checkpoint"])
    imagenet = compare.build_backbone("efficientnet_lite0", pretrained=True)
    with torch.no_grad():
        expected = torch.cat([pirl.backbone.eval()(x), imagenet.eval()(x)], 1)
        assert torch.allclose(compare._backbone_for(arm, ws).eval()(x), expected, atol=1e-5)
        finetuned = compare._backbone_for(dataclasses.replace(arm, finetune={"mode": "finetune"}), ws)
        assert finetuned.dim == 1280 and torch.allclose(finetuned.eval()(x), expected[:, :1280], atol=1e-5)


def test_an_imagenet_pirl_model_exports_predicts_and_explains_from_its_bundle(setup, tmp_path):
    from pirl_core.engine.gradcam import gradcam
    from pirl_core.models import export

    ws, _, inet = setup
    cid = compare.start(ws, compare.CompareRequest(labeled="lab", pretrain_jobs=[inet], inits=["imagenet+pirl"],
                                                   folds=0, fractions=[1.0]))
    job = queue.wait(ws, compare.comparison(ws, cid)["arms"][0]["job_id"], timeout_s=300)
    assert job["status"] == "succeeded", job["error"]
    info = export.export_finetune(ws, job["id"], tmp_path / "bundle.zip")
    assert info["max_abs_prob_diff_onnx"] < 1e-4 and info["max_abs_prob_diff_torchscript"] < 1e-4
    workspace_model, _ = export.load_classifier(job["result"]["model"])
    bundled, state = export.open_bundle(tmp_path / "bundle.zip")
    assert state["parts"] == 2 and "side by side" in state["card"]["model"]["features"]
    x = torch.rand(3, 3, 96, 96)
    with torch.no_grad():
        assert torch.allclose(bundled(x), workspace_model(x), atol=1e-5)
    heat = gradcam(bundled, x, 1)  # where both backbones looked, one map per image
    assert heat.shape == (3, 96, 96) and float(heat.min()) >= 0 and float(heat.max()) == pytest.approx(1)


def test_a_second_seed_is_read_together_with_the_first_and_exported_as_one_model(setup, monkeypatch, tmp_path):
    """Runs of one recipe differ by chance: a second ImageNet+PIRL run (one click under the Compare form) gets an arm
    whose probe reads both runs' features beside ImageNet's, exported, reopened and explained as one model."""
    from pirl_core.engine.gradcam import gradcam
    from pirl_core.models import export
    from pirl_core.training import pretraining

    ws, _, inet = setup
    monkeypatch.setattr(queue, "ensure_worker", lambda ws: None)
    assert pretraining.to_read_together(ws, "efficientnet_lite0")["id"] == inet  # the one ImageNet-started run
    second = pretraining.start_another_seed(ws, inet)
    assert queue.config_of(ws.store.job(second)).seed == queue.config_of(ws.store.job(inet)).seed + 1
    assert pretraining.to_read_together(ws, "efficientnet_lite0") is None  # no second button while it runs
    queue.run_worker(ws, idle_exit_s=0)
    assert pretraining.to_read_together(ws, "efficientnet_lite0") is None  # nor once there are two

    def arms(**request):
        cid = compare.start(ws, compare.CompareRequest(labeled="lab", pretrain_jobs=[inet, second], folds=0,
                                                       inits=["imagenet", "imagenet+pirl"], fractions=[1.0],
                                                       **request))
        return cid, compare.comparison(ws, cid)["arms"]

    for request in ({"together": False}, {"mode": "finetune"}):  # asked not to; full finetuning trains one backbone
        _, not_together = arms(**request)
        assert not any(a["label"].endswith("together") for a in not_together)
        for a in not_together:
            queue.cancel(ws, a["job_id"])
    cid, together = arms()
    assert [a["label"] for a in together] == ["ImageNet", f"ImageNet+PIRL #{inet}", f"ImageNet+PIRL #{second}",
                                              f"ImageNet+PIRL #{inet}+#{second} together"]
    queue.run_worker(ws, idle_exit_s=0)
    summary = compare.summarize(ws, cid, n_boot=100)
    entry = next(e for e in summary["table"] if e["arm"] == together[-1]["label"])
    assert any(v["text"].startswith(f"{entry['arm']} vs ImageNet: AUC ") for v in summary["verdicts"])
    job = ws.store.job(together[-1]["job_id"])
    x = torch.rand(2, 3, 96, 96)
    with torch.no_grad():
        expected = torch.cat([load_pretrained(ws.store.job(j)["checkpoint"])[0].backbone.eval()(x)
                              for j in (inet, second)]
                             + [compare.build_backbone("efficientnet_lite0", pretrained=True).eval()(x)], 1)
        assert torch.allclose(compare._backbone_for(queue.config_of(job), ws).eval()(x), expected, atol=1e-5)
    info = export.export_finetune(ws, job["id"], tmp_path / "together.zip")
    assert info["max_abs_prob_diff_onnx"] < 1e-4 and info["max_abs_prob_diff_torchscript"] < 1e-4
    bundled, state = export.open_bundle(tmp_path / "together.zip")
    card = state["card"]["model"]
    assert state["parts"] == 3 and card["pretrain_runs_together"] == [inet, second]
    assert card["features"] == "2 PIRL-pretrained backbones' and the ImageNet backbone's, side by side"
    heat = gradcam(bundled, x, 1)
    assert heat.shape == (2, 96, 96) and float(heat.min()) >= 0 and float(heat.max()) == pytest.approx(1)
    with pytest.raises(PirlError, match="linear probe"):
        dataclasses.replace(queue.config_of(job), finetune={"mode": "finetune"}).validate()


def test_fixed_split_and_repeated_folds_are_disjoint_cover_the_set_and_keep_groups_whole(setup):
    ws, _, _ = setup
    rows = [r for r in ws.store.images(ws.store.dataset("lab")["id"]) if r["label"]]
    groups = [None] * len(rows)
    twins = [i for i, r in enumerate(rows) if r["label"] == rows[0]["label"]][:3]
    for i in twins:
        groups[i] = "copies"  # three copies of one image: never split apart
    for folds in (0, 4):
        splits = compare.data_splits(rows, groups, folds, seed=0, repeats=2)
        for s in splits:
            a, b, c = set(s["train"]), set(s["val"]), set(s["test"])
            assert not (a & b or a & c or b & c) and a and b and c
            if folds:
                assert any(set(twins) <= part for part in (a, b, c))
        if folds:
            assert len(splits) == 8 and {s["repeat"] for s in splits} == {0, 1}
            for rep in (0, 1):
                tests = [i for s in splits if s["repeat"] == rep for i in s["test"]]
                assert sorted(tests) == list(range(len(rows)))  # every image a test image once per repeat
            assert splits[0]["test"] != splits[4]["test"]  # each repeat deals the folds anew


def test_near_copies_in_a_labeled_set_share_their_split_and_conflicts_are_reported(ws, demo_dir, tmp_path):
    import shutil

    data = tmp_path / "lab"
    shutil.copytree(demo_dir / "labeled", data)
    from PIL import Image

    original, other = sorted((data / "benign").glob("*.png"))[:2]
    shutil.copy(other, data / "malignant" / "same-bytes.png")  # one file filed under both classes
    img = np.array(Image.open(original))
    img[0, :4] = 255 - img[0, :4]
    Image.fromarray(img).save(data / "malignant" / "refiled.png")  # a near-copy (other bytes) under the other class
    img[1, :4] = 255 - img[1, :4]
    Image.fromarray(img).save(data / "benign" / "copy.png")  # and one in its own class
    report = ingest.ingest(ws, sources.folder_source(data, check_roots=False), "lab", folder_labels=True)
    assert sorted(sorted(n for n, _ in c["images"]) for c in report.label_conflicts) == sorted([
        sorted([f"benign/{original.name}", "benign/copy.png", "malignant/refiled.png"]),
        sorted([f"benign/{other.name}", "malignant/same-bytes.png"])])
    assert any("different labels" in w for w in report.warnings)
    split = {r["orig_name"]: r["split"] for r in ws.store.images(report.dataset_id)}
    assert split[f"benign/{original.name}"] == split["benign/copy.png"] == split["malignant/refiled.png"]
    assert ws.store.dataset("lab")["info"]["label_conflicts"] == json.loads(json.dumps(report.label_conflicts))


def test_missing_imagenet_weights_skip_that_arm_with_a_note(setup, monkeypatch):
    ws, run, _ = setup
    monkeypatch.setattr(compare, "imagenet_problem", lambda b, download=False: "place the file X in folder Y")
    cid = compare.start(ws, compare.CompareRequest(labeled="lab", pretrain_jobs=[run], folds=0, epochs=1,
                                                   fractions=[1.0]))
    comp = next(c for c in compare.comparisons(ws) if c["id"] == cid)["result"]
    assert [a["label"] for a in comp["arms"]] == ["scratch", f"PIRL #{run}"]
    assert any("place the file X in folder Y" in n for n in comp["notes"])
    with pytest.raises(PirlError, match="need at least 20 images in every class"):
        compare.start(ws, compare.CompareRequest(labeled="lab", pretrain_jobs=[run], folds=20))
    for arm in comp["arms"]:
        queue.cancel(ws, arm["job_id"])


def test_a_pirl_start_that_cannot_run_is_named_not_dropped_in_silence(setup, monkeypatch):
    ws, _, inet = setup
    monkeypatch.setattr(queue, "ensure_worker", lambda ws: None)
    cid = compare.start(ws, compare.CompareRequest(labeled="lab", pretrain_jobs=[inet], inits=["scratch", "pirl"],
                                                   folds=0, epochs=1, fractions=[1.0]))
    comp = next(c for c in compare.comparisons(ws) if c["id"] == cid)["result"]
    assert [a["label"] for a in comp["arms"]] == ["scratch"]
    assert any(n.startswith("PIRL (from random weights) needs a pretrain run started from random weights")
               and f"#{inet} started from ImageNet weights" in n for n in comp["notes"])
    for arm in comp["arms"]:
        queue.cancel(ws, arm["job_id"])


def test_full_finetune_mode_runs_a_pirl_arm(setup):
    ws, run, _ = setup
    cid = compare.start(ws, compare.CompareRequest(labeled="lab", pretrain_jobs=[run], inits=["pirl"],
                                                   mode="finetune", folds=0, epochs=1, fractions=[1.0]))
    arm = next(c for c in compare.comparisons(ws) if c["id"] == cid)["result"]["arms"][0]
    job = queue.wait(ws, arm["job_id"], timeout_s=300)
    assert job["status"] == "succeeded", job["error"]
    assert job["result"]["runs"][0]["epochs_run"] == 1


def test_runs_saved_before_the_rotation_pretext_still_load():
    cfg = PretrainConfig.from_dict({"jigsaw_weight": 0.3, "image_size": 64})
    assert cfg.pretext_weight == 0.3 and cfg.pretext == "jigsaw"


def test_a_chosen_positive_class_orders_the_classes_of_a_new_comparison(setup, monkeypatch):
    from pirl_core.data import datasets

    ws, run, _ = setup
    monkeypatch.setattr(queue, "ensure_worker", lambda ws: None)
    datasets.set_positive(ws, "lab", "benign")
    try:
        cid = compare.start(ws, compare.CompareRequest(labeled="lab", pretrain_jobs=[run], inits=["scratch"],
                                                       folds=0, epochs=1, fractions=[1.0]))
        comp = compare.comparison(ws, cid)
        assert comp["classes"] == ["malignant", "benign"]  # the positive class last: index 1 of the model
        job = ws.store.job(comp["arms"][0]["job_id"])
        assert queue.config_of(job).classes == ["malignant", "benign"]
        queue.cancel(ws, job["id"])
        with pytest.raises(PirlError, match="is not a class of"):
            datasets.set_positive(ws, "lab", "MALIGNANT")
    finally:
        datasets.set_positive(ws, "lab", "malignant")
