"""DMS sources through the pipeline: one sync pass (poll), pruning, and one change.

A pass reads the persisted cursor, asks the connector what changed, applies each change and
only then saves the next cursor (a crash before that replays the same changes; every change is
idempotent). An expired cursor means a full resync: the connector lists everything again, items
whose version and ACL are unchanged are skipped without downloading, and ids that are no longer
listed are deleted. Per change, cheapest first:

  * delete                                 -> store.delete (chunks, ACL rows, child documents)
  * same version, other URI                -> store.move (metadata only; the id is the DMS item id)
  * same version, other ACL / ACL event    -> store.set_acl (no parse, no embedding)
  * otherwise                              -> Pipeline.document: the one per-document path every
                                              source takes (labels and their policy, staleness,
                                              batched embedding, traces, quality, lineage)

The decision and everything after it are :meth:`ingest.pipeline.document.Pipeline.document`;
this module only turns a connector's change into a :class:`~ingest.pipeline.document.Fetched`
(the bytes are downloaded only when they are parsed, bounded). Upserts of one pass are embedded
in groups of ``EMBED_GROUP`` documents (one embedding call per group), as a folder backfill is.
"""
from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass, field

from ingest import config
from ingest.obs import trace
from ingest.obs.clock import merged
from ingest.pipeline.document import Fetched, Outcome, Pending, Pipeline, TooLarge
from ingest.sources.base import ACL_CHANGE, DELETE, UPSERT, ChangeEvent
from ingest.sources.connector import Connector, CursorExpired, RawDocument, make_connector, sidecar_main
from ingest.stores import open_store
from ingest.stores.base import Action

log = logging.getLogger("ingest.pipeline.connector_sync")


@dataclass
class SyncReport:
    source: str
    events: int = 0
    resync: bool = False
    outcomes: dict[str, int] = field(default_factory=dict)
    downloads: int = 0
    pruned: int = 0

    def count(self, o: Outcome) -> None:
        self.outcomes[o.action] = self.outcomes.get(o.action, 0) + 1


def coalesce(events: list[ChangeEvent]) -> list[ChangeEvent]:
    """One change per item, in order of its last event; a content change covers an ACL change."""
    last: dict[str, ChangeEvent] = {}
    for ev in events:
        prev = last.pop(ev.key, None)
        if ev.kind == ACL_CHANGE and prev is not None and prev.kind != ACL_CHANGE:
            ev = prev
        last[ev.key] = ev
    return list(last.values())


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
EMBED_GROUP = 16  # upserts whose new chunks share one embedding call (as a bulk task's group)


