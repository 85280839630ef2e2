"""Celery tasks: one task per document change, idempotent, retried on transient faults."""
from __future__ import annotations

import logging
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


def task_context(task) -> dict:
    """Where a change came from, for its trace: lane, task id, when it was queued."""
    req = task.request
    queued = req.get("ingest_queued_at") or (req.headers or {}).get("ingest_queued_at")
    return {"lane": (req.delivery_info or {}).get("routing_key"), "task": req.id, "queued_at": queued}


@app.task(name="ingest.change", bind=True, acks_late=True, max_retries=5)
def change(self, store_url: str, kind: str, root: str, path: str, dest_path: str | None = None,
           batch: str | None = None):
    from ingest.sources.base import ChangeEvent

    ev = ChangeEvent(kind, root, path, dest_path)
    try:
        outs = pipeline_for(store_url).handle(ev, batch=batch, ctx=task_context(self))
    except sqlite3.OperationalError as e:  # store busy/locked: transient
        raise self.retry(exc=e, countdown=min(2 ** self.request.retries, 30))
    except Exception as e:
        # A bug or a fault we did not classify: record it for this document and go on.
        log.exception("change %s %s failed", kind, path)
        pipeline_for(store_url).store.log_outcome(action="error", source=f"folder:{root}", external_id=path,
                                                  doc_id=None, batch=batch,
                                                  detail=f"internal-error: {type(e).__name__}: {e}")
        raise
    return [o.action for o in outs]


@app.task(name="ingest.changes", bind=True, acks_late=True, max_retries=5)
def changes(self, store_url: str, events: list, batch: str | None = None):
    """Several changes in one task (bulk lanes): their new chunks share one embedding call.
    ``events``: ``[kind, root, path, dest_path]`` lists. Per-document faults are recorded
    per document by the pipeline; the rest of the group goes on."""
    from ingest.sources.base import ChangeEvent

    evs = [ChangeEvent(*e) for e in events]
    try:
        outs = pipeline_for(store_url).handle_many(evs, batch=batch, ctx=task_context(self))
    except sqlite3.OperationalError as e:  # store busy/locked: transient; redelivery is idempotent
        raise self.retry(exc=e, countdown=min(2 ** self.request.retries, 30))
    return [o.action for o in outs]

@app.task(name="ingest.dms_poll", bind=True, acks_late=True, max_retries=5)
def dms_poll(self, store_url: str, source: str, prune: bool = False):
    """One sync pass of a configured DMS source (config from ``$INGEST_CONFIG``); webhooks enqueue it."""
    from ingest import config
    from ingest.dms import sync_source
    from ingest.sources.connector import ConnectorError

    try:
        rep = sync_source(store_url, source, config.load(), prune=prune, pipeline=pipeline_for(store_url),
                          ctx=task_context(self))
    except (sqlite3.OperationalError, ConnectorError) as e:  # store busy or source unreachable: transient
        raise self.retry(exc=e, countdown=min(2 ** self.request.retries * 5, 300))
    return {"events": rep.events, "outcomes": rep.outcomes, "pruned": rep.pruned}
