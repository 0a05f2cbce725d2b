"""`pirl`: the command line. Every command runs the same services as the pages."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from . import __version__
from .errors import PirlError

APP_FILE = Path(__file__).resolve().parent.parent / "app.py"


def _print_json(obj) -> None:
    print(json.dumps(obj, indent=None, default=str))


def cmd_demo_data(args) -> int:
    from . import demo_data

    summary = demo_data.generate(args.out_dir, n=args.n, seed=args.seed, unlabeled=args.unlabeled,
                                 classes=args.classes, size=args.size)
    _print_json(summary)
    return 0


def cmd_app(args) -> int:
    from .workspace import Workspace

    ws = Workspace(args.workspace)
    if args.demo:
        from .demo import ensure_demo_workspace

        ensure_demo_workspace(ws, log=lambda m: print(m, file=sys.stderr))
    env = {**os.environ, "PIRL_HOME": str(ws.root)}
    cmd = [sys.executable, "-m", "streamlit", "run", str(APP_FILE), "--server.port", str(args.port),
           "--server.address", args.address]
    if args.headless:
        cmd += ["--server.headless", "true"]
    print(f"PIRL Studio: http://{args.address}:{args.port}  (workspace {ws.root})", file=sys.stderr)
    return subprocess.call(cmd, env=env, cwd=APP_FILE.parent)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pirl", description="PIRL Studio: self-supervised pretraining for medical images, on your machine.")
    parser.add_argument("--version", action="version", version=f"pirl-studio {__version__}")
    parser.add_argument("--workspace", "-w", default=None,
                        help="workspace folder (default: $PIRL_HOME or ./pirl-workspace)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("app", help="start the web app")
    p.add_argument("--port", type=int, default=8501)
    p.add_argument("--address", default="127.0.0.1", help="address to listen on (default: this machine only)")
    p.add_argument("--demo", action="store_true", help="fill an empty workspace with the demo data set first")
    p.add_argument("--headless", action="store_true", help="do not open a browser")
    p.set_defaults(func=cmd_app)

    p = sub.add_parser("demo-data", help="write synthetic lesion images (unlabeled pool + labeled classes)")
    p.add_argument("out_dir")
    p.add_argument("--n", type=int, default=60, help="labeled images, split evenly over the classes")
    p.add_argument("--unlabeled", type=int, default=None, help="unlabeled images (default 2n)")
    p.add_argument("--classes", type=int, default=2, choices=[2, 3])
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo_data)

    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.workspace:
        os.environ["PIRL_HOME"] = str(Path(args.workspace).expanduser().resolve())
    try:
        return args.func(args) or 0
    except KeyboardInterrupt:
        return 130
    except PirlError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
