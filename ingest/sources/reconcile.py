"""Reconcile scan: compare a folder with the registry and emit what differs.

Finds what changed while nothing was watching: new files, edits (size/mtime),
permission changes (ACL version), deletions, and moves (a vanished document
whose content hash equals a new file's). Reading file contents happens only for
move detection, and only for new files whose size matches a vanished document.
A document is reported deleted only when ``lstat`` says the path does not exist;
a path we cannot examine (permissions, I/O error) is never pruned. An upsert carries the
file's ctime_ns from the listing's ``lstat`` as its ``seq`` (a task for an older state is dropped).
"""
from __future__ import annotations

import logging
import os
import stat
from collections import defaultdict

from acl.posix import acl_for_path

from ingest.sources.base import DELETE, MOVE, UPSERT, ChangeEvent, folder_source, store_rel
from ingest.sources.folder import walk
from ingest.sources.ignore import is_ignored
from ingest.sources.safefs import NotRegular, open_source

log = logging.getLogger("ingest.sources.reconcile")


def _under(rel: str, subtree: str) -> bool:
    return not subtree or subtree in (".", "") or rel == subtree or rel.startswith(subtree.rstrip("/") + "/")


def _gone(root: str, rel: str) -> bool:
    """No regular file at ``root/rel`` any more, reached without following a link: a
    symlink, FIFO or directory there (or a link on the way) is no document."""
    try:
        open_source(root, rel).close()
        return False
    except (FileNotFoundError, NotRegular, ValueError):
        return True
    except OSError as e:
        log.warning("cannot examine %s under %s (%s); not pruning it", rel, root, e.strerror)
        return False


def reconcile(store, root: str, subtree: str = "") -> list[ChangeEvent]:
    root = os.path.abspath(root)
    source = folder_source(root)
    known = {k: v for k, v in store.docs_for_source(source).items() if _under(k, subtree)}
    start = os.path.join(root, subtree) if subtree and subtree != "." else root
    seen: dict[str, os.stat_result] = {}
    failed: list[str] = []  # directories we could not list: nothing under them is pruned
    if os.path.isdir(start) and not os.path.islink(start):
        prefix = os.path.relpath(start, root)
        errors: list[str] = []
        try:
            for rel, st in walk(start, errors=errors):
                full_rel = rel if prefix == "." else f"{prefix}/{rel}"
                seen[full_rel] = st
        except (FileNotFoundError, NotADirectoryError):  # vanished since isdir(): all below is gone
            seen.clear()
        failed = [e if prefix == "." else f"{prefix}/{e}" for e in errors]
    elif os.path.lexists(start) and not is_ignored(subtree):
        st = os.lstat(start)
        if stat.S_ISREG(st.st_mode):  # a link to a file is not that file
            seen[subtree] = st
    # the store keys a name that is not UTF-8 by its escaped form (ingest.sources.base.store_rel)
    names = {store_rel(rel): rel for rel in seen}
    seen = {store_rel(rel): st for rel, st in seen.items()}

    events: list[ChangeEvent] = []
    stat_cache: dict[str, os.stat_result] = {}
    new_files: list[str] = []
    for rel, st in seen.items():
        row = known.get(rel)
        if row is None:
            new_files.append(rel)
        elif row["size"] != st.st_size or row["mtime_ns"] != st.st_mtime_ns:
            events.append(ChangeEvent(UPSERT, root, names[rel], seq=st.st_ctime_ns))
        elif acl_for_path(os.path.join(root, names[rel]), stat_cache=stat_cache,
                          file_stat=st).version != row["acl_version"]:
            events.append(ChangeEvent(UPSERT, root, names[rel], seq=st.st_ctime_ns))

    missing = {rel: row for rel, row in known.items()
               if rel not in seen and not any(_under(rel, f) for f in failed) and _gone(root, rel)}
    by_size: dict[int, list[str]] = defaultdict(list)
    for rel, row in missing.items():
        if row["status"] == "indexed" and row["size"] is not None:
            by_size[row["size"]].append(rel)
    for rel in sorted(new_files):
        cands = by_size.get(seen[rel].st_size)
        match = None
        if cands:
            try:
                with open_source(root, names[rel]) as sf:
                    h = sf.sha256()
                match = next((c for c in cands if missing[c]["content_version"] == h), None)
            except (OSError, ValueError):
                match = None
        if match is not None:
            cands.remove(match)
            del missing[match]
            events.append(ChangeEvent(MOVE, root, match, names[rel]))
        else:
            events.append(ChangeEvent(UPSERT, root, names[rel], seq=seen[rel].st_ctime_ns))
    events.extend(ChangeEvent(DELETE, root, rel) for rel in sorted(missing))
    return events
