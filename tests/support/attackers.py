"""The local attackers of the permission tests: real OS users and groups (prefix ``h13a``),
created once when missing (needs root)."""
from __future__ import annotations

import grp
import pwd
import subprocess

USERS = {"h13a_alice": "h13a_team", "h13a_bob": "h13a_team", "h13a_carol": "h13a_other"}
GROUPS = ("h13a_team", "h13a_other", "h13a_x")


def ensure_users():
    for g in GROUPS:
        try:
            grp.getgrnam(g)
        except KeyError:
            subprocess.run(["groupadd", g], check=True)
    for u, g in USERS.items():
        try:
            pwd.getpwnam(u)
        except KeyError:
            subprocess.run(["useradd", "-M", "-N", "-g", g, "-s", "/usr/sbin/nologin", u], check=True)
    return {u: pwd.getpwnam(u) for u in USERS}
