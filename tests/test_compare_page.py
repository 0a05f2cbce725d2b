import pytest
from streamlit.testing.v1 import AppTest

from pirl_core.evaluation import compare
from pirl_core.jobs import queue
from tests.conftest import ROOT, assert_no_exception, compared_workspace, wait_for_app


@pytest.fixture(scope="module")
def filled(demo_dir, tmp_path_factory):
    ws, run, cid, _ = compared_workspace(tmp_path_factory.mktemp("cmp-page") / "ws", demo_dir, folds=3,
                                         fractions=[0.5, 1.0], epochs=3)
    return ws, run, cid


def jobs_model_test_ids(ws, job_id):
    from pirl_core.models import predict

    return predict.load(ws, f"job:{job_id}").test_image_ids


def _page(ws, monkeypatch):
    monkeypatch.setenv("PIRL_HOME", str(ws.root))
    return AppTest.from_file(str(ROOT / "app_pages/compare.py"), default_timeout=120)


def test_compare_page_needs_labeled_data_and_a_run(ws):
    at = AppTest.from_file(str(ROOT / "app_pages/compare.py"), default_timeout=60).run()
    assert not at.exception and "labeled dataset" in at.info[0].value


def test_finished_comparison_shows_roc_table_threshold_and_efficiency(filled, monkeypatch):
    ws, run, cid = filled
    at = _page(ws, monkeypatch).run()
    assert not at.exception, at.exception
    table = at.dataframe[0].value
    assert table["initialisation"].tolist() == ["scratch", f"PIRL #{run}"]
    assert "95% CI" in table.columns and "vs scratch" in table.columns
    verdicts = [e.value for e in (*at.success, *at.info, *at.warning) if e.value.startswith(f"PIRL #{run} vs scratch")]
    assert len(verdicts) == 1 and "95% CI" in verdicts[0] and "the interval" in verdicts[0]  # the verdict on top
    saved = [e.value for e in at.info if e.value.startswith("With ") and f"PIRL #{run} reaches" in e.value]
    assert len(saved) == 1 and "scratch" in saved[0]  # labels saved, in one sentence
    by_fraction = [d.value for d in at.dataframe if "labels scratch needs" in d.value.columns]
    assert len(by_fraction) == 1 and by_fraction[0]["share of labels"].tolist() == ["50%", "100%"]
    assert len(at.get("plotly_chart")) >= 2  # ROC and label efficiency
    assert [m.label for m in at.metric][:2] == ["Sensitivity", "Specificity"]
    summary = compare.summarize(ws, cid)
    best = max(summary["table"], key=lambda e: e["auc"])["arm"]
    assert at.selectbox(key=f"thr-arm-{cid}").value == best  # the threshold section opens on the best arm
    assert any("Youden index" in c.value for c in at.caption)  # and says how its threshold was chosen
    titles = [c.proto.spec for c in at.get("plotly_chart")]
    assert any("Calibration" in t for t in titles)
    at.selectbox(key=f"thr-arm-{cid}").set_value("scratch").run()
    at.slider(key=f"thr-{cid}-scratch").set_value(0.0).run()
    assert at.metric[0].value == "100.0%"  # everything called positive
    mistakes = [e.label for e in at.expander if "image(s)" in e.label]
    n_benign = sum(1 for y in summary["predictions"]["scratch"]["y"] if y == 0)
    assert mistakes == [f"Called malignant, truly benign: {n_benign} image(s)",
                        "Called benign, truly malignant: 0 image(s)"]
    # The mistakes of the exported model's own test part carry its heatmap; the other folds' are thumbnails.
    scratch_job = next(a["job_id"] for a in compare.comparison(ws, cid)["arms"] if a["label"] == "scratch")
    own_test = set(jobs_model_test_ids(ws, scratch_job))
    captions = [img.caption.replace("\\", "") for element in at.get("image") for img in element.proto.imgs]
    from pirl_core.fmt import tail

    benign_names = {tail(r["orig_name"], 20): r["id"] for r in ws.store.images(compare.comparison(ws, cid)["config"][
        "labeled_dataset_id"]) if r["label"] == "benign"}
    marked = {c.split(" · ")[0]: c.endswith("· heatmap") for c in captions}
    assert marked and any(marked.values()) and not all(marked.values())
    assert all(marked[name] == (benign_names[name] in own_test) for name in marked)
    # resnet18 has no offline ImageNet weights: those starts are unticked, with one short line
    assert at.multiselect(key="cmp-inits").value == ["scratch", "pirl"]
    assert any("ImageNet starts are unticked" in c.value for c in at.caption) and not any(
        "ImageNet" in w.value for w in at.warning)


def test_start_a_comparison_from_the_form(filled, monkeypatch):
    ws, run, _ = filled
    before = len(compare.comparisons(ws))
    monkeypatch.setattr(queue, "ensure_worker", lambda ws: None)
    at = _page(ws, monkeypatch).run()
    at.multiselect(key="cmp-inits").set_value(["scratch", "pirl"])
    at.number_input(key="cmp-folds").set_value(0)
    at.button[0].click().run()
    assert not at.exception
    assert any("queued: one job per initialisation" in s.value for s in at.success)
    assert len(compare.comparisons(ws)) == before + 1
    for job in ws.store.jobs(kind="finetune", statuses=["queued"]):
        queue.cancel(ws, job["id"])


