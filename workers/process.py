"""Starting and stopping Celery workers (``ingest run``/``add`` start one as a child process,
``ingest worker`` runs one in the foreground), and the embedded broker's housekeeping."""
from __future__ import annotations

import logging
import os
import signal
import sqlite3
import subprocess
import sys

from .lanes import broker_db

log = logging.getLogger("ingest.workers")


def purge_delivered(broker_url: str) -> int:
    """kombu's SQL transport keeps delivered messages (visible=0) forever: drop them.

    Safe whenever this process holds the run lock: a delivered message is either done,
    or was in flight in a worker that died, and the reconcile scan finds that work again.
    """
    db = broker_db(broker_url)
    if db is None or not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=30) as c:
            return c.execute("DELETE FROM kombu_message WHERE visible=0").rowcount
    except sqlite3.OperationalError:
        return 0


def worker_command(store_url: str, broker_url: str, queues: str, concurrency: int, loglevel: str) -> list[str]:
    return [sys.executable, "-m", "ingest.cli.main", "worker", "--store", store_url, "--broker", broker_url,
            "--queues", queues, "--concurrency", str(concurrency), "--loglevel", loglevel]


def default_concurrency() -> int:
    """One worker process per core: two single-threaded embedders beat one two-threaded
    one on small per-document batches, and extraction overlaps with embedding."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def start_worker(store_url: str, broker_url: str, *, queues: str = "interactive,bulk,maintenance",
                 concurrency: int | None = None, loglevel: str = "WARNING") -> subprocess.Popen:
    from workers.lifecycle import die_with_parent

    concurrency = concurrency or default_concurrency()
    env = dict(os.environ, INGEST_BROKER=broker_url, INGEST_STORE=store_url)
    env.setdefault("INGEST_TORCH_THREADS", str(max(1, default_concurrency() // concurrency)))
    return subprocess.Popen(worker_command(store_url, broker_url, queues, concurrency, loglevel), env=env,
                            preexec_fn=die_with_parent, stdin=subprocess.DEVNULL,
                            stdout=sys.stderr.fileno(),  # keep our stdout for results (--json)
                            start_new_session=True)  # Ctrl-C reaches us; we stop the worker warmly


def stop_worker(proc: subprocess.Popen, timeout: float = 60) -> None:
    """Warm shutdown: the worker finishes its current task and returns prefetched ones."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        log.warning("worker did not stop in %.0f s; killing it (the next start's scan redoes its work)", timeout)
        proc.kill()
        proc.wait()


def run_worker(store_url: str, broker_url: str, queues: str, concurrency: int | None, loglevel: str) -> None:
    """Blocking: a Celery worker consuming the given lanes (``ingest worker``)."""
    os.environ["INGEST_BROKER"] = broker_url
    os.environ["INGEST_STORE"] = store_url
    from workers.app import configure

    app = configure(broker_url)
    concurrency = concurrency or default_concurrency()
    os.environ.setdefault("INGEST_TORCH_THREADS", str(max(1, default_concurrency() // concurrency)))
    if os.geteuid() == 0:  # common in containers, and needed to read every user's files
        import warnings

        from celery.exceptions import SecurityWarning

        warnings.filterwarnings("ignore", category=SecurityWarning)  # Celery's wall of text, once per worker
        log.warning("running as root: the worker can read every file it is given; who may see a document in "
                    "search is still decided by that file's own permissions, not by root's")
    quiet = ["--quiet"] if loglevel.upper() in ("WARNING", "ERROR", "CRITICAL") else []
    argv = [*quiet, "worker", "-Q", queues, "-c", str(concurrency), "-P", "prefork", "-l", loglevel,
            "-n", f"ingest-{os.getpid()}@%h", "--without-gossip", "--without-mingle", "--without-heartbeat"]
    app.worker_main(argv)
