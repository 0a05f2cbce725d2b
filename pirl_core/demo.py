"""The ready-made demo workspace behind `make run` / `pirl app --demo`."""

from __future__ import annotations

from typing import Callable

from . import demo_data
from .workspace import Workspace

DEMO_N, DEMO_UNLABELED, DEMO_SEED = 120, 400, 0


def ensure_demo_workspace(ws: Workspace, log: Callable[[str], None] = print) -> None:
    """Generate the demo images once into the workspace; a second call does nothing."""
    folder = ws.root / "demo-data"
    if not (folder / "unlabeled").exists():
        log(f"Writing demo images to {folder} ...")
        demo_data.generate(folder, n=DEMO_N, seed=DEMO_SEED, unlabeled=DEMO_UNLABELED)
