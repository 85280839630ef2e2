"""Issue 15: an idle embedded worker costs nothing. A consumer of the SQLite broker with
nothing to do waits on a doorbell file (inotify) instead of polling; every publish through
the transport rings it. (Idle CPU and freshness are measured by bench/idle.py.)"""
from __future__ import annotations

import threading

from workers.broker import Bell, bell_path, ring


def test_a_ring_wakes_a_waiting_consumer_and_nothing_else_does(tmp_path):
    path = str(tmp_path / "b.sqlite.bell")
    bell = Bell(path)
    try:
        assert bell.ok  # Linux: inotify
        assert not bell.wait(0.05)  # nothing rang: the wait runs out
        t = threading.Timer(0.2, ring, (path,))
        t.start()
        assert bell.wait(60)  # woken by the ring, long before the timeout
        t.join()
        assert not bell.wait(0.05)  # the ring was consumed
        ring(path)  # a ring while nobody waits is kept for the next wait
        assert bell.wait(0)
        (tmp_path / "b.sqlite.bell").unlink()  # the file removed: the bell watches a new one
        assert bell.wait(60)
        ring(path)
        assert bell.wait(60)
    finally:
        bell.close()


def test_publishing_through_the_embedded_broker_rings(tmp_path):
    from kombu import Connection

    import workers.broker as broker

    broker.register()
    db = tmp_path / "q.broker.sqlite"
    assert bell_path(f"sqlite:///{db}") == f"{db}.bell"
    with Connection(f"sqla+sqlite:///{db}") as conn:
        q = conn.SimpleQueue("lane")
        bell = Bell(f"{db}.bell")
        try:
            bell.wait(0)  # whatever creating the tables rang
            q.put({"n": 1})
            assert bell.wait(60)
            msg = q.get(timeout=60)  # the consumer's drain: waits on the bell, takes the message
            assert msg.payload == {"n": 1}
            msg.ack()
        finally:
            bell.close()
            q.close()


def test_the_embedded_broker_reads_lanes_in_order(tmp_path):
    """As on Redis: a consumer of several lanes takes interactive, then bulk, then maintenance
    (named entities computed after indexing wait behind every change), whatever the order the
    messages came in or the queues were named."""
    from kombu import Connection, Consumer, Exchange, Queue

    import workers.broker as broker

    broker.register()
    db = tmp_path / "o.broker.sqlite"
    lanes = [Queue(n, Exchange(n, type="direct"), routing_key=n) for n in ("maintenance", "bulk", "interactive")]
    got: list[str] = []
    with Connection(f"sqla+sqlite:///{db}") as conn:
        with conn.Producer() as prod:
            for lane, n in (("maintenance", 1), ("bulk", 1), ("maintenance", 2), ("interactive", 1), ("bulk", 2)):
                prod.publish({"lane": lane, "n": n}, exchange=lane, routing_key=lane, declare=lanes)

        def take(body, msg):
            got.append(f"{body['lane']}{body['n']}")
            msg.ack()

        with Consumer(conn, queues=lanes, callbacks=[take], prefetch_count=1):
            while len(got) < 5:
                conn.drain_events(timeout=30)
    assert got == ["interactive1", "bulk1", "bulk2", "maintenance1", "maintenance2"]
