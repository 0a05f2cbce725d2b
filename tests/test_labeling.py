"""What to label next: the strategies on vectors where the right answer is known, labels saved as they are
given (who, when, conflicts, undo, resume), the labeled set they form, and the CLI round trip."""

import csv
import io
import json
import shutil
import zipfile

import numpy as np
import pytest

from pirl_core.cli import main
from pirl_core.data import ingest, sources
from pirl_core.engine.config import PretrainConfig
from pirl_core.errors import PirlError
from pirl_core.jobs import queue
from pirl_core.labeling import annotations, labeled_sets, simulate, strategies, suggestions
from pirl_core.workspace.folder import Workspace


def _two_clusters_and_copies(seed=0):
    """60 images around one point, 60 around another, and 12 near-identical copies of one image of the first."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(60, 16)) * 0.3
    a[:, 0] += 3
    b = rng.normal(size=(60, 16)) * 0.3
    b[:, 1] += 3
    copies = np.repeat(a[:1], 12, 0) + rng.normal(size=(12, 16)) * 1e-3
    cluster_of = list(range(132))
    for i in [0, *range(120, 132)]:
        cluster_of[i] = 0  # the original and its copies: one near-copy cluster
    return np.concatenate([a, b, copies]), cluster_of


@pytest.mark.parametrize("n", [2, 4, 8])
def test_cold_start_covers_both_clusters_and_takes_one_copy_at_most(n):
    x, cluster_of = _two_clusters_and_copies()
    rule, chosen = strategies.suggest(strategies.selection_space(x), np.full(len(x), -1), n, 2, "auto",
                                      cluster_of=cluster_of)
    idx = [s.index for s in chosen]
    assert rule == "typical" and len(set(idx)) == n
    in_a = sum(i < 60 or i >= 120 for i in idx)
    assert min(in_a, n - in_a) >= n // 3  # both clusters, about in proportion
    assert sum(cluster_of[i] == 0 for i in idx) <= 1  # the dense copies would win on typicality alone
    assert all(s.reason and s.score >= 0 for s in chosen)


def test_a_cold_batch_on_a_large_pool_weighs_a_sample_of_it_and_still_covers_both_clusters(monkeypatch):
    """The coverage rule's kernel is pool x pool (496 s for 10,000 images on this machine): beyond
    COVERAGE_SAMPLE candidates it weighs a random sample of them, and the batch is still the pool's kinds."""
    monkeypatch.setattr(strategies, "COVERAGE_SAMPLE", 40)
    x, cluster_of = _two_clusters_and_copies()
    y = np.full(len(x), -1)
    y[[1, 2]] = 0  # two labels in the first cluster
    _, chosen = strategies.suggest(strategies.selection_space(x), y, 6, 2, "typical", cluster_of=cluster_of)
    idx = [s.index for s in chosen]
    assert len(set(idx)) == 6 and not set(idx) & {1, 2}
    assert sum(60 <= i < 120 for i in idx) >= 2 and sum(cluster_of[i] == 0 for i in idx) <= 1


def test_a_cluster_with_a_labeled_member_is_not_suggested_again():
    x, cluster_of = _two_clusters_and_copies()
    y = np.full(len(x), -1)
    y[125] = 0  # one copy labeled: the original and the other copies are covered
    _, chosen = strategies.suggest(strategies.selection_space(x), y, 40, 2, "random", cluster_of=cluster_of)
    assert not {s.index for s in chosen} & {0, *range(120, 132)}


def test_warm_start_asks_where_the_probe_is_unsure():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 8))
    truth = (x[:, 0] > 0).astype(int)
    y = np.full(400, -1)
    labeled = rng.choice(400, 40, replace=False)
    y[labeled] = truth[labeled]
    space = strategies.selection_space(x)
    rule, chosen = strategies.suggest(space, y, 10, 2, "auto")
    assert rule == "uncertain"
    margin = np.abs(x[:, 0])
    picked = [s.index for s in chosen]
    assert np.median(margin[picked]) < np.median(margin[y < 0]) / 2  # near the boundary, not anywhere
    assert len(set(picked)) == 10 and not set(picked) & set(labeled)
    rule, _ = strategies.suggest(space, np.where(truth == 1, -1, y), 10, 2, "uncertain")
    assert rule == "typical"  # one class has no label yet: there is no probe to be unsure


