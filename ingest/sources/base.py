"""What sources emit: change events that say *that* something changed.

The worker looks at the current state of the thing itself when it runs, so an
event never carries content, and repeating an event is harmless.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

UPSERT = "upsert"  # created or modified (content or permissions); the task re-checks
DELETE = "delete"  # gone
MOVE = "move"  # path -> dest_path
RESCAN = "rescan"  # something under this directory changed (dir chmod, dir move): reconcile it


@dataclass(frozen=True)
class ChangeEvent:
    kind: str
    root: str  # absolute path of the watched folder (the source)
    path: str  # path relative to root, POSIX separators
    dest_path: str | None = None  # for MOVE: new relative path

    def key(self) -> tuple[str, str]:
        return (self.root, self.path)


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
