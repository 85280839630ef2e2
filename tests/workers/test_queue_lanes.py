"""Lanes, backpressure, coalescing, version ordering and failure semantics, on a real
Redis with real `ingest worker` processes (and the real model) where work is done."""
from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from tests.support.common import REPO, indexed_count, wait_for
from tests.support.queue_helpers import store_url, workers  # noqa: F401

pytestmark = pytest.mark.slow


def _producer(store_url, redis_server, **kw):
    from workers.lanes import Producer

    return Producer(store_url, redis_server.url, **kw)


def _upsert(root, rel):
    """An upsert as the folder source makes it: its ``seq`` the file's ctime_ns as the watcher saw it."""
    from ingest.sources.base import UPSERT, ChangeEvent

    try:
        seq = os.lstat(os.path.join(root, rel)).st_ctime_ns
    except FileNotFoundError:
        seq = None
    return ChangeEvent(UPSERT, str(root), rel, seq=seq)


def _outcomes(store):
    with sqlite3.connect(store, timeout=60) as c:
        return c.execute("SELECT external_id, action, detail FROM outcomes ORDER BY id").fetchall()


def _text(i: int, word: str) -> str:
    return f"Memo {i}. The shipment ledger mentions {word} in the closing paragraph.\n"


def test_duplicate_events_coalesce_into_one_task_until_it_starts(world_dir, redis_server, store_url, workers):
    root = world_dir / "docs"
    root.mkdir()
    (root / "a.txt").write_text(_text(1, "alphaword"))
    (root / "b.txt").write_text(_text(2, "betaword"))
    q = _producer(store_url, redis_server)
    assert q.send([_upsert(root, "a.txt")] * 5, "bulk") == 1
    assert q.send([_upsert(root, "a.txt"), _upsert(root, "b.txt")], "bulk") == 1  # only b is new
    assert q.send([_upsert(root, "a.txt")], "interactive") == 1  # another lane is another task
    assert q.depth() == {"interactive": 1, "bulk": 2, "maintenance": 0}
    workers(store_url, redis_server.url, "a", world_dir)
    wait_for(lambda: len(_outcomes(store_url)) == 3, timeout=180, what="three tasks done")
    assert sorted(o[0] for o in _outcomes(store_url)) == ["a.txt", "a.txt", "b.txt"]
    # the task removed its marker when it started: a new event is a new task
    assert q.send([_upsert(root, "a.txt")], "bulk") == 1
    wait_for(lambda: len(_outcomes(store_url)) == 4, timeout=60, what="the new task done")
    assert redis_server.client().keys("ingest:pending:*") == []


def test_backpressure_pauses_the_producer_at_the_bound_and_resumes_below_it(world_dir, redis_server, store_url):
    root = world_dir / "docs"
    root.mkdir()
    q = _producer(store_url, redis_server, max_depth={"interactive": 5, "bulk": 20, "maintenance": 5}, poll=0.05)
    events = [_upsert(root, f"f{i:03d}.txt") for i in range(60)]
    done = {}
    t = threading.Thread(target=lambda: done.setdefault("sent", q.send(events, "bulk")), daemon=True)
    t.start()
    wait_for(lambda: q.depth()["bulk"] == 20, timeout=30, what="the lane to fill to its bound")
    time.sleep(1.0)
    assert t.is_alive() and q.depth()["bulk"] == 20  # paused at the bound, not past it
    r = redis_server.client()
    popped, max_depth = 0, 0
    t0 = time.monotonic()
    while (t.is_alive() or r.llen("bulk")) and time.monotonic() - t0 < 60:  # a slow consumer
        max_depth = max(max_depth, r.llen("bulk"))
        if r.rpop("bulk") is not None:
            popped += 1
        time.sleep(0.02)
    t.join(5)
    assert done.get("sent") == 60
    assert popped == 60 and max_depth <= 20
    assert q.paused_seconds >= 1.0


def test_interactive_change_goes_ahead_of_a_bulk_backlog(world_dir, redis_server, store_url, workers):
    root = world_dir / "docs"
    root.mkdir()
    n = 40
    for i in range(n):
        (root / f"bulk-{i:03d}.txt").write_text(_text(i, f"bulkword{i}"))
    q = _producer(store_url, redis_server)
    assert q.send([_upsert(root, f"bulk-{i:03d}.txt") for i in range(n)], "bulk") == n
    workers(store_url, redis_server.url, "a", world_dir)
    wait_for(lambda: indexed_count(store_url) >= 2, timeout=180, what="the backlog to start")
    (root / "urgent.txt").write_text(_text(999, "urgentword"))
    done_before = indexed_count(store_url)
    assert q.send([_upsert(root, "urgent.txt")], "interactive") == 1
    wait_for(lambda: indexed_count(store_url) == n + 1, timeout=300, what="everything indexed")
    order = [o[0] for o in _outcomes(store_url) if o[1] == "indexed"]
    # one worker process: at most the task it was running and the one it had reserved go first
    pos = order.index("urgent.txt")
    assert pos <= done_before + 2, (done_before, order)
    assert n - pos >= n // 2, order  # most of the backlog was still waiting


