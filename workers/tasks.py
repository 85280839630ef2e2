"""Celery tasks: one task per document change, idempotent, retried on transient faults.

One task form for every source (``workers.lanes.Producer`` sends them):

* ``ingest.change(store_url, event, batch=None, pending=None)``: one change event
  (:class:`ingest.sources.base.ChangeEvent` as a dict), a folder's file or a connector's item alike,
  through :func:`ingest.pipeline.changes.handle`.
* ``ingest.changes(store_url, events, batch=None, pending=None)``: several upserts, their new chunks
  embedded together (:func:`ingest.pipeline.changes.handle_many`); ``pending``: their coalescing markers.
* ``ingest.poll(store_url, source, prune=False, pending=None, acl=False)``: ask a configured source what changed
  since its cursor and apply each change through the same per-document path (webhooks, ``ingest poll``).
* ``ingest.entities(store_url)``: the named entities the store owes (``[nlp] after_indexing``: a
  change task stores text and vectors first and queues this on the maintenance lane, which a worker
  takes only when no change waits), :meth:`ingest.pipeline.document.Pipeline.settle_entities`.

A message of the form before (``ingest.change(store_url, kind, root, path, dest_path, batch, version=)``,
``ingest.changes`` with ``[kind, root, path, dest_path, version, pending]`` lists, ``ingest.dms_poll``)
still queued after an upgrade is read as the event it describes.
"""
from __future__ import annotations

import contextlib
import logging
import random

from celery.signals import worker_process_init

from ingest.config import settings
from ingest.pipeline.embed import prepare_queries
from ingest.pipeline.faults import is_transient  # noqa: F401  (re-exported for tests)
from ingest.stores.base import Action

from .app import app

log = logging.getLogger("ingest.workers")

_pipelines: dict = {}


@worker_process_init.connect
def _child_init(**_):
    from .lifecycle import die_with_parent

    die_with_parent()
    store = settings().store
    if store:  # load the model and parsers now, not on the first change a user makes
        _warm_up(store)  # synchronously: a thread here would race the first task's imports


def _warm_up(store_url: str) -> None:
    try:
        p = pipeline_for(store_url)
        p.embedder.model  # noqa: B018 - loads it
        if p.nlp is not None:  # the entity model too ([nlp] entities)
            p.nlp.nlp  # noqa: B018
        from extractors import warm_up

        warm_up()
    except Exception:  # the first task will load (and report) it again
        log.warning("warm-up failed", exc_info=True)
        return
    try:
        prepare_queries(p.embedder.model_id)  # a PyTorch store's query model, before the first search
    except Exception:  # the first search builds it instead
        log.warning("could not prepare the query model of %s", p.embedder.model_id, exc_info=True)


def pipeline_for(store_url: str):
    """One pipeline (store handle, embedder) per worker process and store."""
    p = _pipelines.get(store_url)
    if p is None:
        from ingest.pipeline.document import Pipeline
        from ingest.stores import open_store

        p = _pipelines[store_url] = Pipeline(open_store(store_url), defer_entities=True)
    return p


def owe_entities(store_url: str, p) -> None:
    """After a change task: when its pipeline left entities owed, queue ``ingest.entities`` on the
    maintenance lane (a worker takes it when no change waits). On Redis one waiting task is enough
    (a marker as for changes, cleared when it starts); elsewhere a task that finds nothing owed, the
    work done by an earlier one, costs one query. A broker that cannot take it now does not fail the
    change (its text is stored, the backlog is in the store): the next change task, ``ingest add``
    or ``ingest run`` queues it."""
    if not p.entities_owed:
        return
    from .lanes import send_entities

    try:
        send_entities(app, store_url, app.conf.broker_url, coalesce=True)
    except Exception as e:
        log.warning("could not queue ingest.entities for %d chunk(s) owing their entities (%s: %s); the next "
                    "change task, `ingest add` or `ingest run` queues it", p.entities_owed, type(e).__name__, e)
        return
    p.entities_owed = 0


