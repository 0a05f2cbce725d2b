import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from pirl_core.evaluation.statistics import (
    auc_with_ci,
    paired_bootstrap_p,
    roc_points,
    threshold_metrics,
    youden_threshold,
)


def _probs(score):
    score = np.asarray(score, dtype=float)
    return np.stack([1 - score, score], axis=1)


def test_auc_matches_scikit_learn_binary_and_multiclass():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    s = np.clip(y * 0.3 + rng.random(200) * 0.7, 0, 1)
    r = auc_with_ci(y, _probs(s), n_boot=200)
    assert r["auc"] == pytest.approx(roc_auc_score(y, s))
    assert r["ci_low"] < r["auc"] < r["ci_high"]
    y3 = rng.integers(0, 3, 300)
    p3 = rng.dirichlet([1, 1, 1], 300)
    p3[np.arange(300), y3] += 0.5
    p3 /= p3.sum(1, keepdims=True)
    assert auc_with_ci(y3, p3, n_boot=50)["auc"] == pytest.approx(roc_auc_score(y3, p3, multi_class="ovr"))


def test_ci_covers_the_true_auc_at_about_its_nominal_rate():
    # Scores N(0,1) vs N(d,1): true AUC = Phi(d / sqrt(2)).
    from math import erf, sqrt

    d = 1.0
    true_auc = 0.5 * (1 + erf(d / sqrt(2) / sqrt(2)))
    rng = np.random.default_rng(1)
    hits, trials = 0, 40
    for t in range(trials):
        y = np.array([0] * 60 + [1] * 60)
        s = 1 / (1 + np.exp(-(rng.normal(0, 1, 120) + d * y)))
        r = auc_with_ci(y, _probs(s), n_boot=150, seed=t)
        hits += r["ci_low"] <= true_auc <= r["ci_high"]
    assert 0.85 <= hits / trials <= 1.0


def test_paired_test_p_near_1_for_identical_predictors_small_for_very_different():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 150)
    good = np.clip(y * 0.5 + rng.random(150) * 0.5, 0, 1)
    assert paired_bootstrap_p(y, _probs(good), _probs(good), n_boot=300)["p_value"] > 0.95
    noise = rng.random(150)
    assert paired_bootstrap_p(y, _probs(good), _probs(noise), n_boot=300)["p_value"] < 0.01


def test_threshold_metrics_and_confusion_matrix():
    y = np.array([0, 0, 0, 1, 1])
    s = np.array([0.1, 0.6, 0.2, 0.7, 0.4])
    m = threshold_metrics(y, _probs(s), 0.5)
    assert m["confusion"] == [[2, 1], [1, 1]]
    assert m["sensitivity"] == 0.5 and m["specificity"] == pytest.approx(2 / 3)
    # Youden's J: at 0.4 both positives are called and 1 of 3 negatives (J = 2/3), the best cut here.
    assert youden_threshold(y, _probs(s)) == pytest.approx(0.4)
    roc = roc_points(y, _probs(s))
    assert roc["tpr"][roc["thresholds"].index(0.4)] == 1 and roc["fpr"][roc["thresholds"].index(0.4)] == 1 / 3


def test_verdict_sentences_say_what_the_interval_means():
    from pirl_core.evaluation.statistics import format_p, verdict

    better = verdict("PIRL", "ImageNet", {"difference": 0.028, "ci_low": 0.0003, "ci_high": 0.056, "p_value": 0.049},
                     2000)
    assert better == ("PIRL vs ImageNet: AUC +0.028 (95% CI +0.0003 to +0.056, p 0.049); PIRL is better: "
                      "the interval excludes zero.")
    unclear = verdict("PIRL", "scratch", {"difference": 0.01, "ci_low": -0.02, "ci_high": 0.04, "p_value": 0.5}, 2000)
    assert unclear.endswith("no difference shown: the interval includes zero.")
    worse = verdict("PIRL", "scratch", {"difference": -0.05, "ci_low": -0.08, "ci_high": -0.02, "p_value": 0.0004},
                    2000)
    assert "p < 0.001" in worse and "PIRL is worse" in worse
    assert format_p(0.0123, 2000) == "0.012"


