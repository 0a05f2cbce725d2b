"""Synthetic "skin lesion" images for the demo workspace and the tests.

Classes differ in structure a CNN has to learn: border irregularity, asymmetry and colour
variegation grow with a class's severity. Global cues are drawn from one distribution for
every class: skin tone, lighting, lesion size and the lesion's mean colour, so mean
brightness or image size tell nothing about the label. Deterministic for a seed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

CLASS_NAMES = {2: ["benign", "malignant"], 3: ["benign", "atypical", "malignant"]}
# Severity ranges overlap, so the task is learnable but not trivial.
SEVERITY = {"benign": (0.0, 0.55), "atypical": (0.3, 0.8), "malignant": (0.45, 1.0)}


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    grid = rng.standard_normal((cells, cells)).astype(np.float32)
    return np.array(Image.fromarray(grid, mode="F").resize((size, size), Image.BICUBIC))


def lesion(rng: np.random.Generator, size: int, severity: float) -> np.ndarray:
    """One RGB uint8 image of a lesion whose irregularity grows with `severity` in [0, 1]."""
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5
    cx, cy = rng.uniform(-0.08, 0.08, size=2)
    x, y = np.meshgrid(coords - cx, coords - cy)
    r = np.hypot(x, y)
    z = ((x + 1j * y) / np.maximum(r, 1e-6)).astype(np.complex64)  # e^{i theta}

    # Border: a base circle with harmonics; high-frequency terms and the asymmetric first
    # harmonic grow with severity. sum_k a_k cos(k theta + phi_k) = Re(sum_k a_k e^{i phi_k} z^k).
    radius = rng.uniform(0.18, 0.3)
    k = np.arange(1, 17)
    amp = np.where(k <= 3, 0.05, severity * 0.22 / np.sqrt(k)) * rng.uniform(0.5, 1.0, size=k.size)
    amp[0] = severity * rng.uniform(0.1, 0.25)  # asymmetry
    coef = (amp * np.exp(1j * rng.uniform(0, 2 * np.pi, size=k.size))).astype(np.complex64)
    harmonics, zk = np.zeros_like(z), np.ones_like(z)
    for c in coef:
        zk = zk * z
        harmonics += c * zk
    border = radius * (1 + harmonics.real)
    edge = rng.uniform(0.006, 0.02)
    alpha = 1 / (1 + np.exp((r - border) / np.float32(edge)))

    # Colours: skin and the lesion's mean colour from one distribution for every class;
    # variegation splits the lesion into darker and lighter zones around that mean.
    skin = np.array([rng.uniform(0.7, 0.95), rng.uniform(0.55, 0.75), rng.uniform(0.45, 0.65)], np.float32)
    base = skin * rng.uniform(0.35, 0.6) * np.array([1.0, 0.85, 0.8], np.float32)
    zones = _smooth_noise(rng, size, 6)
    zones /= np.abs(zones).max() + 1e-6
    tint = np.array([-0.4, -0.3, 0.25], np.float32) * rng.uniform(0.6, 1.0)  # towards blue-grey
    lesion_rgb = base[None, None] * (1 + severity * 0.9 * zones[..., None]) + severity * 0.15 * np.clip(
        -zones, 0, None)[..., None] * tint

    light = 1 + 0.12 * _smooth_noise(rng, size, 3)[..., None]
    img = (skin[None, None] * (1 - alpha[..., None]) + lesion_rgb * alpha[..., None]) * light
    img += 0.02 * rng.standard_normal(img.shape, dtype=np.float32)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def generate(out_dir: str | Path, n: int = 60, seed: int = 0, unlabeled: int | None = None,
             classes: int = 2, size: int = 128) -> dict:
    """Write `out_dir/unlabeled/*.png` and `out_dir/labeled/<class>/*.png`.

    `n` labeled images are split evenly over the classes; the unlabeled pool (default 2n)
    mixes all classes.
    """
    if classes not in CLASS_NAMES:
        raise ValueError(f"classes must be one of {sorted(CLASS_NAMES)}, got {classes}")
    if n < classes:
        raise ValueError(f"n must be at least the number of classes ({classes}), got {n}")
    names = CLASS_NAMES[classes]
    unlabeled = 2 * n if unlabeled is None else unlabeled
    out = Path(out_dir)
    counts: dict[str, int] = {}
    for c, name in enumerate(names):
        folder = out / "labeled" / name
        folder.mkdir(parents=True, exist_ok=True)
        count = n // classes + (1 if c < n % classes else 0)
        counts[name] = count
        for i in range(count):
            rng = np.random.default_rng([seed, 1, c, i])
            image = lesion(rng, size, rng.uniform(*SEVERITY[name]))
            Image.fromarray(image).save(folder / f"{name}_{i:05d}.png", compress_level=1)
    pool = out / "unlabeled"
    pool.mkdir(parents=True, exist_ok=True)
    for i in range(unlabeled):
        rng = np.random.default_rng([seed, 2, i])
        severity = rng.uniform(*SEVERITY[names[rng.integers(classes)]])
        Image.fromarray(lesion(rng, size, severity)).save(pool / f"scan_{i:05d}.png", compress_level=1)
    return {"out_dir": str(out), "labeled": counts, "unlabeled": unlabeled, "size": size, "seed": seed}
