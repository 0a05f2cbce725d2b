"""The ready-made demo workspace behind `make run` / `pirl app --demo`."""

from __future__ import annotations

from typing import Callable

from . import demo_data, ingest
from .workspace import Workspace

DEMO_N, DEMO_UNLABELED, DEMO_SEED = 120, 400, 0


def ensure_demo_workspace(ws: Workspace, log: Callable[[str], None] = print) -> None:
    """Generate the demo images and ingest them (an unlabeled pool and a labeled set) once;
    a second call does nothing."""
    folder = ws.root / "demo-data"
    if not (folder / "unlabeled").exists():
        log(f"Writing demo images to {folder} ...")
        demo_data.generate(folder, n=DEMO_N, seed=DEMO_SEED, unlabeled=DEMO_UNLABELED)
    for name, sub, labels in (("demo-unlabeled", "unlabeled", False), ("demo-labeled", "labeled", True)):
        if ws.store.dataset(name) is None:
            log(f"Ingesting {name} ...")
            ingest.ingest(ws, ingest.folder_source(folder / sub, check_roots=False), name, folder_labels=labels)
