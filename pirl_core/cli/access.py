"""`pirl users | audit`: who may sign in to the app, and what everyone did."""

from __future__ import annotations

import datetime as dt
import getpass
import sys

from ..errors import PirlError
from ._output import note, print_json


def add_parsers(sub) -> None:
    p = sub.add_parser("users", help="who may sign in to the app (local users, or roles for st.login users)")
    verbs = p.add_subparsers(dest="verb", metavar="VERB")
    verbs.required = True
    add = verbs.add_parser("add", help="add a user, or change one's role or password")
    add.add_argument("name")
    add.add_argument("--role", default="viewer", choices=("viewer", "editor"))
    how = add.add_mutually_exclusive_group()
    how.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    how.add_argument("--identity-provider", action="store_true",
                     help="no password: the user signs in through st.login (OIDC); this sets the role only")
    add.set_defaults(run=run_add)
    remove = verbs.add_parser("remove", help="remove a user")
    remove.add_argument("name")
    remove.set_defaults(run=run_remove)
    verbs.add_parser("list", help="list users and roles").set_defaults(run=run_list)

    p = sub.add_parser("audit", help="the audit log, newest first")
    p.add_argument("--limit", type=int, default=100)
    p.set_defaults(run=run_audit)


def _password(args) -> str | None:
    if args.identity_provider:
        return None
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass(f"Password for {args.name}: ")
    if getpass.getpass("Again: ") != first:
        raise PirlError("The two passwords differ; nothing changed.")
    return first


def run_add(args, ws) -> int:
    from ..access.users import add_user

    add_user(ws, args.name, _password(args), args.role)
    note(f"{args.name} may sign in as {args.role}.")
    return 0


def run_remove(args, ws) -> int:
    from ..access.users import remove_user

    remove_user(ws, args.name)
    note(f"{args.name} removed.")
    return 0


def run_list(args, ws) -> int:
    for user in ws.store.users():
        print_json({"name": user["name"], "role": user["role"],
                    "sign_in": "password" if user["has_password"] else "identity provider"})
    return 0


def run_audit(args, ws) -> int:
    from ..access.audit import entries

    for e in entries(ws, args.limit):
        when = dt.datetime.fromtimestamp(e["time"]).isoformat(timespec="seconds")
        print_json({"time": when, "who": e["actor"], "action": e["action"], "target": e["target"],
                    "detail": e["detail"]})
    return 0
