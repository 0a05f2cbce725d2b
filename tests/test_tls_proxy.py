"""The README's TLS recipe, run: Caddy with a certificate of the test's own in front of a signed-in app."""

import os
import re
import shutil
import ssl
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from tests.conftest import ROOT, _free_port, assert_no_exception, wait_for_app

pytestmark = pytest.mark.browser
CADDY = shutil.which("caddy") or "/usr/bin/caddy"


def readme_caddyfile() -> str:
    readme = (ROOT / "README.md").read_text()
    return re.search(r"```caddyfile\n(.*?)```", readme, re.S).group(1)


def _status(url: str, context: ssl.SSLContext | None = None) -> int:
    try:
        return urllib.request.urlopen(url, timeout=10, context=context).status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.fixture
def caddy_in_front(tmp_path):
    """Factory: the README's Caddy site for `localhost` on a free port, proxying to `upstream_port`. Returns
    (https URL, an SSL context that trusts the test's certificate). Under CI a missing Caddy fails."""
    if not os.path.exists(CADDY):
        if os.environ.get("CI"):
            pytest.fail("Caddy not found: the install step (scripts/install-system-packages.sh) is broken")
        pytest.skip("Caddy not found (apt-get install caddy)")
    procs = []

    def start(upstream_port: int):
        crt, key = tmp_path / "pirl.crt", tmp_path / "pirl.key"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                        "/CN=localhost", "-addext", "subjectAltName=DNS:localhost", "-keyout", str(key),
                        "-out", str(crt)], check=True, capture_output=True)
        port = _free_port()
        site = (readme_caddyfile().replace("pirl.hospital.org", f"https://localhost:{port}")
                .replace("/etc/ssl/pirl.crt", str(crt)).replace("/etc/ssl/pirl.key", str(key))
                .replace("127.0.0.1:8501", f"127.0.0.1:{upstream_port}"))
        assert site != readme_caddyfile()
        config = tmp_path / "Caddyfile"
        config.write_text("{\n\tadmin off\n\tauto_https disable_redirects\n}\n" + site)  # a test: no :80, no API
        env = {**os.environ, "HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path / "data"),
               "XDG_CONFIG_HOME": str(tmp_path / "config")}
        log = (tmp_path / "caddy.log").open("wb")
        procs.append(subprocess.Popen([CADDY, "run", "--config", str(config), "--adapter", "caddyfile"], env=env,
                                      stdout=log, stderr=subprocess.STDOUT))
        trust = ssl.create_default_context(cafile=str(crt))
        url = f"https://localhost:{port}"
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                if _status(url + "/_stcore/health", trust) == 200:
                    return url, trust
            except OSError:
                time.sleep(0.3)
        raise RuntimeError("Caddy did not answer in 30 s:\n" + (tmp_path / "caddy.log").read_text())

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(10)


def test_the_readme_tls_recipe_serves_the_signed_in_app_over_https_only(app_server, caddy_in_front, browser,
                                                                         tmp_path, demo_dir):
    from pirl_core.access import users
    from pirl_core.data import ingest, sources
    from pirl_core.workspace.folder import Workspace

    ws = Workspace(tmp_path / "ws")
    ingest.ingest(ws, sources.folder_source(demo_dir / "unlabeled", check_roots=False), "pool")
    users.add_user(ws, "erin", "editor password", "editor")
    server = app_server(ws.root)
    url, trust = caddy_in_front(server.port)

    assert _status(url + "/_stcore/metrics", trust) == 404  # refused at the proxy
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):  # checked, not skipped
        urllib.request.urlopen(url + "/_stcore/health", timeout=10)
    with pytest.raises((urllib.error.HTTPError, urllib.error.URLError, ConnectionError)) as plain_http:
        urllib.request.urlopen(url.replace("https:", "http:") + "/", timeout=10)  # no plain HTTP on the port
    assert not (isinstance(plain_http.value, urllib.error.HTTPError) and plain_http.value.code == 200)

    context = browser.new_context(ignore_https_errors=True, viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    try:
        page.goto(url + "/data")
        wait_for_app(page)  # the WebSocket came through the proxy
        page.get_by_role("textbox", name="User name").fill("erin")
        page.get_by_role("textbox", name="Password").fill("editor password")
        page.get_by_role("button", name="Sign in").click()
        page.get_by_text("Signed in as erin (editor)").wait_for(timeout=30_000)
        thumbnail = page.locator('[data-testid="stImage"] img').first
        thumbnail.wait_for(timeout=30_000)
        page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=thumbnail.element_handle())
        media = url + thumbnail.get_attribute("src").split(url)[-1]
        assert page.request.get(media).status == 200
        assert _status(media, trust) == 403  # the same address without the browser's pass
        (browser_pass,) = [c for c in context.cookies() if c["name"] == "pirl_pass"]
        assert browser_pass["secure"] and browser_pass["httpOnly"]  # the app knew the page came over HTTPS
        assert_no_exception(page)
    finally:
        context.close()
