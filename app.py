"""PIRL Studio's server. Run with `pirl app` or `streamlit run app.py`.

Streamlit serves the app (studio.py: sign-in, then the pages in app_pages/) behind one middleware of ours:
thumbnails, heatmaps and downloads under /media/ and the server's metrics go only to a browser whose visitor
may see the workspace (pirl_core/access/browser_pass.py).
"""

import importlib
import threading
from pathlib import Path

import streamlit as st
from starlette.middleware import Middleware

from pirl_core.access.browser_pass import Gate

# What the pages import (torch, the services, plotly): 8 s in a fresh process on a 2-core CPU, which the first
# visitor after a restart waited for (bench/soak.py: Home 10 s, Compare 18 s). Imported while the server starts.
WARM = ("pirl_core.evaluation.compare", "pirl_core.evaluation.neighbours", "pirl_core.models.predict",
        "pirl_core.labeling.suggestions", "plotly.express", "plotly.graph_objects", "pandas")
threading.Thread(target=lambda: [importlib.import_module(name) for name in WARM], name="warm-imports",
                 daemon=True).start()

app = st.App(Path(__file__).with_name("studio.py"),
             middleware=[Middleware(Gate, base_path=st.get_option("server.baseUrlPath"))])
