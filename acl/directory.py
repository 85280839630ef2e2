"""Principal -> tokens, at query time (so a membership change needs no re-indexing).

A :class:`Directory` asks its backends, in order, and unites what they know:

* ``os`` (:class:`OSBackend`): a user name or uid -> ``user:posix:<uid>``, its
  primary and supplementary ``group:posix:<gid>`` tokens;
* ``file`` (:class:`FileBackend`): a YAML or JSON file of users and (nested) groups
  -> ``user:<source>:<name>``, ``group:<source>:<group>`` for every group that
  contains the user directly or through other groups, plus any extra tokens the
  file gives the user (e.g. identities in a DMS);
* ``sync`` (:class:`SyncBackend`): the groups DMS connectors push with
  :meth:`Directory.sync_groups` (kept in the store) -> ``group:<source>:<group>``
  (nested groups followed) and ``user:<source>:<name>`` for every source whose
  groups name the user.

Every principal also gets ``everyone``; the names ``everyone``/``anonymous`` get
only that. A name no backend knows is a :class:`LookupError`. An explicit
:class:`~acl.model.Principal` carries its tokens itself. This module is a leaf: the
sync backend is handed a store object with ``sync_groups`` and ``groups_of``.
"""
from __future__ import annotations

import json
import os
import pwd
from pathlib import Path

from .model import EVERYONE, Principal, group_token, user_token

ANONYMOUS = ("everyone", "anonymous", "")
BACKENDS = ("os", "file", "sync")


class OSBackend:
    name = "os"

    def tokens(self, name: str) -> frozenset[str] | None:
        try:
            pw = pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)
        except (KeyError, ValueError, OverflowError):
            if name.isdigit():  # an id with no passwd entry: just the uid
                return Principal(user=name).tokens()
            return None
        gids = os.getgrouplist(pw.pw_name, pw.pw_gid)
        return Principal(user=str(pw.pw_uid), groups=tuple(str(g) for g in sorted(set(gids)))).tokens()


def _closure(direct: set[str], parents: dict[str, set[str]]) -> set[str]:
    """Groups reachable upwards from ``direct`` (cycles are harmless)."""
    seen: set[str] = set()
    todo = list(direct)
    while todo:
        g = todo.pop()
        if g not in seen:
            seen.add(g)
            todo.extend(parents.get(g, ()))
    return seen


def _names(v, where: str) -> list[str]:
    if v is None:
        return []
    if not isinstance(v, (list, tuple)) or not all(isinstance(x, str) and x for x in v):
        raise ValueError(f"{where} must be a list of non-empty names, got {v!r}")
    return list(v)


class FileBackend:
    """Users and nested groups from a file (``.yaml``/``.yml`` or ``.json``)::

        users:
          alice: {groups: [eng], tokens: ["user:dms1:a.smith"]}
        groups:
          eng: {users: [bob], groups: [platform]}   # members of platform are members of eng
          platform: [carol]                          # a plain list: user members

    The file is read again when it changes (checked by mtime on each lookup).
    """

    name = "file"

    def __init__(self, path: str | os.PathLike, source: str = "file"):
        self.path, self.source = Path(path).expanduser(), source
        self._stamp: tuple | None = None
        self._load()

    def _load(self) -> None:
        try:
            st = self.path.stat()
        except OSError as e:
            raise ValueError(f"directory file {self.path}: {e.strerror}") from None
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return
        text = self.path.read_text()
        try:
            if self.path.suffix.lower() in (".yaml", ".yml"):
                import yaml

                data = yaml.safe_load(text) or {}
            else:
                data = json.loads(text) if text.strip() else {}
        except Exception as e:  # a parse error of either format: name the file
            raise ValueError(f"directory file {self.path}: not valid {self.path.suffix[1:] or 'JSON'}: {e}") from None
        if not isinstance(data, dict) or set(data) - {"users", "groups"}:
            raise ValueError(f"directory file {self.path}: expected a mapping with 'users' and/or 'groups'")
        users: dict[str, dict] = {}
        parents: dict[str, set[str]] = {}  # group or "user\0name" -> groups containing it
        for name, u in (data.get("users") or {}).items():
            u = {"groups": u} if isinstance(u, list) else (u or {})
            if not isinstance(u, dict) or set(u) - {"groups", "tokens"}:
                raise ValueError(f"directory file {self.path}: user {name!r}: expected groups and/or tokens")
            users[str(name)] = {"tokens": _names(u.get("tokens"), f"{self.path}: user {name!r} tokens")}
            for g in _names(u.get("groups"), f"{self.path}: user {name!r} groups"):
                parents.setdefault("user\0" + str(name), set()).add(g)
        for gname, g in (data.get("groups") or {}).items():
            g = {"users": g} if isinstance(g, list) else (g or {})
            if not isinstance(g, dict) or set(g) - {"users", "groups"}:
                raise ValueError(f"directory file {self.path}: group {gname!r}: expected users and/or groups")
            for u in _names(g.get("users"), f"{self.path}: group {gname!r} users"):
                users.setdefault(u, {"tokens": []})
                parents.setdefault("user\0" + u, set()).add(str(gname))
            for sub in _names(g.get("groups"), f"{self.path}: group {gname!r} groups"):
                parents.setdefault(sub, set()).add(str(gname))
        self._users, self._parents, self._stamp = users, parents, stamp

    def tokens(self, name: str) -> frozenset[str] | None:
        self._load()
        u = self._users.get(name)
        if u is None:
            return None
        groups = _closure(self._parents.get("user\0" + name, set()), self._parents)
        return frozenset({EVERYONE, user_token(name, self.source), *u["tokens"],
                          *(group_token(g, self.source) for g in groups)})


