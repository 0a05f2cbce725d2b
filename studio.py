"""PIRL Studio: the Streamlit script (sign-in, then the pages). app.py serves it; run `pirl app`."""

import sqlite3
from pathlib import Path

import streamlit as st

from app_pages._shared import (
    can_edit,
    log,
    plain,
    sidebar_badge,
    sign_out_button,
    without_paths,
    workspace_for_this_run,
)
from pirl_core.workspace import backup
from pirl_core.workspace.folder import default_root

# A local file: a Material icon here makes the browser fetch the favicon from Google's font CDN.
st.set_page_config(page_title="PIRL Studio", page_icon=str(Path(__file__).parent / "assets" / "icon.png"),
                   layout="wide")

with workspace_for_this_run():  # the sign-in form, and nothing else, until the visitor may see the workspace
    PAGES = [
        st.Page("app_pages/home.py", title="Home", icon=":material/home:", default=True),
        st.Page("app_pages/data.py", title="Data", icon=":material/photo_library:"),
        st.Page("app_pages/pretrain.py", title="Pretrain", icon=":material/model_training:"),
        st.Page("app_pages/label.py", title="Label", icon=":material/label:"),
        st.Page("app_pages/compare.py", title="Compare", icon=":material/monitoring:"),
        st.Page("app_pages/explore.py", title="Explore", icon=":material/travel_explore:"),
        st.Page("app_pages/predict.py", title="Predict", icon=":material/image_search:"),
        *([st.Page("app_pages/export.py", title="Export", icon=":material/download:")] if can_edit() else []),
    ]
    page = st.navigation(PAGES)
    with st.sidebar:
        sidebar_badge()
        sign_out_button()
    try:
        page.run()
    except sqlite3.DatabaseError as exc:  # met while drawing the page: damaged, read-only, busy or full
        log.warning("workspace database: %s", exc)
        message = backup.explain(default_root(), exc)
        st.error(plain(message if can_edit() else without_paths(message)))
