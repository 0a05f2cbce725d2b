"""Helpers every page uses. Streamlit only; no training maths here."""

from __future__ import annotations

import datetime as dt

import streamlit as st

from pirl_core.errors import PirlError
from pirl_core.workspace import Workspace


def _use_app_navigation() -> None:
    """When the first request to a fresh server is a page URL (/data), Streamlit runs
    pages/data.py directly in its old folder-based multipage mode, without app.py's
    st.navigation and sidebar. Switch that mode off and rerun through app.py."""
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        st.rerun()


def workspace() -> Workspace:
    """The workspace named by PIRL_HOME, opened fresh for this script run (cheap)."""
    _use_app_navigation()
    try:
        return Workspace.open()
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


STATUS_ICON = {"queued": ":material/schedule:", "running": ":material/play_circle:",
               "succeeded": ":material/check_circle:", "failed": ":material/error:",
               "cancelled": ":material/stop_circle:", "interrupted": ":material/warning:"}


@st.fragment(run_every=3)
def sidebar_badge() -> None:
    """The running job, on every page; refreshes itself every few seconds."""
    from pirl_core import jobs

    try:
        ws = Workspace()
        jobs.reap(ws)
    except PirlError:
        return  # the page itself says what is wrong with the workspace
    active = ws.store.jobs(statuses=jobs.ACTIVE)
    running = [j for j in active if j["status"] == "running"]
    if running:
        j = running[0]
        st.caption(f":material/play_circle: **{j['kind']} #{j['id']}** running · {100 * (j['progress'] or 0):.0f}%")
        st.progress(min(1.0, j["progress"] or 0.0))
    if len(active) > len(running):
        st.caption(f":material/schedule: {len(active) - len(running)} job(s) queued")
    if not active:
        st.caption("No job running.")


def loss_figure(metrics: list[dict], title: str = "", chance: float | None = None):
    """Plotly figure: the PIRL loss terms against step, learning rate on a second axis, the chance level."""
    import plotly.graph_objects as go

    fig = go.Figure()
    series: dict[str, tuple[list, list]] = {}
    for m in metrics:
        xs, ys = series.setdefault(m["name"], ([], []))
        xs.append(m["step"])
        ys.append(m["value"])
    names = {"loss": "total loss", "loss_jigsaw": "jigsaw term", "loss_rotation": "rotation term",
             "loss_image": "image term"}
    for key, label in names.items():
        if key in series:
            fig.add_scatter(x=series[key][0], y=series[key][1], name=label,
                            mode="lines" if len(series[key][0]) > 1 else "markers",  # one logged step: a point
                            line={"width": 3 if key == "loss" else 1.5})
    if "lr" in series:
        fig.add_scatter(x=series["lr"][0], y=series["lr"][1], name="learning rate", yaxis="y2", mode="lines",
                        line={"dash": "dot", "color": "gray"})
    if chance is not None:
        fig.add_hline(y=chance, line_dash="dash", line_color="gray",
                      annotation_text=f"chance (nothing learned): {chance:.2f}", annotation_position="top left")
    fig.update_layout(title=title, xaxis_title="step", yaxis_title="InfoNCE loss", height=380,
                      yaxis2={"title": "learning rate", "overlaying": "y", "side": "right", "showgrid": False,
                              "rangemode": "tozero"},
                      legend={"orientation": "h", "y": -0.25}, margin={"t": 40, "b": 10})
    return fig


def show_job_failure(job: dict) -> None:
    st.error(f"Job #{job['id']} failed: {job['message']}")
    if job["error"] and job["error"] != job["message"]:
        with st.expander("Details (traceback)"):
            st.code(job["error"])
