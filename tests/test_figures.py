"""The words and numbers beside figures say what they show (issue: numbers a clinician can act on)."""

from pirl_core.fmt import tail
from pirl_core.models.predict import decided_probability


def test_a_cut_file_name_shows_an_ellipsis_where_it_was_cut():
    assert tail("benign/benign_00000.png", 30) == "benign/benign_00000.png"
    cut = tail("benign/benign_00000.png", 16)
    assert cut == "…" + "benign/benign_00000.png"[-15:] and len(cut) == 16 and cut.endswith("_00000.png")


def test_a_heatmap_caption_gives_the_probability_of_the_decided_class_not_the_top_one():
    # At a threshold of 0.4 for 'malignant', p(malignant) 0.405 decides malignant while 'normal' is more probable.
    row = {"file": "normal (100).png", "p(malignant)": 0.405, "p(normal)": 0.595, "decision": "malignant"}
    assert decided_probability(row) == 0.405


def test_the_positive_class_is_the_finding_not_whichever_label_sorts_second():
    from pirl_core.data.labels import class_order, positive_class

    assert positive_class(["malignant", "not-malignant"]) == "malignant"  # name order would pick not-malignant
    assert positive_class(["NORMAL", "PNEUMONIA"]) == "PNEUMONIA"
    assert positive_class(["benign", "malignant", "normal"]) == "malignant"
    assert positive_class(["non_tumour", "tumour"]) == "tumour"
    assert positive_class(["a", "b"]) == "b" and positive_class(["a", "b"], chosen="a") == "a"
    assert class_order(["malignant", "not-malignant"]) == ["not-malignant", "malignant"]
    assert class_order({"benign": 3, "malignant": 4, "normal": 5}) == ["benign", "normal", "malignant"]


def test_the_data_page_sets_the_positive_class_of_a_labeled_set(ws, tmp_path):
    from streamlit.testing.v1 import AppTest

    from pirl_core.data import ingest, sources
    from pirl_core.data.demo_data import generate
    from tests.conftest import ROOT

    generate(tmp_path / "demo", n=24, seed=2, unlabeled=0, size=48)
    folder = tmp_path / "demo" / "labeled"
    (folder / "malignant").rename(folder / "not-benign")  # a name that sorts first and is no finding word
    ingest.ingest(ws, sources.folder_source(folder, check_roots=False), "lab", folder_labels=True)
    at = AppTest.from_file(str(ROOT / "app_pages/data.py"), default_timeout=60).run()
    box = at.selectbox(key=f"positive-{ws.store.dataset('lab')['id']}")
    assert box.value == "not-benign"  # the second in name order: no class is named like a finding
    box.set_value("benign").run()
    assert not at.exception
    assert ws.store.dataset("lab")["info"]["positive"] == "benign"
    assert at.selectbox(key=f"positive-{ws.store.dataset('lab')['id']}").value == "benign"


def test_the_model_card_states_an_auc_the_exported_model_earned_on_images_it_never_saw(ws):
    import numpy as np

    from pirl_core.engine.finetune import FinetuneConfig
    from pirl_core.evaluation import compare
    from pirl_core.jobs import queue, records
    from pirl_core.models import export

    cfg = compare.FinetuneJob(labeled_dataset_id=1, labeled="lab", backbone="resnet18", image_size=32, folds=3,
                              fractions=[1.0], seed=0, finetune=FinetuneConfig(), label="scratch")
    job_id = queue.submit(ws, "finetune", cfg, start_worker=False)
    rng = np.random.default_rng(0)
    runs = []
    for fold in range(3):  # 3 folds of 20 images; the exported model is fold 1's, tested on images 0-19 only
        y = rng.integers(0, 2, 20)
        probs = np.stack([1 - (0.3 + 0.4 * y), 0.3 + 0.4 * y], 1) if fold == 0 else rng.random((20, 2))
        runs.append({"repeat": 0, "fold": fold, "fraction": 1.0, "n_train": 40,
                     "image_ids": list(range(20 * fold, 20 * fold + 20)), "y": y.tolist(), "probs": probs.tolist()})
    ws.store.update_job(job_id, result=records.dump(compare.FinetuneOutcome(["a", "b"], runs)))
    own = export._own_test(ws.store.job(job_id), {"fold": 0, "test_image_ids": list(range(20))})
    assert own["n"] == 20 and own["auc"] == 1.0  # fold 1's own predictions, not the pooled 60
    assert own["on"].startswith("its own test part (fold 1 of 3)") and "never trained on" in own["on"]


def test_each_class_of_three_gets_its_own_auc_in_the_roc_legend():
    import numpy as np
    from sklearn.metrics import roc_auc_score

    from pirl_core.evaluation.statistics import roc_area, roc_points

    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 90)
    probs = rng.dirichlet([1, 1, 1], 90)
    probs[np.arange(90), y] += rng.random(90) * np.array([0.1, 0.5, 2.0])[y]  # classes separable by degrees
    probs /= probs.sum(1, keepdims=True)
    per_class = [roc_area(roc_points(y, probs, c)) for c in range(3)]
    for c in range(3):
        assert abs(per_class[c] - roc_auc_score(y == c, probs[:, c])) < 1e-9
    assert len({round(a, 6) for a in per_class}) == 3  # three different figures, not the macro average thrice
