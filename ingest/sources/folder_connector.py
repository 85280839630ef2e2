"""The folder source behind the connector contract (for uniform tooling: ``ingest poll`` on a folder).

Ids are paths relative to the root (DESIGN.md: a path is a folder's external id); the source key is
the one the watcher uses (``folder:<abs root>``), so both see one registry. The cursor is a snapshot
of (size, mtime, ACL version) per file; the version is the content's sha256; the ACL is the POSIX
adapter's. The watcher (with native moves) remains the fast path; this is the polling path.

Config: ``type = "folder"``, ``path = "/srv/share"``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from acl.posix import acl_for_path

from ingest.sources.base import ACL_CHANGE, DELETE, UPSERT, ChangeEvent
from ingest.sources.connector import CursorExpired, ListingError, RawDocument
from ingest.sources.folder import walk
from ingest.sources.safefs import NotRegular, open_source


class FolderConnector:
    def __init__(self, name: str, cfg: dict):
        if not cfg.get("path"):
            raise ValueError(f"source {name}: folder needs path")
        self.name = name
        self.root = os.path.realpath(os.path.abspath(os.path.expanduser(cfg["path"])))  # resolved once
        self.source = "folder:" + self.root

    def _scan(self) -> dict[str, list]:
        """{relative path: [size, mtime_ns, ACL version]} of every regular, non-ignored file, from the
        folder's one listing (:func:`ingest.sources.folder.walk`, as the reconcile scan lists it). A
        listing with any part unreadable raises :class:`ListingError` (nothing is pruned on a partial
        listing)."""
        errors: list[str] = []
        try:
            listing = list(walk(self.root, errors=errors))
        except OSError as e:
            raise ListingError(f"source {self.name}: {self.root} is not a readable folder ({e.strerror or e}); "
                               "nothing pruned") from None
        if errors:
            raise ListingError(f"source {self.name}: cannot list {errors[0]} under {self.root}; nothing pruned")
        out = {}
        for rel, st in listing:
            out[rel] = [st.st_size, st.st_mtime_ns, acl_for_path(os.path.join(self.root, rel), file_stat=st).version]
        return out

    def changes(self, cursor: str | None) -> tuple[list[ChangeEvent], str]:
        """Folder events (``source``: the root), as the watcher and the reconcile scan make them."""
        try:
            old = json.loads(cursor) if cursor else {}
        except ValueError:
            raise CursorExpired(f"source {self.name}: unreadable cursor") from None
        now = self._scan()
        events = []
        for rel, snap in now.items():
            was = old.get(rel)
            if was is None or was[:2] != snap[:2]:
                events.append(ChangeEvent(UPSERT, self.root, rel))
            elif was[2] != snap[2]:
                events.append(ChangeEvent(ACL_CHANGE, self.root, rel))
        events += [ChangeEvent(DELETE, self.root, rel) for rel in old if rel not in now]
        return events, json.dumps(now, sort_keys=True)

    def list_ids(self) -> set[str]:
        return set(self._scan())

    def fetch(self, ref: str) -> RawDocument | None:
        """The file through one descriptor opened without following links (``safefs``): its
        type, hash and ACL come from that descriptor; the bytes are read again from the same
        inode (a file swapped meanwhile is refused). A link, FIFO or other non-regular file is
        treated as gone, as the folder watcher does."""
        try:
            with open_source(self.root, ref) as sf:
                st, version, acl = sf.st, sf.sha256(), sf.acl()
        except (FileNotFoundError, NotRegular):
            return None
        inode = (st.st_dev, st.st_ino)
        return RawDocument(id=ref, name=os.path.basename(ref), uri=Path(os.path.join(self.root, ref)).as_uri(),
                           version=version, acl=acl, size=st.st_size, mtime_ns=st.st_mtime_ns,
                           opener=lambda: _open_same(self.root, ref, inode))

    def acl(self, ref: str):
        with open_source(self.root, ref) as sf:
            return sf.acl()


def _open_same(root: str, ref: str, inode: tuple[int, int]):
    """A read stream of ``root/ref``, refused unless it is still the inode that was hashed."""
    with open_source(root, ref) as sf:
        if (sf.st.st_dev, sf.st.st_ino) != inode:
            raise NotRegular(f"{ref}: the file changed while it was read")
        return os.fdopen(sf.open_read(), "rb")
