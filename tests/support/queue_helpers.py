"""Helpers for the distributed-queue tests: real `ingest worker` processes on a real
Redis, and the store compared by content (doc ids, chunk ids, ACLs)."""
from __future__ import annotations

import base64
import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.common import REPO, stop_group


class Worker:
    """`ingest worker --store S --broker R` as a real process in its own session."""

    def __init__(self, store_url: str, broker_url: str, name: str, folder: Path, *, concurrency: int = 1,
                 queues: str = "interactive,bulk,maintenance", env: dict | None = None):
        self.cmd = [sys.executable, "-m", "ingest.cli.main", "worker", "--store", store_url, "--broker", broker_url,
                    "--concurrency", str(concurrency), "--queues", queues, "--loglevel", "INFO"]
        self.log = folder / f"worker-{name}.log"
        self.env = dict(os.environ, PYTHONPATH=str(REPO), INGEST_VISIBILITY_TIMEOUT="30", **(env or {}))
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Worker":
        with open(self.log, "ab") as f:
            self.proc = subprocess.Popen(self.cmd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=self.env, start_new_session=True, cwd=str(REPO))
        return self

    def kill9(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)  # the worker and its pool children, no clean-up
        self.proc.wait()

    def stop(self, timeout: float = 60) -> None:
        stop_group(self.proc, signal.SIGTERM, timeout)

    def succeeded(self) -> int:
        return self.log.read_text(errors="replace").count("succeeded in")

    def tail(self, n: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-n:]


@pytest.fixture
def workers():
    started: list[Worker] = []

    def start(*args, **kw) -> Worker:
        w = Worker(*args, **kw).start()
        started.append(w)
        return w

    yield start
    for w in started:
        w.stop()


@pytest.fixture
def store_url(world_dir) -> str:
    """The shared store all workers write to. One fixture, so the lead can parametrise it
    over PostgreSQL once that store is merged. Created (schema migrated) up front."""
    from ingest.stores.sqlite import SQLiteStore

    path = world_dir / "index.db"
    SQLiteStore(path).close()
    return str(path)


def content(store: str, root: Path) -> dict:
    """What the store holds, keyed so two stores of the same folder compare equal."""
    with sqlite3.connect(store, timeout=60) as c:
        docs = c.execute("SELECT doc_id, external_id, status, content_version, acl_version, acl, n_chunks"
                         " FROM documents ORDER BY doc_id").fetchall()
        chunks = c.execute("SELECT doc_id, idx, chunk_id, text_hash FROM chunks ORDER BY doc_id, idx").fetchall()
        acl = c.execute("SELECT doc_id, token, effect FROM doc_acl ORDER BY 1, 2, 3").fetchall()
        fts = c.execute("SELECT COUNT(*) FROM chunks_fts").fetchone()[0]
    return {"docs": docs, "chunks": chunks, "acl": acl, "fts": fts}


def assert_whole(got: dict, n_docs: int) -> None:
    """Every document once, indexed, with chunks 0..n-1 once each, one FTS row per chunk."""
    assert len(got["docs"]) == n_docs, len(got["docs"])
    assert len({d[1] for d in got["docs"]}) == n_docs
    assert all(d[2] == "indexed" for d in got["docs"]), [d for d in got["docs"] if d[2] != "indexed"][:3]
    per_doc: dict[str, list[int]] = {}
    for doc_id, idx, _, _ in got["chunks"]:
        per_doc.setdefault(doc_id, []).append(idx)
    for d in got["docs"]:
        assert per_doc.get(d[0]) == list(range(d[6])), d
    assert len({c[2] for c in got["chunks"]}) == len(got["chunks"]) == got["fts"]


def vary_permissions(paths: list[Path]) -> None:
    """Some files private to their owner or group, so ACLs differ between documents."""
    for i, p in enumerate(paths):
        if i % 7 == 3:
            os.chmod(p, 0o640)
        elif i % 11 == 5:
            os.chmod(p, 0o600)


def queued(broker: str) -> list[tuple[str, list]]:
    """The tasks waiting on the interactive lane (read from the broker, not removed)."""
    db = broker[len("sqla+sqlite:///"):]
    if not os.path.exists(db):
        return []
    with sqlite3.connect(db) as c:
        rows = c.execute("SELECT m.payload FROM kombu_message m JOIN kombu_queue q ON q.id=m.queue_id"
                         " WHERE q.name='interactive' AND m.visible=1").fetchall()
    out = []
    for (payload,) in rows:
        msg = json.loads(payload)
        body = json.loads(base64.b64decode(msg["body"]))
        out.append((msg["headers"]["task"], body[0]))
    return out
