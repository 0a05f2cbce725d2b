"""Who may use the app: sign-in and roles.

A single-user laptop needs no sign-in: the app listens on 127.0.0.1 only. As soon as it listens beyond
this machine, sign-in is required, one of:
- an identity provider (Keycloak, Entra ID, Google) through Streamlit's own `st.login` (OIDC via Authlib),
  configured in `.streamlit/secrets.toml` under `[auth]`; such users are viewers unless listed here as editors;
- local users (`pirl users add NAME`), passwords hashed with argon2 (argon2-cffi); once any exist, the app
  asks everyone to sign in, on any address.
Roles: a viewer browses, compares, explores and downloads; an editor also imports, trains, exports and deletes.
"""

from __future__ import annotations

import ipaddress
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


def authenticate(ws: Workspace, name: str, password: str) -> dict | None:
    """The signed-in user {"name", "role"}, or None for a wrong name or password (both recorded)."""
    user = ws.store.user(name.strip())
    stored = user["password_hash"] if user else None
    try:
        _hasher().verify(stored or _dummy_hash(), password)
        ok = stored is not None
    except (VerificationError, InvalidHashError):
        ok = False
    if not ok:
        audit.record(ws, "sign-in refused", name.strip()[:128], by="anonymous")
        return None
    if _hasher().check_needs_rehash(stored):
        ws.store.set_password_hash(user["name"], _hasher().hash(password))
    audit.record(ws, "sign in", user["name"], by=user["name"])
    return {"name": user["name"], "role": user["role"]}


def role_of(ws: Workspace, name: str) -> str:
    """An identity-provider user's role: as listed here, a viewer otherwise."""
    user = ws.store.user(name)
    return user["role"] if user else "viewer"


def can_edit(role: str | None) -> bool:
    return role == "editor"


def is_loopback(address: str) -> bool:
    if address.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False


def identity_provider_configured(app_dir: Path) -> bool:
    """Whether st.login has an identity provider: an [auth] section in a secrets.toml Streamlit reads (the
    app's folder, then the user's home)."""
    for secrets in (app_dir / ".streamlit" / "secrets.toml", Path.home() / ".streamlit" / "secrets.toml"):
        try:
            if "auth" in tomllib.loads(secrets.read_text()):
                return True
        except (OSError, tomllib.TOMLDecodeError):
            continue
    return False


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
