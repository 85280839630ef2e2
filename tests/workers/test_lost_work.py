"""Messages a Redis restart loses are sent again by the waiting `ingest add`.

kombu's Redis transport takes a message off the list (BRPOP) and records it as unacknowledged
in a second command: a Redis shutdown between the two loses the message, and its coalescing
marker then holds back the next event for that document (CI: an `ingest add` waited 900 s for the
last group of a 300-document run). The add's batch knows what it asked for and the store what
was done: when nothing is queued and no worker holds a task, what is missing was lost."""
from __future__ import annotations

import logging

import pytest

from ingest.cli.runner import LostWork
from ingest.sources.base import ChangeEvent
from tests.support.queue_helpers import Worker
from workers.lanes import pending_key


def test_add_sends_again_what_the_broker_lost(redis_server, world_dir, monkeypatch, caplog):
    import sqlite3
    import threading

    from ingest.cli.runner import add
    from ingest.stores.sqlite import SQLiteStore
    from tests.support.common import wait_for

    root = world_dir / "docs"
    root.mkdir()
    names = [f"note-{i}.txt" for i in range(4)]
    for i, n in enumerate(names):
        (root / n).write_text(f"note {i} about the harbour crane number {i}\n")
    store = str(world_dir / "index.db")
    SQLiteStore(store).close()
    r = redis_server.client()
    # a marker a lost task left behind must not hold its document back from this run
    assert r.set(pending_key(store, "bulk", "upsert", str(root), names[0], None), "1", ex=3600)
    monkeypatch.setattr(LostWork, "STALL_S", 2.0)
    monkeypatch.setattr(LostWork, "SETTLE_S", 1.0)
    monkeypatch.setenv("INGEST_BULK_GROUP", str(len(names)))  # one task: lost whole below
    result: dict = {}

    def run():
        try:
            result["summary"] = add([str(root)], store, redis_server.url, progress=False, timeout=240)
        except BaseException as e:  # reported by the assertions below
            result["error"] = e

    with caplog.at_level(logging.WARNING, logger="ingest.cli.runner"):
        t = threading.Thread(target=run)
        t.start()
        wait_for(lambda: r.llen("bulk") > 0 or "error" in result, timeout=60, what="the run's tasks queued")
        assert r.delete("bulk") == 1  # the broker loses every queued task (no worker has started yet)
        w = Worker(store, redis_server.url, "a", world_dir).start()
        try:
            t.join(300)
        finally:
            w.stop()
    assert not t.is_alive() and "error" not in result, result.get("error")
    summary = result["summary"]
    assert summary["queued"] == len(names)
    assert summary["outcomes"].get("indexed") == len(names), summary
    assert f"{len(names)} change(s) of this run were lost by the broker" in caplog.text
    with sqlite3.connect(store) as c:
        assert {e for (e,) in c.execute("SELECT external_id FROM documents WHERE status='indexed'")} == set(names)
    assert not r.keys("ingest:pending:*")  # the tasks sent again started and cleared their markers


class _Producer:
    def __init__(self, idle):
        self.idle_answer, self.sent = idle, []

    def idle(self):
        return self.idle_answer



class _Queue:
    def __init__(self, idle):
        self.producer = _Producer(idle)
        self.sent: list = []

    def send(self, events, lane, batch=None, group=1, *, fresh=False):
        self.sent.append(([e.key for e in events], lane, fresh))
        return len(events)


class _Store:
    def __init__(self, done):
        self.done = done

    def batch_done(self, batch):
        return set(self.done)


def _events(*keys):
    return [ChangeEvent("upsert", "/root", k) for k in keys]


def test_lost_work_waits_for_a_quiet_broker_and_gives_up_with_names():
    busy = LostWork(_Queue(False), _Store({"a"}), _events("a", "b"), "batch")
    busy.stall_s = busy.settle_s = 0
    for _ in range(5):
        assert busy.check(1) == 0  # the broker still holds work: nothing is declared lost
    assert busy.queue.sent == []
    unknown = LostWork(_Queue(None), _Store(set()), _events("a"), "batch")  # the embedded broker cannot tell
    unknown.stall_s = unknown.settle_s = 0
    assert [unknown.check(0) for _ in range(4)] == [0, 0, 0, 0]
    quiet = LostWork(_Queue(True), _Store({"a"}), _events("a", "b", "c"), "batch")
    quiet.stall_s = quiet.settle_s = 0
    quiet.max_sends = 2
    assert quiet.check(1) == 0  # first look: progress moved (from none)
    assert quiet.check(1) == 0  # quiet once: look again before deciding
    assert quiet.check(1) == 2
    assert quiet.queue.sent == [(["b", "c"], "bulk", True)]
    quiet.check(1)
    assert quiet.check(1) == 2
    quiet.check(1)
    with pytest.raises(RuntimeError, match=r"2 change\(s\) got no outcome after 3 sends .*: b, c"):
        quiet.check(1)


def test_the_broker_is_idle_only_when_it_says_so(redis_server, world_dir):
    from workers.lanes import UNACKED_KEY, Producer

    p = Producer(str(world_dir / "index.db"), redis_server.url)
    r = redis_server.client()
    assert p.idle() is True  # nothing queued, nothing held
    r.lpush("bulk", b"{}")
    assert p.idle() is False  # a task waits
    r.delete("bulk")
    r.hset(UNACKED_KEY, "tag", b"[]")
    assert p.idle() is False  # a worker holds one
    r.delete(UNACKED_KEY)
    redis_server.stop()
    try:
        assert p.idle() is False  # Redis away: it is not known to be empty, and the waiting add goes on waiting
    finally:
        redis_server.start()
    assert p.idle() is True
