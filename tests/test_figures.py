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
