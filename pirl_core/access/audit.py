"""The audit log: who imported, trained, compared, exported or deleted what, and when, in the workspace
database. Actions from the command line are recorded as the machine's user; from the app as the signed-in
user (or the user running the server, where no sign-in is configured)."""

from __future__ import annotations

from ..workspace.folder import Workspace


def record(ws: Workspace, action: str, target: object = "", detail: str = "", by: str | None = None) -> None:
    ws.store.add_audit(by or ws.actor, action, str(target), detail)


def entries(ws: Workspace, limit: int = 500) -> list[dict]:
    """Newest first."""
    return ws.store.audit(limit)
