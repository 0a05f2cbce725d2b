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


class guarded:
    """`with guarded("Import"):` shows a PirlError as a message and anything unexpected as a
    message with the traceback folded beneath; the rest of the page still renders."""

    def __init__(self, what: str):
        self.what = what

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc is None:
            return False
        if isinstance(exc, PirlError):
            st.error(str(exc))
        else:
            import traceback

            st.error(f"{self.what} failed: {type(exc).__name__}: {exc}")
            with st.expander("Details (traceback)"):
                st.code("".join(traceback.format_exception(exc_type, exc, tb)))
        return True