class ConnectorSync:
    def __init__(self, pipeline: Pipeline, connector: Connector, ctx: dict | None = None, batch: str | None = None):
        self.ctx = ctx  # lane, task, queued_at of the task that runs this pass (for traces)
        self.batch = batch  # the `ingest add`-style batch its outcomes count for, if any
        self.pipeline = pipeline
        self.store = pipeline.store
        self.connector = connector
        self.source = connector.source

    # -- a pass ------------------------------------------------------------------------------
    def poll(self, *, prune: bool = False) -> SyncReport:
        rep = SyncReport(self.source)
        cursor = self.store.get_cursor(self.source)
        try:
            events, nxt = self.connector.changes(cursor)
        except CursorExpired as e:
            log.warning("%s: %s; full resync", self.source, e)
            cursor = None
            events, nxt = self.connector.changes(None)
        rep.resync = cursor is None
        rep.events = len(events)
        self.apply_all(coalesce([m for ev in events if (m := self._labelled(ev)) is not None]), rep)
        if rep.resync:  # a full listing: whatever it did not name is gone
            live = {ev.key for ev in events if ev.kind != DELETE}
            rep.pruned = self._prune(live)
        self.store.set_cursor(self.source, nxt)
        if prune and not rep.resync:
            rep.pruned += self.prune()
        return rep

    def acl_sync(self) -> int:
        """Permission-only pass: re-read every document's ACL; update those that changed. No download,
        no parse, no embedding. Returns how many changed."""
        n = 0
        for ext, row in self.store.docs_for_source(self.source).items():
            acl = self.connector.acl(ext)
            if acl.version != row["acl_version"]:
                with self.store.lock(f"{self.source}\0{ext}"):
                    self.store.set_acl(row["doc_id"], acl)
                self.store.log_outcome(action=Action.ACL, source=self.source, external_id=ext, doc_id=row["doc_id"],
                                       detail="permission-only sync")
                n += 1
        return n

    def prune(self) -> int:
        """Delete what the id listing no longer names. A failed listing raises before anything is deleted."""
        return self._prune(self.connector.list_ids())

    def _prune(self, live: set[str]) -> int:
        n = 0
        for ext, row in self.store.docs_for_source(self.source).items():
            if ext not in live:
                with self.store.lock(f"{self.source}\0{ext}"):
                    self.store.delete(row["doc_id"])
                self.store.log_outcome(action=Action.DELETED, source=self.source, external_id=ext, doc_id=row["doc_id"],
                                       detail="pruned: not in the source's listing")
                n += 1
        return n

    def _labelled(self, ev: ChangeEvent) -> ChangeEvent | None:
        """A change of a labels sidecar (``<name>.labels[.json]``) is no document of its own: it
        re-labels the item it belongs to (as in a folder); None when that item is unknown."""
        main = sidecar_main(ev.key if ev.folder else ev.path)
        if main is None:
            return ev
        if ev.folder:
            return ChangeEvent(UPSERT, ev.source, main)
        ref_at = getattr(self.connector, "ref_at", None)
        ref = ref_at(main) if ref_at is not None else None
        return ChangeEvent(UPSERT, ev.source, ref, path=main) if ref is not None else None

    # -- changes -----------------------------------------------------------------------------
    def apply_all(self, events: list[ChangeEvent], rep: SyncReport) -> None:
        """Apply changes in order; upserts are extracted and chunked first and their chunks embedded
        together, ``EMBED_GROUP`` documents per embedding call."""
        group: list[Pending] = []

        def flush():
            if group:
                self.pipeline.apply_batch(group, lambda p, o: rep.count(self._traced(p.event, o, p.started)))
                group.clear()

        for ev in events:
            out = self.apply(ev, rep, defer=ev.kind == UPSERT)
            if isinstance(out, Pending):
                group.append(out)
                if len(group) >= EMBED_GROUP:
                    flush()
            else:
                rep.count(out)
        flush()

    def apply(self, ev: ChangeEvent, rep: SyncReport | None = None, *, defer: bool = False) -> "Outcome | Pending":
        """One change, under the document's lock; ``defer``: see :meth:`Pipeline.document`."""
        started = time.time()
        with self.store.lock(f"{self.source}\0{ev.key}"), self.pipeline.clocked() as clock:
            out = self._apply(ev, rep, defer)
        out.timings = merged(clock.stages, out.timings)
        if isinstance(out, Pending):
            out.redo = lambda: self.apply(ev, rep)
            out.event, out.started = ev, started
            return out
        return self._traced(ev, out, started)

    def _traced(self, ev: ChangeEvent, out: Outcome, started: float) -> Outcome:
        trace.record(self.store, out, source=self.source, external_id=ev.key, batch=self.batch, ctx=self.ctx,
                     started=started, event={"kind": ev.kind, "path": ev.key, "dest": None})
        return out

    def _apply(self, ev: ChangeEvent, rep: SyncReport | None, defer: bool) -> "Outcome | Pending":
        store, row = self.store, self.store.get_doc(self.source, ev.key)
        stale = self.pipeline.stale(row, ev.seq)
        if stale is not None:
            return stale
        if ev.kind == DELETE:
            if row is None:
                return Outcome(Action.MISSING)
            store.delete(row["doc_id"])
            return Outcome(Action.DELETED, row["doc_id"])
        if ev.kind == ACL_CHANGE and row is not None:
            acl = self.connector.acl(ev.key)
            if acl.version == row["acl_version"]:
                return Outcome(Action.SKIPPED, row["doc_id"])
            store.set_acl(row["doc_id"], acl)
            return Outcome(Action.ACL, row["doc_id"])
        with self.pipeline.stage("fetch"):
            doc = self.connector.fetch(ev.key)
        if doc is None:  # gone by the time we looked
            if row is not None:
                store.delete(row["doc_id"])
                return Outcome(Action.DELETED, row["doc_id"])
            return Outcome(Action.MISSING)
        if sidecar_main(doc.name) is not None:
            return Outcome(Action.IGNORED, detail="a labels sidecar")
        stale = self.pipeline.stale(row, doc.mtime_ns)  # an older state than indexed (a lagging replica)
        if stale is not None:
            return stale
        return self.pipeline.document(self.source, ev.key, self._fetched(doc, rep), row, defer=defer)

    def _fetched(self, doc: RawDocument, rep: SyncReport | None) -> Fetched:
        name = _UNSAFE.sub("_", os.path.basename(doc.name)).lstrip(".")[-120:] or "document"

        def copy_to(dest: str | None, max_bytes: int) -> str:
            if dest is not None:
                with self.pipeline.stage("fetch"):
                    _download(doc, dest, max_bytes)
                if rep is not None:
                    rep.downloads += 1
            return doc.version

        return Fetched(uri=doc.uri, acl=doc.acl, size=doc.size, mtime_ns=doc.mtime_ns, copy_to=copy_to, path=name,
                       labels=list(doc.labels), label_error=doc.label_error, version=doc.version, seq=doc.mtime_ns)