def test_document_edited_twice_ends_at_the_second_version_whatever_the_order(world_dir, redis_server, store_url,
                                                                             workers):
    root = world_dir / "docs"
    root.mkdir()
    f = root / "memo.txt"
    v1, v2 = _text(1, "firstversionword"), _text(1, "secondversionword")
    q = _producer(store_url, redis_server)
    f.write_text(v1)
    assert q.send([_upsert(root, "memo.txt")], "bulk") == 1  # the task for version 1 waits in bulk
    time.sleep(0.02)
    f.write_text(v2)
    assert q.send([_upsert(root, "memo.txt")], "interactive") == 1  # version 2's task runs first
    workers(store_url, redis_server.url, "a", world_dir)  # one worker: lanes in priority order
    wait_for(lambda: len(_outcomes(store_url)) == 2, timeout=180, what="both memo tasks done")
    # 20 more documents, each edited twice in quick succession, tasks not coalesced, two workers racing
    nq = _producer(store_url, redis_server, coalesce=False)
    for i in range(20):
        g = root / f"race-{i:02d}.txt"
        g.write_text(_text(i, f"oldword{i}"))
        nq.send([_upsert(root, g.name)], "bulk")
        g.write_text(_text(i, f"newword{i}"))
        nq.send([_upsert(root, g.name)], "bulk")
    workers(store_url, redis_server.url, "b", world_dir)
    wait_for(lambda: len(_outcomes(store_url)) >= 2 + 40, timeout=300, what="all tasks done")
    outs = _outcomes(store_url)
    memo = [o for o in outs if o[0] == "memo.txt"]
    assert [o[1] for o in memo] == ["indexed", "stale"], memo  # the older task was dropped, not applied
    with sqlite3.connect(store_url) as c:
        versions = dict(c.execute("SELECT external_id, content_version FROM documents"))
        texts = " ".join(r[0] for r in c.execute("SELECT text FROM chunks"))
    assert versions["memo.txt"] == hashlib.sha256(v2.encode()).hexdigest()
    for i in range(20):
        assert versions[f"race-{i:02d}.txt"] == hashlib.sha256(_text(i, f"newword{i}").encode()).hexdigest()
    assert "secondversionword" in texts and "firstversionword" not in texts and "oldword" not in texts


def _cli(*args, env=None):
    p = subprocess.run([sys.executable, "-m", "ingest.cli.main", *args], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, PYTHONPATH=str(REPO), **(env or {})), cwd=str(REPO))
    assert p.returncode == 0, p.stderr[-3000:]
    return p.stdout


def test_permanent_fault_is_dead_lettered_shown_by_status_and_requeued_by_retry(world_dir, redis_server, store_url,
                                                                                 workers):
    root = world_dir / "docs"
    root.mkdir()
    q = _producer(store_url, redis_server)
    q.app.send_task("ingest.change", args=[store_url, {"kind": "explode", "source": str(root), "key": "x.txt"}],
                    queue="bulk")
    w = workers(store_url, redis_server.url, "a", world_dir)

    def dead():
        return json.loads(_cli("status", "--store", store_url, "--broker", redis_server.url, "--json"))["dead_letters"]

    letters = wait_for(dead, timeout=180, what="a dead letter")
    assert len(letters) == 1
    d = letters[0]
    assert d["fault"] == "permanent" and d["lane"] == "bulk" and d["attempts"] == 1  # not retried
    assert "unknown change kind 'explode'" in d["reason"]
    text = _cli("status", "--store", store_url, "--broker", redis_server.url)
    assert f"#{d['id']}" in text and "unknown change kind" in text
    assert _cli("retry", "--store", store_url, "--broker", redis_server.url, "--json").strip() == f"[{d['id']}]"
    again = wait_for(lambda: [x for x in dead() if x["id"] != d["id"]], timeout=60, what="the retried task to run")
    assert again[0]["args"] == d["args"] and all(x["id"] != d["id"] for x in dead())  # the old one is re-queued
    # the queues are visible to Celery's own tools (also what Flower shows)
    p = subprocess.run([sys.executable, "-m", "celery", "-A", "workers", "inspect", "active_queues", "--timeout", "5"],
                       capture_output=True, text=True, timeout=60, cwd=str(REPO),
                       env=dict(os.environ, PYTHONPATH=str(REPO), INGEST_BROKER=redis_server.url))
    assert p.returncode == 0, p.stdout + p.stderr
    assert all(f"'name': '{lane}'" in p.stdout for lane in ("interactive", "bulk", "maintenance")), p.stdout
    assert w.proc.poll() is None


def test_transient_faults_are_classified_and_backed_off_with_jitter():
    import kombu.exceptions
    import redis.exceptions

    from ingest.config import settings
    from workers.tasks import backoff, is_transient

    assert is_transient(sqlite3.OperationalError("database is locked"))
    assert is_transient(redis.exceptions.ConnectionError("Connection refused"))
    assert is_transient(kombu.exceptions.OperationalError("broker gone"))
    assert is_transient(ConnectionRefusedError())
    assert not is_transient(ValueError("unknown change kind"))
    assert not is_transient(KeyError("doc_id"))
    for attempt in range(8):
        xs = [backoff(attempt) for _ in range(400)]
        bound = min(settings().retry_cap_s, 2 ** attempt)
        assert all(0 <= x <= bound for x in xs)
        assert max(xs) > 0.6 * bound and len(set(xs)) > 300  # spread over the window: jitter
