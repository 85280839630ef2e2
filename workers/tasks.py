"""Celery tasks: one task per document change, idempotent, retried on transient faults."""
from __future__ import annotations

import logging
import os
import random
import sqlite3

from celery.signals import worker_process_init

from .app import app

log = logging.getLogger("ingest.workers")

_pipelines: dict = {}


@worker_process_init.connect
def _child_init(**_):
    import os

    from .lifecycle import die_with_parent

    die_with_parent()
    store = os.environ.get("INGEST_STORE")
    if store:  # load the model and parsers now, not on the first change a user makes
        _warm_up(store)  # synchronously: a thread here would race the first task's imports


def _warm_up(store_url: str) -> None:
    try:
        pipeline_for(store_url).embedder.model  # noqa: B018 - loads it
        from extractors import warm_up

        warm_up()
    except Exception:  # the first task will load (and report) it again
        log.warning("warm-up failed", exc_info=True)


def pipeline_for(store_url: str):
    """One pipeline (store handle, embedder) per worker process and store."""
    p = _pipelines.get(store_url)
    if p is None:
        from ingest.pipeline import Pipeline
        from ingest.stores import open_store

        p = _pipelines[store_url] = Pipeline(open_store(store_url))
    return p


MAX_RETRIES = int(os.environ.get("INGEST_TASK_MAX_RETRIES", "5"))
BACKOFF_BASE = float(os.environ.get("INGEST_RETRY_BASE_S", "1"))
BACKOFF_CAP = float(os.environ.get("INGEST_RETRY_CAP_S", "60"))


def is_transient(exc: BaseException) -> bool:
    """Faults that retrying can cure: the store or the broker busy or unreachable."""
    if isinstance(exc, sqlite3.OperationalError):  # locked, busy, cannot open (disk, NFS hiccup)
        return True
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    for cls in type(exc).__mro__:  # without importing the client libraries
        mod = cls.__module__
        if (mod.startswith(("redis.", "kombu.")) and cls.__name__ in ("ConnectionError", "TimeoutError",
                                                                       "OperationalError", "BusyLoadingError")) \
                or (mod.startswith("psycopg") and cls.__name__ in ("OperationalError", "InterfaceError")):
            return True
    return False


def backoff(retries: int) -> float:
    """Exponential backoff with full jitter: uniform(0, min(cap, base * 2**retries))."""
    return random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2 ** retries))


def _give_up(task, store_url: str, fault: str, exc: BaseException, ev, batch: str | None) -> list[str]:
    """Record a dead letter (and an outcome, so `ingest add` counts the document as done)."""
    from celery.exceptions import Reject

    req = task.request
    reason = f"{type(exc).__name__}: {exc}"
    if fault == "transient":
        reason = f"gave up after {req.retries + 1} attempts: {reason}"
    log.error("change %s %s: %s fault: %s", ev.kind, ev.path, fault, reason)
    try:
        store = pipeline_for(store_url).store
        store.add_dead_letter(task=task.name, lane=(req.delivery_info or {}).get("routing_key"),
                              args=list(req.args or []), kwargs=dict(req.kwargs or {}), fault=fault,
                              reason=reason, attempts=req.retries + 1)
        store.log_outcome(action="error", source=f"folder:{ev.root}", external_id=ev.path, doc_id=None,
                          batch=batch, detail=f"{fault}: {reason}")
    except Exception as e2:
        raise Reject(f"cannot record the failure: {e2}", requeue=True) from exc
    return ["dead-letter"]


@app.task(name="ingest.change", bind=True, acks_late=True, max_retries=MAX_RETRIES)
def change(self, store_url: str, kind: str, root: str, path: str, dest_path: str | None = None,
           batch: str | None = None, version: int | None = None, pending: str | None = None):
    """One document change. Idempotent: it looks at the current state of the document.

    Transient faults are retried with backoff and jitter, ``MAX_RETRIES`` times, then
    dead-lettered; anything else is a permanent fault: dead-lettered at once, with the
    reason, and acknowledged. A task that cannot even record that (broker and store
    both gone) is rejected with requeue, so the broker delivers it again."""
    from celery.exceptions import Reject, Retry

    from ingest.sources.base import ChangeEvent

    ev = ChangeEvent(kind, root, path, dest_path)
    try:
        if pending:  # from now on a new event for this document needs a task of its own
            from .lanes import clear_pending

            clear_pending(app.conf.broker_url, pending)
        outs = pipeline_for(store_url).handle(ev, batch=batch, version=version)
    except Exception as e:
        if not is_transient(e):
            return _give_up(self, store_url, "permanent", e, ev, batch)
        if self.request.retries >= self.max_retries:
            return _give_up(self, store_url, "transient", e, ev, batch)
        delay = backoff(self.request.retries)
        log.warning("change %s %s: transient fault (%s: %s); retry %d/%d in %.1f s", kind, path,
                    type(e).__name__, e, self.request.retries + 1, self.max_retries, delay)
        try:
            raise self.retry(exc=e, countdown=delay)
        except Retry:
            raise
        except Exception as e2:  # the broker is unreachable too: leave the message to be delivered again
            raise Reject(f"retry could not be queued: {e2}", requeue=True) from e
    return [o.action for o in outs]
