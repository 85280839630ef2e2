"""What sources emit: change events that say *that* something changed.

The worker looks at the current state of the thing itself when it runs, so an
event never carries content, and repeating an event is harmless.
"""
from __future__ import annotations

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
