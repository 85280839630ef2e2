"""Shared parts of the distributed-queue benchmarks (lanes.py, scale.py): a real
redis-server (tests/support/servers_redis.py), `ingest worker` processes, warm-up."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from _common import REPO, child_env, ingest_cmd, wait_for

sys.path.insert(0, str(REPO))
from tests.support.servers_redis import RedisServer  # noqa: E402


def start_redis(folder: Path) -> RedisServer:
    b = shutil.which("redis-server")
    if b is None:
        raise SystemExit("redis-server is not installed (apt-get install redis-server)")
    folder.mkdir(parents=True, exist_ok=True)
    return RedisServer(b, folder).start()


class Workers:
    """``n`` `ingest worker --concurrency 1` processes on one store and broker."""

    def __init__(self, store: str, broker: str, n: int, folder: Path, env: dict | None = None):
        self.procs = []
        for i in range(n):
            log = open(folder / f"worker-{i}.log", "ab")
            self.procs.append(subprocess.Popen(
                ingest_cmd("worker", "--store", store, "--broker", broker, "--concurrency", "1"),
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                env=dict(child_env(), INGEST_TORCH_THREADS="1", **(env or {})), cwd=str(REPO)))
            log.close()

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)  # warm shutdown; unfinished backlog stays in Redis
        for p in self.procs:
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def warm(producer, root: Path, names: list[str], store: str, timeout: float = 300) -> None:
    """Index ``names`` (under ``root``) and wait: every worker process has loaded the model."""
    from ingest.sources.base import UPSERT, ChangeEvent

    from _common import indexed_count

    before = indexed_count(store)
    producer.send([ChangeEvent(UPSERT, str(root), n) for n in names], "interactive")
    wait_for(lambda: indexed_count(store) >= before + len(names), timeout, what="warm-up documents indexed")
