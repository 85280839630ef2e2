"""The embedded broker: kombu's SQLAlchemy transport on a SQLite file, tuned.

* idle costs nothing and a new message is still taken at once: every publish rings a
  doorbell (opens and closes ``<broker file>.bell`` for writing), and a consumer with
  nothing to do waits on that file with inotify instead of polling. While messages come,
  the queues are polled every 50 ms (kombu's default of 1 s would dominate freshness);
  after each empty poll the wait doubles, up to ``IDLE_POLL_MAX`` s, and a ring ends it.
  Where inotify is not available the 50 ms polling stays;
* the SQLite file in WAL mode with a busy timeout, so producers and the worker
  do not trip over each other's locks;
* lanes in strict order, as on Redis (its ``priority`` queue order): each poll reads the
  ``interactive`` queue, then ``bulk``, then ``maintenance``, and takes the first message it finds,
  so an interactive change goes ahead of a backfill, and maintenance (rescans, named entities
  computed after indexing) runs when no change waits (kombu's own cycle is round robin);
* processes that open one new broker file at once (two ``ingest add`` on one new store)
  do not fail on each other: kombu creates its tables and queue rows by "look, then
  create", guarded by a thread lock only; here the loser of that race reads what the
  winner created.

``workers.app`` maps ``sqla+sqlite:///...`` URLs onto this transport through
kombu's alias table.
"""
from __future__ import annotations

import ctypes
import logging
import os
import select
import socket
import struct
import time
from queue import Empty

from kombu.transport import TRANSPORT_ALIASES
from kombu.transport.sqlalchemy import _MUTEX, metadata
from kombu.transport.sqlalchemy import Channel as _Channel
from kombu.transport.sqlalchemy import Transport as _Transport
from kombu.utils.scheduling import FairCycle
from sqlalchemy import create_engine, event
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import sessionmaker

from ingest.obs.lanes import LANES
from ingest.stores.common import use_wal

POLL_SECONDS = 0.05
IDLE_POLL_MAX = 2.0  # a safety net only: publishes through this transport ring the bell
log = logging.getLogger("workers.broker")

_IN_MODIFY, _IN_ATTRIB, _IN_CLOSE_WRITE, _IN_IGNORED = 0x2, 0x4, 0x8, 0x8000
_IN_NONBLOCK, _IN_CLOEXEC = 0o4000, 0o2000000
_EVENT = struct.Struct("iIII")


def bell_path(hostname: str) -> str | None:
    """``<broker file>.bell`` for a ``sqlite:///...`` engine URL, else None."""
    if hostname.startswith("sqlite:///") and len(hostname) > len("sqlite:///"):
        return hostname[len("sqlite:///"):] + ".bell"
    return None