def test_one_imagenet_pirl_run_offers_a_second_seed_to_read_together(demo_dir, tmp_path, monkeypatch):
    import time

    from pirl_core.data import ingest, sources
    from pirl_core.engine.config import PretrainConfig
    from pirl_core.workspace.folder import Workspace

    ws = Workspace(tmp_path / "ws")
    pool = ingest.ingest(ws, sources.folder_source(demo_dir / "unlabeled", check_roots=False), "pool").dataset_id
    ingest.ingest(ws, sources.folder_source(demo_dir / "labeled", check_roots=False), "lab", folder_labels=True)
    run = queue.submit(ws, "pretrain", PretrainConfig(backbone="efficientnet_lite0", image_size=96, epochs=1,
                                                      pretrained_imagenet=True, seed=3).to_dict(), pool,
                       start_worker=False)
    (tmp_path / "last.pt").write_bytes(b"")  # finished, as far as the form can tell: it reads settings, not weights
    ws.store.update_job(run, status="succeeded", checkpoint=str(tmp_path / "last.pt"), started_at=time.time() - 60,
                        finished_at=time.time())
    monkeypatch.setattr(queue, "ensure_worker", lambda ws: None)
    at = _page(ws, monkeypatch).run()
    assert not at.exception and at.checkbox(key="cmp-together").value  # several runs are read together by default
    offer = [c.value for c in at.caption if f"A second ImageNet+PIRL run like #{run}" in c.value]
    assert len(offer) == 1 and "It takes about" in offer[0]
    at.button(key="cmp-start-seed").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    queued = ws.store.jobs(kind="pretrain", statuses=["queued"])
    assert len(queued) == 1 and queue.config_of(queued[0]).seed == 4 and queued[0]["dataset_id"] == pool
    assert any(f"Queued pretrain run #{queued[0]['id']}" in s.value for s in at.success)
    assert not [b for b in at.run().button if b.key == "cmp-start-seed"]  # not twice: the second run is on its way


def test_a_linear_comparison_in_progress_charts_its_probes_not_epochs(filled, monkeypatch):
    ws, run, _ = filled
    monkeypatch.setattr(queue, "ensure_worker", lambda ws: None)
    cid = compare.start(ws, compare.CompareRequest(labeled="lab", pretrain_jobs=[run], inits=["scratch"],
                                                   mode="linear", folds=0, fractions=[1.0]))
    try:
        at = _page(ws, monkeypatch)
        at.session_state["cmp-open"] = cid
        at.run()
        assert not at.exception
        titles = " ".join(c.proto.spec for c in at.get("plotly_chart"))
        assert "Each linear probe fitted so far" in titles and "epoch" not in titles
    finally:
        for job in ws.store.jobs(kind="finetune", statuses=["queued"]):
            queue.cancel(ws, job["id"])


@pytest.mark.browser
def test_compare_in_the_browser_runs_and_shows_roc_and_table(filled, app_server, page, tmp_path):
    ws, run, _ = filled
    server = app_server(ws.root)
    page.goto(server.url + "/compare")
    wait_for_app(page)
    page.get_by_role("button", name="Compare", exact=True).click()
    page.get_by_text("queued: one job per initialisation").wait_for(timeout=30_000)
    # the new comparison finishes in the background and its results appear without a reload
    page.get_by_text("Download results (CSV)").wait_for(timeout=600_000)  # a busy machine: minutes
    page.locator(".js-plotly-plot").first.wait_for()
    page.locator(".js-plotly-plot .legendtext", has_text="(AUC").first.wait_for(timeout=30_000)  # ROC legend
    page.locator('[data-testid="stDataFrame"]').first.wait_for()  # the AUC table (a canvas grid)
    assert_no_exception(page)
    page.screenshot(path=str(tmp_path / "compare.png"), full_page=True)


def test_three_classes_threshold_calibration_and_mistakes_follow_the_chosen_class(tmp_path_factory, monkeypatch):
    from pirl_core.data import demo_data

    demo = tmp_path_factory.mktemp("demo3")
    demo_data.generate(demo, n=30, classes=3, unlabeled=30, size=48)
    ws, _, cid, _ = compared_workspace(tmp_path_factory.mktemp("cmp3") / "ws", demo, folds=3)
    at = _page(ws, monkeypatch).run()
    assert not at.exception, at.exception
    classes = compare.summarize(ws, cid)["classes"]
    assert len(classes) == 3
    shown = classes.index("atypical")
    at.selectbox(key=f"cls-{cid}").set_value(shown).run()
    assert not at.exception, at.exception
    assert any(h.value == "At a threshold: atypical against the other classes" for h in at.subheader)
    assert any("for atypical against the other classes" in c.value for c in at.caption)
    at.selectbox(key=f"thr-arm-{cid}").set_value("scratch").run()
    at.slider(key=f"thr-{cid}-scratch-{shown}").set_value(0.0).run()
    assert not at.exception, at.exception
    assert [m.value for m in at.metric][:2] == ["100.0%", "0.0%"]  # everything called atypical
    y = compare.summarize(ws, cid)["predictions"]["scratch"]["y"]
    mistakes = [e.label for e in at.expander if "image(s)" in e.label]
    assert mistakes == [f"Called atypical, truly another class: {sum(v != shown for v in y)} image(s)",
                        "Called another class, truly atypical: 0 image(s)"]
    titles = [c.proto.spec for c in at.get("plotly_chart")]
    assert any("predicted probability of atypical" in t for t in titles)  # calibration of the chosen class
