"""`pirl app`: the web app on this machine."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from ..errors import PirlError
from ._output import note

APP_FILE = Path(__file__).resolve().parent.parent.parent / "app.py"


def add_parsers(sub) -> None:
    p = sub.add_parser("app", help="start the web app")
    p.add_argument("--port", type=int, default=8501)
    p.add_argument("--address", default="127.0.0.1", help="address to listen on (default: this machine only)")
    p.add_argument("--demo", action="store_true", help="fill an empty workspace with the demo data set first")
    p.add_argument("--headless", action="store_true", help="do not open a browser")
    p.set_defaults(run=run_app)


def run_app(args, ws) -> int:
    from ..access.users import identity_provider_configured, open_access_problem, sign_in_mode

    if sign_in_mode(ws, identity_provider_configured(APP_FILE.parent)) is None:
        problem = open_access_problem(args.address)
        if problem:
            raise PirlError(problem)
    if args.demo:
        from ..demo import ensure_demo_workspace

        ensure_demo_workspace(ws, log=note)
    env = {**os.environ, "PIRL_HOME": str(ws.root)}
    cmd = [sys.executable, "-m", "streamlit", "run", str(APP_FILE), "--server.port", str(args.port),
           "--server.address", args.address]
    if args.headless:
        cmd += ["--server.headless", "true"]
    note(f"PIRL Studio: http://{args.address}:{args.port}  (workspace {ws.root})")
    return subprocess.call(cmd, env=env, cwd=APP_FILE.parent)
