"""DMS sources through the pipeline: one sync pass (poll), pruning, and one change.

A pass reads the persisted cursor, asks the connector what changed, applies each change and
only then saves the next cursor (a crash before that replays the same changes; every change is
idempotent). An expired cursor means a full resync: the connector lists everything again, items
whose version and ACL are unchanged are skipped without downloading, and ids that are no longer
listed are deleted. Per change, cheapest first:

  * delete                                 -> store.delete (chunks, ACL rows, child documents)
  * same version, other URI                -> store.move (metadata only; the id is the DMS item id)
  * same version, other ACL / ACL event    -> store.set_acl (no parse, no embedding)
  * otherwise                              -> bytes to a private temp file -> Pipeline._index
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field

from ingest.obs import trace
from ingest.obs.clock import merged
from ingest.pipeline.document import MAX_FILE_BYTES, Outcome, Pipeline, new_doc_id
from ingest.sources.connector import ACL_CHANGE, DELETE, Connector, CursorExpired, Event
from ingest.stores.base import Action, DocRecord

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


def coalesce(events: list[Event]) -> list[Event]:
    """One change per item, in order of its last event; a content change covers an ACL change."""
    last: dict[str, Event] = {}
    for ev in events:
        prev = last.pop(ev.id, None)
        if ev.kind == ACL_CHANGE and prev is not None and prev.kind != ACL_CHANGE:
            ev = prev
        last[ev.id] = ev
    return list(last.values())


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class ConnectorSync:
    def __init__(self, pipeline: Pipeline, connector: Connector, ctx: dict | None = None):
        self.ctx = ctx  # lane, task, queued_at of the task that runs this pass (for traces)
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
        for ev in coalesce(events):
            rep.count(self.apply(ev, rep))
        if rep.resync:  # a full listing: whatever it did not name is gone
            live = {ev.id for ev in events if ev.kind != DELETE}
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

    # -- one change --------------------------------------------------------------------------
    def apply(self, ev: Event, rep: SyncReport | None = None) -> Outcome:
        started = time.time()
        with self.store.lock(f"{self.source}\0{ev.id}"), self.pipeline.clocked() as clock:
            out = self._apply(ev, rep)
        out.timings = merged(clock.stages, out.timings)
        trace.record(self.store, out, source=self.source, external_id=ev.id, ctx=self.ctx, started=started,
                     event={"kind": ev.kind, "path": ev.id, "dest": None})
        return out

    def _apply(self, ev: Event, rep: SyncReport | None) -> Outcome:
        store, row = self.store, self.store.get_doc(self.source, ev.id)
        if ev.kind == DELETE:
            if row is None:
                return Outcome(Action.MISSING)
            store.delete(row["doc_id"])
            return Outcome(Action.DELETED, row["doc_id"])
        if ev.kind == ACL_CHANGE and row is not None:
            acl = self.connector.acl(ev.id)
            if acl.version == row["acl_version"]:
                return Outcome(Action.SKIPPED, row["doc_id"])
            store.set_acl(row["doc_id"], acl)
            return Outcome(Action.ACL, row["doc_id"])
        with self.pipeline._stage("fetch"):
            doc = self.connector.fetch(ev.id)
        if doc is None:  # gone by the time we looked
            if row is not None:
                store.delete(row["doc_id"])
                return Outcome(Action.DELETED, row["doc_id"])
            return Outcome(Action.MISSING)
        if row is not None and row["content_version"] == doc.version:
            done = []
            if row["uri"] != doc.uri:
                store.move(row["doc_id"], ev.id, doc.uri)
                done.append(Action.MOVED)
            if row["acl_version"] != doc.acl.version:
                store.set_acl(row["doc_id"], doc.acl)
                done.append(Action.ACL)
            return Outcome(done[0] if len(done) == 1 else Action.MOVED if done else Action.SKIPPED, row["doc_id"],
                           detail="+".join(done) or None)
        doc_id = row["doc_id"] if row else new_doc_id(store, self.source, ev.id)
        base = DocRecord(doc_id=doc_id, source=self.source, external_id=ev.id, uri=doc.uri, mime=None,
                         size=doc.size, mtime_ns=doc.mtime_ns, content_version=doc.version, acl=doc.acl)
        if doc.size is not None and doc.size > MAX_FILE_BYTES:
            return self.pipeline._fail(base, "too-large", f"{doc.size} bytes is over the {MAX_FILE_BYTES} byte "
                                       "limit", status="quarantined")
        tmp = tempfile.mkdtemp(prefix="ingest-dms-")  # 0700: private to this user
        try:
            name = _UNSAFE.sub("_", os.path.basename(doc.name)).lstrip(".") or "document"
            path = os.path.join(tmp, name[-120:])
            with self.pipeline._stage("fetch"):
                size = self._download(doc, path)
            if rep is not None:
                rep.downloads += 1
            if size > MAX_FILE_BYTES:
                return self.pipeline._fail(base, "too-large", f"over the {MAX_FILE_BYTES} byte limit",
                                           status="quarantined")
            base.size = size
            return self.pipeline._index(base, path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    @staticmethod
    def _download(doc, path: str) -> int:
        n = 0
        with doc.open() as src, open(path, "wb") as dst:
            while block := src.read(1 << 20):
                n += len(block)
                if n > MAX_FILE_BYTES:
                    break
                dst.write(block)
        return n


def sync_source(store_url: str | None, name: str, cfg: dict, *, prune: bool = False, acl: bool = False,
                pipeline: Pipeline | None = None, ctx: dict | None = None) -> SyncReport:
    """One pass over a configured source (``ingest poll NAME``, the ``ingest.dms_poll`` task);
    ``acl=True`` adds the permission-only pass."""
    from ingest.sources.connector import make_connector
    from ingest.stores import open_store

    p = pipeline or Pipeline(open_store(store_url))
    sync = ConnectorSync(p, make_connector(name, cfg), ctx)
    rep = sync.poll(prune=prune)
    if acl:
        n = sync.acl_sync()
        if n:
            rep.outcomes[Action.ACL] = rep.outcomes.get(Action.ACL, 0) + n
    return rep
