"""Bundle signatures: an Ed25519 key of the workspace signs each bundle's manifest (the `cryptography` library).

The manifest's SHA-256 hashes detect a damaged bundle, not a deliberate change: whoever alters a member can
re-hash it. A signature checked against a public key the user trusts (`pirl predict --trust KEY.pub`) detects
that too. The private key stays in the workspace (keys/, readable by its owner only); share the .pub file.
A server trusts its own key and the .pub files placed in `keys/trusted/` (other workspaces of the team).
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ..errors import PirlError
from ..workspace.atomic import write_bytes_atomic
from ..workspace.folder import Workspace

PRIVATE, PUBLIC = "bundle_signing.pem", "bundle_signing.pub"


def workspace_key(ws: Workspace) -> Ed25519PrivateKey:
    """The workspace's signing key, made on first use."""
    folder = ws.root / "keys"
    private = folder / PRIVATE
    if not private.exists():
        folder.mkdir(mode=0o700, exist_ok=True)
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        write_bytes_atomic(private, pem)
        os.chmod(private, 0o600)
        write_bytes_atomic(folder / PUBLIC, public_pem(key.public_key()))
    return serialization.load_pem_private_key(private.read_bytes(), password=None)


def public_key_path(ws: Workspace) -> Path:
    workspace_key(ws)
    return ws.root / "keys" / PUBLIC


def public_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def fingerprint(key: Ed25519PublicKey) -> str:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "SHA256:" + base64.b64encode(hashlib.sha256(raw).digest()).decode().rstrip("=")


def sign(ws: Workspace, data: bytes) -> bytes:
    return workspace_key(ws).sign(data)


def load_public_key(path: str | Path) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(Path(path).read_bytes())
    except (OSError, ValueError) as exc:
        raise PirlError(f"{path} is not a readable public key ({exc}).") from None
    if not isinstance(key, Ed25519PublicKey):
        raise PirlError(f"{path} is not an Ed25519 public key.")
    return key


def verify(key: Ed25519PublicKey, data: bytes, signature: bytes | None, what: str) -> str:
    """A sentence saying who signed `data`, or PirlError when it is unsigned or the signature fails."""
    if signature is None:
        raise PirlError(f"{what} is not signed, and a trusted key was given: refusing it.")
    try:
        key.verify(signature, data)
    except InvalidSignature:
        raise PirlError(f"{what}: the signature does not match the trusted key {fingerprint(key)} "
                        "(changed after signing, or signed by another key). Do not use it.") from None
    return f"signed by the trusted key {fingerprint(key)}"


def trusted_keys(ws: Workspace) -> list[Ed25519PublicKey]:
    """The keys this workspace trusts: its own, then every readable .pub in keys/trusted/."""
    keys = [workspace_key(ws).public_key()]
    for path in sorted((ws.root / "keys" / "trusted").glob("*.pub")):
        try:
            keys.append(load_public_key(path))
        except PirlError:
            continue
    return keys


def who_signed(keys: list[Ed25519PublicKey], data: bytes, signature: bytes | None) -> tuple[bool, str]:
    """(trusted, a sentence): whether one of `keys` signed `data`, said for the person about to use it."""
    if signature is None:
        return False, "not signed: it may have been changed since it was exported"
    for key in keys:
        try:
            key.verify(signature, data)
            return True, f"signed by a key this workspace trusts ({fingerprint(key)})"
        except InvalidSignature:
            continue
    return False, ("signed by a key this workspace does not trust, or changed after signing: it may not be the "
                   "model that was exported")
