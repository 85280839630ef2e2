"""Folder source: watch a directory tree and emit debounced ChangeEvents.

Pieces:

* :class:`FolderWatcher` - runs a watchdog ``Observer`` (inotify on Linux)
  recursively over a root folder, maps filesystem events to
  :class:`~ingest.sources.base.ChangeEvent` (UPSERT / DELETE / MOVE / RESCAN),
  coalesces them per path and hands them to ``emit`` in batches from one
  flusher thread.
* :class:`Coalescer` - the (thread-unaware, clock-free) debounce/coalesce
  state machine used by the watcher; separate so it can be tested exactly.
* :func:`walk` - the listing the reconcile scan uses: every regular,
  non-ignored file under the root with its ``lstat``.

The watcher is best effort by nature (events can be lost while the process is
down, or when the kernel queue overflows); the reconcile scan is what makes
the folder source correct, the watcher is what makes it fast.

Event mapping (watchdog -> ChangeEvent, paths relative to root):

=====================================================  ======================
file created / modified / closed-after-write / attrib  UPSERT path
file deleted                                           DELETE path
file moved a -> b                                      MOVE a -> b
  ... a ignored (``x.docx.tmp`` -> ``x.docx``)          UPSERT b
  ... b ignored (``x.docx`` -> ``x.docx~``)             DELETE a
dir moved a -> b                                       RESCAN a, RESCAN b
dir attrib (chmod/chown: ACL of the subtree)           RESCAN dir
dir deleted / dir created (incl. moved in)             RESCAN dir
file opened / closed without write, dir modified       nothing
=====================================================  ======================

Opens and no-write closes are not even subscribed to (inotify mask), so the
indexer reading files causes no wakeups at all.
"""
from __future__ import annotations

