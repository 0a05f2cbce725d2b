"""`pirl`: the command line. Every command runs the same services as the pages.

`main` parses, opens the workspace once (for the commands that use one) and turns every
PirlError into one line on stderr and exit code 2. Each group of commands lives in its own
module with `add_parsers(sub)`; a command is a function `(args, ws) -> exit code`.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from pathlib import Path

from .. import __version__
from ..errors import PirlError
from ..workspace import backup
from ..workspace.folder import Workspace, default_root
from . import access, app, data, evaluate, label, models, train

GROUPS = (app, data, train, evaluate, label, models, access)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pirl", description="PIRL Studio: self-supervised pretraining for medical images, on your machine.")
    parser.add_argument("--version", action="version", version=f"pirl-studio {__version__}")
    parser.add_argument("--workspace", "-w", default=None,
                        help="workspace folder (default: $PIRL_HOME or ./pirl-workspace)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for group in GROUPS:
        group.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        ws = Workspace.open(args.workspace) if getattr(args, "uses_workspace", True) else None
        return args.run(args, ws) or 0
    except KeyboardInterrupt:
        return 130
    except PirlError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except sqlite3.DatabaseError as exc:  # met while working: damaged, read-only, busy or full
        root = Path(args.workspace).expanduser().resolve() if args.workspace else default_root()
        print(f"error: {backup.explain(root, exc)}", file=sys.stderr)
        return 2
