"""Downstream fan-out: one primary store feeds any number of secondary stores (sinks) from
its durable outbox.

Every change of a document in a store (apply, record_failure, set_acl, touch, move, delete)
writes an ``outbox`` row (id, time, doc_id, op) in the change's own transaction, so a row
exists exactly when the change committed, and ids are in commit order (SQLite has one
writer; the PostgreSQL store takes a transaction-level advisory lock before its outbox
insert, the last statement of each change).

The pump reads rows after a sink's cursor, in id order, and for each document named brings
the sink to the primary's *current* state of that document (``export_docs`` ->
``replicate``: the registry row verbatim, ACL, every chunk with text and vector; or absent
when the primary no longer has it), in one sink transaction per batch, then advances the
sink's cursor (kept in the primary's ``sink_cursors`` table). Replaying a row is harmless
(state, not deltas), so a crash between the sink's commit and the cursor update only
repeats work. Order per document holds: rows are applied in id order and a document's
state never goes back. A sink seen for the first time gets a full snapshot first (every
document of the primary, and any the sink has that the primary lacks are removed), with
the cursor set to the outbox head read *before* the snapshot.

A sink that is down (connection refused, server restarting) is retried with exponential
backoff (1 s doubling to ``max_backoff``); nothing is lost, because the outbox rows stay
until every registered sink has passed them (``prune_outbox``). The last error is kept in
``sink_cursors`` and shown by ``ingest status`` with each sink's lag in rows and seconds.

Where it runs: a thread in ``ingest run`` (when sinks are configured), at the end of
``ingest add``, and ``ingest sync`` (once, or ``--follow``).
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from ingest.config import ConfigError, secret, section
from ingest.stores import PG_SCHEMES, store_path
from ingest.stores.common import diff_by_doc, redact
from ingest.stores.postgres import PostgresStore
from ingest.stores.sqlite import SQLiteStore

log = logging.getLogger("ingest.outbox")


@dataclass
class Sink:
    name: str
    url: str
    backoff: float = 0.0
    next_try: float = 0.0
    idle_since: float | None = None
    _store: object = field(default=None, repr=False)

    @property
    def vector(self) -> bool:
        """A vector-database sink (``ingest.stores.sinks``), not a SQLite/PostgreSQL store."""
        from ingest.stores.sinks import is_vector_sink

        return is_vector_sink(self.url)

    @property
    def store(self):
        if self._store is None:
            if self.vector:
                from ingest.stores.sinks import open_sink

                self._store = open_sink(self.url)
            elif self.url.startswith(PG_SCHEMES):
                self._store = PostgresStore(self.url)
            else:
                self._store = SQLiteStore(store_path(self.url))
        return self._store

    def reset(self) -> None:
        if self._store is not None:
            try:
                self._store.close()
            except Exception as e:  # a broken connection may fail to close; it is dropped either way
                log.debug("closing sink %s: %s", self.name, e)
        self._store = None


def configured_sinks(cfg: dict | None = None, urls: list[str] | tuple[str, ...] = ()) -> list[Sink]:
    """Sinks from ``[sinks.<name>] url = "..."`` in the config (secrets: ``env:``/``file:``)
    and from ``--sink URL`` options (named by the URL without its password)."""
    sinks = []
    for name, table in sorted(section(cfg or {}, "sinks").items()):
        if not isinstance(table, dict) or not isinstance(table.get("url"), str):
            raise ConfigError(f'config: [sinks.{name}] needs url = "postgresql://..." or a SQLite path')
        sinks.append(Sink(name, secret(table["url"])))
    for u in urls:
        sinks.append(Sink(redact(u), u))
    names = [s.name for s in sinks]
    if len(set(names)) != len(names):
        raise ConfigError(f"sinks: duplicate sink names {sorted(n for n in names if names.count(n) > 1)}")
    return sinks


def copy_docs(primary, sink_store, doc_ids: list[str], batch: int = 200, progress=None) -> None:
    for i in range(0, len(doc_ids), batch):
        part = doc_ids[i:i + batch]
        sink_store.replicate(primary.export_docs(part))
        if progress is not None:
            progress(len(part))


META_OPS = frozenset({"acl", "move", "touch"})  # changes that leave a document's chunks and vectors as they were


class Pump:
    def __init__(self, primary, sinks: list[Sink], *, batch: int = 500, interval: float = 0.5,
                 max_backoff: float = 30.0, release_idle: float = 2.0):
        self.primary, self.sinks = primary, sinks
        self.batch, self.interval, self.max_backoff = batch, interval, max_backoff
        self.release_idle = release_idle  # seconds idle after which an embedded (local-mode) sink's files are let go
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- one sink ---------------------------------------------------------------------
    def sync(self, sink: Sink, progress=None) -> int:
        """Bring one sink up to the primary's outbox head; returns outbox rows applied (plus the documents
        copied by a first snapshot). Raises on error. ``progress(total=, done=)`` follows a snapshot."""
        p, applied = self.primary, 0
        cur = p.sink_cursor(sink.name)
        if cur is None or cur < 0:
            head = p.outbox_head()
            ids = sorted(set(p.all_doc_ids()) | set(sink.store.all_doc_ids()))
            if progress is not None:
                progress(total=len(ids), done=0)
            copy_docs(p, sink.store, ids, progress=(lambda n: progress(done=n)) if progress is not None else None)
            p.set_sink_cursor(sink.name, sink.url, head)
            log.info("sink %s: initial snapshot of %d document(s) up to outbox row %d", sink.name, len(ids), head)
            cur, applied = head, len(ids)
        while not self._stop.is_set():
            rows = p.outbox_entries(cur, self.batch)
            if not rows:
                break
            last: dict[str, int] = {}
            ops: dict[str, set] = {}
            for rid, doc_id, op in rows:  # each document once, where it last changed
                last.pop(doc_id, None)
                last[doc_id] = rid
                ops.setdefault(doc_id, set()).add(op)
            states = p.export_docs(list(last))
            if sink.vector:  # only the payload for documents whose chunks did not change (no vectors re-sent)
                sink.store.replicate(states, meta_only=[d for d, o in ops.items() if o <= META_OPS])
            else:
                sink.store.replicate(states)
            cur = rows[-1][0]
            p.set_sink_cursor(sink.name, sink.url, cur)
            applied += len(rows)
        return applied

    def step(self, force: bool = False) -> dict[str, int | str]:
        """One pass over the sinks that are due; {name: rows applied | error text}."""
        out: dict[str, int | str] = {}
        now = time.monotonic()
        for s in self.sinks:
            if not force and now < s.next_try:
                continue
            try:
                out[s.name] = self.sync(s)
                s.backoff, s.next_try = 0.0, 0.0
                self._release_when_idle(s, out[s.name])
            except Exception as e:  # the sink is down or failing: recorded, retried with backoff
                msg = f"{type(e).__name__}: {str(e).strip()[:400]}"
                s.backoff = min(self.max_backoff, s.backoff * 2 or 1.0)
                s.next_try = time.monotonic() + s.backoff
                s.reset()
                log.warning("sink %s: %s; retrying in %.0f s", s.name, msg, s.backoff)
                self.primary.sink_error(s.name, s.url, msg)
                out[s.name] = msg
        if out and all(isinstance(v, int) for v in out.values()) and len(out) == len(self.sinks):
            self.primary.prune_outbox()
        return out

    def _release_when_idle(self, s: Sink, applied: int) -> None:
        """An embedded sink (Qdrant local mode, Milvus Lite) is a set of files one process may open:
        let them go once the sink has been idle ``release_idle`` seconds, so another process (an
        application searching it) can open them; the next change opens them again."""
        if applied:
            s.idle_since = None
        elif s._store is not None and getattr(s._store, "local", False):
            s.idle_since = s.idle_since or time.monotonic()
            if time.monotonic() - s.idle_since >= self.release_idle:
                s.reset()
                s.idle_since = None

    def drain(self, timeout: float = 60.0) -> dict[str, int | str]:
        """Retry (with backoff) until every sink is at the head, or ``timeout``: then the last errors."""
        t0, total = time.monotonic(), {s.name: 0 for s in self.sinks}
        while True:
            res = self.step()
            for k, v in res.items():
                total[k] = total[k] + v if isinstance(v, int) and isinstance(total[k], int) else v
            head = self.primary.outbox_head()
            if all((self.primary.sink_cursor(s.name) if self.primary.sink_cursor(s.name) is not None else -1)
                   >= head for s in self.sinks):
                return {k: (v if isinstance(v, int) else 0) for k, v in total.items()}
            if time.monotonic() - t0 > timeout:
                return total
            time.sleep(min(0.2, max(0.0, min(s.next_try for s in self.sinks) - time.monotonic())))

    # -- background thread -----------------------------------------------------------------
    def start(self) -> "Pump":
        self._thread = threading.Thread(target=self._loop, name="outbox-pump", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except Exception:  # the primary itself failed (e.g. locked): log and keep going
                log.exception("outbox pump")
            self._stop.wait(self.interval)

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        for s in self.sinks:
            s.reset()


def diff_stores(a, b, limit: int = 50) -> list[str]:
    """Documents that differ between two stores (registry row, ACL, chunk ids, text, vectors);
    ``[]`` when they hold exactly the same documents. ``b`` may be a vector-database sink
    (``ingest.stores.sinks``): ids, versions, ACL, chunk ids, payloads, vectors within 1e-6."""
    if hasattr(b, "diff"):
        return b.diff(a, limit)

    def differ(part: list[str]):
        sa, sb = a.export_docs(part), b.export_docs(part)
        for d in part:
            x, y = sa[d], sb[d]
            if x is None or y is None:
                yield f"{d}: only in {'the first' if y is None else 'the second'} store"
            elif x["doc"] != y["doc"]:
                keys = [k for k in x["doc"] if x["doc"][k] != y["doc"].get(k)]
                yield f"{d}: document fields differ: {', '.join(keys)}"
            elif x["chunks"] != y["chunks"]:
                yield f"{d}: chunks differ ({len(x['chunks'])} vs {len(y['chunks'])})"

    return diff_by_doc(a, b, differ, limit)
