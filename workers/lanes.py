"""Producer side of the queue: change events -> Celery tasks on a lane.

* **Lanes** are Celery queues (``interactive``, ``bulk``, ``maintenance``). With
  ``INGEST_LANES=off`` every task goes to ``bulk`` (for comparisons only).
* **Backpressure**: before sending, and every ``CHECK_EVERY`` messages, the lane's
  depth is read; above its bound the producer pauses (logged once) until the depth
  is back under the resume mark (80 % of the bound). Bounds: ``[queue.max_depth]``
  in the config file (``interactive``, ``bulk``, ``maintenance``) or
  ``INGEST_MAX_DEPTH_<LANE>``; defaults 1000 / 20000 / 20000.
* **Coalescing** (Redis broker): an event is sent only if no task for the same
  (store, lane, kind, source, key, dest) is waiting; a marker key ``SET NX`` with a time-to-live
  says one is. The task deletes the marker when it *starts*, so an event that
  arrives while it runs gets a task of its own. Tasks read the current state of the
  document, so the waiting task also covers the events folded into it.
* **Order**: an event carries the ``seq`` its source saw (a folder file's ``ctime_ns`` from the
  watcher's or the scan's ``lstat``); the task drops itself if the registry already holds a newer
  state. The producer itself never looks at the filesystem.
* **One task form** for every source: ``ingest.change(store_url, event, batch, pending=)`` with
  ``event`` a :class:`ingest.sources.base.ChangeEvent` as a dict (``to_wire``), and
  ``ingest.changes(store_url, [event, ...], batch, pending=[...])`` for a group of upserts;
  ``ingest.poll(store_url, source, prune=, pending=)`` asks a configured source what changed.
* **Lost messages** (Redis): kombu's Redis transport takes a message off the list (``BRPOP``) and
  then records it as unacknowledged in a second command; a Redis shutdown between the two loses
  the message, and its coalescing marker then holds back the next event for the document until
  the marker's time-to-live. :meth:`Producer.idle` tells a waiting producer (``ingest add``) that
  nothing is queued or held by a worker, and ``send(..., fresh=True)`` sends what its batch still
  lacks again, replacing the stale markers (tasks are idempotent).
"""
from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import time
from pathlib import Path
from typing import Callable

from ingest import config
from ingest.config import settings

log = logging.getLogger("ingest.queue")

LANES = ("interactive", "bulk", "maintenance")
UNACKED_KEY = "unacked"  # kombu's Redis transport: delivered, not yet acknowledged messages (its default)
CHECK_EVERY = 50
RESUME_FRACTION = 0.8
PENDING_PREFIX = "ingest:pending:"


def is_redis(url: str) -> bool:
    return url.startswith(("redis://", "rediss://", "redis+socket://"))


def broker_db(broker_url: str) -> Path | None:
    if broker_url.startswith("sqla+sqlite:///"):
        return Path(broker_url[len("sqla+sqlite:///"):])
    return None


def lanes_enabled() -> bool:
    return settings().lanes


def entities_lane() -> str:
    """Where ``ingest.entities`` goes: the maintenance lane, taken only when no change waits."""
    return "maintenance" if lanes_enabled() else "bulk"


def send_entities(app, store_url: str, broker_url: str, *, coalesce: bool, connection=None) -> bool:
    """Queue one ``ingest.entities`` (the entities the store owes) on :func:`entities_lane`. ``coalesce``
    (Redis only): not while one already waits (a marker as for changes, cleared when it starts).
    Returns whether one was sent."""
    from ingest.obs.lanes import queued_header

    lane, kwargs = entities_lane(), {}
    if coalesce and is_redis(broker_url):
        key = pending_key(store_url, lane, "entities", "", "", None)
        if not redis_client(broker_url).set(key, "1", nx=True, ex=pending_ttl()):
            return False  # one waits already: it takes what is owed now too
        kwargs["pending"] = key
    app.send_task("ingest.entities", args=[store_url], kwargs=kwargs, queue=lane, connection=connection,
                  headers=queued_header())
    return True


def max_depths(cfg: dict | None = None) -> dict[str, int]:
    cfg = config.load() if cfg is None else cfg
    table = config.section(cfg, "queue.max_depth")
    s = config.settings(cfg)
    out = {lane: getattr(s, f"max_depth_{lane}") for lane in LANES}
    unknown = set(table) - set(LANES)
    if unknown:
        raise ValueError(f"[queue.max_depth]: unknown lane(s) {', '.join(sorted(unknown))}; lanes are "
                         + ", ".join(LANES))
    return out


def pending_key(store_url: str, lane: str, kind: str, source: str, key: str, dest: str | None) -> str:
    h = hashlib.sha1("\0".join([store_url, lane, kind, source, key, dest or ""]).encode("utf-8", "surrogateescape")).hexdigest()
    return PENDING_PREFIX + h


