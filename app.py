"""PIRL Studio: the Streamlit entry point. Run with `pirl app` or `streamlit run app.py`."""

import streamlit as st

st.set_page_config(page_title="PIRL Studio", page_icon=":material/biotech:", layout="wide")

PAGES = [
    st.Page("pages/home.py", title="Home", icon=":material/home:", default=True),
    st.Page("pages/data.py", title="Data", icon=":material/photo_library:"),
]

st.navigation(PAGES).run()
