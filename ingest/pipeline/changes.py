"""Any source's change events, to the one per-document path (what the change tasks call).

A folder's event (``source``: its root) goes through :meth:`Pipeline.handle`/:meth:`Pipeline.handle_many`
(read through one descriptor, ``ingest.sources.safefs``); a connector's (``source``: ``<type>:<name>``)
through :func:`ingest.pipeline.connector_sync.apply_event` (fetched through the connector of
``[sources.<name>]``). Both end in :meth:`Pipeline.document`.
"""
from __future__ import annotations

from ingest import config
from ingest.pipeline.connector_sync import apply_event
from ingest.pipeline.document import Outcome, Pipeline
from ingest.sources.base import ChangeEvent


def handle(pipeline: Pipeline, ev: ChangeEvent, *, batch: str | None = None, ctx: dict | None = None,
           cfg: dict | None = None) -> list[Outcome]:
    """One change event of any source; returns what happened (also logged to the store)."""
    if ev.folder:
        return pipeline.handle(ev, batch, ctx)
    return [apply_event(pipeline, ev, batch=batch, ctx=ctx, cfg=cfg)]


def handle_many(pipeline: Pipeline, events: list[ChangeEvent], *, batch: str | None = None,
                ctx: dict | None = None, cfg: dict | None = None) -> list[Outcome]:
    """Several change events: a folder's, embedded together (:meth:`Pipeline.handle_many`, with its
    time budget); a group with a connector's event in it, one by one."""
    if all(ev.folder for ev in events):
        return pipeline.handle_many(events, batch=batch, ctx=ctx)
    cfg = config.load() if cfg is None else cfg  # read once for the group, not per event
    return [o for ev in events for o in handle(pipeline, ev, batch=batch, ctx=ctx, cfg=cfg)]
