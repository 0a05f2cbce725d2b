"""Sign-in, roles and the audit log: who may do what, and a record of what everyone did."""

import pytest
from streamlit.testing.v1 import AppTest

from pirl_core.access import audit, users
from pirl_core.cli import main
from pirl_core.data import ingest, sources
from pirl_core.errors import PirlError
from tests.conftest import ROOT

PASSWORD = "correct horse battery"


def test_passwords_are_stored_as_argon2_hashes_and_checked(ws):
    users.add_user(ws, "alice", PASSWORD, "editor")
    stored = ws.store.user("alice")["password_hash"]
    assert stored.startswith("$argon2id$") and PASSWORD not in stored
    assert users.authenticate(ws, "alice", PASSWORD) == {"name": "alice", "role": "editor"}
    assert users.authenticate(ws, "alice", "wrong password!") is None
    assert users.authenticate(ws, "mallory", PASSWORD) is None
    actions = [(e["actor"], e["action"], e["target"]) for e in audit.entries(ws)]
    assert ("alice", "sign in", "alice") in actions
    assert actions.count(("anonymous", "sign-in refused", "alice")) == 1
    with pytest.raises(PirlError, match="at least 10"):
        users.add_user(ws, "bob", "short", "viewer")
    with pytest.raises(PirlError, match="Role"):
        users.add_user(ws, "bob", PASSWORD, "admin")


def test_an_identity_provider_account_gets_in_only_when_listed_or_allowed(ws, tmp_path):
    assert users.role_of(ws, "mallory@gmail.com") is None  # any account of a public provider: nothing
    allowed = users.allowed_accounts(tmp_path)
    assert allowed == []
    (tmp_path / ".streamlit").mkdir()
    (tmp_path / ".streamlit" / "secrets.toml").write_text('[access]\nallowed_accounts = ["@Hospital.org", '
                                                          '"dr.who@gmail.com"]\n')
    allowed = users.allowed_accounts(tmp_path)
    assert users.role_of(ws, "carol@hospital.org", allowed) == "viewer"
    assert users.role_of(ws, "dr.who@gmail.com", allowed) == "viewer"
    assert users.role_of(ws, "mallory@gmail.com", allowed) is None
    assert users.role_of(ws, "eve@evilhospital.org.example", allowed) is None
    users.add_user(ws, "carol@hospital.org", None, "editor")
    users.add_user(ws, "dana@clinic.example", None, "viewer")
    assert users.role_of(ws, "carol@hospital.org", allowed) == "editor"
    assert users.role_of(ws, "dana@clinic.example") == "viewer"  # listed: in without the allow-list
    assert users.authenticate(ws, "carol@hospital.org", "") is None  # no password: st.login only


def test_wrong_passwords_slow_down_the_next_try_per_name_and_per_address(ws, monkeypatch):
    users.add_user(ws, "alice", PASSWORD, "editor")
    for _ in range(users.THROTTLE_AFTER):
        assert users.authenticate(ws, "alice", "guess guess guess", source="10.0.0.9") is None
    with pytest.raises(PirlError, match=r"wait 30 s"):  # the right password, unchecked for now
        users.authenticate(ws, "alice", PASSWORD, source="10.0.0.7")
    refused = [e for e in audit.entries(ws) if e["action"] == "sign-in refused"]
    assert len(refused) == users.THROTTLE_AFTER and all(e["detail"] == "from 10.0.0.9" for e in refused)
    now = users.time.time()
    monkeypatch.setattr(users.time, "time", lambda: now + 31)
    assert users.authenticate(ws, "alice", PASSWORD) == {"name": "alice", "role": "editor"}  # and the count resets
    assert users.authenticate(ws, "alice", "guess guess guess") is None
    assert users.authenticate(ws, "alice", PASSWORD) is not None
    for k in range(users.THROTTLE_AFTER_SOURCE):  # one address guessing across many names
        assert users.authenticate(ws, f"user{k}", "guess guess guess", source="10.0.0.66") is None
    with pytest.raises(PirlError, match="wait"):
        users.authenticate(ws, "alice", PASSWORD, source="10.0.0.66")
    assert users.authenticate(ws, "alice", PASSWORD, source="10.0.0.8") is not None


@pytest.mark.parametrize("address, refused", [("127.0.0.1", False), ("localhost", False), ("::1", False),
                                              ("0.0.0.0", True), ("192.168.1.20", True), ("::", True)])
def test_the_app_refuses_to_listen_beyond_this_machine_without_sign_in(ws, monkeypatch, address, refused,
                                                                       capsys):
    started = []
    monkeypatch.setattr("subprocess.call", lambda cmd, **kw: started.append(cmd) or 0)
    rc = main(["app", "--address", address, "--headless"])
    assert (rc == 2) == refused and bool(started) != refused
    if refused:
        assert "without sign-in" in capsys.readouterr().err
        users.add_user(ws, "alice", PASSWORD, "editor")  # with a user, sign-in is on: it may listen
        assert main(["app", "--address", address, "--headless"]) == 0 and started


