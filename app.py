"""PIRL Studio's server. Run with `pirl app` or `streamlit run app.py`.

Streamlit serves the app (studio.py: sign-in, then the pages in app_pages/) behind one middleware of ours:
thumbnails, heatmaps and downloads under /media/ and the server's metrics go only to a browser whose visitor
may see the workspace (pirl_core/access/browser_pass.py).
"""

import gc
import importlib
from pathlib import Path

import streamlit as st
from starlette.middleware import Middleware

from pirl_core.access.browser_pass import Gate

# What the pages import, loaded here in the main thread before the server takes its first visitor: otherwise
# the first visit to each page after a start waits for torch, faiss and the services to load (8 s for
# Compare alone, 10-18 s in all, measured with bench/soak.py). tests/test_structure.py keeps this list whole.
PAGE_IMPORTS = (
    "pandas", "plotly.express", "plotly.graph_objects",
    "pirl_core.demo", "pirl_core.access.audit", "pirl_core.access.users", "pirl_core.data.datasets",
    "pirl_core.data.image_cache", "pirl_core.data.ingest", "pirl_core.data.labels", "pirl_core.data.pacs",
    "pirl_core.data.pacs_pull", "pirl_core.data.patients", "pirl_core.data.preprocess", "pirl_core.data.sources",
    "pirl_core.data.tasks", "pirl_core.evaluation.compare", "pirl_core.evaluation.neighbours",
    "pirl_core.evaluation.statistics", "pirl_core.jobs.queue", "pirl_core.labeling.annotations",
    "pirl_core.labeling.labeled_sets", "pirl_core.labeling.simulate", "pirl_core.labeling.strategies",
    "pirl_core.labeling.suggestions", "pirl_core.models.export", "pirl_core.models.predict",
    "pirl_core.search.vectors", "pirl_core.training.measured", "pirl_core.training.planning",
    "pirl_core.training.pretraining",
)
for _name in PAGE_IMPORTS:
    importlib.import_module(_name)
# Streamlit collects garbage after every script run, fragment redraws included (runner.postScriptGC): a full
# collection walks every object those imports made (about 540,000: 0.8-1.2 s on a 2-core machine under load,
# with the GIL held, so every session waits). They live as long as the server: frozen, a collection skips them.
gc.collect()
gc.freeze()

app = st.App(Path(__file__).with_name("studio.py"),
             middleware=[Middleware(Gate, base_path=st.get_option("server.baseUrlPath"))])
