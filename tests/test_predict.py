"""Predictions with heatmaps: Grad-CAM on a network whose answer is known, the Predict service and page."""

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest
from torch import nn

from pirl_core.engine.gradcam import gradcam, last_spatial_layer
from pirl_core.evaluation import compare
from pirl_core.jobs import queue
from pirl_core.models import export, familiarity, predict
from tests.conftest import ROOT, assert_no_exception, compared_workspace, uploader, wait_for_app


class BrightSpot(nn.Module):
    """Class 0 scores the bright pixels, class 1 the dark ones: Grad-CAM of class 0 must peak on the spot."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1, bias=False)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.weight[0] = 1.0
            self.conv.weight[1] = -1.0
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x):
        return self.pool(torch.relu(self.conv(x))).flatten(1)


def test_gradcam_peaks_where_the_answer_is():
    x = torch.zeros(2, 3, 32, 32)
    x[0, :, 2:10, 2:10] = 1.0  # top left
    x[1, :, 20:28, 22:30] = 1.0  # bottom right
    heat = gradcam(BrightSpot(), x, 0)
    assert heat.shape == (2, 32, 32) and float(heat.max()) == pytest.approx(1.0) and float(heat.min()) >= 0
    assert heat[0, 2:10, 2:10].min() > 0.99 and heat[0, 20:, 20:].max() < 0.01
    assert heat[1, 20:28, 22:30].min() > 0.99 and heat[1, :10, :10].max() < 0.01


def test_the_heatmap_layer_is_the_last_feature_map_of_real_backbones():
    from pirl_core.engine.backbones import build_backbone
    from pirl_core.engine.finetune import Classifier

    model = Classifier(build_backbone("resnet18"), 2).eval()
    assert last_spatial_layer(model, torch.zeros(1, 3, 64, 64)) is model.backbone.trunk.layer4


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """40 labeled images: with 3 folds each model trains on ~13 of a class, enough to choose a threshold on its
    own validation predictions (compare.MIN_PER_CLASS)."""
    from pirl_core.data import demo_data

    demo = tmp_path_factory.mktemp("demo40")
    demo_data.generate(demo, n=40, seed=1, unlabeled=48, size=64)
    ws, run, cid, arms = compared_workspace(tmp_path_factory.mktemp("predict") / "ws", demo, folds=3, mode="linear")
    return ws, arms[1]["job_id"], cid


def _png(path) -> bytes:
    return path.read_bytes()


def test_predictions_decide_at_the_comparisons_threshold_and_carry_heatmaps(finished, demo_dir):
    ws, job_id, _ = finished
    assert f"job:{job_id}" in [s["key"] for s in predict.sources(ws)]
    model = predict.load(ws, f"job:{job_id}")
    assert model.threshold == compare.decision_threshold(ws, job_id) and 0 <= model.threshold["value"] <= 1
    files = sorted((demo_dir / "labeled").rglob("*.png"))[:5]
    result = predict.predict(model, [(f.name, _png(f)) for f in files] + [("broken.png", b"not an image")])
    assert [s["file"] for s in result.skipped] == ["broken.png"]
    assert len(result.rows) == len(result.images) == len(result.heatmaps) == 5
    for row, image, heat in zip(result.rows, result.images, result.heatmaps):
        p = row["p(malignant)"]
        assert row["p(benign)"] + p == pytest.approx(1.0, abs=1e-5)
        assert row["decision"] == ("malignant" if p >= model.threshold["value"] else "benign")
        assert heat.shape == image.shape[:2] and 0 <= heat.min() and heat.max() <= 1
    shown = predict.overlay(result.images[0], result.heatmaps[0])
    assert shown.shape == result.images[0].shape and shown.dtype == np.uint8


def test_the_threshold_is_chosen_on_validation_predictions_never_on_test_images(finished):
    ws, job_id, comparison_id = finished
    chosen = compare.decision_threshold(ws, job_id)
    assert chosen is not None and "never on test images" in chosen["how"]
    job = ws.store.job(job_id)
    flipped = [{**r, "probs": (1 - np.asarray(r["probs"])).tolist()} for r in job["result"]["runs"]]
    try:  # other test predictions, summarised again: the threshold does not move
        ws.store.update_job(job_id, result={**job["result"], "runs": flipped})
        compare.summarize(ws, comparison_id)
        assert compare.decision_threshold(ws, job_id) == chosen
    finally:
        ws.store.update_job(job_id, result=job["result"])
        compare.summarize(ws, comparison_id)


def test_the_bundle_states_the_threshold_and_pirl_predict_uses_it(finished, demo_dir, tmp_path):
    ws, job_id, _ = finished
    export.export_finetune(ws, job_id, tmp_path / "b.zip")
    _, meta = export.open_bundle(tmp_path / "b.zip")
    threshold = meta["card"]["decision_threshold"]
    assert threshold == compare.decision_threshold(ws, job_id)
    files = sorted((demo_dir / "labeled").rglob("*.png"))[:6]
    for row in export.predict_files(tmp_path / "b.zip", files):
        assert row["predicted"] == ("malignant" if row["p_malignant"] >= threshold["value"] else "benign")
    assert f"job:{job_id}" in [s["key"] for s in predict.sources(ws)]
    bundle = next(s["key"] for s in predict.sources(ws) if s["key"].startswith("bundle:"))
    assert predict.load(ws, bundle).threshold == threshold


def test_the_predict_page_names_the_model_and_its_decision_rule(finished, monkeypatch):
    ws, job_id, _ = finished
    monkeypatch.setenv("PIRL_HOME", str(ws.root))
    at = AppTest.from_file(str(ROOT / "app_pages/predict.py"), default_timeout=60)
    at.run()
    assert not at.exception
    assert any("Decision: 'malignant' when its probability is at least" in c.value for c in at.caption)


@pytest.mark.browser
def test_predict_in_the_browser_shows_probabilities_decisions_and_heatmaps(finished, demo_dir, app_server, page,
                                                                           tmp_path):
    from playwright.sync_api import expect

    ws, job_id, _ = finished
    server = app_server(ws.root)
    page.goto(server.url + "/predict")
    wait_for_app(page)
    import shutil

    folder = tmp_path / "new-scans"
    folder.mkdir()
    for f in sorted((demo_dir / "labeled").rglob("*.png"))[:3]:
        shutil.copy(f, folder / f.name)
    (folder / "broken.png").write_bytes(b"not an image")
    page.get_by_text("a folder").click(timeout=120_000)  # the first run loads torch and the model: slow when loaded
    page.get_by_text("A folder of images").wait_for()
    uploader(page, "A folder of images").set_input_files(str(folder))
    page.get_by_text("Where the model looked").wait_for(timeout=60_000)
    wait_for_app(page)
    page.get_by_text("1 file(s) could not be read").wait_for()
    page.get_by_text("3 image(s):").wait_for()
    page.locator('[data-testid="stImage"] img').nth(2).wait_for(timeout=30_000)  # three images with heatmaps
    assert page.locator('[data-testid="stImage"] img').count() == 3
    expect(page.get_by_role("button", name="Download the table (CSV)")).to_have_count(1)  # retried: a busy machine
    assert_no_exception(page)


def test_the_compare_page_opens_at_the_threshold_chosen_on_validation_predictions(finished, monkeypatch):
    ws, _, comparison_id = finished
    monkeypatch.setenv("PIRL_HOME", str(ws.root))
    at = AppTest.from_file(str(ROOT / "app_pages/compare.py"), default_timeout=120).run()
    assert not at.exception, at.exception
    arm = at.selectbox(key=f"thr-arm-{comparison_id}").value
    job_id = next(a["job_id"] for a in compare.comparison(ws, comparison_id)["arms"] if a["label"] == arm)
    rule = compare.decision_threshold(ws, job_id)
    assert at.slider(key=f"thr-{comparison_id}-{arm}").value == pytest.approx(round(rule["value"], 2))
    assert any("never on test images" in c.value and "which it was not chosen on" in c.value for c in at.caption)


def test_the_familiarity_score_flags_features_off_or_far_along_the_training_distribution():
    g = torch.Generator().manual_seed(0)
    basis = torch.linalg.qr(torch.randn(64, 5, generator=g))[0].T  # training features live near a 5-d subspace

    def sample(n, scale=1.0):
        return (torch.randn(n, 5, generator=g) * scale) @ basis + 0.05 * torch.randn(n, 64, generator=g)

    ref = familiarity.from_features(sample(400), sample(100))
    assert sum(familiarity.unlike(ref, sample(500))) <= 15  # about 1 in 100 of like features
    off = sample(50) + 1.0 * torch.nn.functional.normalize(torch.randn(50, 64, generator=g), dim=1)
    assert all(familiarity.unlike(ref, off))  # off the subspace, however near its centre
    assert all(familiarity.unlike(ref, sample(50, scale=20.0)))  # far out along it
    assert familiarity.unlike(None, off) == [False] * 50  # an old bundle without statistics flags nothing


def test_the_look_of_the_pixels_flags_another_modality_whose_features_pass():
    rng = np.random.default_rng(0)

    def ultrasound(n):  # dark, speckled
        return np.clip(rng.gamma(2.0, 25, (n, 48, 48, 1)), 0, 255).repeat(3, -1).astype(np.uint8)

    def xray(n):  # bright, smooth
        rows = np.linspace(0, 1, 48)[None, :, None, None]
        return np.clip(150 + 80 * np.sin(6 * rows) + rng.normal(0, 3, (n, 48, 48, 1)), 0, 255).repeat(3, -1) \
            .astype(np.uint8)

    g = torch.Generator().manual_seed(0)
    ref = familiarity.from_features(torch.randn(400, 8, generator=g), torch.randn(100, 8, generator=g))
    ref["looks"] = familiarity.look_reference(ultrasound(400), ultrasound(100))
    like = torch.zeros(50, 8)  # features at the centre of the training images': the feature check passes them
    assert familiarity.unlike(ref, like) == [False] * 50
    assert sum(familiarity.unlike(ref, like, ultrasound(50))) <= 2  # the same kind of scan passes
    assert all(familiarity.unlike(ref, like, xray(50)))  # another modality does not


def test_predict_flags_unlike_inputs_and_its_own_training_images_and_bundles_keep_the_statistics(finished,
                                                                                                 tmp_path):
    import io

    from PIL import Image

    ws, job_id, _ = finished
    buf = io.BytesIO()
    Image.fromarray(np.zeros((96, 96, 3), np.uint8)).save(buf, "PNG")
    unlike = [("black.png", buf.getvalue())]  # a blank frame: nothing like the lesion photographs it learned
    test_ids = set(ws.store.job(job_id)["result"]["runs"][0]["image_ids"])
    rows = ws.store.images(ws.store.job(job_id)["dataset_id"])
    trained = [r for r in rows if r["id"] not in test_ids][:4]
    unseen = [r for r in rows if r["id"] in test_ids][:4]
    own = [(r["orig_name"], (ws.root / r["path"]).read_bytes()) for r in trained + unseen]
    export.export_finetune(ws, job_id, tmp_path / "b.zip")
    bundle = next(s["key"] for s in predict.sources(ws) if s["key"].startswith("bundle:"))
    for key in (f"job:{job_id}", bundle):
        result = predict.predict(predict.load(ws, key), own + unlike)
        flags = [r["unlike its training images"] for r in result.rows]
        assert flags[-1] and sum(flags[:-1]) <= 1, (key, flags)
        if key.startswith("job:"):  # the workspace knows which images it trained on; a bundle keeps no trace
            assert [r["one of its training images"] for r in result.rows[:8]] == [True] * 4 + [False] * 4
    images = export.open_bundle(tmp_path / "b.zip")[1]["card"]["training_data"]["images"]
    assert images["synthetic"] is False and images["images"] > 0 and 0 < images["pixel_mean"] < 255


def test_a_workspace_models_reference_is_measured_once_and_kept_beside_it(finished, monkeypatch):
    """Each server start measured a workspace model's training images through the network again on its first
    load (16 s for a BUSI model): measured once, the reference is read from beside the model after, the same
    figures (a damaged file is measured again); Compare, which only draws heatmaps with the model, does not
    measure it at all."""
    ws, job_id, _ = finished
    kept = familiarity.beside(queue.result_of(ws.store.job(job_id)).model)
    kept.unlink(missing_ok=True)
    measured, real = [], familiarity.features
    monkeypatch.setattr(familiarity, "features", lambda *a, **k: measured.append(1) or real(*a, **k))
    assert predict.load(ws, f"job:{job_id}", familiar=False).familiarity is None
    assert not measured and not kept.exists()
    first = predict.load(ws, f"job:{job_id}").familiarity
    assert measured and kept.exists()
    measured.clear()
    again = predict.load(ws, f"job:{job_id}").familiarity
    assert not measured and again["limit"] == first["limit"] and torch.equal(again["mean"], first["mean"])
    kept.write_bytes(b"cut short")  # a damaged file is measured again, not an error on the page
    assert predict.load(ws, f"job:{job_id}").familiarity["limit"] == first["limit"] and measured


def test_heatmaps_of_a_workspace_models_images_are_computed_once_and_kept_beside_it(finished, monkeypatch):
    """Compare's mistakes show Grad-CAM heatmaps; computing them was most of its first visit after a restart
    (7.3 s under load): each image and class is computed once, kept beside the model, and read after."""
    ws, job_id, _ = finished
    model = predict.load(ws, f"job:{job_id}", familiar=False)
    images = np.random.default_rng(0).integers(0, 255, (3, 64, 64, 3), dtype=np.uint8)
    first = predict.explain(ws, job_id, model, images, [11, 12, 13], [0, 1, 0])
    assert len(first) == 3 and first[0].shape == (64, 64, 3) and first[0].dtype == np.uint8
    monkeypatch.setattr(predict, "gradcam", lambda *a, **k: pytest.fail("the network ran for a kept heatmap"))
    again = predict.explain(ws, job_id, model, images[1:], [12, 13], [1, 0])
    assert all(np.array_equal(a, b) for a, b in zip(first[1:], again))
    monkeypatch.undo()
    predict.heatmaps_file(ws, job_id).write_bytes(b"cut short")  # damaged: computed again, not a page error
    assert np.array_equal(predict.explain(ws, job_id, model, images[:1], [11], [0])[0], first[0])