def test_an_unknown_strategy_and_an_exhausted_pool_say_so():
    x, _ = _two_clusters_and_copies()
    with pytest.raises(PirlError, match="Unknown strategy"):
        strategies.suggest(strategies.selection_space(x), np.full(len(x), -1), 2, 2, "clever")
    with pytest.raises(PirlError, match="nothing left to suggest"):
        strategies.suggest(strategies.selection_space(x), np.zeros(len(x), int), 2, 2, "random")


def test_the_simulation_scores_chance_until_both_classes_are_found():
    rng = np.random.default_rng(0)
    y = np.array([0] * 120 + [1] * 12)
    x = rng.normal(size=(132, 8))
    x[:, 0] += 3 * y
    curves = simulate.simulate(x, y, [None] * 132, list(range(132)), names=("random", "auto"), budgets=(2, 40),
                               batch=10, seeds=2)
    assert curves.n_pool + curves.n_test == 132 and len(curves.strategies["auto"]) == 2
    assert all(len(c) == 2 for c in curves.strategies["random"])
    assert curves.mean("auto")[-1] > 0.8  # 40 labels find the rare class and separate it
    reading = simulate.half_the_labels(curves, "auto")
    assert reading == []  # 40 / 2 is not a budget here


@pytest.fixture(scope="module")
def pool(demo_dir, tmp_path_factory):
    """The demo's 24 labeled images imported as an unlabeled pool (their folders are the oracle), a planted
    near-copy, and a finished tiny pretrain run on it."""
    from PIL import Image

    root = tmp_path_factory.mktemp("labeling")
    data = root / "scans"
    shutil.copytree(demo_dir / "labeled", data)
    original = sorted((data / "benign").glob("*.png"))[0]
    twin = np.array(Image.open(original))
    twin[0, 0] = 255 - twin[0, 0]
    Image.fromarray(twin).save(data / "benign" / "twin.png")
    ws = Workspace(root / "ws", actor="ana")
    ds = ingest.ingest(ws, sources.folder_source(data, check_roots=False), "scans").dataset_id
    job = queue.submit(ws, "pretrain", PretrainConfig(image_size=32, epochs=1, batch_size=8).to_dict(), ds,
                      start_worker=False)
    queue.run_worker(ws, idle_exit_s=0)
    return ws, ds, job


def _truth(ws, dataset_id):
    return {im["id"]: im["orig_name"].split("/")[0] for im in ws.store.images(dataset_id)}


def test_labels_are_saved_as_given_and_a_batch_resumes_after_a_restart(pool, tmp_path):
    ws, ds, job = pool
    ws = Workspace(shutil.copytree(ws.root, tmp_path / "ws"), actor="ana")
    batch = suggestions.suggest(ws, ds, job, 6, ["benign", "malignant"])
    assert len(batch.items) == 6 and batch.strategy == "typical"
    names = {im["id"]: im["orig_name"] for im in ws.store.images(ds)}
    assert sum(names[i["image_id"]].endswith(("twin.png",)) or names[i["image_id"]] == "benign/benign_00000.png"
               for i in batch.items) <= 1
    truth = _truth(ws, ds)
    first, second, third = (item["image_id"] for item in batch.items[:3])
    annotations.record(ws, ds, first, truth[first], batch.classes, batch.id)
    annotations.record(ws, ds, second, None, batch.classes, batch.id)  # not sure
    again = Workspace(ws.root, actor="ana")  # a refresh, or a restarted server
    resumed = suggestions.batch(again, ds)
    assert resumed.id == batch.id and suggestions.next_item(again, resumed)["image_id"] == third
    assert annotations.undo(again, ds, batch.id)["image_id"] == second
    assert suggestions.next_item(again, resumed)["image_id"] == second
    state = annotations.state(again, ds)
    assert state.labels == {first: truth[first]} and state.annotators == ["ana"] and state.given == 1
    actions = [e["action"] for e in again.store.audit()]
    assert "label" in actions and "undo label" in actions and "suggest" in actions
    # the second batch never repeats a labeled image
    nxt = suggestions.suggest(again, ds, job, 6, batch.classes)
    assert first not in {i["image_id"] for i in nxt.items}