@contextlib.contextmanager
def serving(store_url: str, pipeline):
    """Run this process's tasks for ``store_url`` through ``pipeline`` (an embedded worker that
    already holds a pipeline, or a test with its own embedder) until the block ends."""
    _pipelines[store_url] = pipeline
    try:
        yield pipeline
    finally:
        _pipelines.pop(store_url, None)


def task_context(task) -> dict:
    """Where a change came from, for its trace: lane, task id, when it was queued."""
    req = task.request
    queued = req.get("ingest_queued_at") or (req.headers or {}).get("ingest_queued_at")
    return {"lane": (req.delivery_info or {}).get("routing_key"), "task": req.id, "queued_at": queued}



def backoff(retries: int) -> float:
    """Exponential backoff with full jitter: uniform(0, min(cap, base * 2**retries)) (settings
    ``retry_base_s``, ``retry_cap_s``, read now: nothing is frozen at import)."""
    s = settings()
    return random.uniform(0, min(s.retry_cap_s, s.retry_base_s * 2 ** retries))


def _give_up(task, store_url: str, fault: str, exc: BaseException, evs, batch: str | None) -> list[str]:
    """Record a dead letter (and an outcome per document, so `ingest add` counts them as done)."""
    from celery.exceptions import Reject

    from ingest.pipeline.faults import is_transient as _transient
    from ingest.sources.base import store_rel

    req = task.request
    reason = store_rel(f"{type(exc).__name__}: {exc}")  # a name that is not UTF-8 must not stop the record
    if fault == "transient":
        reason = f"gave up after {req.retries + 1} attempts: {reason}"
    log.error("%s %s: %s fault: %s", task.name, ", ".join(f"{ev.kind} {ev.key}" for ev in evs), fault, reason)
    try:
        store = pipeline_for(store_url).store
        store.add_dead_letter(task=task.name, lane=(req.delivery_info or {}).get("routing_key"),
                              args=_printable(list(req.args or [])), kwargs=_printable(dict(req.kwargs or {})),
                              fault=fault, reason=reason, attempts=req.retries + 1)
        for ev in evs:
            store.log_outcome(action=Action.DEAD_LETTER, source=ev.registry_source,
                              external_id=store_rel(ev.key),
                              doc_id=None, batch=batch, detail=f"{fault}: {reason}")
    except Exception as e2:
        if _transient(e2):  # the store is unreachable: the broker delivers it again later
            raise Reject(f"cannot record the failure: {e2}", requeue=True) from exc
        # a message the store cannot even record is dropped once, loudly; requeueing it would loop
        log.error("%s: dropped without a dead-letter record (%s: %s)", task.name, type(e2).__name__, e2)
        return ["dropped"]
    return [Action.DEAD_LETTER.value]


def _printable(v):
    """Task arguments as the store can hold them (names that are not UTF-8 escaped)."""
    from ingest.sources.base import store_rel

    if isinstance(v, str):
        return store_rel(v)
    if isinstance(v, list):
        return [_printable(x) for x in v]
    if isinstance(v, dict):
        return {k: _printable(x) for k, x in v.items()}
    return v


def _requeue(task, store_url: str, evs, batch: str | None) -> None:
    """Queue changes again, one ``ingest.change`` task each, on the lane this task came from."""
    from ingest.obs.lanes import queued_header

    lane = (task.request.delivery_info or {}).get("routing_key") or "bulk"
    for ev in evs:
        app.send_task("ingest.change", args=[store_url, ev.to_wire(), batch], queue=lane, headers=queued_header())


class _budgeted:
    """The task's time as the pipeline's budget (ingest.pipeline.budget), for the task's duration."""

    def __init__(self, task, pipeline):
        from ingest.pipeline.budget import Budget, task_budget_s

        soft = task.soft_time_limit or app.conf.task_soft_time_limit
        self.pipeline, self.budget = pipeline, Budget(task_budget_s(soft) if soft else float("inf"))

    def __enter__(self):
        self.pipeline.budget = self.budget
        return self.pipeline

    def __exit__(self, *exc):
        self.pipeline.budget = None