def ring(path: str) -> None:
    """Wake every consumer waiting on ``path`` (an inotify IN_CLOSE_WRITE); never fails a publish."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666))  # umask applies
    except OSError as e:
        log.debug("cannot ring %s: %s", path, e)


class Bell:
    """The consumer side of the doorbell: ``wait(timeout)`` returns True when rung."""

    def __init__(self, path: str):
        self.path, self.fd, self.wd = path, None, -1
        try:
            self._libc = ctypes.CDLL(None, use_errno=True)
            fd = self._libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
        except (OSError, AttributeError) as e:  # not Linux
            log.info("no inotify (%s): the broker is polled every %.0f ms", e, POLL_SECONDS * 1000)
            return
        if fd < 0:
            log.info("inotify_init1 failed (%s): the broker is polled", os.strerror(ctypes.get_errno()))
            return
        self.fd = fd
        self._watch()

    @property
    def ok(self) -> bool:
        return self.fd is not None and self.wd >= 0

    def _watch(self) -> None:
        ring(self.path)  # the file must exist to be watched
        self.wd = self._libc.inotify_add_watch(self.fd, os.fsencode(self.path),
                                               _IN_CLOSE_WRITE | _IN_MODIFY | _IN_ATTRIB)
        if self.wd < 0:
            log.info("cannot watch %s (%s): the broker is polled", self.path, os.strerror(ctypes.get_errno()))

    def wait(self, timeout: float) -> bool:
        if not self.ok:
            time.sleep(min(timeout, POLL_SECONDS))
            return False
        readable, _, _ = select.select([self.fd], [], [], timeout)
        if not readable:
            return False
        gone = False
        while True:  # drain: rings before this point are all answered by the next poll
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                break
            for off in range(0, len(data) - _EVENT.size + 1, _EVENT.size):
                gone = gone or bool(_EVENT.unpack_from(data, off)[1] & _IN_IGNORED)
        if gone:  # the file was removed or replaced: watch the new one
            self._watch()
        return True

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class _InOrder(FairCycle):
    """kombu's cycle over a channel's queues, started from the first queue on every poll."""

    def get(self, callback, **kwargs):
        self.pos = 0
        return super().get(callback, **kwargs)


def _lane_rank(queue: str) -> int:
    return LANES.index(queue) if queue in LANES else len(LANES)


class Channel(_Channel):
    def _reset_cycle(self):
        """Queues in lane order (interactive, bulk, maintenance, then any other), each poll from the first."""
        self._active_queues.sort(key=_lane_rank)
        self._cycle = _InOrder(self._get_and_deliver, self._active_queues, Empty)

    def __init__(self, connection, **kwargs):
        # the bell's path is fixed when the channel opens: kombu sets ``self.connection`` to
        # None when a channel is closed, which another thread (or a retry's revive) may do
        # while a put is under way, and a committed publish must not fail on the ring
        self._bell_path = bell_path(connection.client.hostname)
        super().__init__(connection, **kwargs)

    def _open(self):
        """kombu's, with the tables created so that another process creating them at the
        same moment is not an error."""
        host = self.connection.client.hostname
        with _MUTEX:
            if host not in self._engines:
                engine = self._engine_from_config()
                _create_tables(engine)
                self._engines[host] = engine, sessionmaker(bind=engine)
        return self._engines[host]

    def _get_or_create(self, queue):
        """kombu's, where another process inserting the same queue row first (a unique-key
        error) means the row is there to read."""
        try:
            return super()._get_or_create(queue)
        except IntegrityError:
            self.session.rollback()
            return super()._get_or_create(queue)

    def _put(self, queue, payload, **kwargs):
        super()._put(queue, payload, **kwargs)  # committed: a woken consumer finds it
        if self._bell_path:
            ring(self._bell_path)


class Transport(_Transport):
    Channel = Channel
    polling_interval = POLL_SECONDS

    def __init__(self, client, **kwargs):
        super().__init__(client, **kwargs)
        self.polling_interval = POLL_SECONDS
        self._bell: Bell | None = None
        self._idle_wait = POLL_SECONDS

    def drain_events(self, connection, timeout=None):
        """kombu's loop, with the fixed sleep between empty polls replaced by a wait on
        the doorbell that grows while nothing comes."""
        if self._bell is None:
            path = bell_path(self.client.hostname)
            self._bell = Bell(path) if path else None
        if self._bell is None or not self._bell.ok:
            return super().drain_events(connection, timeout)
        start = time.monotonic()
        while True:
            try:
                self.cycle.get(self._deliver, timeout=timeout)
            except Empty:
                left = None if timeout is None else timeout - (time.monotonic() - start)
                if left is not None and left <= 0:
                    raise socket.timeout()
                if self._bell.wait(self._idle_wait if left is None else min(self._idle_wait, left)):
                    self._idle_wait = POLL_SECONDS
                else:
                    self._idle_wait = min(IDLE_POLL_MAX, self._idle_wait * 2)
            else:
                self._idle_wait = POLL_SECONDS
                return

    def close_connection(self, connection):
        if self._bell is not None:
            self._bell.close()
            self._bell = None
        return super().close_connection(connection)


_RACE_TRIES = 5


def _create_tables(engine) -> None:
    """``metadata.create_all`` looks before it creates: another process may create a table
    in between ("already exists"); looking again then finds it (three tables: a few tries)."""
    for attempt in range(_RACE_TRIES):
        try:
            metadata.create_all(engine)
            return
        except OperationalError as e:
            if "already exists" not in str(e) or attempt == _RACE_TRIES - 1:
                raise


def _engine_from_config(self):
    conninfo = self.connection.client
    engine = create_engine(conninfo.hostname, connect_args={"timeout": 60})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn, _):
        use_wal(dbapi_conn)
        dbapi_conn.execute("PRAGMA synchronous=NORMAL")

    return engine


Channel._engine_from_config = _engine_from_config


def register() -> None:
    TRANSPORT_ALIASES["sqla"] = "workers.broker:Transport"