def test_two_annotators_who_disagree_are_both_kept_and_the_conflict_is_listed(pool, tmp_path):
    ws, ds, job = pool
    root = shutil.copytree(ws.root, tmp_path / "ws")
    ana, ben = Workspace(root, actor="ana"), Workspace(root, actor="ben")
    batch = suggestions.suggest(ana, ds, job, 4, ["benign", "malignant"])
    image = batch.items[0]["image_id"]
    annotations.record(ana, ds, image, "benign", batch.classes, batch.id)
    assert suggestions.next_item(ben, suggestions.batch(ben, ds))["image_id"] == image  # ben has his own place
    annotations.record(ben, ds, image, "malignant", batch.classes, batch.id)
    state = annotations.state(ana, ds)
    assert state.conflicts == {image: {"ana": "benign", "ben": "malignant"}} and image not in state.labels
    assert [a["label"] for a in ana.store.annotations(ds)] == ["benign", "malignant"]


def test_bad_labels_are_refused_with_the_reason(pool, tmp_path):
    ws, ds, job = pool
    ws = Workspace(shutil.copytree(ws.root, tmp_path / "ws"), actor="ana")
    with pytest.raises(PirlError, match="at least two classes"):
        suggestions.suggest(ws, ds, job, 4, [" ", ""])
    with pytest.raises(PirlError, match="no longer in"):
        annotations.record(ws, ds, 10_000, "benign", ["benign", "malignant"])
    with pytest.raises(PirlError, match="not one of"):
        annotations.record(ws, ds, ws.store.images(ds)[0]["id"], "other", ["benign", "malignant"])
    markup = annotations.check_classes(["<b>benign</b>", "[x](http://e.org)", "<b>benign</b>"])
    assert markup == ["<b>benign</b>", "[x](http://e.org)"]  # kept as typed, once; the page shows it as text
    assert ws.store.annotations(ds) == []