def test_cli_actions_are_audited_as_the_machine_user(ws, demo_dir, capsys):
    from pirl_core.workspace.folder import os_user

    assert main(["ingest", str(demo_dir / "unlabeled"), "--name", "pool"]) == 0
    capsys.readouterr()
    assert main(["audit"]) == 0
    out = capsys.readouterr().out
    assert '"action": "import"' in out and f'"who": "{os_user()}"' in out and '"target": "pool"' in out


def _data_page():
    return AppTest.from_file(str(ROOT / "app_pages/data.py"), default_timeout=60)


def test_with_users_the_page_shows_only_the_sign_in_form_until_signed_in(ws, demo_dir):
    ingest.ingest(ws, sources.folder_source(demo_dir / "unlabeled", check_roots=False), "pool")
    users.add_user(ws, "alice", PASSWORD, "editor")
    at = _data_page().run()
    assert not at.exception
    assert [t.label for t in at.text_input] == ["User name", "Password"]
    assert not at.tabs and not at.dataframe and "Data" not in [t.value for t in at.title]
    at.text_input(key="sign-in-name").input("alice")
    at.text_input(key="sign-in-password").input("not the password")
    at.button[0].click().run()
    assert any("Wrong user name or password" in e.value for e in at.error) and not at.tabs
    at.text_input(key="sign-in-password").input(PASSWORD)
    at.button[0].click().run()
    assert not at.exception
    assert "Data" in [t.value for t in at.title] and len(at.tabs) == 4  # the import tabs: an editor


def test_repeated_wrong_passwords_on_the_form_say_to_wait(ws):
    users.add_user(ws, "alice", PASSWORD, "editor")
    at = _data_page().run()
    at.text_input(key="sign-in-name").input("alice")
    for _ in range(users.THROTTLE_AFTER):
        at.text_input(key="sign-in-password").input("not the password")
        at.button[0].click().run()
    at.text_input(key="sign-in-password").input(PASSWORD)
    at.button[0].click().run()
    assert not at.exception and any("Too many wrong passwords" in e.value for e in at.error)
    assert "Data" not in [t.value for t in at.title]


def test_a_session_idle_too_long_must_sign_in_again(ws):
    users.add_user(ws, "alice", PASSWORD, "editor")
    at = _data_page()
    at.session_state["pirl_user"] = "alice"
    at.session_state["pirl_seen"] = users.time.time() - 60 * users.IDLE_MINUTES + 60  # a minute left
    at.run()
    assert "Data" in [t.value for t in at.title]
    at.session_state["pirl_seen"] = users.time.time() - 60 * users.IDLE_MINUTES - 1
    at.run()
    assert [t.label for t in at.text_input] == ["User name", "Password"]
    assert any("Signed out after 30 minutes without use" in i.value for i in at.info)


def test_a_viewer_browses_but_is_not_offered_import(ws, demo_dir):
    ingest.ingest(ws, sources.folder_source(demo_dir / "unlabeled", check_roots=False), "pool")
    users.add_user(ws, "victor", PASSWORD, "viewer")
    at = _data_page()
    at.session_state["pirl_user"] = "victor"
    at.run()
    assert not at.exception
    assert "Data" in [t.value for t in at.title] and not at.tabs
    assert any("needs an editor" in i.value for i in at.info)
    export = AppTest.from_file(str(ROOT / "app_pages/export.py"), default_timeout=60)
    export.session_state["pirl_user"] = "victor"
    export.run()
    assert any("needs an editor" in i.value for i in export.info) and not export.button


def test_a_removed_user_is_signed_out_at_the_next_click(ws):
    users.add_user(ws, "alice", PASSWORD, "editor")
    users.add_user(ws, "bob", PASSWORD, "editor")
    at = _data_page()
    at.session_state["pirl_user"] = "alice"
    at.run()
    assert "Data" in [t.value for t in at.title]
    users.remove_user(ws, "alice")
    at.run()
    assert [t.label for t in at.text_input] == ["User name", "Password"]


def test_only_editors_see_the_workspace_path_on_home(ws):
    users.add_user(ws, "victor", PASSWORD, "viewer")
    users.add_user(ws, "alice", PASSWORD, "editor")
    for name, shown in (("victor", False), ("alice", True)):
        at = AppTest.from_file(str(ROOT / "app_pages/home.py"), default_timeout=60)
        at.session_state["pirl_user"] = name
        at.run()
        assert not at.exception
        assert any(str(ws.root) in c.value for c in at.caption) == shown, name


