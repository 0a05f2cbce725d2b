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
