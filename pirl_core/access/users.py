"""Who may use the app: sign-in and roles.

A single-user laptop needs no sign-in: the app listens on 127.0.0.1 only. As soon as it listens beyond
this machine, sign-in is required, one of:
- an identity provider (Keycloak, Entra ID, Google) through Streamlit's own `st.login` (OIDC via Authlib),
  configured in `.streamlit/secrets.toml` under `[auth]`. Only accounts listed here (`pirl users add NAME`,
  without a password) or matched by `allowed_accounts` under `[access]` in the same file (an address, or
  "@hospital.org" for a whole domain) get in: a public provider's other accounts get nothing. Listed accounts
  have their role; allowed ones are viewers;
- local users (`pirl users add NAME`), passwords hashed with argon2 (argon2-cffi); once any exist, the app
  asks everyone to sign in, on any address. Wrong passwords slow the next try down, per user name and per
  source address (THROTTLE_*), and every refusal is in the audit log with its address.
Roles: a viewer browses, compares, explores and downloads; an editor also imports, trains, exports and deletes.
A session idle for IDLE_MINUTES (PIRL_IDLE_MINUTES) must sign in again.
"""

from __future__ import annotations

import ipaddress
import math
import os
import time
import tomllib
import unicodedata
from functools import lru_cache
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from ..errors import PirlError
from ..workspace.folder import Workspace
from . import audit

ROLES = ("viewer", "editor")
MIN_PASSWORD = 10
THROTTLE_AFTER = 5  # wrong passwords for one user name before each further try waits
THROTTLE_AFTER_SOURCE = 20  # wrong passwords from one address (any names: guessing across accounts)
THROTTLE_WINDOW_S = 15 * 60  # failures older than this are forgotten
THROTTLE_MAX_S = 15 * 60  # the longest wait: 30 s, doubling with each further failure, up to this
IDLE_MINUTES = float(os.environ.get("PIRL_IDLE_MINUTES") or 30)


@lru_cache(maxsize=1)
def _hasher() -> PasswordHasher:
    return PasswordHasher()


@lru_cache(maxsize=1)
def _dummy_hash() -> str:  # checked against when a name is unknown: the answer takes as long either way
    return _hasher().hash("no such user")


def check_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > 128 or any(unicodedata.category(c).startswith("C") for c in name):
        raise PirlError("A user name must be 1-128 printable characters (for example an e-mail address).")
    return name


def add_user(ws: Workspace, name: str, password: str | None, role: str = "viewer") -> None:
    """Add or update a user. `password` None: an identity-provider user (st.login), given a role here."""
    name = check_name(name)
    if role not in ROLES:
        raise PirlError(f"Role must be one of {', '.join(ROLES)}, got {role!r}.")
    if password is not None and len(password) < MIN_PASSWORD:
        raise PirlError(f"A password needs at least {MIN_PASSWORD} characters.")
    ws.store.put_user(name, role, _hasher().hash(password) if password is not None else None)
    audit.record(ws, "add user", name, f"role {role}")


def remove_user(ws: Workspace, name: str) -> None:
    if not ws.store.delete_user(name):
        raise PirlError(f"No user named {name!r}.")
    audit.record(ws, "remove user", name)


def _wait_s(times: list[tuple[float, str]], allowed: int, now: float) -> float:
    """Seconds before another try: failures since the last success, beyond `allowed`, wait 30 s doubling."""
    failures = []
    for t, action in times:  # newest first
        if action == "sign in":
            break
        failures.append(t)
    if len(failures) < allowed:
        return 0.0
    return max(0.0, failures[0] + min(THROTTLE_MAX_S, 30 * 2 ** (len(failures) - allowed)) - now)


def retry_after(ws: Workspace, name: str, source: str = "") -> float:
    """Seconds until a sign-in as `name` from `source` is tried again (0: now)."""
    now = time.time()
    since = now - THROTTLE_WINDOW_S
    wait = _wait_s(ws.store.audit_times(["sign-in refused", "sign in"], since, target=name), THROTTLE_AFTER, now)
    if source:
        wait = max(wait, _wait_s(ws.store.audit_times(["sign-in refused"], since, detail=f"from {source}"),
                                 THROTTLE_AFTER_SOURCE, now))
    return wait


