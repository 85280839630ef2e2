"""What sources emit: change events that say *that* something changed (one type for every source).

The worker looks at the current state of the thing itself when it runs, so an
event never carries content, and repeating an event is harmless.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields

UPSERT = "upsert"  # created or modified (content, permissions or, for a DMS item, its place); the task re-checks
DELETE = "delete"  # gone
MOVE = "move"  # folder: key -> dest (a DMS move is an upsert: the item id stays, the fetch tells where)
RESCAN = "rescan"  # folder: something under this directory changed (dir chmod, dir move): reconcile it
ACL_CHANGE = "acl"  # permissions only (a DMS feed that says so; the folder's watcher cannot tell)
KINDS = (UPSERT, DELETE, MOVE, RESCAN, ACL_CHANGE)


@dataclass(frozen=True)
class ChangeEvent:
    """The one change event every source emits: the folder watcher, the reconcile scan, every
    connector's ``changes()`` (DMS and folder), and what a task carries (:meth:`to_wire`).

    ``source`` says where the document lives: a folder's root (an absolute path: the worker reads
    the file through ``ingest.sources.safefs``) or a connector's registry key ``"<type>:<name>"``
    (the worker builds the connector from ``[sources.<name>]`` and fetches through it). ``key`` is
    the document's external id there: a path relative to the root with POSIX separators, or the
    DMS item id (never its path, so a DMS move is an upsert). ``version`` (etag/revision) and ``seq``
    (an ordering stamp: a folder file's ctime_ns, a DMS item's modification time in ns) are what the
    source saw when it made the event; a task for an older ``seq`` than indexed is dropped as stale."""
    kind: str
    source: str
    key: str
    dest: str | None = None  # MOVE: the new key
    path: str | None = None  # DMS: the display path when the feed gives it (labels sidecars are found by it)
    version: str | None = None
    seq: int | None = field(default=None, compare=False)  # a stamp, not what changed: not compared

    @property
    def folder(self) -> bool:
        """A folder's file (``source`` is its root), not a connector's item."""
        return os.path.isabs(self.source)

    @property
    def registry_source(self) -> str:
        """The source as the registry keys it: ``folder:<root>`` or the connector's ``<type>:<name>``."""
        return folder_source(self.source) if self.folder else self.source

    def to_wire(self) -> dict:
        """The event as a task argument (JSON): its fields, ``None`` ones left out."""
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_wire(cls, d) -> "ChangeEvent":
        """The event a task carries; a message of another form raises ``ValueError`` naming it."""
        names = {f.name for f in fields(cls)}
        if not isinstance(d, dict) or not {"kind", "source", "key"} <= set(d) or set(d) - names \
                or not all(isinstance(d[k], str) for k in ("kind", "source", "key")):
            raise ValueError(f"not a change event: {d!r} (expected a dict with kind, source, key"
                             f" and optionally {', '.join(sorted(names - {'kind', 'source', 'key'}))})")
        return cls(**d)


def folder_source(root: str | os.PathLike) -> str:
    return store_rel("folder:" + os.path.abspath(root))


def store_rel(rel: str) -> str:
    """A relative path as the store keeps it: itself, or, for a name with bytes that are
    not UTF-8 (``os.fsdecode`` turned them into lone surrogates), those bytes written as
    ``\\xNN``, so the store, its lock and its outcome log can hold it. (A file really
    named with a backslash escape would share that key; both are still read safely.)"""
    try:
        rel.encode("utf-8")
        return rel
    except UnicodeEncodeError:
        return os.fsencode(rel).decode("utf-8", "backslashreplace")