import logging
import os
import stat as stat_mod
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from watchdog.events import (
    DirAttribEvent,
    DirCreatedEvent,
    DirDeletedEvent,
    DirModifiedEvent,
    DirMovedEvent,
    FileAttribEvent,
    FileClosedEvent,
    FileClosedNoWriteEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileOpenedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

from ingest.sources.base import DELETE, MOVE, RESCAN, UPSERT, ChangeEvent
from ingest.sources.ignore import is_ignored, is_ignored_dir_name

log = logging.getLogger("ingest.sources.folder")

__all__ = ["FolderWatcher", "Coalescer", "walk"]

# Event types we subscribe to.  Note: in watchdog 7.1 the inotify mask for a
# filter is derived per class and FileAttribEvent/DirAttribEvent contribute
# nothing on their own; IN_ATTRIB is only requested via FileModifiedEvent.
# Listing FileModifiedEvent therefore matters for chmod detection too.
_EVENT_FILTER = [
    FileCreatedEvent,
    FileModifiedEvent,
    FileAttribEvent,
    FileClosedEvent,
    FileDeletedEvent,
    FileMovedEvent,
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    DirAttribEvent,
]

# --------------------------------------------------------------------------
# Coalescing
# --------------------------------------------------------------------------

_FILE = "f"
_DIR = "d"


@dataclass(slots=True)
class _Entry:
    kind: str
    path: str  # for MOVE: the destination
    src: str | None  # for MOVE: the source
    seq: int
    first: float  # when this entry started waiting (for max_delay)
    last: float  # last event that touched it (for debounce)


class Coalescer:
    """Per-path debounce and coalescing of change events.

    Not thread-safe and clock-free: every call takes ``now``.  Entries are
    keyed by path (files and RESCAN directories in separate namespaces); a
    MOVE is keyed by its destination.  An entry is due when no event touched
    it for ``debounce`` seconds, or when it has been waiting ``max_delay``
    seconds (a file that is appended to forever still gets indexed).

    Coalescing rules (earlier pending state, new event -> pending state):

    * UPSERT p,  DELETE p       -> DELETE p
    * DELETE p,  UPSERT p       -> UPSERT p
    * MOVE a->b, UPSERT b       -> MOVE a->b   (the worker re-checks b anyway)
    * MOVE a->b, DELETE b       -> DELETE a, DELETE b
    * UPSERT a,  MOVE a->b      -> MOVE a->b
    * MOVE a->b, MOVE b->c      -> MOVE a->c, DELETE b (b may have been
      overwritten by the first move; a DELETE of a missing path is harmless)
    * MOVE a->b, MOVE b->a      -> UPSERT a, DELETE b
    * X b,       MOVE a->b      -> MOVE a->b   (a rename replaces b; if X was
      MOVE s->b, s is gone too -> DELETE s unless s has its own pending entry)
    * RESCAN d with a pending RESCAN of d or an ancestor -> merged into it;
      a RESCAN d absorbs pending RESCANs below d.

    Ordering: batches are ordered by when each entry was created.  A MOVE
    a->b must reach the worker before anything that happened to path a
    afterwards (e.g. a new file created at a), so whenever an entry becomes
    due, any older pending MOVE *from* one of its paths is emitted with it.
    """

    def __init__(self, debounce: float, max_delay: float) -> None:
        self.debounce = debounce
        self.max_delay = max_delay
        self._seq = 0
        self._entries: dict[tuple[str, str], _Entry] = {}  # creation order
        self._lru: OrderedDict[tuple[str, str], None] = OrderedDict()  # touch order
        self._moves_from: dict[str, set[str]] = {}  # src -> dest keys of pending MOVEs
        self._rescans: set[str] = set()

    def __len__(self) -> int:
        return len(self._entries)

    # -- bookkeeping ----------------------------------------------------
    def _put(self, kind: str, path: str, now: float, src: str | None = None) -> None:
        ns = _DIR if kind == RESCAN else _FILE
        key = (ns, path)
        self._remove(key)
        self._seq += 1
        self._entries[key] = _Entry(kind, path, src, self._seq, now, now)
        self._lru[key] = None
        if kind == MOVE:
            assert src is not None
            self._moves_from.setdefault(src, set()).add(path)
        elif kind == RESCAN:
            self._rescans.add(path)

    def _remove(self, key: tuple[str, str]) -> _Entry | None:
        e = self._entries.pop(key, None)
        if e is None:
            return None
        del self._lru[key]
        if e.kind == MOVE:
            self._unlink_move(e)
        elif e.kind == RESCAN:
            self._rescans.discard(e.path)
        return e

    def _unlink_move(self, e: _Entry) -> None:
        assert e.src is not None
        dests = self._moves_from.get(e.src)
        if dests is not None:
            dests.discard(e.path)
            if not dests:
                del self._moves_from[e.src]

    def _touch(self, key: tuple[str, str], now: float) -> None:
        self._entries[key].last = now
        self._lru.move_to_end(key)

    def _file(self, path: str) -> _Entry | None:
        return self._entries.get((_FILE, path))

    def _retire_source(self, src: str, now: float) -> None:
        """A pending MOVE src->x was superseded: src no longer exists, so its
        record must go - unless a newer event for src is already pending, which
        then describes src's current state."""
        if self._file(src) is None:
            self._put(DELETE, src, now)

    # -- adding events ----------------------------------------------------
    def add(self, kind: str, path: str, dest: str | None = None, *, now: float) -> None:
        if kind == UPSERT:
            self._upsert(path, now)
        elif kind == DELETE:
            self._delete(path, now)
        elif kind == MOVE:
            if not dest:
                raise ValueError("MOVE needs a destination")
            self._move(path, dest, now)
        elif kind == RESCAN:
            self._rescan(path, now)
        else:
            raise ValueError(f"unknown event kind {kind!r}")

    def _pending(self, kind: str, p: str, now: float) -> _Entry | None:
        """The event pending for file ``p``; when there is none, a new ``kind`` event is put and ``None`` returned."""
        e = self._file(p)
        if e is None:
            self._put(kind, p, now)
        return e

    def _upsert(self, p: str, now: float) -> None:
        e = self._pending(UPSERT, p, now)
        if e is None:
            return
        if e.kind == DELETE:
            e.kind = UPSERT
        # UPSERT stays UPSERT, MOVE a->p stays MOVE
        self._touch((_FILE, p), now)

    def _delete(self, p: str, now: float) -> None:
        e = self._pending(DELETE, p, now)
        if e is None:
            return
        if e.kind == MOVE:
            self._unlink_move(e)
            src, e.src = e.src, None
            e.kind = DELETE
            self._touch((_FILE, p), now)
            assert src is not None
            self._retire_source(src, now)
            return
        e.kind = DELETE
        self._touch((_FILE, p), now)

    def _move(self, a: str, b: str, now: float) -> None:
        if a == b:
            self._upsert(a, now)
            return
        origin = a
        src_entry = self._remove((_FILE, a))
        if src_entry is not None and src_entry.kind == MOVE:
            # s -> a -> b: a move of s; a itself is gone (it may have held an
            # older file that the first rename overwrote).
            assert src_entry.src is not None
            origin = src_entry.src
            self._put(DELETE, a, now)
        dest_entry = self._remove((_FILE, b))
        if dest_entry is not None and dest_entry.kind == MOVE:
            assert dest_entry.src is not None
            self._retire_source(dest_entry.src, now)
        if origin == b:
            self._put(UPSERT, b, now)
        else:
            self._put(MOVE, b, now, src=origin)

    def _rescan(self, d: str, now: float) -> None:
        anc = d
        while True:
            if anc in self._rescans:
                self._touch((_DIR, anc), now)
                return
            if not anc:
                break
            anc = anc.rpartition("/")[0]
        prefix = d + "/" if d else ""
        for sub in [r for r in self._rescans if r.startswith(prefix)]:
            self._remove((_DIR, sub))
        self._put(RESCAN, d, now)

    # -- taking events out ------------------------------------------------
    def next_deadline(self) -> float | None:
        """Monotonic time at which the earliest entry becomes due."""
        if not self._entries:
            return None
        k_lru = next(iter(self._lru))
        k_old = next(iter(self._entries))
        return min(
            self._entries[k_lru].last + self.debounce,
            self._entries[k_old].first + self.max_delay,
        )

    def pop_due(self, now: float) -> list[tuple[str, str, str | None]]:
        due: set[tuple[str, str]] = set()
        for key in self._lru:
            if self._entries[key].last + self.debounce > now:
                break
            due.add(key)
        for key, e in self._entries.items():
            if e.first + self.max_delay > now:
                break
            due.add(key)
        return self._pop(self._close_over_moves(due))

    def pop_all(self) -> list[tuple[str, str, str | None]]:
        return self._pop(set(self._entries))

    def _close_over_moves(self, keys: set[tuple[str, str]]) -> set[tuple[str, str]]:
        todo = list(keys)
        while todo:
            e = self._entries[todo.pop()]
            if e.kind == RESCAN:
                continue
            for p in (e.path, e.src):
                for dest in self._moves_from.get(p, ()) if p is not None else ():
                    k = (_FILE, dest)
                    if k not in keys and self._entries[k].seq < e.seq:
                        keys.add(k)
                        todo.append(k)
        return keys

    def _pop(self, keys: set[tuple[str, str]]) -> list[tuple[str, str, str | None]]:
        entries = sorted((self._entries[k] for k in keys), key=lambda e: e.seq)
        for k in keys:
            self._remove(k)
        out = []
        for e in entries:
            if e.kind == MOVE:
                out.append((MOVE, e.src, e.path))
            else:
                out.append((e.kind, e.path, None))
        return out  # type: ignore[return-value]


# --------------------------------------------------------------------------
# Watcher
# --------------------------------------------------------------------------


class _Handler(FileSystemEventHandler):
    def __init__(self, watcher: FolderWatcher) -> None:
        self._w = watcher

    def dispatch(self, event: FileSystemEvent) -> None:  # all events, one place
        try:
            self._w._on_fs_event(event)
        except Exception:  # never let a bug kill watchdog's dispatcher thread
            log.exception("failed to handle %s", type(event).__name__)


def _watchdog_backlog(observer: Observer) -> int:  # type: ignore[valid-type]
    """Events watchdog has read but not yet dispatched to our handler.

    Peeks at watchdog 7 internals (the inotify move-grouper's delay queue);
    if they change, only the delayed part is lost from the count."""
    n = observer.event_queue.unfinished_tasks
    for emitter in list(observer.emitters):
        try:
            n += len(emitter._inotify._move_event_grouper._queue._queue)  # noqa: SLF001
        except (AttributeError, TypeError):
            pass
    return n


class FolderWatcher:
    """Watch ``root`` recursively and call ``emit(batch)`` with debounced
    ChangeEvents, from a single flusher thread.

    ``debounce``: seconds without a new event for a path before its event is
    emitted.  ``max_delay``: upper bound on how long any event is held back
    (default ``max(30 s, 4*debounce)``).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        emit: Callable[[list[ChangeEvent]], None],
        *,
        debounce: float = 0.25,
        max_delay: float | None = None,
    ) -> None:
        self.root = os.path.realpath(os.path.abspath(os.fspath(root)))  # resolved once
        self._emit = emit
        self.debounce = debounce
        self._co = Coalescer(debounce, max_delay if max_delay is not None else max(30.0, 4 * debounce))
        self._cond = threading.Condition()
        self._closing = False
        self._observer: Observer | None = None  # type: ignore[valid-type]
        self._flusher: threading.Thread | None = None
        self._started = False
        self._stopped = False

    # -- lifecycle ----------------------------------------------------------
    def start(self) -> None:
        if self._started:
            raise RuntimeError("FolderWatcher already started")
        if not os.path.isdir(self.root):
            raise NotADirectoryError(self.root)
        observer = Observer()
        try:
            # Watches are installed synchronously in start(): every change
            # after start() returns is seen.  Fails e.g. when the inotify
            # watch limit (fs.inotify.max_user_watches) is exhausted.
            observer.schedule(_Handler(self), self.root, recursive=True, event_filter=_EVENT_FILTER)
            observer.start()
        except BaseException:
            observer.stop()
            raise
        self._observer = observer
        self._started = True
        self._flusher = threading.Thread(target=self._run, name=f"folder-flusher:{self.root}", daemon=True)
        self._flusher.start()
        log.info("watching %s", self.root)

    def stop(self, flush: bool = True) -> None:
        """Stop watching.  With ``flush`` every pending event is emitted
        (immediately, ignoring the debounce) before this returns; without it
        pending events are dropped (the next reconcile scan will find them)."""
        if not self._started or self._stopped:
            return
        self._stopped = True
        observer, self._observer = self._observer, None
        if observer is not None:
            # Let watchdog hand over what it already has: its stop() abandons
            # queued events, and an unpaired IN_MOVED_FROM (file moved out of
            # the tree) is held back 0.5 s before it becomes a delete.
            deadline = time.monotonic() + 2.0
            quiet = 0
            while quiet < 2 and time.monotonic() < deadline:
                quiet = quiet + 1 if _watchdog_backlog(observer) == 0 else 0
                time.sleep(0.01)
            observer.stop()
            if threading.current_thread() is not observer:
                observer.join(timeout=5.0)
        with self._cond:
            if not flush and len(self._co):
                log.info("dropping %d pending events for %s", len(self._co), self.root)
                self._co = Coalescer(self._co.debounce, self._co.max_delay)
            self._closing = True
            self._cond.notify_all()
        if self._flusher is not None and threading.current_thread() is not self._flusher:
            self._flusher.join()
        log.info("stopped watching %s", self.root)

    def __enter__(self) -> FolderWatcher:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop(flush=True)

    @property
    def pending(self) -> int:
        """Number of coalesced events waiting for their debounce."""
        with self._cond:
            return len(self._co)

    # -- event intake (watchdog dispatcher thread) ----------------------------
    def _rel(self, path: str | bytes) -> str | None:
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        if not path:
            return None
        rel = os.path.relpath(path, self.root)
        if rel == os.curdir:
            return ""
        if rel == os.pardir or rel.startswith(os.pardir + os.sep):
            return None
        return rel.replace(os.sep, "/") if os.sep != "/" else rel

    def _on_fs_event(self, ev: FileSystemEvent) -> None:
        out: list[tuple[str, str, str | None]] = []
        if isinstance(ev, (FileOpenedEvent, FileClosedNoWriteEvent, DirModifiedEvent)):
            return
        if ev.is_directory:
            if isinstance(ev, DirMovedEvent):
                paths = [self._rel(ev.src_path), self._rel(ev.dest_path)]
            elif isinstance(ev, (DirAttribEvent, DirDeletedEvent, DirCreatedEvent)):
                paths = [self._rel(ev.src_path)]
                if isinstance(ev, DirDeletedEvent) and paths[0] == "":
                    log.warning("watched root %s was deleted", self.root)
            else:
                return
            out = [(RESCAN, p, None) for p in paths if p is not None and not is_ignored(p, is_dir=True)]
        elif isinstance(ev, FileMovedEvent):
            src, dst = self._rel(ev.src_path), self._rel(ev.dest_path)
            src_ok = src is not None and src != "" and not is_ignored(src)
            dst_ok = dst is not None and dst != "" and not is_ignored(dst)
            if src_ok and dst_ok:
                out = [(MOVE, src, dst)]  # type: ignore[list-item]
            elif dst_ok:
                out = [(UPSERT, dst, None)]  # type: ignore[list-item]
            elif src_ok:
                out = [(DELETE, src, None)]  # type: ignore[list-item]
        elif isinstance(ev, (FileCreatedEvent, FileModifiedEvent, FileClosedEvent, FileAttribEvent)):
            p = self._rel(ev.src_path)
            if p and not is_ignored(p):
                out = [(UPSERT, p, None)]
        elif isinstance(ev, FileDeletedEvent):
            p = self._rel(ev.src_path)
            if p and not is_ignored(p):
                out = [(DELETE, p, None)]
        if out:
            self._add(out)

    def _add(self, events: list[tuple[str, str, str | None]]) -> None:
        now = time.monotonic()
        with self._cond:
            was_empty = not len(self._co)
            for kind, path, dest in events:
                self._co.add(kind, path, dest, now=now)
            if was_empty:
                self._cond.notify_all()

    # -- flusher thread --------------------------------------------------------
    def _run(self) -> None:
        while True:
            final = False
            with self._cond:
                while True:
                    if self._closing:
                        batch = self._co.pop_all()
                        final = True
                        break
                    now = time.monotonic()
                    deadline = self._co.next_deadline()
                    if deadline is not None and deadline <= now:
                        batch = self._co.pop_due(now)
                        break
                    self._cond.wait(None if deadline is None else deadline - now)
            if batch:
                self._deliver(batch)
            if final:
                return

    def _seq(self, rel: str) -> int | None:
        """The file's ctime_ns now, the event's ordering stamp (a task for an older state than indexed
        is dropped). ``lstat``: nothing is opened or followed; the task reads the file through one
        descriptor (``ingest.sources.safefs``) and takes everything else from it."""
        try:
            return os.lstat(os.path.join(self.root, rel)).st_ctime_ns
        except OSError:
            return None

    def _deliver(self, batch: list[tuple[str, str, str | None]]) -> None:
        events = [ChangeEvent(kind, self.root, path, dest, seq=self._seq(path) if kind == UPSERT else None)
                  for kind, path, dest in batch]
        try:
            self._emit(events)
        except Exception:
            # Paths only in debug; never contents.  The reconcile scan will
            # pick up whatever this batch described.
            log.exception("emit failed for a batch of %d events from %s", len(events), self.root)
            log.debug("lost batch: %r", events)


# --------------------------------------------------------------------------
# Listing for the reconcile scan
# --------------------------------------------------------------------------


def walk(
    root: str | os.PathLike[str], *, errors: list[str] | None = None
) -> Iterator[tuple[str, os.stat_result]]:
    """Yield ``(relative POSIX path, lstat)`` for every regular, non-ignored
    file below ``root``, sorted per directory.

    Symlinks are neither followed nor yielded.  Files or directories that
    vanish mid-walk are skipped silently.  A directory that cannot be listed,
    or a file that cannot be stat'ed (permissions, I/O error), is logged at
    warning and skipped; its relative path is appended to ``errors`` if given,
    so a reconcile can avoid treating it, or anything below it, as deleted.  If ``root`` itself cannot be listed the
    error is raised - an empty listing must never be mistaken for an empty
    folder.
    """
    root = os.path.abspath(os.fspath(root))
    stack: list[str] = [""]
    first = True
    while stack:
        rel_dir = stack.pop()
        abs_dir = os.path.join(root, rel_dir) if rel_dir else root
        try:
            with os.scandir(abs_dir) as it:
                entries = sorted(it, key=lambda d: d.name)
        except OSError as exc:
            if first:
                raise
            if isinstance(exc, (FileNotFoundError, NotADirectoryError)):
                log.debug("directory vanished during walk: %s", rel_dir)
            else:
                log.warning("cannot list %s under %s: %s", rel_dir, root, exc.strerror or exc)
                if errors is not None:
                    errors.append(rel_dir)
            continue
        first = False
        subdirs: list[str] = []
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            try:
                if entry.is_dir(follow_symlinks=False):
                    if not is_ignored_dir_name(entry.name):
                        subdirs.append(rel)
                    continue
                if not entry.is_file(follow_symlinks=False) or is_ignored(rel):
                    continue
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # vanished between listing and stat
            except OSError as exc:
                log.warning("cannot stat %s under %s: %s", rel, root, exc.strerror or exc)
                if errors is not None:
                    errors.append(rel)
                continue
            if stat_mod.S_ISREG(st.st_mode):  # re-check: it may have been replaced
                yield rel, st
        stack.extend(reversed(subdirs))  # depth-first, in name order
