"""Output helpers shared by the command groups: JSON on stdout, progress on stderr."""

from __future__ import annotations

import json
import sys
import time
from contextlib import contextmanager
from typing import Callable, Iterator

from tqdm import tqdm

LOG_INTERVAL_S = 30.0  # stderr redirected to a file: one plain line this often, not a bar per update


def print_json(obj) -> None:
    print(json.dumps(obj, indent=None, default=str))


def note(message: str, end: str = "\n") -> None:
    print(message, end=end, file=sys.stderr)


@contextmanager
def progress(unit: str = "step", interval_s: float = LOG_INTERVAL_S) -> Iterator[Callable[[float, float, str], None]]:
    """`with progress() as show: show(done, total, text)`. On a terminal, a tqdm bar redrawn in place; when
    stderr is a file or a pipe (a log), one plain line per `interval_s` and the last state, so a 40-minute run
    logs a few kilobytes."""
    if sys.stderr.isatty():
        bar = tqdm(total=1, unit=unit, file=sys.stderr, dynamic_ncols=True, leave=True)

        def show(done: float, total: float, text: str) -> None:
            bar.total = total
            bar.set_postfix_str(text, refresh=False)
            bar.update(done - bar.n)

        try:
            yield show
        finally:
            bar.close()
        return
    last = {"at": -float("inf"), "line": ""}

    def show(done: float, total: float, text: str) -> None:
        last["line"] = f"{100 * done / max(total, 1e-9):5.1f}% {text}"
        if time.monotonic() - last["at"] >= interval_s:
            note(last["line"])
            last["at"], last["line"] = time.monotonic(), ""

    try:
        yield show
    finally:
        if last["line"]:
            note(last["line"])
