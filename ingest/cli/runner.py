"""The core behind ``ingest run``, ``ingest add`` and ``ingest worker`` (the CLI is a thin face).

Embedded default: the producer (watcher, reconcile) enqueues Celery tasks into a
SQLite broker beside the store, and a Celery worker started as a child process
consumes them. Queued work is durable in the broker; work that was in flight when
the process died is found again by the reconcile scan at the next start (the
registry, not the queue, is the source of truth), and tasks are idempotent.
"""
from __future__ import annotations

import fcntl
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

from ingest.config import settings
from ingest.sources.base import ChangeEvent
from workers.lanes import entities_lane
from workers.process import (  # noqa: F401  (the CLI's names for them)
    default_concurrency, purge_delivered, run_worker, start_worker, stop_worker, worker_command)

BULK_GROUP_MAX = 16  # documents per bulk task (see bulk_group)
log = logging.getLogger("ingest.cli.runner")


class StoreBusy(RuntimeError):
    pass


class RunLock:
    """One embedded runner per store (the SQLite broker's in-flight rows assume it)."""

    def __init__(self, store_path: Path):
        self.file = store_path.with_name(store_path.name + ".run.lock")
        self.fd: int | None = None

    def try_acquire(self) -> bool:
        self.file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.file, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self.fd = fd
        return True

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


class Queue:
    """Producer side: change events -> Celery tasks on a lane (see ``workers.lanes``:
    backpressure, coalescing, versions)."""

    def __init__(self, store_url: str, broker_url: str):
        from workers.lanes import Producer

        self.store_url = store_url
        self.broker_url = broker_url
        self.producer = Producer(store_url, broker_url)
        self.app = self.producer.app

    def send(self, events: list[ChangeEvent], lane: str, batch: str | None = None,
             group: "int | list[int]" = 1, *, fresh: bool = False) -> int:
        """Queue events on a lane (see workers.lanes.Producer.send; ``group``: upserts per task;
        ``fresh``: not coalesced with tasks already waiting)."""
        return self.producer.send(events, lane, batch, group, fresh=fresh)

    def depth(self) -> dict[str, int]:
        """Messages waiting per lane."""
        return self.producer.depth()


def broker_for(store_url: str, broker_url: str | None) -> str:
    """The given broker, else the embedded SQLite broker beside a SQLite store (``$INGEST_BROKER``
    is what this sets for the worker it starts, so it is not read here)."""
    from workers.app import resolve_broker

    return resolve_broker(store_url, broker_url, env=False)


BULK_GROUP_MIN = 2  # the smallest group at the end of a backfill