class SyncBackend:
    """Groups that DMS connectors feed (``Directory.sync_groups``), kept in the store."""

    name = "sync"

    def __init__(self, store):
        for m in ("sync_groups", "groups_of"):
            if not hasattr(store, m):
                raise ValueError(f"directory backend 'sync': store {type(store).__name__} has no {m}()")
        self.store = store

    def tokens(self, name: str) -> frozenset[str] | None:
        rows = self.store.groups_of(name)
        if not rows:
            return None
        return frozenset({EVERYONE, *(user_token(name, s) for s, _ in rows), *(group_token(g, s) for s, g in rows)})

    def sync_groups(self, source: str, groups: dict) -> int:
        if not isinstance(source, str) or not source or ":" in source:
            raise ValueError(f"sync_groups: source must be a non-empty name without ':', got {source!r}")
        if not isinstance(groups, dict):
            raise ValueError(f"sync_groups: groups must be a mapping group -> members, got {type(groups).__name__}")
        edges: list[tuple[str, str, str]] = []
        for g, members in groups.items():
            if not isinstance(g, str) or not g:
                raise ValueError(f"sync_groups({source}): a group id must be a non-empty string, got {g!r}")
            for m in _names(members, f"sync_groups({source}): members of {g!r}"):
                kind, _, ident = m.partition(":") if m.startswith("group:") else ("user", "", m)
                if not ident:
                    raise ValueError(f"sync_groups({source}): member {m!r} of {g!r} names no group")
                edges.append((g, ident, kind))
        self.store.sync_groups(source, edges)
        return len(edges)


class Directory:
    """Backends asked in order; a principal's tokens are the union of what they know."""

    def __init__(self, backends: list | None = None):
        self.backends = list(backends) if backends is not None else [OSBackend()]

    @classmethod
    def from_config(cls, cfg: dict | None, store=None) -> "Directory":
        """From the ``[directory]`` config table: ``backends = ["os", "file", "sync"]`` (default
        ``["os", "sync"]``, sync only with a store that keeps groups), ``file = PATH``, ``file_source = NAME``."""
        cfg = cfg or {}
        names = cfg.get("backends", ["os", "sync"] if hasattr(store, "groups_of") else ["os"])
        if isinstance(names, str) or not isinstance(names, list):
            raise ValueError(f"[directory] backends must be a list, e.g. [\"os\", \"file\"], got {names!r}")
        out = []
        for n in names:
            if n == "os":
                out.append(OSBackend())
            elif n == "file":
                if not cfg.get("file"):
                    raise ValueError("[directory] backend 'file' needs file = \"PATH\" (YAML or JSON)")
                out.append(FileBackend(cfg["file"], cfg.get("file_source", "file")))
            elif n == "sync":
                if store is None:
                    raise ValueError("[directory] backend 'sync' needs a store")
                out.append(SyncBackend(store))
            else:
                raise ValueError(f"[directory] unknown backend {n!r}: choose from {', '.join(BACKENDS)}")
        return cls(out)

    def resolve(self, principal: "str | int | Principal | None") -> frozenset[str]:
        return frozenset(self.explain(principal))

    def explain(self, principal: "str | int | Principal | None") -> dict[str, list[str]]:
        """token -> the backends that gave it (``explicit`` for a Principal object)."""
        if isinstance(principal, Principal):
            return {t: ["explicit"] for t in principal.tokens()}
        if principal is None or principal in ANONYMOUS:
            return {EVERYONE: ["anonymous"]}
        name = str(principal)
        found: dict[str, list[str]] = {}
        for b in self.backends:
            for t in b.tokens(name) or ():
                found.setdefault(t, []).append(b.name)
        if not found:
            raise LookupError(f"unknown user {name!r}: not in the directory ({', '.join(b.name for b in self.backends)});"
                              f" pass ingest.Principal(user=..., groups=[...]) to name one explicitly")
        return found

    def sync_groups(self, source: str, groups: dict) -> int:
        """Replace all groups of ``source`` with ``{group: [members]}``; a member ``group:<id>``
        is a nested group of the same source. Returns the number of memberships stored."""
        for b in self.backends:
            if isinstance(b, SyncBackend):
                return b.sync_groups(source, groups)
        raise ValueError("sync_groups: this directory has no 'sync' backend (add it to [directory] backends)")


_OS = Directory()


def resolve(principal: "str | int | Principal | None") -> frozenset[str]:
    """Resolve through the OS only (the default directory without a store)."""
    return _OS.resolve(principal)