def test_errors_at_a_threshold_most_confident_first():
    from pirl_core.evaluation.statistics import errors_at

    y = np.array([0, 0, 1, 1, 0, 1])
    p1 = np.array([0.9, 0.6, 0.2, 0.8, 0.1, 0.45])
    found = errors_at(y, np.stack([1 - p1, p1], 1), 0.5)
    assert found == {"false_positives": [0, 1], "false_negatives": [2, 5]}


def test_calibration_of_calibrated_and_overconfident_probabilities():
    from pirl_core.evaluation.statistics import calibration

    rng = np.random.default_rng(0)
    p = rng.uniform(0, 1, 20000)
    y = (rng.uniform(0, 1, p.size) < p).astype(int)  # outcomes drawn with the stated probability
    c = calibration(y, np.stack([1 - p, p], 1))
    assert len(c["predicted"]) == 10 and sum(c["count"]) == p.size
    assert np.allclose(c["predicted"], c["observed"], atol=0.03)
    sharp = np.where(p > 0.5, 0.99, 0.01)  # overconfident: says 0.99 where 3 in 4 happen
    c = calibration(y, np.stack([1 - sharp, sharp], 1), bins=2)
    assert c["predicted"][1] == pytest.approx(0.99) and c["observed"][1] == pytest.approx(0.75, abs=0.02)


def test_labels_saved_reads_the_baseline_curve_horizontally():
    from pirl_core.evaluation.labels_saved import BEYOND, labels_saved, labels_to_reach, sentence

    curve = [(50, 0.60), (100, 0.70), (200, 0.80)]
    assert labels_to_reach(curve, 0.75) == 150  # between measured points: interpolated
    assert labels_to_reach(curve, 0.55) == 50  # reached at the first point: no extrapolation below it
    assert labels_to_reach(curve, 0.85) == BEYOND
    # an arm whose 10% model separates the classes as well as the baseline's 100% model
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 100)
    noisy = {0.1: 2.0, 0.5: 1.0, 1.0: 0.5}  # the baseline's noise at each fraction: less with more labels

    def probs(noise):
        score = y + rng.normal(0, noise, len(y))
        p1 = 1 / (1 + np.exp(-score))
        return np.stack([1 - p1, p1], 1)

    baseline = {f: probs(n) for f, n in noisy.items()}
    arm = {0.1: baseline[1.0], 1.0: probs(0.2)}
    points = labels_saved(y, arm, baseline, {0.1: 20, 1.0: 200}, {0.1: 20, 0.5: 100, 1.0: 200}, n_boot=50)
    assert points[0]["baseline_labels"] == pytest.approx(200, rel=0.05)
    assert points[0]["low"] <= points[0]["baseline_labels"] <= points[0]["high"]
    assert points[1]["baseline_labels"] == BEYOND  # better than the baseline with all its labels
    text = sentence("ImageNet+PIRL", "ImageNet", points[0], 200)
    assert text.startswith("With 20 labels, ImageNet+PIRL reaches the AUC that ImageNet reaches with about 200")
    assert "labels saved" in text
    assert "does not reach even with all 200 labels" in sentence("ImageNet+PIRL", "ImageNet", points[1], 200)


def test_default_label_fractions_are_finer_at_the_low_end_and_never_below_a_few_labels_a_class():
    from pirl_core.evaluation.compare import default_fractions

    assert default_fractions({"benign": 437, "malignant": 210, "normal": 133}) == [0.05, 0.1, 0.25, 0.5, 1.0]
    assert default_fractions({"a": 40, "b": 30}) == [0.25, 0.5, 1.0]  # 5% or 10% of 30 is one or two images
    assert default_fractions({"a": 12, "b": 12}) == [1.0]
    assert default_fractions({"a": 3000, "b": 2000}) == [0.1, 0.25, 0.5, 1.0]
