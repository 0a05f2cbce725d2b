"""The linear probe and the near-duplicate groups behind every comparison."""

import numpy as np
import torch

from pirl_core.data import duplicates
from pirl_core.engine.backbones import Backbone
from pirl_core.engine.finetune import probe_classifier
from pirl_core.engine.linear_probe import fit_linear_probe


def _data(n=120, d=300, classes=2, signal=3.0, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    x = rng.normal(size=(n, d)) * 3 + 7  # unstandardised on purpose
    x[:, :classes] += signal * np.eye(classes)[y] * 3
    return x.astype(np.float32), y


def test_probe_is_deterministic_and_learns_a_planted_signal():
    x, y = _data()
    a, b = fit_linear_probe(x[:90], y[:90], 2), fit_linear_probe(x[:90], y[:90], 2)
    assert np.array_equal(a.predict_proba(x[90:]), b.predict_proba(x[90:])) and a.C == b.C
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(y[90:], a.predict_proba(x[90:])[:, 1]) > 0.8  # chance is 0.5
    assert a.cv_auc and max(a.cv_auc.values()) == a.cv_auc[a.C]  # the strength with the best inner-CV AUC


def test_the_exported_network_gives_the_probe_probabilities_binary_and_multiclass():
    for classes in (2, 3):
        x, y = _data(classes=classes, d=16)
        probe = fit_linear_probe(x, y, classes)
        identity = Backbone("identity", torch.nn.Identity(), dim=16)
        model = probe_classifier(identity, probe)
        with torch.no_grad():
            got = torch.softmax(model(torch.from_numpy(x)), 1).numpy()
        assert np.allclose(got, probe.predict_proba(x), atol=1e-5)


def test_near_copies_are_clustered_and_join_the_users_groups():
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 255, size=(6, 8, 8, 3)).astype(np.uint8)
    rows = coarse.repeat(8, axis=1).repeat(8, axis=2)  # smooth pictures, like scans (not pixel noise)
    rows[3] = rows[0]
    rows[3, :3, :3] = 255 - rows[3, :3, :3]  # a corner mark: a near-copy of image 0
    rows[5] = np.clip(rows[2].astype(int) + 3, 0, 255)  # brighter: a near-copy of image 2
    cluster = duplicates.clusters(np.stack([duplicates.signature(r) for r in rows]))
    assert cluster == [0, 1, 2, 0, 4, 2]
    groups = duplicates.merge_groups(["p1", None, None, None, "p1", None], cluster)
    assert groups[0] == groups[3] == groups[4] and groups[2] == groups[5] != groups[0] and groups[1] is None
    conflicts = duplicates.label_conflicts([f"{i}.png" for i in range(6)], ["a", "a", "b", "b", None, "b"], cluster)
    assert conflicts == [{"images": [("0.png", "a"), ("3.png", "b")]}]
