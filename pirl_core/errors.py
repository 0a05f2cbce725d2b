"""Errors a user can act on: the message says what is wrong and what to do."""


class PirlError(Exception):
    """Bad input or setup. Shown as a message (page or CLI), never as a traceback."""
