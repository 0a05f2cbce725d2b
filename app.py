"""PIRL Studio's server. Run with `pirl app` or `streamlit run app.py`.

Streamlit serves the app (studio.py: sign-in, then the pages in app_pages/) behind one middleware of ours:
thumbnails, heatmaps and downloads under /media/ and the server's metrics go only to a browser whose visitor
may see the workspace (pirl_core/access/browser_pass.py).
"""

from pathlib import Path

import streamlit as st
from starlette.middleware import Middleware

from pirl_core.access.browser_pass import Gate

app = st.App(Path(__file__).with_name("studio.py"),
             middleware=[Middleware(Gate, base_path=st.get_option("server.baseUrlPath"))])
