"""Which browsers may fetch the server's files: thumbnails, heatmaps and downloads under `/media/`, the server's
counters under `/_stcore/metrics`.

Streamlit serves `/media/` files to anyone who has their address, session or not, and its sign-in (ours or
`st.login`) lives in the page's WebSocket session, which a plain HTTP request does not carry. So every browser
gets a random pass in an HttpOnly cookie with its first page; the app admits that pass once the visitor may see
the workspace (`admit`, on every full page run: signed in, or on this machine without sign-in), and takes it
back at sign-out or after IDLE_MINUTES without a page run. `Gate`, an ASGI middleware in front of Streamlit
(app.py), answers 403 to guarded paths without an admitted pass.

Passes live in the server's memory, as Streamlit's sessions do: a restart signs everyone out of both at once.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from http.cookies import CookieError, SimpleCookie

from .users import IDLE_MINUTES

COOKIE = "pirl_pass"
GUARDED = ("/media/", "/_stcore/metrics", "/_stcore/agent/")  # below the server's base path (agent: when enabled)

_lock = threading.Lock()
_admitted: dict[str, tuple[str, float]] = {}  # sha256 of a pass -> (who, when last admitted)


def _key(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _lapsed(seen: float, now: float) -> bool:
    return now - seen > IDLE_MINUTES * 60


def admit(token: str | None, who: str, now: float | None = None) -> None:
    """The browser holding `token` may fetch guarded files, as `who`, for IDLE_MINUTES from now. Lapsed passes
    are forgotten here, so the table holds only browsers active within the idle time."""
    if token:
        now = now or time.time()
        with _lock:
            for key in [k for k, (_, seen) in _admitted.items() if _lapsed(seen, now)]:
                del _admitted[key]
            _admitted[_key(token)] = (who, now)


def revoke(token: str | None) -> None:
    if token:
        with _lock:
            _admitted.pop(_key(token), None)


def holder(token: str | None, now: float | None = None) -> str | None:
    """Who the pass was admitted for, or None (unknown, taken back, or idle too long)."""
    if not token:
        return None
    now = now or time.time()
    with _lock:
        entry = _admitted.get(_key(token))
        if entry and _lapsed(entry[1], now):
            del _admitted[_key(token)]
            entry = None
    return entry[0] if entry else None


def cookie_value(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The pass in a request's Cookie headers (ASGI form), if any."""
    for name, value in headers:
        if name == b"cookie":
            try:
                jar = SimpleCookie(value.decode("latin-1"))
            except CookieError:
                continue
            if COOKIE in jar:
                return jar[COOKIE].value
    return None


def _is_https(scope: dict) -> bool:
    forwarded = dict(scope.get("headers") or []).get(b"x-forwarded-proto", b"")
    return scope.get("scheme") == "https" or forwarded.split(b",")[0].strip() == b"https"


def _is_page(response_start: dict) -> bool:
    return dict(response_start.get("headers") or []).get(b"content-type", b"").startswith(b"text/html")


class Gate:
    """ASGI middleware: 403 for guarded paths without an admitted pass; a new pass for a browser without one."""

    def __init__(self, app, base_path: str = ""):
        self.app = app
        base = "/" + base_path.strip("/") if base_path.strip("/") else ""
        self.guarded = tuple(base + path for path in GUARDED)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        token = cookie_value(scope.get("headers") or [])
        if scope["path"].startswith(self.guarded) and holder(token) is None:
            return await self._refuse(send)
        if token:
            return await self.app(scope, receive, send)
        attributes = "; Path=/; HttpOnly; SameSite=Strict" + ("; Secure" if _is_https(scope) else "")
        cookie = f"{COOKIE}={secrets.token_urlsafe(32)}{attributes}".encode()

        async def send_with_pass(message):  # on the page itself only: its scripts and the WebSocket then carry it
            if message["type"] == "http.response.start" and _is_page(message):
                message = {**message, "headers": [*message.get("headers", []), (b"set-cookie", cookie)]}
            await send(message)

        return await self.app(scope, receive, send_with_pass)

    @staticmethod
    async def _refuse(send) -> None:
        body = b"Sign in to PIRL Studio first: this address is only served to a signed-in browser.\n"
        await send({"type": "http.response.start", "status": 403,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                                (b"content-length", str(len(body)).encode()), (b"cache-control", b"no-store")]})
        await send({"type": "http.response.body", "body": body})
