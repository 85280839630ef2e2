"""Distributed mode with real parts: `redis-server` (AOF on), `ingest worker` processes,
the real model, one shared store (``store_url``; SQLite here, one fixture to extend).

The 300-document corpus (small TXT files, one chunk each, some files private to their
owner or group) and its single-process reference are built once per module; every run
is compared with that reference: same doc ids, chunk ids and ACLs."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.support.common import REPO, indexed_count, wait_for
from tests.support.queue_helpers import assert_whole, content, store_url, vary_permissions, workers  # noqa: F401

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]  # 300 documents, 2 shared cores

N_DOCS = int(os.environ.get("INGEST_QUEUE_TEST_DOCS", "300"))


@pytest.fixture(scope="module")
def corpus():
    from corpora.generate import generate_bench_corpus

    d = Path(tempfile.mkdtemp(prefix="ingest-qcorpus-", dir="/tmp"))
    os.chmod(d, 0o755)
    inbox = d / "inbox"
    paths = generate_bench_corpus(inbox, N_DOCS, seed=41, formats=("txt",), paragraphs=1)
    vary_permissions(paths)
    yield inbox
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def reference(corpus):
    """One uninterrupted in-process ingest of the corpus (no queue, no worker)."""
    from ingest.pipeline.document import Pipeline
    from ingest.sources.reconcile import reconcile
    from ingest.stores.sqlite import SQLiteStore

    store = corpus.parent / "reference.db"
    p = Pipeline(SQLiteStore(store))
    for ev in reconcile(p.store, str(corpus)):
        p.handle(ev)
    got = content(str(store), corpus)
    assert_whole(got, N_DOCS)
    return got


def ingest_add(store: str, broker: str, root: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ingest.cli.main", "add", str(root), "--store", store, "--broker",
                             broker, "--no-progress", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=dict(os.environ, PYTHONPATH=str(REPO)), cwd=str(REPO))


def finish(proc: subprocess.Popen, timeout: float, workers=(), redis=None) -> dict:
    """The `ingest add`'s summary; if it does not end in ``timeout``, fail with what the
    workers logged last and what Redis holds, so a hang can be read from the CI log."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"`ingest add` did not finish in {timeout:.0f} s\n" + _diagnosis(err, workers, redis))
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out[out.index("{"):])


def _diagnosis(err: str, workers, redis) -> str:
    parts = [f"ingest add stderr:\n{err[-1500:]}"]
    for w in workers:
        parts.append(f"{w.log.name} (last lines):\n{w.tail(2500)}")
    if redis is not None:
        try:
            c = redis.client()
            sizes = {}
            for k in c.keys("*"):
                t = c.type(k).decode()
                sizes[k.decode(errors="replace")[:60]] = (t, {"list": c.llen, "hash": c.hlen, "zset": c.zcard}
                                                          .get(t, lambda _k: None)(k))
            parts.append(f"redis keys: {sizes}")
        except Exception as e:  # the diagnosis must not hide the failure
            parts.append(f"redis not readable: {e!r}")
    return "\n".join(parts)


def test_two_workers_on_redis_equal_the_single_process_result(corpus, reference, redis_server, store_url, workers,
                                                              world_dir):
    a = workers(store_url, redis_server.url, "a", world_dir)
    b = workers(store_url, redis_server.url, "b", world_dir)
    summary = finish(ingest_add(store_url, redis_server.url, corpus), timeout=480, workers=(a, b), redis=redis_server)
    assert summary["queued"] == N_DOCS
    assert summary["outcomes"].get("indexed") == N_DOCS, summary
    assert content(store_url, corpus) == reference
    assert a.succeeded() > 0 and b.succeeded() > 0, (a.succeeded(), b.succeeded())  # both did work


def test_kill9_a_worker_mid_run_then_restart_loses_and_duplicates_nothing(corpus, reference, redis_server,
                                                                           store_url, workers, world_dir):
    a = workers(store_url, redis_server.url, "a", world_dir)
    b = workers(store_url, redis_server.url, "b", world_dir)
    add = ingest_add(store_url, redis_server.url, corpus)
    wait_for(lambda: indexed_count(store_url) >= N_DOCS // 4, timeout=600, what="a quarter indexed")
    a.kill9()
    n_mid = indexed_count(store_url)
    assert n_mid < N_DOCS, "finished before the kill: the test proves nothing"
    time.sleep(2)
    a.start()  # the killed worker's unacknowledged task comes back after the visibility timeout
    summary = finish(add, timeout=480, workers=(a, b), redis=redis_server)
    assert summary["outcomes"].get("indexed", 0) + summary["outcomes"].get("skipped", 0) >= N_DOCS - 1
    time.sleep(10)  # let a redelivered duplicate run: it must be a no-op
    got = content(store_url, corpus)
    assert_whole(got, N_DOCS)
    assert got == reference


def test_redis_restart_mid_run_completes_without_loss(corpus, reference, redis_server, store_url, workers,
                                                      world_dir):
    a = workers(store_url, redis_server.url, "a", world_dir)
    b = workers(store_url, redis_server.url, "b", world_dir)
    add = ingest_add(store_url, redis_server.url, corpus)
    wait_for(lambda: indexed_count(store_url) >= N_DOCS // 4, timeout=600, what="a quarter indexed")
    redis_server.stop()  # graceful: the AOF holds the queues and the unacknowledged tasks
    n_mid = indexed_count(store_url)
    assert n_mid < N_DOCS, "finished before the restart: the test proves nothing"
    time.sleep(3)
    redis_server.start()
    finish(add, timeout=480, workers=(a, b), redis=redis_server)
    wait_for(lambda: indexed_count(store_url) == N_DOCS, timeout=120, what="all indexed")
    got = content(store_url, corpus)
    assert_whole(got, N_DOCS)
    assert got == reference
