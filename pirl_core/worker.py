"""`python -m pirl_core.worker --workspace DIR [--forever]`: the background job worker."""

from __future__ import annotations

import argparse
import sys

from .jobs import run_worker
from .workspace import Workspace


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Run the workspace's queued jobs.")
    ap.add_argument("--workspace", required=True)
    ap.add_argument("--forever", action="store_true", help="keep waiting for jobs (servers)")
    args = ap.parse_args(argv)
    run_worker(Workspace(args.workspace), forever=args.forever)
    return 0


if __name__ == "__main__":
    sys.exit(main())