def test_editors_read_the_audit_log_on_home(ws):
    users.add_user(ws, "alice", PASSWORD, "editor")
    at = AppTest.from_file(str(ROOT / "app_pages/home.py"), default_timeout=60)
    at.session_state["pirl_user"] = "alice"
    at.run()
    assert not at.exception
    log = next(e for e in at.expander if e.label.startswith("Audit log"))
    assert log.dataframe[0].value["action"].tolist()[:1] == ["add user"]


def _through_gate(path: str, cookie: str | None = None, content_type: bytes = b"text/html; charset=utf-8",
                  headers: list | None = None) -> tuple[int, dict]:
    """One HTTP request through browser_pass.Gate in front of an app that answers 200 with `content_type`."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from pirl_core.access import browser_pass

    async def inner(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", content_type)]})
        await send({"type": "http.response.body", "body": b"ok"})

    sent = []

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "http.request", "body": b""}

    request_headers = [*(headers or []), *([(b"cookie", f"theme=x; pirl_pass={cookie}".encode())] if cookie else [])]
    scope = {"type": "http", "path": path, "scheme": "http", "headers": request_headers}
    # In a thread of its own: a browser test on this worker leaves Playwright's event loop running in this one
    with ThreadPoolExecutor(1) as thread:
        thread.submit(asyncio.run, browser_pass.Gate(inner, base_path="/studio")(scope, receive, send)).result()
    start = sent[0]
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}


def test_images_downloads_and_metrics_go_only_to_an_admitted_browser(monkeypatch):
    """/media (thumbnails, heatmaps, downloads) and /_stcore/metrics below the base path: 403 without a pass,
    with an unknown one, after sign-out and after the idle time; the pass comes with the page itself only."""
    from pirl_core.access import browser_pass

    status, headers = _through_gate("/studio/")
    assert status == 200
    cookie = headers["set-cookie"]
    assert cookie.startswith("pirl_pass=") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert "Secure" not in cookie
    token = cookie.split(";")[0].split("=", 1)[1]
    assert len(token) >= 40
    # a script or image answered to a browser without a pass sets none: only the page does
    assert "set-cookie" not in _through_gate("/studio/static/app.js", content_type=b"text/javascript")[1]
    behind_tls = _through_gate("/studio/", headers=[(b"x-forwarded-proto", b"https")])[1]["set-cookie"]
    assert "Secure" in behind_tls

    for path in ("/studio/media/0f3a.png", "/studio/_stcore/metrics", "/studio/_stcore/agent/interact"):
        assert _through_gate(path)[0] == 403
        assert _through_gate(path, cookie=token)[0] == 403  # given, not yet admitted (no sign-in yet)
    browser_pass.admit(token, "alice")
    assert browser_pass.holder(token) == "alice"
    for path in ("/studio/media/0f3a.png", "/studio/_stcore/metrics"):
        assert _through_gate(path, cookie=token)[0] == 200
        assert _through_gate(path, cookie="forged" + token)[0] == 403
    assert _through_gate("/studio/_stcore/health")[0] == 200  # what a load balancer probes stays open
    browser_pass.revoke(token)
    assert _through_gate("/studio/media/0f3a.png", cookie=token)[0] == 403
    browser_pass.admit(token, "alice", now=1.0)  # admitted long ago: idle past IDLE_MINUTES
    assert _through_gate("/studio/media/0f3a.png", cookie=token)[0] == 403
    assert browser_pass.holder(token) is None
    browser_pass.admit("left-open-yesterday", "bob", now=1.0)
    browser_pass.admit(token, "alice")  # admitting forgets lapsed passes: the table does not grow for ever
    assert browser_pass._key("left-open-yesterday") not in browser_pass._admitted


def test_a_full_page_run_admits_the_browser_and_sign_out_takes_it_back(ws, monkeypatch):
    """The app admits the browser's pass once the visitor is signed in, not before, and revokes it at sign-out.
    (AppTest cannot send cookies: the pass is read through `_pass`; the browser test sends a real one.)"""
    from app_pages import _shared
    from pirl_core.access import browser_pass

    users.add_user(ws, "alice", PASSWORD, "editor")
    token = "t" * 43
    monkeypatch.setattr(_shared, "_pass", lambda: token)
    at = AppTest.from_file(str(ROOT / "studio.py"), default_timeout=60).run()
    assert browser_pass.holder(token) is None  # the sign-in form: nothing admitted
    at.text_input(key="sign-in-name").input("alice")
    at.text_input(key="sign-in-password").input(PASSWORD)
    at.button[0].click().run()
    assert browser_pass.holder(token) == "alice"
    at.button(key="sign-out").click().run()
    assert browser_pass.holder(token) is None