def _run(task, store_url: str, evs, batch: str | None, pendings, work, result=None):
    """Run ``work()`` for a task's events with the failure semantics of every change task.

    Transient faults are retried with backoff and jitter, ``task_max_retries`` times, then
    dead-lettered; anything else is a permanent fault: dead-lettered at once, with the
    reason, and acknowledged. A task that cannot even record that (broker and store
    both gone) is rejected with requeue, so the broker delivers it again."""
    from celery.exceptions import Reject, Retry

    from ingest.pipeline.budget import OutOfTime, Requeue

    try:
        keys = [k for k in pendings if k]
        if keys:  # from now on a new event for these documents needs a task of its own
            from .lanes import clear_pending

            for k in keys:
                clear_pending(app.conf.broker_url, k)
        outs = work()
    except Requeue as r:  # a group ran short of time: what it did not finish goes back, one task each
        _requeue(task, store_url, r.events, batch)
        log.warning("%s: %d of %d change(s) queued again one by one (the group ran short of time)",
                    task.name, len(r.events), len(evs))
        return [o.action for o in r.outs] + ["requeued"] * len(r.events)
    except OutOfTime as e:  # one document, progress kept (cached vectors): it goes on in a new task
        _requeue(task, store_url, evs, batch)
        log.warning("%s %s: %s; continued in a new task", task.name, ", ".join(ev.key for ev in evs), e)
        return ["continued"]
    except Exception as e:
        if not is_transient(e):
            return _give_up(task, store_url, "permanent", e, evs, batch)
        max_retries = settings().task_max_retries
        if task.request.retries >= max_retries:
            return _give_up(task, store_url, "transient", e, evs, batch)
        delay = backoff(task.request.retries)
        log.warning("%s: transient fault (%s: %s); retry %d/%d in %.1f s", task.name, type(e).__name__, e,
                    task.request.retries + 1, max_retries, delay)
        try:
            raise task.retry(exc=e, countdown=delay, max_retries=max_retries)
        except Retry:
            raise
        except Exception as e2:  # the broker is unreachable too: leave the message to be delivered again
            raise Reject(f"retry could not be queued: {e2}", requeue=True) from e
    return result(outs) if result is not None else [o.action for o in outs]


def _legacy(args: tuple, kwargs: dict):
    """(event, batch) from an ``ingest.change`` message of the form before one event type:
    ``(kind, root, path, dest_path, batch)`` with ``version=`` (the file's ctime_ns)."""
    from ingest.sources.base import ChangeEvent

    kind, root, path, dest, batch = (list(args) + [None] * 5)[:5]
    if not all(isinstance(x, str) for x in (kind, root, path)):
        raise ValueError(f"not a change event: {list(args)!r}")
    return ChangeEvent(kind, root, path, dest, seq=kwargs.get("version")), batch


def _events(events: list) -> tuple[list, list]:
    """(events, their pending markers) from ``ingest.changes``'s list: dicts, or the lists of the form
    before (``[kind, root, path, dest_path, version, pending]``)."""
    from ingest.sources.base import ChangeEvent

    evs, pendings = [], []
    for e in events:
        if isinstance(e, (list, tuple)):
            e = list(e) + [None] * (6 - len(e))
            evs.append(ChangeEvent(e[0], e[1], e[2], e[3], seq=e[4]))
            pendings.append(e[5])
        else:
            evs.append(ChangeEvent.from_wire(e))
            pendings.append(None)
    return evs, pendings


def _malformed(task, store_url: str, exc: Exception, batch: str | None = None):
    """A message no event can be read from: dead-lettered (permanent) with the reason, never retried."""
    return _give_up(task, store_url, "permanent", exc, [], batch)


