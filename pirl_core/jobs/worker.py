"""`python -m pirl_core.jobs.worker --workspace DIR [--forever]`: the background job worker.

The entry point registers every job kind (pirl_core.job_kinds) and serves the queue.
"""

from __future__ import annotations

import argparse
import sys

from ..workspace.folder import Workspace
from . import queue


def serve(ws: Workspace, forever: bool = False) -> int:
    """Run the workspace's queued jobs; returns how many. Does nothing if a worker already serves it."""
    if queue.worker_running(ws):
        return 0  # checked before the slow import of the job kinds (torch)
    from . import kinds  # noqa: F401  (registers the job kinds

    return queue.run_worker(ws, forever=forever)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Run the workspace's queued jobs.")
    ap.add_argument("--workspace", required=True)
    ap.add_argument("--forever", action="store_true", help="keep waiting for jobs (servers)")
    args = ap.parse_args(argv)
    serve(Workspace(args.workspace), forever=args.forever)
    return 0


if __name__ == "__main__":
    sys.exit(main())
