"""Helpers every page uses. Streamlit only; no training maths here."""

from __future__ import annotations

import datetime as dt

import streamlit as st

from pirl_core.errors import PirlError
from pirl_core.workspace import Workspace


def workspace() -> Workspace:
    """The workspace named by PIRL_HOME, opened fresh for this script run (cheap)."""
    try:
        return Workspace()
    except PirlError as exc:
        st.error(str(exc))
        st.stop()


def when(ts: float | None) -> str:
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M") if ts else ""