def test_cli_suggest_label_and_compare_round_trip(pool, tmp_path, capsys):
    ws, ds, job = pool
    root = shutil.copytree(ws.root, tmp_path / "ws")
    truth = {im["orig_name"]: im["orig_name"].split("/")[0] for im in Workspace(root).store.images(ds)}
    labeled = set()
    for _ in range(3):  # three batches of 8 label the 25 images but the planted copy
        assert main(["-w", str(root), "suggest", "--dataset", "scans", "--pretrain", str(job), "--n", "8",
                     "--classes", "benign,malignant"]) == 0
        rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
        assert len(rows) >= 1 and set(rows[0]) == {"filename", "reason", "score"}
        assert not {r["filename"] for r in rows} & labeled
        answered = tmp_path / "answered.csv"
        with open(answered, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["filename", "label"])
            writer.writerows([(r["filename"], truth[r["filename"]]) for r in rows])
        assert main(["-w", str(root), "label", "--dataset", "scans", "--csv", str(answered)]) == 0
        assert json.loads(capsys.readouterr().out)["saved"] == len(rows)
        labeled |= {r["filename"] for r in rows}
    assert main(["-w", str(root), "labeled-set", "--dataset", "scans", "--compare", str(job),
                 "--inits", "scratch,pirl"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["dataset"] == f"scans · {len(labeled)} labels" and sum(report["labels"].values()) == len(labeled)
    ws2 = Workspace(root)
    built = ws2.store.dataset(report["dataset"])
    assert built["info"]["from_labels"]["annotators"] == 1 and built["info"]["from_labels"]["strategies"]
    assert all(im["split"] for im in ws2.store.images(built["id"]))  # split like any imported labeled set
    from pirl_core.evaluation import compare

    arms = compare.comparison(ws2, report["comparison"])["arms"]
    for arm in arms:
        assert queue.wait(ws2, arm["job_id"], timeout_s=300)["status"] == "succeeded"
    points = labeled_sets.curve(ws2, ds)
    assert {p["labels"] for p in points} == {len(labeled)} and all(p["ci_low"] <= p["auc"] <= p["ci_high"]
                                                                  for p in points)
    from pirl_core.models import export

    bundle = export.export_finetune(ws2, next(a["job_id"] for a in arms if a["init"] == "pirl"))
    with zipfile.ZipFile(bundle["path"]) as zf:  # the model card says where its labels came from
        origin = json.loads(zf.read("model_card.json"))["training_data"]["labels"]
        assert f"{len(labeled)} labels by 1 annotator(s)" in zf.read("model_card.md").decode()
    assert origin["labels"] == len(labeled) and origin["annotators"] == 1 and origin["chosen_by"]


@pytest.mark.browser
def test_label_a_batch_with_the_keyboard_reload_mid_batch_and_find_every_label(pool, app_server, page, tmp_path):
    from tests.conftest import assert_no_exception, wait_for_app

    ws, ds, job = pool
    root = shutil.copytree(ws.root, tmp_path / "ws")
    local = Workspace(root)  # the app without sign-in labels as the user running it
    batch = suggestions.suggest(local, ds, job, 4, ["benign", "<b>malignant</b>"])
    server = app_server(root)
    page.goto(server.url + "/label")
    wait_for_app(page)
    page.get_by_text("0 of 4 answered").wait_for(timeout=120_000)  # the first run imports torch: slow when loaded
    assert page.get_by_role("button", name="2 · <b>malignant</b>").count() == 1  # typed markup shows as text

    def press(key, answered):
        page.keyboard.press(key)
        page.get_by_text(f"{answered} of 4 answered").wait_for(timeout=60_000)
        wait_for_app(page)

    press("1", 1)
    press("2", 2)
    page.reload()  # a refresh mid-batch resumes where it was
    wait_for_app(page)
    page.get_by_text("2 of 4 answered").wait_for(timeout=120_000)
    press("s", 3)
    press("u", 2)
    press("1", 3)
    page.keyboard.press("2")
    page.get_by_text("This batch is done").wait_for(timeout=30_000)
    assert_no_exception(page)
    given = [(a["image_id"], a["label"]) for a in Workspace(root).store.annotations(ds)]
    order = [item["image_id"] for item in batch.items]
    assert given == list(zip(order, ["benign", "<b>malignant</b>", "benign", "<b>malignant</b>"]))


def test_the_label_page_for_a_viewer_shows_progress_and_disagreements_but_no_label_buttons(pool, tmp_path,
                                                                                         monkeypatch):
    from streamlit.testing.v1 import AppTest

    from pirl_core.access import users
    from tests.conftest import ROOT

    ws, ds, job = pool
    root = shutil.copytree(ws.root, tmp_path / "ws")
    monkeypatch.setenv("PIRL_HOME", str(root))
    ana, ben = Workspace(root, actor="ana"), Workspace(root, actor="ben")
    batch = suggestions.suggest(ana, ds, job, 4, ["benign", "malignant"])
    image = batch.items[0]["image_id"]
    annotations.record(ana, ds, image, "benign", batch.classes, batch.id)
    annotations.record(ben, ds, image, "malignant", batch.classes, batch.id)
    users.add_user(ana, "ana", "a long enough password", "editor")
    users.add_user(ana, "victor", "a long enough password", "viewer")
    pages = {}
    for who in ("ana", "victor"):
        at = AppTest.from_file(str(ROOT / "app_pages/label.py"), default_timeout=60)
        at.session_state["pirl_user"] = who
        pages[who] = at.run()
        assert not at.exception
        assert [m.value for m in at.metric] == ["0", "2", "1"]  # agreed, annotators, disagreements
        table = at.dataframe[0].value
        assert list(table.columns) == ["image", "label by ana", "label by ben"]
    assert [b.label for b in pages["ana"].button if "·" in b.label] == ["1 · benign", "2 · malignant"]
    assert not [b for b in pages["victor"].button if b.label.startswith("1 ·")]
    assert any("Viewers see the progress" in i.value for i in pages["victor"].info)


def test_the_label_page_draws_the_simulated_strategies_of_a_labeled_set(pool, demo_dir, tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from tests.conftest import ROOT

    ws, ds, job = pool
    root = shutil.copytree(ws.root, tmp_path / "ws")
    monkeypatch.setenv("PIRL_HOME", str(root))
    local = Workspace(root)
    lab = ingest.ingest(local, sources.folder_source(demo_dir / "labeled", check_roots=False), "lab",
                        folder_labels=True).dataset_id
    sim = simulate.start_simulation(local, lab, job, seeds=1)
    queue.run_worker(local, idle_exit_s=0)
    result = queue.result_of(local.store.job(sim))
    assert set(result.strategies) == {"random", "typical", "uncertain", "auto"}
    assert all(len(per_seed) == 1 and len(per_seed[0]) == len(result.budgets)
               for per_seed in result.strategies.values())
    assert result.notes  # 24 images: the larger budgets use the whole pool, and the page says so
    at = AppTest.from_file(str(ROOT / "app_pages/label.py"), default_timeout=60).run()
    assert not at.exception
    assert any("letting the app choose" in m.value for m in at.markdown)
    assert any("budgets above it use them all" in c.value for c in at.caption)
