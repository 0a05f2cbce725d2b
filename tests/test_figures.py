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
