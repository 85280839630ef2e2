"""The normalised ACL: allow and deny sets of principal tokens.

Tokens: ``user:<id>``, ``group:<source>:<id>``, ``everyone``. Deny wins.
``ACL.unknown()`` (the source could not tell us) is stored with an empty allow set,
so it is visible to no one, and is flagged (fail closed).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

EVERYONE = "everyone"


def user_token(uid: str | int, namespace: str = "posix") -> str:
    return f"user:{namespace}:{uid}"


def group_token(gid: str | int, source: str = "posix") -> str:
    return f"group:{source}:{gid}"


@dataclass(frozen=True)
class ACL:
    allow: frozenset[str] = frozenset()
    deny: frozenset[str] = frozenset()
    known: bool = True
    reason: str | None = None  # why an ACL is unknown

    @classmethod
    def unknown(cls, reason: str) -> "ACL":
        return cls(frozenset(), frozenset(), known=False, reason=reason)

    def permits(self, tokens: frozenset[str] | set[str]) -> bool:
        return bool(self.allow & tokens) and not (self.deny & tokens)

    def to_json(self) -> str:
        return json.dumps(
            {"allow": sorted(self.allow), "deny": sorted(self.deny), "known": self.known,
             **({"reason": self.reason} if self.reason else {})},
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, s: str | None) -> "ACL":
        if not s:
            return cls.unknown("no ACL recorded")
        d = json.loads(s)
        return cls(frozenset(d.get("allow", ())), frozenset(d.get("deny", ())),
                   known=d.get("known", True), reason=d.get("reason"))

    @property
    def version(self) -> str:
        """Hash of the normalised, sorted ACL. An unknown ACL differs from an empty one."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Principal:
    """Who is asking. ``user`` is a name or id; ``groups`` are group names or ids.

    An explicit principal carries its tokens itself (no directory lookup):
    ``Principal("1001", groups=("1001", "2000"))`` reads as posix uid/gids;
    ``Principal(tokens=frozenset({...}))`` gives tokens verbatim (e.g. DMS identities).
    """

    user: str | None = None
    groups: tuple[str, ...] = ()
    namespace: str = "posix"
    extra_tokens: frozenset[str] = field(default_factory=frozenset)

    def tokens(self) -> frozenset[str]:
        toks = {EVERYONE, *self.extra_tokens}
        if self.user is not None:
            toks.add(user_token(self.user, self.namespace))
        toks.update(group_token(g, self.namespace) for g in self.groups)
        return frozenset(toks)