def _download(doc: RawDocument, path: str, max_bytes: int) -> int:
    """The bytes into ``path`` (a new private file), at most ``max_bytes`` (:class:`TooLarge`)."""
    n = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with doc.open() as src, os.fdopen(fd, "wb") as dst:
        while block := src.read(1 << 20):
            n += len(block)
            if n > max_bytes:
                raise TooLarge(f"over the {max_bytes} byte limit")
            dst.write(block)
    return n


def connector_for(source: str, cfg: dict) -> Connector:
    """The connector of a registry source ``<type>:<name>`` (an event's ``source``), from the config's
    ``[sources.<name>]``; a table that is gone or now of another type raises ``LookupError``."""
    kind, _, name = source.partition(":")
    conn = make_connector(name, cfg)
    if conn.source != source:
        raise LookupError(f"source {name}: configured as {conn.source}, not {source} (the config changed)")
    return conn


def apply_event(pipeline: Pipeline, ev: ChangeEvent, *, batch: str | None = None, ctx: dict | None = None,
                cfg: dict | None = None) -> Outcome:
    """One connector's change event through :meth:`ConnectorSync.apply` (the ``ingest.change`` task
    for a DMS document: fetch through the connector, then :meth:`Pipeline.document`). The connector
    comes from ``cfg`` (default: the config file, ``$INGEST_CONFIG``)."""
    out = ConnectorSync(pipeline, connector_for(ev.source, config.load() if cfg is None else cfg), ctx,
                        batch).apply(ev)
    assert isinstance(out, Outcome)  # not deferred
    return out


def sync_source(store_url: str | None, name: str, cfg: dict, *, prune: bool = False, acl: bool = False,
                pipeline: Pipeline | None = None, ctx: dict | None = None) -> SyncReport:
    """One pass over a configured source (``ingest poll NAME``, the ``ingest.poll`` task);
    ``acl=True`` adds the permission-only pass."""
    p = pipeline or Pipeline(open_store(store_url))
    sync = ConnectorSync(p, make_connector(name, cfg), ctx)
    rep = sync.poll(prune=prune)
    if acl:
        n = sync.acl_sync()
        if n:
            rep.outcomes[Action.ACL] = rep.outcomes.get(Action.ACL, 0) + n
    return rep
