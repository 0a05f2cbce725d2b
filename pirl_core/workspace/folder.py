"""The workspace folder: one place for the database, image caches, checkpoints and exports.

Default `./pirl-workspace`; `PIRL_HOME` or the CLI's `--workspace` point elsewhere.
Delete the folder and the app starts fresh. A folder created here is its owner's alone (0700, the database
0600: it holds password hashes, the audit log, file names and labels); an existing folder keeps the
permissions its owner gave it.
"""

from __future__ import annotations

import getpass
import os
from functools import cached_property
from pathlib import Path

from ..errors import WorkspaceUnusable
from .store import Store

DEFAULT_DIR = "pirl-workspace"
DB_NAME = "pirl.db"


def default_root() -> Path:
    return Path(os.environ.get("PIRL_HOME") or DEFAULT_DIR).expanduser().resolve()


def os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container)
        return f"uid {os.getuid()}"


class Workspace:
    SUBDIRS = ("images", "cache", "checkpoints", "exports", "logs", "uploads")

    def __init__(self, root: str | Path | None = None, actor: str | None = None):
        self.actor = actor or os_user()  # who the audit log names for what this handle does
        self.root = Path(root).expanduser().resolve() if root else default_root()
        try:
            self.root.parent.mkdir(parents=True, exist_ok=True)
            self.root.mkdir(mode=0o700, exist_ok=True)
            for name in self.SUBDIRS:
                (self.root / name).mkdir(mode=0o700, exist_ok=True)
        except OSError as exc:
            raise WorkspaceUnusable(f"The workspace folder {self.root} cannot be created or written "
                                    f"({exc.strerror or exc}). Point PIRL_HOME (or --workspace) at a folder you "
                                    "may write.") from None

    @classmethod
    def open(cls, root: str | Path | None = None, actor: str | None = None) -> Workspace:
        """The workspace with its database opened and migrated; a PirlError (SchemaTooNew) if this
        PIRL Studio is too old for it."""
        ws = cls(root, actor)
        ws.store  # noqa: B018  (opening the store migrates the database, or refuses a newer one)
        return ws

    @cached_property
    def store(self) -> Store:
        return Store(self.root / DB_NAME)

    def __getattr__(self, name: str) -> Path:
        # ws.images, ws.cache, ws.checkpoints, ws.exports, ws.logs, ws.uploads
        if name in self.SUBDIRS:
            return self.root / name
        raise AttributeError(name)

    def __repr__(self) -> str:
        return f"Workspace({str(self.root)!r})"
