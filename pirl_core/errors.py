"""Errors a user can act on: the message says what is wrong and what to do.

Every one is a PirlError, shown as a message (page or CLI), never as a traceback. Programmer
errors (a wrong argument from our own code) stay ValueError / TypeError.
"""


class PirlError(Exception):
    """Bad input or setup."""


class BadImage(PirlError):
    """A file that cannot be used as an image; the message is the reason shown to the user."""


class SchemaTooNew(PirlError):
    """The workspace was written by a newer PIRL Studio than this one."""


class Cancelled(PirlError):
    """The user cancelled the operation; nothing was kept."""

    def __init__(self, message: str = "Cancelled: nothing was imported."):
        super().__init__(message)


class WorkspaceUnusable(PirlError):
    """The workspace folder or database cannot be opened or written (read-only, damaged, full disk)."""


class Interrupted(PirlError):
    """A job stopped before its end for a reason outside it (a training process killed): resume continues it."""


class PacsError(PirlError):
    """A PACS could not be asked, or refused (data/pacs.py): the message says why and what to do."""