def authenticate(ws: Workspace, name: str, password: str, source: str = "") -> dict | None:
    """The signed-in user {"name", "role"}, or None for a wrong name or password (recorded with the source
    address). After repeated failures a PirlError says how long to wait, the password unchecked."""
    name = name.strip()[:128]
    where = f"from {source}" if source else ""
    wait = retry_after(ws, name, source)
    if wait > 0:
        audit.record(ws, "sign-in throttled", name, where, by="anonymous")
        raise PirlError(f"Too many wrong passwords: wait {math.ceil(wait)} s before trying again.")
    user = ws.store.user(name)
    stored = user["password_hash"] if user else None
    try:
        _hasher().verify(stored or _dummy_hash(), password)
        ok = stored is not None
    except (VerificationError, InvalidHashError):
        ok = False
    if not ok:
        audit.record(ws, "sign-in refused", name, where, by="anonymous")
        return None
    if _hasher().check_needs_rehash(stored):
        ws.store.set_password_hash(user["name"], _hasher().hash(password))
    audit.record(ws, "sign in", user["name"], by=user["name"])
    return {"name": user["name"], "role": user["role"]}


def role_of(ws: Workspace, name: str, allowed: list[str] = ()) -> str | None:
    """An identity-provider account's role: as listed here; a viewer where `allowed` (addresses, or "@domain")
    matches it; None (not admitted) otherwise."""
    user = ws.store.user(name)
    if user:
        return user["role"]
    account = name.strip().lower()
    for entry in (a.strip().lower() for a in allowed):
        if entry and (account == entry or (entry.startswith("@") and account.endswith(entry))):
            return "viewer"
    return None


def idle_too_long(last_seen: float | None, now: float | None = None) -> bool:
    return last_seen is not None and (now or time.time()) - last_seen > IDLE_MINUTES * 60


def can_edit(role: str | None) -> bool:
    return role == "editor"


def is_loopback(address: str) -> bool:
    if address.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False


def _secrets(app_dir: Path) -> list[dict]:
    """The secrets.toml files Streamlit reads (the app's folder, then the user's home), parsed."""
    out = []
    for secrets in (app_dir / ".streamlit" / "secrets.toml", Path.home() / ".streamlit" / "secrets.toml"):
        try:
            out.append(tomllib.loads(secrets.read_text()))
        except (OSError, tomllib.TOMLDecodeError):
            continue
    return out


def identity_provider_configured(app_dir: Path) -> bool:
    """Whether st.login has an identity provider: an [auth] section in a secrets.toml Streamlit reads."""
    return any("auth" in s for s in _secrets(app_dir))


def allowed_accounts(app_dir: Path) -> list[str]:
    """`allowed_accounts` under [access] in secrets.toml: identity-provider accounts admitted as viewers."""
    for s in _secrets(app_dir):
        value = s.get("access", {}).get("allowed_accounts")
        if value is not None:
            return [str(v) for v in (value if isinstance(value, list) else [value])]
    return []


def sign_in_mode(ws: Workspace, identity_provider: bool) -> str | None:
    """"oidc", "local", or None (no sign-in: a single user on this machine)."""
    if identity_provider:
        return "oidc"
    return "local" if ws.store.users() else None


def open_access_problem(address: str) -> str | None:
    """Why an app without sign-in must not listen on `address`; None where it may (this machine only)."""
    if is_loopback(address):
        return None
    return (f"PIRL Studio will not listen on {address} without sign-in: anyone who reaches the port could "
            "see every image and change every model. Add a user first (`pirl users add NAME --role editor`), "
            "or configure an identity provider for st.login under [auth] in .streamlit/secrets.toml "
            "(README: Sign-in), or listen on 127.0.0.1 only.")
