"""Output helpers shared by the command groups: JSON on stdout, progress on stderr."""

from __future__ import annotations

import json
import sys

from ..fmt import bar


def print_json(obj) -> None:
    print(json.dumps(obj, indent=None, default=str))


def note(message: str, end: str = "\n") -> None:
    print(message, end=end, file=sys.stderr)


def progress_line(done: float, total: float, text: str) -> None:
    note(f"\r{bar(done, total)} {text}"[:160].ljust(160), end="")
