"""Helpers every page uses. Streamlit only; no training maths here."""

from __future__ import annotations

import datetime as dt
import html
import logging
import re
import time
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Iterator

import streamlit as st

from pirl_core.access import browser_pass, users
from pirl_core.errors import PirlError
from pirl_core.workspace.folder import DB_NAME, Workspace, default_root

log = logging.getLogger("pirl_studio")


_THIS_RUN: ContextVar[Workspace | None] = ContextVar("pirl_workspace_of_this_run", default=None)


def workspace() -> Workspace:
    """The workspace named by PIRL_HOME, opened once per script run (by studio.py, `workspace_for_this_run`; a page
    run alone, as AppTest runs it, opens its own), once the visitor may see it: where sign-in is configured,
    anyone not signed in gets the sign-in form and nothing else."""
    opened = _THIS_RUN.get()
    if opened is not None:
        return opened
    try:
        ws = Workspace.open()
        ws.actor = _signed_in_user(ws)
        return ws
    except PirlError as exc:  # before anyone signed in: no server path on the page, the log has them
        log.warning("workspace cannot be opened: %s", exc)
        st.error(plain(without_paths(exc)) + " (The server's log names the folder.)")
        st.stop()


def without_paths(message: object) -> str:
    """A message with the workspace's location taken out, for visitors who may not see server paths."""
    root = default_root()
    return str(message).replace(str(root / DB_NAME), DB_NAME).replace(str(root), "the workspace folder")


@contextmanager
def workspace_for_this_run() -> Iterator[Workspace]:
    """`with workspace_for_this_run():` around a script run: every `workspace()` inside it (the page's) gets the
    handle opened here. Each script run has its own thread, so sessions never share one."""
    token = _THIS_RUN.set(workspace())
    mark_active()
    browser_pass.admit(_pass(), _THIS_RUN.get().actor)  # this browser may now fetch the page's images
    try:
        yield _THIS_RUN.get()
    finally:
        _THIS_RUN.reset(token)


def _signed_in_user(ws: Workspace) -> str:
    """The user's name; sets the role for this run (`can_edit`); stops the page with a sign-in form or a
    refusal where needed. Without sign-in configured (this machine only) the user running the app edits."""
    mode = users.sign_in_mode(ws, users.identity_provider_configured(Path.cwd()))
    if mode is None:
        problem = users.open_access_problem(st.get_option("server.address") or "0.0.0.0")
        if problem:
            st.error(problem)
            st.stop()
        st.session_state["pirl_role"] = "editor"
        return ws.actor
    idle = users.idle_too_long(st.session_state.get("pirl_seen"))
    if mode == "oidc":
        if idle and st.user.get("is_logged_in"):
            st.session_state.pop("pirl_seen", None)
            _sign_out_of_provider()
            st.stop()
        if not st.user.get("is_logged_in"):
            _only(_identity_provider_sign_in)
        name = str(st.user.get("email") or st.user.get("name") or "unknown")
        role = users.role_of(ws, name, users.allowed_accounts(Path.cwd()))
        if role is None:
            _only(lambda: _not_admitted(name))
        st.session_state["pirl_role"] = role
        return name
    name = st.session_state.get("pirl_user")
    user = ws.store.user(name) if name else None
    if idle and user is not None:
        st.session_state["sign-in-note"] = f"Signed out after {users.IDLE_MINUTES:g} minutes without use."
        browser_pass.revoke(_pass())
        user = None
    if user is None or not user["password_hash"]:  # never signed in, idle too long, or removed since
        st.session_state.pop("pirl_user", None)
        st.session_state.pop("pirl_seen", None)
        _only(lambda: _local_sign_in_form(ws))
    st.session_state["pirl_role"] = user["role"]  # a changed role counts from the next click
    return name


def _pass() -> str | None:
    """This browser's pass (browser_pass.Gate gave it with the page): its key to the page's images. None where
    there is no browser (AppTest's stand-in cookies are not strings)."""
    value = st.context.cookies.get(browser_pass.COOKIE)
    return value if isinstance(value, str) else None


def mark_active() -> None:
    """A visitor's own click or page load (studio.py's full runs, not the timed redraws of fragments): the idle
    timeout counts from here."""
    st.session_state["pirl_seen"] = time.time()


PAGE_PATHS = ("data", "pretrain", "label", "compare", "explore", "predict", "export")  # studio.py's pages, Home aside


def _only(sign_in) -> None:
    """Show the sign-in and nothing else: no page list, whatever page's URL was asked for."""
    pages = [st.Page(sign_in, title="Sign in", default=True)]
    pages += [st.Page(sign_in, title="Sign in", url_path=path) for path in PAGE_PATHS]
    st.navigation(pages, position="hidden").run()
    st.stop()


def _sign_out_of_provider() -> None:
    browser_pass.revoke(_pass())
    st.logout()


def _not_admitted(name: str) -> None:
    st.title("PIRL Studio")
    st.error(f"The account {plain(name)} is not admitted to this server. Ask an editor to add it "
             "(`pirl users add NAME --role viewer`) or to allow its domain (README: Sign-in).")
    st.button("Sign out", on_click=st.logout)