def pending_ttl() -> int:
    """A marker outlives its task's longest possible wait: visibility timeout plus retries."""
    from .app import visibility_timeout

    return visibility_timeout() + 600


_clients: dict = {}


def redis_client(broker_url: str):
    """One client (connection pool) per process and URL."""
    c = _clients.get((broker_url, os.getpid()))
    if c is None:
        import redis

        c = _clients[(broker_url, os.getpid())] = redis.Redis.from_url(
            broker_url, socket_connect_timeout=5, socket_timeout=30)
    return c


class Producer:
    def __init__(self, store_url: str | None, broker_url: str, *, max_depth: dict[str, int] | None = None,
                 coalesce: bool = True, poll: float = 0.2):
        from .app import configure

        self.store_url = store_url
        self.broker_url = broker_url
        self.app = configure(broker_url)
        self.redis = is_redis(broker_url)
        self.max_depth = max_depth or max_depths()
        self.coalesce = coalesce and self.redis
        self.poll = poll
        self.paused_seconds = 0.0  # total time spent waiting on backpressure (for tests, metrics)
        self._r = redis_client(broker_url) if self.redis else None

    # -- depth ------------------------------------------------------------------------
    def depth(self) -> dict[str, int]:
        """Messages waiting per lane (not counting those a worker holds)."""
        if self.redis:
            from kombu.transport.redis import PRIORITY_STEPS

            sep = "\x06\x16"
            pipe = self._r.pipeline()
            for lane in LANES:
                for pri in PRIORITY_STEPS:
                    pipe.llen(lane if pri == 0 else f"{lane}{sep}{pri}")
            n = iter(pipe.execute())
            return {lane: sum(next(n) for _ in PRIORITY_STEPS) for lane in LANES}
        db = broker_db(self.broker_url)
        if db is None or not db.exists():
            return {}
        try:
            with sqlite3.connect(db, timeout=10) as c:
                rows = c.execute("SELECT q.name, COUNT(m.id) FROM kombu_queue q LEFT JOIN kombu_message m"
                                 " ON m.queue_id=q.id AND m.visible=1 GROUP BY q.name").fetchall()
        except sqlite3.OperationalError:
            return {}
        return dict(rows)

    def wait_below(self, lane: str) -> int:
        """Backpressure: at or over the lane's bound, block until it is under the resume mark.
        Returns the lane's depth."""
        bound = self.max_depth[lane]
        d = self.depth().get(lane, 0)
        if d < bound:
            return d
        resume = int(bound * RESUME_FRACTION)
        t0 = time.monotonic()
        log.warning("lane %s reached its bound of %d queued tasks: producer paused until it is under %d",
                    lane, bound, resume)
        while d > resume:
            time.sleep(self.poll)
            d = self.depth().get(lane, 0)
        waited = time.monotonic() - t0
        self.paused_seconds += waited
        log.warning("lane %s at %d again: producer resumed after %.1f s", lane, d, waited)
        return d

    def idle(self) -> bool | None:
        """Redis: True when no task waits in any lane and no worker holds one (kombu's unacknowledged
        hash is empty); None where the broker cannot tell (the embedded broker)."""
        if not self.redis:
            return None
        import redis

        try:
            return not any(self.depth().values()) and not self._r.hlen(UNACKED_KEY)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):  # Redis away (restarting): it holds what it holds, not idle
            return False

    # -- send -------------------------------------------------------------------------
    def send(self, events, lane: str, batch: str | None = None, group: "int | list[int]" = 1, *,
             fresh: bool = False) -> int:
        """Queue one task per change event (minus coalesced duplicates); returns how many events were sent.
        ``fresh``: send every event, replacing any coalescing marker (a lost task's is stale).

        ``group`` > 1 packs up to that many upserts into one ``ingest.changes`` task whose
        documents share one embedding call (bulk work; interactive changes go one by one);
        a list gives the size task by task (its last size repeats)."""
        from ingest.obs.lanes import queued_header
        from ingest.sources.base import UPSERT

        if lane not in LANES:
            raise ValueError(f"unknown lane {lane!r}; lanes are {', '.join(LANES)}")
        route = lane if lanes_enabled() else "bulk"
        sent, est, bound = 0, None, self.max_depth[route]
        sizes = list(group) if isinstance(group, (list, tuple)) else [group]
        if not sizes or any(not isinstance(n, int) or n < 1 for n in sizes):
            raise ValueError(f"group sizes must be integers of at least 1, got {group!r}")
        packed: list[dict] = []
        pendings: list[str | None] = []
        tasks = 0  # ingest.changes tasks sent: the next one takes sizes[tasks] (the last size repeats)
        with self.app.producer_or_acquire() as producer:
            def flush():
                nonlocal est, tasks
                if packed:
                    kwargs = {"pending": list(pendings)} if any(pendings) else {}
                    self.app.send_task("ingest.changes", args=[self.store_url, list(packed), batch], kwargs=kwargs,
                                       queue=route, producer=producer, headers=queued_header())
                    packed.clear()
                    pendings.clear()
                    est += 1
                    tasks += 1

            for i, ev in enumerate(events):
                if est is None or est >= bound or i % CHECK_EVERY == 0:  # est: depth now, at most
                    flush()
                    est = self.wait_below(route)
                pending = None
                if self.coalesce:
                    pending = pending_key(self.store_url or "", route, ev.kind, ev.source, ev.key, ev.dest)
                    if not self._r.set(pending, "1", nx=not fresh, ex=pending_ttl()):
                        continue  # a task for this change is already waiting: it will see this one too
                sent += 1
                size = sizes[min(tasks, len(sizes) - 1)]
                if size > 1 and ev.kind == UPSERT:
                    packed.append(ev.to_wire())
                    pendings.append(pending)
                    if len(packed) >= size:
                        flush()
                    continue
                self.app.send_task("ingest.change", args=[self.store_url, ev.to_wire(), batch],
                                   kwargs={"pending": pending} if pending else {}, queue=route, producer=producer,
                                   headers=queued_header())
                est += 1
            flush()
        return sent

    def send_poll(self, source: str, lane: str = "interactive", *, prune: bool = False, acl: bool = False) -> bool:
        """Queue one ``ingest.poll`` pass of a configured source (webhooks, ``ingest poll``), with the
        same backpressure and coalescing as changes: while a poll of ``source`` waits on the lane,
        another is not queued (the waiting one fetches whatever changed meanwhile). Returns whether
        one was sent."""
        from ingest.obs.lanes import queued_header

        if lane not in LANES:
            raise ValueError(f"unknown lane {lane!r}; lanes are {', '.join(LANES)}")
        route = lane if lanes_enabled() else "bulk"
        self.wait_below(route)
        kwargs: dict = {"prune": prune, **({"acl": True} if acl else {})}
        if self.coalesce:
            passes = "+".join(name for name, on in (("prune", prune), ("acl", acl)) if on)
            key = pending_key(self.store_url or "", route, "poll", source, "", passes or None)
            if not self._r.set(key, "1", nx=True, ex=pending_ttl()):
                return False
            kwargs["pending"] = key
        with self.app.connection_for_write(self.broker_url) as conn:  # this broker, not a pooled older one
            self.app.send_task("ingest.poll", args=[self.store_url, source], kwargs=kwargs, queue=route,
                               connection=conn, headers=queued_header())
        return True

    def send_entities(self) -> None:
        """Queue one ``ingest.entities`` (the entities the store owes), never coalesced: the caller
        sends it because an earlier one may be lost."""
        with self.app.connection_for_write(self.broker_url) as conn:
            send_entities(self.app, self.store_url or "", self.broker_url, coalesce=False, connection=conn)

    def resend(self, args: list, kwargs: dict, lane: str, task: str = "ingest.change") -> None:
        """Queue a task again as it was (``ingest retry``), without coalescing."""
        kwargs = {k: v for k, v in kwargs.items() if k != "pending"}
        from ingest.obs.lanes import queued_header

        self.wait_below(lane)
        self.app.send_task(task, args=args, kwargs=kwargs, queue=lane, headers=queued_header())