@app.task(name="ingest.change", bind=True, acks_late=True, max_retries=None)
def change(self, store_url: str, event, batch: str | None = None, *legacy, pending: str | None = None, **old):
    """One document change, of any source. Idempotent: it looks at the current state of the document."""
    from ingest.sources.base import ChangeEvent

    try:
        if isinstance(event, dict) and not legacy:
            ev = ChangeEvent.from_wire(event)
        else:
            ev, batch = _legacy((event, batch, *legacy), old)
    except (TypeError, ValueError) as e:
        return _malformed(self, store_url, e, batch)

    def work():
        with _budgeted(self, pipeline_for(store_url)) as p:
            from ingest.pipeline.changes import handle

            try:
                return handle(p, ev, batch=batch, ctx=task_context(self))
            finally:
                owe_entities(store_url, p)

    return _run(self, store_url, [ev], batch, [pending], work)


@app.task(name="ingest.changes", bind=True, acks_late=True, max_retries=None)
def changes(self, store_url: str, events: list, batch: str | None = None, pending: list | None = None):
    """Several upserts in one task (bulk lane): their new chunks share one embedding call.
    ``events``: change events as dicts; ``pending``: their coalescing markers. Per-document
    faults are recorded per document by the pipeline and the rest of the group goes on;
    a fault of the whole task (store unreachable) is retried like ``ingest.change``."""
    try:
        evs, pendings = _events(events)
    except (TypeError, ValueError) as e:
        return _malformed(self, store_url, e, batch)
    pendings = [a or b for a, b in zip(pending or [None] * len(evs), pendings)]

    def work():
        with _budgeted(self, pipeline_for(store_url)) as p:
            from ingest.pipeline.changes import handle_many

            try:
                return handle_many(p, evs, batch=batch, ctx=task_context(self))
            finally:
                owe_entities(store_url, p)

    return _run(self, store_url, evs, batch, pendings, work)


def _poll(self, store_url: str, source: str, prune: bool, acl: bool, pending: str | None):
    from ingest import config
    from ingest.pipeline.connector_sync import sync_source

    def work():
        p = pipeline_for(store_url)
        try:
            rep = sync_source(store_url, source, config.load(), prune=prune, acl=acl, pipeline=p,
                              ctx=task_context(self))
        finally:
            owe_entities(store_url, p)
        return {"events": rep.events, "outcomes": rep.outcomes, "pruned": rep.pruned}

    return _run(self, store_url, [], None, [pending], work, result=lambda r: r)


@app.task(name="ingest.poll", bind=True, acks_late=True, max_retries=None)
def poll(self, store_url: str, source: str, prune: bool = False, pending: str | None = None, acl: bool = False):
    """One sync pass of a configured source (``[sources.<name>]`` of ``$INGEST_CONFIG``): its changes
    since the saved cursor, each through the one per-document path, then the next cursor. Webhooks
    and ``ingest poll`` enqueue it (``workers.lanes.Producer.send_poll``). Source unreachable or store
    busy: retried with backoff like a change, then dead-lettered. ``acl``: also the permission-only pass."""
    return _poll(self, store_url, source, prune, acl, pending)


@app.task(name="ingest.dms_poll", bind=True, acks_late=True, max_retries=None)
def dms_poll(self, store_url: str, source: str, prune: bool = False, pending: str | None = None):
    """The name ``ingest.poll`` had before: a message of it still queued after an upgrade."""
    return _poll(self, store_url, source, prune, False, pending)


@app.task(name="ingest.entities", bind=True, acks_late=True, max_retries=None)
def entities(self, store_url: str, pending: str | None = None):
    """One piece of the named entities the store owes (``INGEST_EMBED_PIECE`` chunks, a few seconds);
    if more are owed, the task queues itself again behind whatever change arrived meanwhile, so
    a worker with one process never holds an interactive change back for longer than a piece.
    Faults as for a change task."""
    def work():
        with _budgeted(self, pipeline_for(store_url)) as p:
            done, more = p.settle_entities(pieces=1)
        if more:
            p.entities_owed = 1
            owe_entities(store_url, p)
        return {"chunks": done, "more": more}

    return _run(self, store_url, [], None, [pending], work, result=lambda r: r)
