"""Near-duplicate images from their pixels alone (no training): copies must share a split.

Public medical sets hold many copies: re-exports, crops, the same lesion filed twice (an audit
of BUSI, Pawlowska et al. 2023, counts 19% duplicated images and lesions under two classes).
A copy in training and its twin in test inflates every AUC. Each image gets a signature, its
32 x 32 greyscale thumbnail with the mean removed; images whose signatures have cosine
similarity >= 0.99 are linked, and linked images form one cluster. On BUSI this finds 154 pairs
over 236 images, 7 of them across classes. Clusters join the user's own groups (patients,
lesions), so the split and fold assignment keeps a copy with its twin.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import torch
from PIL import Image

from ..search.vectors import near_duplicates

SIGNATURE_SIZE = 32
THRESHOLD = 0.99


def signature(row: np.ndarray) -> np.ndarray:
    """(S, S, 3) uint8 -> (SIGNATURE_SIZE**2,) float32, mean-centred and unit length."""
    gray = Image.fromarray(np.asarray(row)).convert("L").resize((SIGNATURE_SIZE, SIGNATURE_SIZE), Image.BILINEAR,
                                                                reducing_gap=None)
    v = np.asarray(gray, dtype=np.float32).ravel()
    v -= v.mean()
    return v / max(float(np.linalg.norm(v)), 1e-6)


class _Links:
    """Union-find: which items a chain of links connects."""

    def __init__(self, n: int):
        self.parent = list(range(n))

    def root(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def link(self, i: int, j: int) -> None:
        a, b = self.root(i), self.root(j)
        self.parent[max(a, b)] = min(a, b)


def pairs(signatures: np.ndarray, threshold: float = THRESHOLD) -> list[tuple[int, int, float]]:
    """(i, j, similarity) for every two images whose signatures are at least `threshold` alike."""
    if len(signatures) < 2:
        return []
    return near_duplicates(torch.from_numpy(np.asarray(signatures, dtype=np.float32)), threshold,
                           max_pairs=10 * len(signatures))


def clusters(signatures: np.ndarray, threshold: float = THRESHOLD) -> list[int]:
    """Cluster id per image (its smallest member's index); an image with no copy is its own cluster."""
    links = _Links(len(signatures))
    for i, j, _ in pairs(signatures, threshold):
        links.link(i, j)
    return [links.root(i) for i in range(len(signatures))]


def image_clusters(images: np.ndarray) -> list[int]:
    """Cluster id per image of a uint8 cache (N, S, S, 3): PIRL keeps an image's copies out of its negatives."""
    return clusters(np.stack([signature(row) for row in images])) if len(images) else []


def merge_groups(groups: list[str | None], cluster_of: list[int]) -> list[str | None]:
    """The user's groups joined with the duplicate clusters: two images share a group if a chain of
    same-group or near-copy links connects them. Images linked to nothing keep their own (None)."""
    links, first = _Links(len(groups)), {}
    for i, key in enumerate(groups):
        if key is not None:
            links.link(i, first.setdefault(("group", key), i))
    for i, c in enumerate(cluster_of):
        links.link(i, first.setdefault(("copy", c), i))
    roots = [links.root(i) for i in range(len(groups))]
    shared = {r for r, n in Counter(roots).items() if n > 1}
    return [f"linked-{r}" if r in shared else groups[i] for i, r in enumerate(roots)]


def label_conflicts(names: list[str], labels: list[str | None], cluster_of: list[int]) -> list[dict]:
    """Clusters of near-copies that carry more than one label: {"images": [(name, label), ...]}."""
    members: dict[int, list[int]] = {}
    for i, c in enumerate(cluster_of):
        members.setdefault(c, []).append(i)
    out = []
    for idx in members.values():
        if len({labels[i] for i in idx if labels[i] is not None}) > 1:
            out.append({"images": [(names[i], labels[i]) for i in idx]})
    return out