def bulk_group(n_events: int, concurrency: int | None) -> list[int]:
    """Documents per bulk task, task by task: a shrinking ("guided") schedule. Each task takes
    1/(2 x processes) of the documents left, between ``BULK_GROUP_MIN`` and ``BULK_GROUP_MAX``:
    large groups first (one embedding call fills its batches), small ones at the end, so that
    no worker process sits idle while another finishes a large last group. 60 documents on
    two processes: 15, 12, 9, 6, 5, 4, 3, 2, 2, 2."""
    fixed = settings().bulk_group  # a fixed size instead (tuning, tests)
    if fixed:
        return [fixed]
    procs = concurrency or default_concurrency()
    sizes, left = [], n_events
    while left > 0:
        size = min(left, max(BULK_GROUP_MIN, min(BULK_GROUP_MAX, -(-left // (2 * procs)))))
        sizes.append(size)
        left -= size
    return sizes or [1]


def scan_events(store, roots: list[str]) -> list[ChangeEvent]:
    from ingest.sources.reconcile import reconcile

    events: list[ChangeEvent] = []
    for root in roots:
        events.extend(reconcile(store, root))
    return events


class Runner:
    """``ingest run``: watch folders, keep the index current until stopped."""

    def __init__(self, roots: list[str], store_url: str, broker_url: str | None = None, *,
                 debounce: float = 0.25, rescan_every: float = 600.0, concurrency: int | None = None,
                 loglevel: str = "WARNING", sinks: list | None = None):
        from ingest.stores import open_store, store_url as canonical

        from ingest.sources.safefs import resolve_root

        self.roots = [resolve_root(r) for r in roots]  # resolved once: a symlinked root is its target
        for r in self.roots:
            if os.path.exists(r) and not os.path.isdir(r):
                raise NotADirectoryError(f"ingest run watches folders; {r} is not one")
            if not os.path.exists(r):
                os.makedirs(r)
                log.warning("created %s: drop files into it to index them", r)
        self.store_url = canonical(store_url)
        self.store = open_store(self.store_url)
        self.embedded = broker_url is None
        self.broker_url = broker_for(self.store_url, broker_url)
        self.sinks, self.pump = sinks or [], None  # secondary stores fed from the outbox (ingest.stores.outbox)
        self.debounce = debounce
        self.rescan_every = rescan_every
        self.concurrency = concurrency
        self.loglevel = loglevel
        self.queue = Queue(self.store_url, self.broker_url)
        self.lock = RunLock(Path(self.store_url))
        self.worker: subprocess.Popen | None = None
        self.watchers = []
        self._stop = threading.Event()

    def request_stop(self, *_):
        self._stop.set()

    def _emit(self, events: list[ChangeEvent]) -> None:
        self.queue.send(events, "interactive")

    def run(self, ready: "threading.Event | None" = None) -> None:
        from ingest.sources.folder import FolderWatcher

        if self.embedded and not self.lock.try_acquire():
            raise StoreBusy(f"another `ingest run` or `ingest add` is using {self.store_url} "
                            f"(lock {self.lock.file})")
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self.request_stop)
        try:
            if self.embedded:
                purge_delivered(self.broker_url)
                self.worker = start_worker(self.store_url, self.broker_url, concurrency=self.concurrency,
                                           loglevel=self.loglevel)
            if self.sinks:
                from ingest.stores.outbox import Pump

                self.pump = Pump(self.store, self.sinks).start()
            for root in self.roots:
                w = FolderWatcher(root, self._emit, debounce=self.debounce)
                w.start()
                self.watchers.append(w)
            evs = scan_events(self.store, self.roots)
            n = self.queue.send(evs, "bulk", group=bulk_group(len(evs), self.concurrency))
            if self.store.entities_owed():  # a backlog left by a worker that stopped before it
                self.queue.producer.send_entities()
            log.warning("watching %s; start-up scan queued %d change(s)", ", ".join(self.roots), n)
            if ready is not None:
                ready.set()
            last_scan = time.monotonic()
            from ingest.sources.permwatch import PermissionWatch

            perms = PermissionWatch(self.roots)  # what inotify on the roots cannot see
            while not self._stop.wait(0.5):
                for root in perms.changed():
                    self.queue.send(scan_events(self.store, [root]), "interactive")
                if self.worker is not None and self.worker.poll() is not None:
                    log.error("worker exited with %s; restarting it", self.worker.returncode)
                    self.worker = start_worker(self.store_url, self.broker_url, concurrency=self.concurrency,
                                               loglevel=self.loglevel)
                if time.monotonic() - last_scan > self.rescan_every:
                    last_scan = time.monotonic()
                    if self.embedded:
                        purge_delivered(self.broker_url)
                    self.queue.send(scan_events(self.store, self.roots), "maintenance")
        finally:
            self.shutdown()

    def shutdown(self) -> None:
        for w in self.watchers:
            try:
                w.stop(flush=True)  # pending debounced events go to the queue, not lost
            except Exception:
                log.exception("stopping watcher")
        self.watchers.clear()
        if self.worker is not None:
            stop_worker(self.worker)
            self.worker = None
        if self.pump is not None:
            self.pump.drain(timeout=10)  # what the worker committed last, if the sinks are up
            self.pump.stop()
            self.pump = None
        self.lock.release()


class LostWork:
    """``ingest add`` on Redis: the changes of its batch a broker restart lost are sent again.

    When the batch has made no progress for ``stall_s`` and the broker says nothing is queued and
    no worker holds a task (:meth:`workers.lanes.Producer.idle`), on two looks ``settle_s`` apart,
    the batch's documents without an outcome can only have been lost (see ``workers.lanes``):
    they are sent again, fresh (tasks are idempotent). After ``max_sends`` such rounds the run
    fails, naming what never got an outcome, rather than wait for ever."""

    STALL_S, SETTLE_S, MAX_SENDS = 15.0, 3.0, 3

    def __init__(self, queue: "Queue", store, events: list[ChangeEvent], batch: str, *,
                 concurrency: int | None = None):
        self.queue, self.store, self.events, self.batch = queue, store, events, batch
        self.concurrency = concurrency
        self.stall_s, self.settle_s, self.max_sends = self.STALL_S, self.SETTLE_S, self.MAX_SENDS
        self.last_done, self.since = -1, time.monotonic()
        self.quiet_at: float | None = None
        self.sends = 0

    def check(self, done: int) -> int:
        """Called while waiting; returns how many changes it sent again."""
        now = time.monotonic()
        if done != self.last_done:
            self.last_done, self.since, self.quiet_at = done, now, None
            return 0
        if now - self.since < self.stall_s or self.queue.producer.idle() is not True:
            self.quiet_at = None
            return 0
        if self.quiet_at is None:
            self.quiet_at = now
            return 0
        if now - self.quiet_at < self.settle_s:
            return 0
        have = self.store.batch_done(self.batch)
        missing = [ev for ev in self.events if ev.key not in have and (ev.dest is None or ev.dest not in have)]
        if not missing:
            return 0
        if self.sends >= self.max_sends:
            names = ", ".join(ev.key for ev in missing[:10]) + (" ..." if len(missing) > 10 else "")
            raise RuntimeError(f"{len(missing)} change(s) got no outcome after {self.sends + 1} sends while the "
                               f"queue was empty and no worker held a task: {names}")
        self.sends += 1
        log.warning("%d change(s) of this run were lost by the broker (a restart?): nothing is queued or "
                    "running and they have no outcome; sending them again (%d/%d)", len(missing), self.sends,
                    self.max_sends)
        self.queue.send(missing, "bulk", batch=self.batch, group=bulk_group(len(missing), self.concurrency),
                        fresh=True)
        self.since, self.quiet_at = now, None
        return len(missing)


def settle_entities(queue: "Queue", store, *, progress: bool, deadline: float | None, own_worker=None,
                    stall_s: float = LostWork.STALL_S, max_sends: int = 2) -> int:
    """Wait while the workers compute the named entities the store owes (``[nlp] after_indexing``),
    with a progress bar. When the backlog has not moved for ``stall_s`` and nothing is queued or
    running, one ``ingest.entities`` task is sent again (an earlier one may have been lost), at most
    ``max_sends`` times; then the wait ends, as it does when the backlog has not moved for 4 x ``stall_s``
    whatever waits (no worker reads the lane). Returns how many chunks are still owed (0 when done)."""
    owed = store.entities_owed()
    if not owed:
        return 0
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=owed, unit="chunk", desc="entities", file=sys.stderr)
    queue.producer.send_entities()  # the backlog may be older than this run (a worker stopped before it)
    last, since, sends = owed, time.monotonic(), 0
    try:
        while owed:
            time.sleep(0.1)
            owed, now = store.entities_owed(), time.monotonic()
            if bar is not None:
                bar.total = max(bar.total, bar.n + owed)
                bar.update(max(0, last - owed))
            if owed != last:
                last, since = owed, now
            elif now - since > 4 * stall_s:  # tasks wait but nobody takes them (no worker reads that lane?)
                log.warning("%d chunk(s) still owe their entities and none was computed for %.0f s: is a worker "
                            "reading the %s lane? They are computed when one does", owed, now - since,
                            entities_lane())
                return owed
            elif now - since > stall_s and queue.producer.idle() is True:
                if sends >= max_sends:
                    log.warning("%d chunk(s) still owe their entities and no worker is computing them; "
                                "the next change task queues them again", owed)
                    return owed
                sends += 1
                queue.producer.send_entities()
                since = now
            if own_worker is not None and own_worker.poll() is not None:
                raise RuntimeError(f"the worker exited with status {own_worker.returncode} while {owed} chunk(s) "
                                   f"owed their entities; run `ingest add` again to finish")
            if deadline is not None and now > deadline:
                raise TimeoutError(f"{owed} chunk(s) still owe their named entities at the time limit")
    finally:
        if bar is not None:
            bar.close()
    return 0


def add_exit_code(ends: dict[str, int]) -> int:
    """``ingest add``'s exit status: 1 when anything ended dead-lettered or failed; 0 when
    everything ended indexed, flagged, unchanged or quarantined with a reason."""
    return 1 if ends.get("failed") or ends.get("dead-lettered") else 0


def add(paths: list[str], store_url: str, broker_url: str | None = None, *, progress: bool = True,
        concurrency: int | None = None, loglevel: str = "WARNING", timeout: float | None = None,
        sinks: list | None = None) -> dict:
    """``ingest add``: one-shot ingest of folders/files on the bulk lane; returns a summary."""
    from ingest.sources.reconcile import reconcile
    from ingest.stores import open_store, store_url as canonical

    store_url = canonical(store_url)
    store = open_store(store_url)
    events: list[ChangeEvent] = []
    from ingest.sources.safefs import resolve_root

    for p in paths:
        p = resolve_root(p)  # resolved once: a symlinked root is its target
        if os.path.isdir(p):
            events.extend(reconcile(store, p))
        elif os.path.isfile(p):
            root, name = os.path.split(p)
            events.extend(reconcile(store, root, subtree=name))
        else:
            raise FileNotFoundError(f"no such file or directory: {p}")
    broker = broker_for(store_url, broker_url)
    queue = Queue(store_url, broker)
    lock = RunLock(Path(store_url))
    own_worker = None
    batch = uuid.uuid4().hex
    try:
        if broker_url is None and lock.try_acquire():
            purge_delivered(broker)
            own_worker = start_worker(store_url, broker, concurrency=concurrency, loglevel=loglevel)
        # not coalesced: the run waits for its own documents, and a marker left by a lost task must
        # not hold one back (a task already waiting for a document makes the second one a no-op)
        total = queue.send(events, "bulk", batch=batch, group=bulk_group(len(events), concurrency), fresh=True)
        bar = None
        if progress and total:
            from tqdm import tqdm

            bar = tqdm(total=total, unit="doc", desc="ingest add", file=sys.stderr)
        done, t0, polls = 0, time.monotonic(), 0
        lost = LostWork(queue, store, events, batch, concurrency=concurrency)
        while done < total:
            time.sleep(0.05)
            polls += 1
            if broker_url is None and own_worker is None and polls % 10 == 0 and lock.try_acquire():
                # the `ingest add`/`run` whose worker we relied on has finished: take over with a
                # worker of our own and send what it may have taken but not done (idempotent)
                purge_delivered(broker)
                own_worker = start_worker(store_url, broker, concurrency=concurrency, loglevel=loglevel)
                queue.send(events, "bulk", batch=batch, group=bulk_group(len(events), concurrency))
            n = store.batch_progress(batch)
            if bar is not None:
                bar.update(n - done)
            done = n
            if done < total and polls % 20 == 0:  # about once a second: it may ask the broker
                lost.check(done)
            if own_worker is not None and own_worker.poll() is not None:
                raise RuntimeError(f"the worker exited with status {own_worker.returncode} "
                                   f"after {done}/{total} documents; run `ingest add` again to finish")
            if timeout is not None and time.monotonic() - t0 > timeout:
                raise TimeoutError(f"{done}/{total} documents done after {timeout:.0f} s")
        if bar is not None:
            bar.close()
        indexed_s = time.monotonic() - t0
        owed = settle_entities(queue, store, progress=progress, own_worker=own_worker,
                               deadline=None if timeout is None else t0 + timeout)
        entities_s = time.monotonic() - t0 - indexed_s
    finally:
        if own_worker is not None:
            stop_worker(own_worker)
        lock.release()
    from ingest import config
    from ingest.obs import quality

    quality.refresh(store, config.load())  # this run's quality snapshot; alerts if a source's quality moved
    ends = store.batch_ends(batch)
    summary = {"queued": total, "batch": batch, "outcomes": store.batch_outcomes(batch),
               "seconds": {"indexed": round(indexed_s, 3), "entities": round(entities_s, 3)},
               "entities_owed": owed,
               "ends": {k: len(v) for k, v in ends.items()},
               "problems": {k: [{"path": p, "reason": r} for p, r in ends[k]]
                            for k in ("quarantined", "failed", "dead-lettered") if ends[k]}}
    if sinks:  # feed the secondary stores what this batch changed
        from ingest.stores.outbox import Pump

        pump = Pump(store, sinks)
        summary["sinks"] = pump.drain(timeout=timeout or 600)
        pump.stop()
    return summary
