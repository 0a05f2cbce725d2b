"""Train / validation / test splits: stratified by class, groups (patients, lesions) kept whole.

Each group goes wholly to one split; groups are dealt, per majority class, in a seeded random
order so each split gets about its fraction of every class. Images without a label get no split.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict


def assign_splits(labels: list[str | None], groups: list[str | None], fractions: dict[str, float],
                  seed: int = 0) -> list[str | None]:
    """One split name per image (None where the label is None). `fractions` e.g. train .7, val .15, test .15."""
    members: dict[str, list[int]] = defaultdict(list)
    for i, (label, group) in enumerate(zip(labels, groups)):
        if label is not None:
            members[group if group is not None else f"\0image-{i}"].append(i)
    by_class: dict[str, list[str]] = defaultdict(list)
    for group, idx in sorted(members.items()):
        majority = Counter(labels[i] for i in idx).most_common(1)[0][0]
        by_class[majority].append(group)

    rng = random.Random(seed)
    # Smallest splits first so each gets at least one group of every class.
    order = sorted(fractions, key=lambda s: fractions[s])
    out: list[str | None] = [None] * len(labels)
    for label in sorted(by_class):
        class_groups = by_class[label]
        rng.shuffle(class_groups)
        total = sum(len(members[g]) for g in class_groups)
        pos = 0
        for k, split in enumerate(order):
            remaining = class_groups[pos:]
            if k == len(order) - 1:
                chosen = remaining
            else:
                target, taken, chosen = fractions[split] * total, 0, []
                for g in remaining[: max(1, len(remaining) - (len(order) - k - 1))]:
                    if chosen and taken + len(members[g]) / 2 > target:
                        break
                    chosen.append(g)
                    taken += len(members[g])
            for g in chosen:
                for i in members[g]:
                    out[i] = split
            pos += len(chosen)
    return out


def assign_folds(labels: list[str], groups: list[str | None], k: int, seed: int = 0) -> list[int]:
    """Fold index 0..k-1 per image: stratified by class, each group wholly in one fold."""
    members: dict[str, list[int]] = defaultdict(list)
    for i, group in enumerate(groups):
        members[group if group is not None else f"\0image-{i}"].append(i)
    by_class: dict[str, list[str]] = defaultdict(list)
    for group, idx in sorted(members.items()):
        by_class[Counter(labels[i] for i in idx).most_common(1)[0][0]].append(group)
    rng = random.Random(seed)
    sizes = [0] * k
    out = [0] * len(labels)
    for label in sorted(by_class):
        class_groups = by_class[label]
        rng.shuffle(class_groups)
        class_groups.sort(key=lambda g: -len(members[g]))  # big groups first, then fill the smallest fold
        class_sizes = [0] * k
        for g in class_groups:
            fold = min(range(k), key=lambda f: (class_sizes[f], sizes[f]))
            class_sizes[fold] += len(members[g])
            sizes[fold] += len(members[g])
            for i in members[g]:
                out[i] = fold
    return out


def nested_subset(labels: list[str], fraction: float, seed: int = 0) -> list[int]:
    """Indices of a stratified `fraction` of the items. Nested: a smaller fraction's subset is
    contained in a larger one's (same seed), so label-efficiency points differ only in labels."""
    by_class: dict[str, list[int]] = defaultdict(list)
    for i, label in enumerate(labels):
        by_class[label].append(i)
    rng = random.Random(seed)
    chosen = []
    for label in sorted(by_class):
        idx = by_class[label][:]
        rng.shuffle(idx)
        chosen += idx[: max(2, round(fraction * len(idx)))] if fraction < 1 else idx
    return sorted(chosen)
