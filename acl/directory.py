"""Principal -> tokens, at query time (so a membership change needs no re-indexing).

The default directory is the OS: a user name or uid resolves to its uid token,
its primary and supplementary group tokens, and ``everyone``. The name
``everyone`` (or ``anonymous``) resolves to just ``everyone``.
"""
from __future__ import annotations

import os
import pwd

from .model import EVERYONE, Principal


def resolve(principal: "str | int | Principal | None") -> frozenset[str]:
    if isinstance(principal, Principal):
        return principal.tokens()
    if principal is None or principal in ("everyone", "anonymous", ""):
        return frozenset({EVERYONE})
    name = str(principal)
    try:
        pw = pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)
    except (KeyError, ValueError):
        if name.isdigit():  # an id with no passwd entry: just the uid
            return Principal(user=name).tokens()
        raise LookupError(f"unknown user {name!r}: not in the OS user database; "
                          f"pass ingest.Principal(user=..., groups=[...]) to name one explicitly")
    gids = os.getgrouplist(pw.pw_name, pw.pw_gid)
    return Principal(user=str(pw.pw_uid), groups=tuple(str(g) for g in sorted(set(gids)))).tokens()