_producers: dict = {}


def poll_enqueuer(store_url: str | None, broker_url: str | None = None) -> "Callable[[str], bool]":
    """``enqueue(source)``: one ``ingest.poll`` of a configured source on the interactive lane, through
    the producer (backpressure; coalescing on Redis); the broker by ``workers.app.resolve_broker``.
    What ``ingest serve`` gives the webhook receivers, and what ``ingest poll`` uses."""
    from .app import resolve_broker

    url = resolve_broker(store_url, broker_url)

    def enqueue(source: str, *, prune: bool = False, acl: bool = False) -> bool:
        producer = _producers.get((store_url, url))
        if producer is None:
            producer = _producers[(store_url, url)] = Producer(store_url, url)
        return producer.send_poll(source, prune=prune, acl=acl)

    return enqueue


def clear_pending(broker_url: str, key: str) -> None:
    redis_client(broker_url).delete(key)


def requeue_dead_letters(store_url: str, broker_url: str, ids: list[int] | None = None) -> list[int]:
    """``ingest retry``: send dead-lettered tasks again, on their lane; returns their ids."""
    from ingest.stores import open_store

    store = open_store(store_url)
    letters = store.dead_letters(ids)
    if ids is not None:
        missing = sorted(set(ids) - {d["id"] for d in letters})
        if missing:
            raise LookupError(f"no dead letter waiting with id {', '.join(map(str, missing))}")
    producer = Producer(store_url, broker_url)
    for d in letters:
        producer.resend(d["args"], d["kwargs"], d["lane"] if d["lane"] in LANES else "bulk",
                        d.get("task") or "ingest.change")
        store.mark_requeued(d["id"])
    return [d["id"] for d in letters]