def _identity_provider_sign_in() -> None:
    st.title("PIRL Studio")
    st.write("Sign in with your organisation's account to continue.")
    st.button("Sign in", type="primary", on_click=st.login)


def _local_sign_in_form(ws: Workspace) -> None:
    st.title("PIRL Studio")
    with st.form("sign-in"):
        name = st.text_input("User name", key="sign-in-name")
        password = st.text_input("Password", type="password", key="sign-in-password")
        submitted = st.form_submit_button("Sign in", type="primary")
    note = st.session_state.pop("sign-in-note", None)
    if note and not submitted:
        st.info(note)
    if submitted:
        try:
            user = users.authenticate(ws, name, password, source=st.context.ip_address or "")
        except PirlError as exc:
            st.error(plain(exc))
            return
        if user is None:
            st.error("Wrong user name or password.")
        else:
            st.session_state["pirl_user"] = user["name"]
            mark_active()
            st.rerun()


def can_edit() -> bool:
    """Whether the signed-in user may import, train, export and delete (the role `workspace()` set)."""
    return users.can_edit(st.session_state.get("pirl_role"))


def editors_only(what: str) -> bool:
    """True for an editor; otherwise says plainly why `what` is not offered."""
    if can_edit():
        return True
    st.info(f"{what} needs an editor; you are signed in as a viewer.", icon=":material/lock:")
    return False


def sign_out_button() -> None:
    """Who is signed in, and a way out (local users and identity-provider users alike)."""
    name = st.session_state.get("pirl_user")
    if name:
        st.text(f"Signed in as {name} ({st.session_state.get('pirl_role')})")
        if st.button("Sign out", key="sign-out"):
            st.session_state.pop("pirl_user", None)
            browser_pass.revoke(_pass())
            st.rerun()
    elif st.user.get("is_logged_in"):
        st.text(f"Signed in as {st.user.get('email') or st.user.get('name')} ({st.session_state.get('pirl_role')})")
        st.button("Sign out", key="sign-out", on_click=_sign_out_of_provider)


_MARKDOWN = re.compile(r"([\\`*_{}\[\]()#!|<>~$])")  # links, images, emphasis, HTML, formulas, tables
# GitHub Markdown makes links of bare addresses (http://..., www...., mailto:, name@host) whatever is escaped: an
# invisible word joiner after the scheme or before "@" keeps them text.
_BARE_LINK = re.compile(r"(?i)(?<=https)(?=:)|(?<=http)(?=:)|(?<=ftp)(?=:)|(?<=mailto)(?=:)|(?<=xmpp)(?=:)"
                        r"|(?<=www)(?=\.)|(?=@)")
JOINER = "\u2060"


def plain(text: object) -> str:
    """User text (file names, labels, dataset names, messages that quote them) for Streamlit's Markdown:
    shown as itself, never a link, an image the browser would fetch, a formula or a colour directive."""
    return _BARE_LINK.sub(JOINER, _MARKDOWN.sub(r"\\\1", str(text)))


def plot_text(text: object) -> str:
    """User text for a Plotly label or hover: its HTML subset (links, tags) stays text."""
    return html.escape(str(text))


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
        if not isinstance(exc, Exception):  # st.rerun / st.stop are BaseExceptions: they pass through
            return False
        if isinstance(exc, PirlError):
            st.error(plain(exc))
        else:
            import traceback

            details = "".join(traceback.format_exception(exc_type, exc, tb))
            log.error("%s failed:\n%s", self.what, details)  # the server log keeps the details for everyone
            st.error(f"{self.what} failed: {type(exc).__name__}: {plain(exc)}")
            if can_edit():  # tracebacks name server paths: editors only
                with st.expander("Details (traceback)"):
                    st.code(details)
        return True


STATUS_ICON = {"queued": ":material/schedule:", "running": ":material/play_circle:",
               "succeeded": ":material/check_circle:", "failed": ":material/error:",
               "cancelled": ":material/stop_circle:", "interrupted": ":material/warning:"}


JOB_NAMES = {"pretrain": "Pretraining", "finetune": "Finetune", "pacs_pull": "PACS pull",
             "label_simulation": "Labeling simulation", "demo_compare": "Demo comparison", "demo_export": "Demo export"}


@st.fragment(run_every=3)
def sidebar_badge() -> None:
    """The running job, on every page; refreshes itself every few seconds."""
    from pirl_core.jobs import queue

    try:
        ws = Workspace()
        queue.reap(ws)
    except PirlError:
        return  # the page itself says what is wrong with the workspace
    active = ws.store.jobs(statuses=queue.ACTIVE)
    running = [j for j in active if j["status"] == "running"]
    if running:
        j = running[0]
        name = JOB_NAMES.get(j["kind"], j["kind"])
        st.caption(f":material/play_circle: **{name} #{j['id']}** running · {100 * (j['progress'] or 0):.0f}%")
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
    st.error(f"Job #{job['id']} failed: {plain(job['message'])}")
    if job["error"] and job["error"] != job["message"] and can_edit():
        with st.expander("Details (traceback)"):
            st.code(job["error"])
