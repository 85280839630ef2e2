"""One document change, start to finish (DESIGN.md: fetch, decide, extract, chunk,
embed, sync). Every step looks at the current state of the file, so a repeated
or stale event is harmless: the task is idempotent.

Decide, cheapest first:
  * same size and mtime, same ACL            -> skip (no read)
  * same size and mtime, other ACL           -> ACL-only update (no parse, no embed)
  * same content hash                        -> stat/ACL update only
  * otherwise                                -> extract, chunk, embed what the cache lacks, apply
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from acl.model import ACL
from extractors import extract, sandbox
from extractors.base import ExtractContext, ExtractionError
from extractors.errors import ErrorCode

from ingest import config
from ingest.config import settings
from ingest.obs import trace
from ingest.obs.clock import Clock, merged
from ingest.pipeline.budget import Budget, OutOfTime, Requeue, is_soft_timeout, soft_limit_s
from ingest.pipeline.chunking import Chunker, chunk_id
from ingest.pipeline.classify import LabelPolicy, classify
from ingest.pipeline.embed import get_embedder
from ingest.pipeline.faults import is_transient
from ingest.pipeline.nlp import get_extractor
from ingest.pipeline.quality import QUARANTINED, assess
from ingest.sources.base import (DELETE, KINDS, MOVE, RESCAN, UPSERT,  # noqa: F401
                                ChangeEvent, folder_source, store_rel)
from ingest.sources.labels import SIDECAR_SUFFIXES, is_sidecar, source_labels_at
from ingest.sources.safefs import NotRegular, is_regular_file, open_source
from ingest.stores.base import Action, ChunkRecord, DocRecord, ModelChanged

log = logging.getLogger("ingest.pipeline.document")

MAX_FILE_BYTES = 200 * 1024 * 1024


def file_uri(root: str, rel: str) -> str:
    return Path(os.path.join(root, rel)).as_uri()


def new_doc_id(store, source: str, external_id: str) -> str:
    """Stable id from (source, external id); a rename keeps the id it had."""
    n = 0
    while True:
        seed = f"{source}\0{external_id}" + (f"\0{n}" if n else "")
        doc_id = hashlib.sha256(seed.encode()).hexdigest()[:24]
        if not store.doc_id_taken(doc_id):
            return doc_id
        n += 1


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class PasswordsFileError(ValueError):
    """``INGEST_PASSWORDS_FILE`` is set but cannot be read or parsed."""


def load_passwords() -> list[tuple[str, str]]:
    """Passwords for encrypted documents, by path glob, from the JSON file named by
    ``INGEST_PASSWORDS_FILE``: ``[{"pattern": "/share/legal/*.pdf", "password": "..."}]``.
    They are never logged. A file that is missing or malformed is a
    :class:`PasswordsFileError` (the pipeline records it per document, it never stops a worker)."""
    f = settings().passwords_file
    if not f:
        return []
    try:
        with open(f) as fh:
            data = json.load(fh)
        return [(e["pattern"], e["password"]) for e in data]
    except OSError as e:
        raise PasswordsFileError(f"INGEST_PASSWORDS_FILE {f}: {e.strerror}") from None
    except (ValueError, KeyError, TypeError) as e:
        raise PasswordsFileError(f"INGEST_PASSWORDS_FILE {f}: expected a JSON list of "
                                 f"{{\"pattern\", \"password\"}} objects ({type(e).__name__})") from None


@dataclass
class Outcome:
    action: Action  # indexed | skipped | acl | touched | moved | deleted | error | ignored | missing | stale
    doc_id: str | None = None
    parsed: int = 0
    embedded: int = 0
    chunks: int = 0
    detail: str | None = None
    cached: int = 0  # of its own chunks, how many vectors came from the embedding cache
    timings: dict = field(default_factory=dict)  # stage -> seconds (ingest.obs.clock)
    notes: list = field(default_factory=list)  # e.g. "nlp:unsupported-language" (in the trace)


def _parse_room() -> float:
    """The longest one parse may take (the sandbox's limit): a group starts no parse with less left."""
    return sandbox.DEFAULT_TIMEOUT_S


LARGE_DOC_CHUNKS = 2000  # embedding this many chunks or more logs a progress line


def _row_versions(row) -> tuple | None:
    return None if row is None else (row["content_version"], row["acl_version"], row["size"], row["mtime_ns"])


class TooLarge(ValueError):
    """The bytes a connector sent are over ``MAX_FILE_BYTES`` (the document is quarantined)."""


@dataclass
class Fetched:
    """One document as its connector read it: what decide, extract and apply need, the same
    for a folder (read through one descriptor, ``ingest.sources.safefs``) and a DMS (downloaded).

    ``copy_to(dest, max_bytes) -> content version`` writes the bytes to ``dest``, a new private
    file (``dest`` None: only hash them); over ``max_bytes`` it raises ``ValueError``
    (:class:`TooLarge`: quarantined as too large)."""
    uri: str
    acl: ACL
    size: int | None
    mtime_ns: int | None
    copy_to: Callable[[str | None, int], str]
    path: str  # what the parser's copy is named after, and what the passwords' globs are matched against
    labels: list = field(default_factory=list)
    label_error: str | None = None  # the labels could not be read: the document fails with bad-labels
    version: str | None = None  # the source's revision (DMS etag); None: the content hash decides
    seq: int | None = None  # the source's ordering stamp of this state (folder ctime_ns, DMS mtime), kept as
    # source_seq: a task for an older state is dropped as stale
    same: Callable[[], bool] | None = None  # batched apply: is the source still in the state that was read?


@dataclass
class Pending:
    """A document extracted and chunked, waiting for vectors (batched across documents)."""
    doc: DocRecord
    chunks: list
    parsed: int
    embedded: int  # by its child documents
    key: tuple = ()  # (source, external id): the registry row and lock it is applied under
    row: tuple | None = None  # the registry row's versions when it was read
    same: Callable[[], bool] | None = None  # see Fetched.same
    redo: Callable[[], Outcome] | None = None  # changed meanwhile: the ordinary path, one document
    fresh: set = field(default_factory=set)  # chunk text hashes not in the embedding cache
    elements: list | None = None  # what was chunked (to chunk again if the model is switched meanwhile)
    timings: dict = field(default_factory=dict)
    seq: int | None = None  # the source's ordering stamp of what was read (recorded once applied)
    event: object = None  # the change it came from (for its trace)
    started: float = 0.0  # when its change began (time.time())
    held: list = field(default_factory=list)  # its children's store writes, applied with it (store.unit)


class Pipeline:
    def __init__(self, store, embedder=None, *, sandbox: bool = True, passwords: list | None = None,
                 policy=None, nlp=None, defer_entities: bool = False):
        """``nlp``: an ``ingest.pipeline.nlp.EntityExtractor``, ``False`` for no entities; default: ``[nlp]``
        of the config (entities on with en_core_web_sm). ``defer_entities``: a worker's pipeline, which
        stores a document's text and vectors first and leaves the entities its cache lacks owed (the
        store's backlog) for :meth:`settle_entities` on the maintenance lane, when ``[nlp]
        after_indexing`` (the default) says so; otherwise entities are computed inline."""
        self.store = store
        self._nlp = nlp
        self.defer_entities = defer_entities
        self.entities_owed = 0  # chunks left owed since the caller last looked (it queues the work)
        self._embedder = embedder
        self._chunker = None
        self.sandbox = sandbox  # parse in a child process under time and memory limits
        self.passwords_error: str | None = None
        if passwords is None:
            try:
                passwords = load_passwords()
            except PasswordsFileError as e:  # each document that is parsed fails with it
                passwords, self.passwords_error = [], str(e)
        self.passwords = passwords
        self._policy = policy  # ingest.pipeline.classify.LabelPolicy; default: [labels] of the config
        self._clocks: list[Clock] = []  # per-document stage timings; a child document gets its own
        self.budget: Budget | None = None  # the running task's time (ingest.pipeline.budget); None: unbounded
        self._grouped = False  # inside handle_many: a time-out hands the document back, never fails it
        self._rates: dict[str, float] = {}  # throughput seen per stage (chunks/s), to size the next piece

    @property
    def policy(self):
        if self._policy is None:
            self._policy = LabelPolicy.from_config(config.load())
        return self._policy

    @property
    def nlp(self):
        """The entity extractor, or None when entities are off."""
        if self._nlp is None:
            self._nlp = get_extractor(config.load()) or False
        return self._nlp or None

    def entities(self, chunks, language: str | None, label: str | None = None,
                 kept: bool = False) -> tuple[dict[str, dict], list[str]]:
        """{chunk text hash: its entities of the configured types} from the entity cache, the
        model run (batched) only on the texts the cache lacks; and notes for the trace. ``kept``:
        this task already kept work of the document (vectors), so running out of time before the
        first piece still hands it on rather than failing it."""
        ex = self.nlp
        if ex is None or not chunks:
            return {}, []
        if not ex.supports(language):
            return {}, ["nlp:unsupported-language"]
        model_id = ex.model_id
        texts = {c.text_hash: c.text for c in chunks}
        have = self.store.cached_entities(model_id, list(texts))
        if self.defer_entities and ex.cfg.after_indexing:  # the cache's now, the rest after indexing
            self.entities_owed += sum(1 for c in chunks if c.text_hash not in have)
            return {h: ex.keep(have[h]) if h in have else None for h in texts}, []

        def run(piece: list[str]) -> None:
            new = list(zip(piece, ex.run([texts[h] for h in piece])))
            self.store.cache_entities(model_id, new)
            have.update(new)

        # in bounded pieces like embedding: a long document's entities survive a time-out too
        self._in_pieces("entities", [h for h in texts if h not in have], settings().embed_piece, run, label,
                        first_progress=kept)
        return {h: ex.keep(have[h]) for h in texts}, []

    def settle_entities(self, lease_s: float = 900.0, pieces: int | None = None) -> tuple[int, bool]:
        """Compute the entities the store owes (chunks indexed with ``defer_entities``), a piece of
        ``INGEST_EMBED_PIECE`` chunks at a time, oldest first, each piece claimed for ``lease_s`` and
        stored with its backlog rows settled in one transaction; the entity cache is used and filled as
        inline. Stops when nothing is owed, after ``pieces`` pieces, or before a piece that might not fit
        the task's budget. Returns (chunks given their entities, whether some are still owed)."""
        ex, done, step = self.nlp, 0, settings().embed_piece
        rate, n = 0.0, 0
        while True:
            if (pieces is not None and n >= pieces) or \
                    (self.budget is not None and done and self.budget.left() < (2 * step / rate if rate else 0.0)):
                return done, self.store.entities_owed() > 0
            n += 1
            t0 = time.monotonic()
            items, claimed = self.store.claim_entities(step, lease_s)
            if not claimed:
                return done, False
            if ex is None:  # entities were turned off meanwhile: nothing is owed any more
                done += self.store.set_entities([(cid, {}) for cid, _, _ in items])
                continue
            have = self.store.cached_entities(ex.model_id, sorted({h for _, h, _ in items}))
            todo = {h: t for _, h, t in items if h not in have}
            if todo:
                new = self._run_entities(ex, todo)
                self.store.cache_entities(ex.model_id, [(h, e) for h, e in new.items() if e is not None])
                have.update(new)
            done += self.store.set_entities([(cid, ex.keep(have[h] or {})) for cid, h, _ in items])
            rate = len(items) / max(time.monotonic() - t0, 1e-6)

    @staticmethod
    def _run_entities(ex, todo: dict[str, str]) -> dict[str, dict | None]:
        """{text hash: entities} for a piece; when the model fails on the piece (not a transient fault),
        each text alone, and a text it fails on gets None (stored as no entities, logged by hash, not
        cached): one bad chunk never holds the store's backlog up."""
        try:
            return dict(zip(todo, ex.run(list(todo.values()))))
        except Exception as e:
            if is_transient(e):
                raise
            log.warning("named entities: the model failed on a piece of %d chunk(s) (%s); one by one",
                        len(todo), type(e).__name__)
            log.debug("named entities: %s", e)  # a model's message may quote the text: not at warning level
        out: dict[str, dict | None] = {}
        for h, t in todo.items():
            try:
                out[h] = ex.run([t])[0]
            except Exception as e:
                if is_transient(e):
                    raise
                log.warning("named entities of chunk text %s: %s; stored as none", h[:16], type(e).__name__)
                log.debug("named entities of chunk text %s: %s", h[:16], e)
                out[h] = None
        return out

    def _follow_active_model(self) -> None:
        """After ``ingest reembed`` switched the store's model, embed (and chunk) with the new one."""
        active = self.store.model_id
        if self._embedder is not None and self._embedder.model_id != active:
            self._embedder, self._chunker = get_embedder(active), None

    @contextmanager
    def clocked(self):
        """Time the stages of one document (nested for child documents)."""
        c = Clock()
        self._clocks.append(c)
        try:
            yield c
        finally:
            self._clocks.pop()

    def stage(self, name: str):
        return self._clocks[-1].stage(name) if self._clocks else nullcontext()

    def _lap(self, name: str | None) -> None:
        if self._clocks:
            self._clocks[-1].lap(name)

    @property
    def embedder(self):
        if self._embedder is None:
            self._embedder = get_embedder(self.store.model_id)
        return self._embedder

    @property
    def chunker(self):
        if self._chunker is None:
            e = self.embedder
            self._chunker = Chunker(e.count_tokens, e.max_tokens)
        return self._chunker

    # -- entry point ----------------------------------------------------------------
    def handle(self, ev: ChangeEvent, batch: str | None = None, ctx: dict | None = None) -> list[Outcome]:
        """Apply one folder change event; returns what happened (also logged to the store).
        ``ctx``: where the change came from (``lane``, ``task``, ``queued_at``), for its trace.
        ``ev.seq``: the source's ordering stamp of the document when the event was made (a folder
        file's ctime_ns); a task for an older state than the registry's is dropped as ``stale``.
        Any source's event, a connector's too: :func:`ingest.pipeline.changes.handle` (both end in
        :meth:`document`)."""
        if ev.kind not in KINDS:
            raise ValueError(f"unknown change kind {ev.kind!r}")
        if not ev.folder:
            raise ValueError(f"{ev.source}: a connector's event goes through ingest.pipeline.changes.handle")
        started = time.time()
        if ev.kind == RESCAN:
            from ingest.sources.reconcile import reconcile

            outs = []
            for sub in reconcile(self.store, ev.source, subtree=ev.key):
                outs.extend(self.handle(sub, batch, ctx))
            return outs
        if ev.kind == MOVE:
            if ev.dest is None:
                raise ValueError(f"a move of {ev.key!r} without a destination")
            out = [self.move(ev.source, ev.key, ev.dest)]
            out.append(self.upsert(ev.source, ev.dest))
        elif ev.kind == DELETE:
            out = [self.delete(ev.source, ev.key)]
        else:  # an upsert, or a permission change (the upsert re-reads the ACL)
            out = [self.upsert(ev.source, ev.key, seq=ev.seq)]
        self._log(ev, out, batch, ctx, started)
        return out

    def handle_many(self, events: list[ChangeEvent], batch: str | None = None,
                    ctx: dict | None = None) -> list[Outcome]:
        """Apply many changes with one embedding call for all their new chunks.

        Bulk work (a backfill) pays for per-document ``encode`` calls with small,
        badly padded batches; here every document is extracted and chunked first,
        the chunks of all of them are embedded together, then each document is
        applied on its own (one transaction each). A document that changed or was
        processed elsewhere between its read and its apply is simply done again
        the ordinary way, so the result is the same as ``handle`` one by one.
        A fault of one document is recorded for it and the others go on; a transient
        fault (store unreachable) propagates, so the task is retried as a whole.

        Time (``self.budget``, ingest.pipeline.budget): no parse starts that the budget might not
        fit, embedding goes in bounded pieces; what the group did not finish when time
        runs short (or the task's soft limit strikes) is raised as :class:`Requeue`:
        those documents go back to the queue one task each, never dead-lettered for a
        neighbour.
        """
        outs: list[Outcome] = []
        pending: list[tuple[int, ChangeEvent, Pending]] = []
        done: set[int] = set()
        started = time.time()
        self._grouped = True
        try:
            for i, ev in enumerate(events):
                if i and self.budget is not None and \
                        self.budget.left() < min(_parse_room(), 0.25 * self.budget.seconds):
                    break  # the rest go back to the queue, one task each
                try:
                    if ev.kind != UPSERT:
                        outs.extend(self.handle(ev, batch, ctx))
                        done.add(i)
                        continue
                    o = self.upsert(ev.source, ev.key, defer=True, seq=ev.seq)
                except OutOfTime:
                    break  # its parse was cut short by the group's time: it goes back, alone
                except Exception as e:  # recorded per document; the others go on
                    if is_transient(e) or is_soft_timeout(e):
                        raise
                    log.exception("change %s %s failed", ev.kind, ev.key)
                    o = Outcome(Action.ERROR, detail=f"internal-error: {type(e).__name__}: {e}")
                if isinstance(o, Pending):
                    pending.append((i, ev, o))
                else:
                    self._log(ev, [o], batch, ctx, started)
                    outs.append(o)
                    done.add(i)
            if pending:
                evs = {id(p): ev for _, ev, p in pending}
                index = {id(p): i for i, _, p in pending}

                def applied(p: Pending, o: Outcome) -> None:
                    self._log(evs[id(p)], [o], batch, ctx, started)
                    outs.append(o)
                    done.add(index[id(p)])

                self.apply_batch([p for _, _, p in pending], applied)
        except Exception as e:
            if not (isinstance(e, OutOfTime) or is_soft_timeout(e)):
                raise
            log.warning("group of %d change(s) ran out of time (%s); %d done", len(events), e, len(done))
        finally:
            self._grouped = False
        left = [i for i in range(len(events)) if i not in done]
        if left:
            raise Requeue([events[i] for i in left], outs=outs)
        return outs

    def apply_batch(self, pending: list[Pending], applied: Callable[[Pending, Outcome], None]) -> None:
        """Embed the new chunks of several documents in one call, then apply each (one transaction
        each), calling ``applied(p, outcome)`` as each is done. A document whose vectors did not fit
        the time is left out (it goes back to the queue); a fault of one is recorded for it and the
        others go on; a transient fault (store unreachable) propagates."""
        texts = [c.embed_text for p in pending for c in p.chunks]
        hashes = [c.embed_hash for p in pending for c in p.chunks]
        t0 = time.perf_counter()
        try:
            vecs, _ = self.vectors(texts, hashes, label=f"{len(pending)} document(s)")
            by_hash = dict(zip(hashes, vecs))
        except OutOfTime:  # apply the documents whose vectors are all there
            by_hash = self.store.cached_vectors(self.embedder.model_id, list(set(hashes)))
        share = (time.perf_counter() - t0) / max(1, len(hashes))  # one call: each document its share
        counted: set[str] = set()
        for p in pending:
            if any(c.embed_hash not in by_hash for c in p.chunks):
                continue  # not embedded in time: it goes back to the queue
            try:
                with self.clocked() as c:
                    o = self._apply_pending(p, by_hash, counted)
                o.timings = merged(p.timings, {"embed": share * len(p.chunks)}, c.stages, o.timings)
            except OutOfTime:
                continue  # its entities did not fit the time (those done are cached): back to the queue
            except Exception as e:
                if is_transient(e) or is_soft_timeout(e):
                    raise
                log.exception("change of %s failed", p.doc.uri)
                o = Outcome(Action.ERROR, p.doc.doc_id, detail=f"internal-error: {type(e).__name__}: {e}")
            applied(p, o)

    def _apply_pending(self, p: Pending, vectors: dict[str, bytes], counted: set[str]) -> Outcome:
        source, key = p.key
        with self.store.lock(f"{source}\0{key}"):
            row = self.store.get_doc(source, key)
            if (p.same is None or p.same()) and _row_versions(row) == p.row:
                embedded = len({c.embed_hash for c in p.chunks if c.embed_hash in p.fresh} - counted)
                counted.update(c.embed_hash for c in p.chunks)
                o = self._apply_chunks(p.doc, p.chunks, vectors, parsed=p.parsed,
                                       embedded=p.embedded + embedded, elements=p.elements, held=p.held)
                o.cached = len(p.chunks) - embedded
                if p.seq is not None:
                    self.store.set_source_seq(p.doc.doc_id, p.seq)  # the state read is at least this new
                return o
        return p.redo()  # changed meanwhile: the ordinary path, under its lock

    def _log(self, ev: ChangeEvent, out: list[Outcome], batch: str | None, ctx: dict | None = None,
             started: float | None = None) -> None:
        source = folder_source(ev.source)
        rels = [store_rel(ev.key), store_rel(ev.dest or "")] if ev.kind == MOVE else [store_rel(ev.key)]
        event = {"kind": ev.kind, "path": rels[0], "dest": rels[1] if ev.kind == MOVE else None}
        for i, (o, rel) in enumerate(zip(out, rels)):
            o.detail = store_rel(o.detail) if o.detail else o.detail
            # a move logs two outcomes; only the last one counts for batch progress
            trace.record(self.store, o, source=source, external_id=rel, batch=batch if i == len(out) - 1 else None,
                         event=event, ctx=ctx, started=started)

    # -- operations -----------------------------------------------------------------
    def delete(self, root: str, rel: str) -> Outcome:
        source, key = folder_source(root), store_rel(rel)
        with self.store.lock(f"{source}\0{key}"):
            row = self.store.get_doc(source, key)
            if row is None:
                return Outcome(Action.MISSING)
            if is_regular_file(os.path.join(root, rel)):  # came back before we ran (a link or FIFO is no file)
                return Outcome(Action.SKIPPED, row["doc_id"], detail="file exists again")
            self.store.delete(row["doc_id"])
            return Outcome(Action.DELETED, row["doc_id"])

    def move(self, root: str, old: str, new: str) -> Outcome:
        source, ko, kn = folder_source(root), store_rel(old), store_rel(new)
        with self.store.lock(f"{source}\0{ko}", f"{source}\0{kn}"):
            row = self.store.get_doc(source, ko)
            if row is None:
                return Outcome(Action.MISSING, detail=f"{ko} not indexed; treated as new")
            if os.path.lexists(os.path.join(root, old)):
                return Outcome(Action.SKIPPED, row["doc_id"], detail="source path still exists")
            target = self.store.get_doc(source, kn)
            if target is not None and target["doc_id"] != row["doc_id"]:
                self.store.delete(target["doc_id"])  # the move replaced another document
            self.store.move(row["doc_id"], kn, file_uri(root, new))
            return Outcome(Action.MOVED, row["doc_id"], detail=f"{ko} -> {kn}")

    def upsert(self, root: str, rel: str, *, defer: bool = False, seq: int | None = None) -> "Outcome | Pending":
        """``defer``: stop before embedding and return a :class:`Pending` for ``handle_many``.
        ``seq``: the event's (see :meth:`handle`)."""
        if is_sidecar(rel):  # a labels sidecar is no document: it re-labels the file it belongs to
            main = next(rel[:-len(x)] for x in SIDECAR_SUFFIXES if rel.lower().endswith(x))
            if os.path.lexists(os.path.join(root, main)):
                return self.upsert(root, main, defer=defer)
            return Outcome(Action.IGNORED, detail=f"labels sidecar of missing {main}")
        with self.clocked() as c:
            out = self._upsert(root, rel, defer, seq)
        out.timings = merged(c.stages, out.timings)
        return out

    def stale(self, row: dict | None, seq: int | None) -> Outcome | None:
        """A task made for an older state than the registry's (``seq`` under its ``source_seq``)
        is dropped as ``stale``; else None."""
        have = row.get("source_seq") if row is not None else None
        if seq is not None and have is not None and seq < have:
            return Outcome(Action.STALE, row["doc_id"], detail=f"version {seq} is older than the indexed {have}")
        return None

    def _upsert(self, root: str, rel: str, defer: bool, seq: int | None) -> "Outcome | Pending":
        source, key = folder_source(root), store_rel(rel)
        with self.store.lock(f"{source}\0{key}"):
            self._lap(None)  # waiting for the lock is no stage
            row = self.store.get_doc(source, key)
            stale = self.stale(row, seq)
            if stale is not None:
                return stale
            try:
                sf = open_source(root, rel)  # the one descriptor everything below is read from
            except (FileNotFoundError, NotRegular) as e:
                # gone, or replaced by a symlink/FIFO/directory: whatever was indexed goes
                what = "not a regular file" if isinstance(e, NotRegular) else None
                if row is not None:
                    self.store.delete(row["doc_id"])
                    return Outcome(Action.DELETED, row["doc_id"], detail=what and f"{what}: {e}")
                return Outcome(Action.IGNORED, detail=f"{what}: {e}") if what else Outcome(Action.MISSING)
            except (OSError, ValueError) as e:
                doc_id = row["doc_id"] if row else new_doc_id(self.store, source, key)
                base = DocRecord(doc_id=doc_id, source=source, external_id=key, uri=file_uri(root, rel), mime=None,
                                 size=None, mtime_ns=None, content_version=None,
                                 acl=ACL.unknown(f"cannot open {key}: {getattr(e, 'strerror', None) or e}"))
                return self._fail(base, ErrorCode.UNREADABLE, f"cannot open file: {getattr(e, 'strerror', None) or e}")
            with sf:
                out = self.document(source, key, _folder_fetched(sf, root, rel), row, defer=defer)
            if isinstance(out, Pending):
                out.redo = lambda: self.upsert(root, rel)
            return out

    def document(self, source: str, key: str, f: Fetched, row: dict | None, *,
                 defer: bool = False) -> "Outcome | Pending":
        """The one per-document path, for every source (call it under the document's lock):
        decide (skip | move | ACL-only | touch | content), then extract, quality, classify, chunk,
        embed and apply. ``defer``: stop before embedding and return a :class:`Pending`
        (:meth:`apply_batch` embeds many documents' chunks together).

        Decide, cheapest first: the source's revision (DMS), else size and mtime (folder), unchanged
        with the same labels -> a move (other URI) and/or an ACL-only update, else skipped; then, for
        a folder, the content hash: unchanged -> an ACL update or a touch, never a parse."""
        relabel = row is not None and json.loads(row.get("source_labels") or "[]") != f.labels
        unchanged = row is not None and not relabel and (
            row["content_version"] == f.version if f.version is not None
            else (row["size"], row["mtime_ns"]) == (f.size, f.mtime_ns))
        if unchanged:
            done = []
            if row["uri"] != f.uri:
                self.store.move(row["doc_id"], key, f.uri)
                done.append(Action.MOVED)
            if row["acl_version"] != f.acl.version:
                self.store.set_acl(row["doc_id"], f.acl)
                done.append(Action.ACL)
            out = Outcome(done[0] if len(done) == 1 else Action.MOVED if done else Action.SKIPPED, row["doc_id"],
                          detail="+".join(done) if len(done) > 1 else None)
            return self._seq(out, f)
        doc_id = row["doc_id"] if row else new_doc_id(self.store, source, key)
        base = DocRecord(doc_id=doc_id, source=source, external_id=key, uri=f.uri, mime=None,
                         size=f.size, mtime_ns=f.mtime_ns, content_version=f.version, acl=f.acl,
                         source_labels=list(f.labels))
        if f.label_error:
            return self._seq(self._fail(base, ErrorCode.BAD_LABELS, f.label_error), f)
        if f.size is not None and f.size > MAX_FILE_BYTES:
            return self._seq(self._fail(base, ErrorCode.TOO_LARGE, f"{f.size} bytes is over the {MAX_FILE_BYTES} byte "
                                        "limit", status="quarantined"), f)
        if f.version is None:
            try:
                base.content_version = f.copy_to(None, MAX_FILE_BYTES)  # hash only
            except ValueError as e:  # grew past the limit, or was swapped while being opened
                return self._seq(self._fail(base, ErrorCode.UNREADABLE, f"cannot read file: {e}"), f)
            except OSError as e:
                return self._seq(self._fail(base, ErrorCode.UNREADABLE, f"cannot read file: {e.strerror}"), f)
            self._lap("fetch")  # stat, permissions, content hash
            if row is not None and row["content_version"] == base.content_version and not relabel:
                if row["acl_version"] != f.acl.version:
                    self.store.set_acl(doc_id, f.acl, size=f.size, mtime_ns=f.mtime_ns)
                    return self._seq(Outcome(Action.ACL, doc_id, detail="content unchanged"), f)
                self.store.touch(doc_id, f.size, f.mtime_ns)
                return self._seq(Outcome(Action.TOUCHED, doc_id), f)
        out = self._index(base, f.path, defer=defer, src=f)
        if isinstance(out, Pending):
            out.key, out.row, out.same = (source, key), _row_versions(row), f.same
        return self._seq(out, f)

    def _seq(self, out: "Outcome | Pending", f: Fetched) -> "Outcome | Pending":
        if isinstance(out, Pending):  # its row is written when it is applied (apply_batch)
            out.seq = f.seq
            return out
        doc_id = out.doc_id
        if doc_id is not None and f.seq is not None:
            self.store.set_source_seq(doc_id, f.seq)  # the state read is at least this new
        return out

    # -- the content path -------------------------------------------------------------
    def _fail(self, doc: DocRecord, code: ErrorCode | str, message: str, *, parsed: int = 0,
              status: str = "error", held: list | None = None) -> Outcome:
        """``held``: the children's writes (:meth:`_children`), which land with this record."""
        message = store_rel(message)  # a parser's message may name a file that is not UTF-8
        doc.status, doc.error_code, doc.error = status, code, message
        with self.stage("store"), self.store.unit(held):
            self.store.record_failure(doc)
        return Outcome(Action.ERROR, doc.doc_id, parsed=parsed, detail=f"{code}: {message}")

    def _index(self, doc: DocRecord, path: str, depth: int = 0, *, defer: bool = False,
               src=None) -> "Outcome | Pending":
        """``src``: the :class:`Fetched` document at ``path``; the parser then reads a private copy of
        its content (for a folder, of the descriptor it was opened as), never ``path``."""
        workdir = tempfile.mkdtemp(prefix="ingest-parse-")  # child documents' bytes, private
        try:
            parse_path = path
            if src is not None:
                os.mkdir(os.path.join(workdir, "source"), 0o700)
                parse_path = os.path.join(workdir, "source", os.path.basename(path))
                try:
                    doc.content_version = src.copy_to(parse_path, MAX_FILE_BYTES)  # what is parsed is what is versioned
                except TooLarge as e:
                    return self._fail(doc, ErrorCode.TOO_LARGE, str(e), status="quarantined")
                except ValueError as e:
                    return self._fail(doc, ErrorCode.UNREADABLE, f"cannot read file: {e}")
                except OSError as e:
                    return self._fail(doc, ErrorCode.UNREADABLE, f"cannot read file: {e.strerror}")
            out = None
            try:
                out = self._index_in(doc, parse_path, depth, Path(workdir), source_path=path)
                if isinstance(out, Pending) and not defer:
                    with self.stage("embed"):
                        vecs, _ = self.vectors([c.embed_text for c in out.chunks],
                                               [c.embed_hash for c in out.chunks], label=doc.uri)
                    n_chunks, n_fresh = len(out.chunks), len(out.fresh)
                    out = self._apply_chunks(out.doc, out.chunks,
                                             dict(zip((c.embed_hash for c in out.chunks), vecs)),
                                             parsed=out.parsed, embedded=out.embedded + n_fresh,
                                             elements=out.elements, held=out.held)
                    out.cached = n_chunks - n_fresh
            except Exception as e:
                reason = self._timed_out(e, depth)
                if reason is None:
                    raise
                log.warning("%s: %s", doc.uri, reason)
                return self._fail(doc, ErrorCode.TIMEOUT, reason, parsed=1, status="quarantined",
                                  held=out.held if isinstance(out, Pending) else None)
            return out
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    def _timed_out(self, e: Exception, depth: int) -> str | None:
        """The quarantine reason when ``e`` means this document ran out of its own time,
        else None (``e`` is re-raised: not a time-out, or one that is no fault of this
        document: in a group, or with progress kept, it goes back to the queue)."""
        if isinstance(e, OutOfTime):
            if self._grouped or e.progress or depth:
                return None
            return str(e)
        if is_soft_timeout(e) and not self._grouped and not depth:
            stage = (self._clocks[-1].current if self._clocks else None) or "extract"
            return f"timeout after {soft_limit_s():.0f} s in {stage}"
        return None

    def _extract(self, path: str, ctx):
        if not self.sandbox:
            return extract(path, max_bytes=MAX_FILE_BYTES, ctx=ctx)
        label = os.path.splitext(path)[1].lstrip(".").lower() or "parser"  # for limit messages only
        timeout = sandbox.DEFAULT_TIMEOUT_S
        if self.budget is not None:  # what the task has left, not a parser's full limit; in a group,
            # less the time to embed what was parsed before (else nothing of the group gets done)
            left = self.budget.left() - (0.25 * self.budget.seconds if self._grouped else 0.0)
            timeout = min(timeout, max(1.0, left))
        try:
            return sandbox.run(extract, path, max_bytes=MAX_FILE_BYTES, ctx=ctx, label=label, timeout=timeout)
        except ExtractionError as e:
            if e.code == ErrorCode.TIMEOUT and timeout < sandbox.DEFAULT_TIMEOUT_S and self._grouped:
                # cut short by the group's time, not by its own limit: it goes back to the queue alone
                raise OutOfTime("extract", False, timeout) from e
            raise

    def _index_in(self, doc: DocRecord, path: str, depth: int, workdir: Path,
                  source_path: str | None = None) -> "Outcome | Pending":
        """Extract, index the children, assess quality and chunk; embedding and the store
        write come after (:meth:`_apply_chunks`), so several documents can share one
        embedding call. ``path``: what the parser reads; ``source_path``: where it came
        from (the passwords' globs are matched against it)."""

        ctx = ExtractContext(workdir=workdir, depth=depth, passwords=self.passwords,
                             source_path=source_path or path)
        try:
            with self.stage("extract"):
                ex = self._extract(path, ctx)
        except ExtractionError as e:
            if e.code == ErrorCode.ENCRYPTED and self.passwords_error:  # it may have held this one's password
                return self._fail(doc, ErrorCode.PASSWORDS_FILE, self.passwords_error, parsed=1)
            return self._fail(doc, e.code, e.message, parsed=1, status="quarantined")
        doc.mime, doc.extractor, doc.extractor_version = ex.mime, ex.extractor, ex.extractor_version
        doc.metadata = dict(getattr(ex, "metadata", None) or {})
        # children first: the parent's version is recorded only once they are all done
        with self.store.hold() as held:  # they land with this document, in one transaction
            kid_parsed, kid_embedded = self._children(doc, ex.children, depth)
        with self.stage("quality"):
            report = assess(ex)
        doc.quality = report.to_dict()
        if report.language and "language" not in doc.metadata:
            doc.metadata["language"] = report.language  # detected, where the file does not say
        if report.verdict == QUARANTINED:
            code = {"empty": ErrorCode.NO_TEXT}.get(report.reasons[0].split(":")[0], report.reasons[0].split(":")[0])
            out = self._fail(doc, code, "; ".join(report.reasons), parsed=1, status="quarantined", held=held)
            out.parsed += kid_parsed
            out.embedded += kid_embedded
            return out
        doc.flags = [*doc.flags, *report.flags]

        cls = classify(ex.elements, doc.source_labels, self.policy)  # labels; redaction before chunking
        doc.labels, doc.redactions = cls.labels, cls.redactions
        if cls.skip:
            return self._fail(doc, ErrorCode.POLICY_SKIP, f"label {cls.skip} has the policy skip", parsed=1 + kid_parsed,
                              status="quarantined", held=held)
        self._follow_active_model()
        with self.stage("chunk"):
            chunks = self.chunker.chunk(cls.elements)
        if not chunks:
            return self._fail(doc, ErrorCode.NO_TEXT, "the document has no extractable text", parsed=1 + kid_parsed,
                              status="quarantined", held=held)
        p = Pending(doc, chunks, parsed=1 + kid_parsed, embedded=kid_embedded, elements=cls.elements, held=held)
        with self.stage("embed"):
            p.fresh = self.uncached({c.embed_hash for c in chunks})
        return p

    def _apply_chunks(self, doc: DocRecord, chunks, vectors: dict[str, bytes], *, parsed: int,
                      embedded: int, elements=None, held: list | None = None) -> Outcome:
        """Write the document with its chunks (and ``held``, its children's writes, in the same
        transaction). If ``ingest reembed`` switched the model meanwhile, chunk and embed once
        more with the new one (at most twice)."""
        notes: list[str] = []
        for attempt in range(3):
            model_id, settings = self.embedder.model_id, self.chunker.settings
            with self.stage("entities"):
                ents, notes = self.entities(chunks, (doc.quality or {}).get("language"), label=doc.uri,
                                            kept=embedded > 0)
            records = [ChunkRecord(chunk_id(doc.doc_id, c.index, c.text_hash), c.index, c.text, c.text_hash,
                                   c.tokens, c.page, c.section, vectors[c.embed_hash], settings, model_id,
                                   c.context, ents.get(c.text_hash, {}))
                       for c in chunks]
            try:
                with self.stage("store"), self.store.unit(held):
                    self.store.apply(doc, records)
                break
            except ModelChanged:
                if attempt == 2 or elements is None:
                    raise
                self._follow_active_model()
                chunks = self.chunker.chunk(elements)
                vecs, computed = self.vectors([c.embed_text for c in chunks], [c.embed_hash for c in chunks])
                vectors, embedded = dict(zip((c.embed_hash for c in chunks), vecs)), embedded + computed
        return Outcome(Action.INDEXED, doc.doc_id, parsed=parsed, embedded=embedded, chunks=len(chunks), notes=notes)

    def _children(self, parent: DocRecord, children, depth: int) -> tuple[int, int]:
        """Index a container's members as documents ``<parent>!<member>`` that inherit its
        ACL; drop members that are gone. Returns (parsed, embedded) for the counters."""
        existing = self.store.children_of(parent.doc_id)
        seen: set[str] = set()
        parsed = embedded = 0
        for child in children:
            name, n = child.name, 2
            while f"{parent.external_id}!{name}" in seen:  # two attachments with one name
                name, n = f"{child.name}~{n}", n + 1
            ext = f"{parent.external_id}!{name}"
            seen.add(ext)
            version = sha256_file(child.path)
            row = existing.get(ext)
            relabel = row is not None and json.loads(row.get("source_labels") or "[]") != parent.source_labels
            if row is not None and row["content_version"] == version and not relabel:
                if row["acl_version"] != parent.acl.version:
                    self.store.set_acl(row["doc_id"], parent.acl)
                continue
            doc_id = row["doc_id"] if row else new_doc_id(self.store, parent.source, ext)
            cdoc = DocRecord(doc_id=doc_id, source=parent.source, external_id=ext, uri=f"{parent.uri}!{name}",
                             mime=None, size=child.size, mtime_ns=None, content_version=version, acl=parent.acl,
                             parent_id=parent.doc_id, source_labels=list(parent.source_labels))
            with self.clocked() as c:
                o = self._index(cdoc, child.path, depth + 1)
            o.timings = merged(c.stages, o.timings)
            trace.record(self.store, o, source=parent.source, external_id=ext,
                         event={"kind": "child", "path": ext, "dest": None, "parent": parent.doc_id})
            parsed, embedded = parsed + o.parsed, embedded + o.embedded
        for ext, row in existing.items():
            if ext not in seen:
                self.store.delete(row["doc_id"])
        return parsed, embedded

    def uncached(self, hashes: set[str]) -> set[str]:
        """The text hashes whose vectors the cache lacks (what embedding them will compute)."""
        return set(hashes) - set(self.store.cached_vectors(self.embedder.model_id, list(hashes)))

    def vectors(self, texts: list[str], hashes: list[str], label: str | None = None) -> tuple[list[bytes], int]:
        """Vectors for texts, from the cache keyed by (model id, text hash) where possible.

        What the cache lacks is embedded in pieces of ``INGEST_EMBED_PIECE`` texts, each cached
        as it is done, so work survives a time-out (:meth:`_in_pieces`)."""
        model_id = self.embedder.model_id
        have = self.store.cached_vectors(model_id, list(set(hashes)))
        missing = {h: t for t, h in zip(texts, hashes) if h not in have}

        def embed(piece: list[str]) -> None:
            vecs = self.embedder.encode([missing[h] for h in piece])
            new = [(h, vecs[i].tobytes()) for i, h in enumerate(piece)]
            self.store.cache_vectors(model_id, new)
            have.update(new)

        self._in_pieces("embed", list(missing), settings().embed_piece, embed, label, first_progress=False)
        return [have[h] for h in hashes], len(missing)

    def _in_pieces(self, stage: str, keys: list, step: int, work: Callable[[list], None], label: str | None,
                   *, first_progress: bool) -> None:
        """``work(piece)`` over ``keys`` in pieces of ``step``, each keeping its result (a cache) as it
        is done. With a budget, no piece starts that it might not fit by the rate seen so far
        (:class:`OutOfTime` with ``progress``: a piece was kept); the first starts whenever time is
        left (else ``OutOfTime`` with ``first_progress``: whether what the caller did before it was
        kept). Large jobs log a progress line (``label`` names them)."""
        t_start, last_note = time.monotonic(), time.monotonic()
        for k in range(0, len(keys), step):
            piece = keys[k:k + step]
            if self.budget is not None:
                rate = self._rates.get(stage)
                if k and self.budget.left() < (2 * len(piece) / rate if rate else 0.0):
                    log.warning("%s %s: %d/%d chunks done, time is up for this task; continuing later",
                                stage, label or "", k, len(keys))
                    raise OutOfTime(stage, True, self.budget.seconds)
                if not k and self.budget.left() <= 0:
                    raise OutOfTime(stage, first_progress, self.budget.seconds)
            t0 = time.perf_counter()
            work(piece)
            rate = len(piece) / max(1e-6, time.perf_counter() - t0)
            self._rates[stage] = 0.5 * self._rates[stage] + 0.5 * rate if stage in self._rates else rate
            if len(keys) >= LARGE_DOC_CHUNKS and (time.monotonic() - last_note > 10 or k + len(piece) == len(keys)):
                last_note = time.monotonic()
                log.warning("%s %s: %d/%d chunks (%.0f chunks/s)", stage, label or "", k + len(piece), len(keys),
                            (k + len(piece)) / max(1e-6, last_note - t_start))


def _folder_fetched(sf, root: str, rel: str) -> Fetched:
    """A folder file as the pipeline takes it: everything from the one descriptor ``sf``
    (:class:`ingest.sources.safefs.SourceFile`: type, ACL, labels, bytes)."""
    st = sf.st
    try:
        labels, label_error = source_labels_at(sf.dir_fd, sf.name, sf.fd, origin=sf.rel), None
    except (ValueError, OSError) as e:
        labels, label_error = [], str(e)

    def same() -> bool:
        try:
            now = os.stat(os.path.join(root, rel), follow_symlinks=False)
        except FileNotFoundError:
            return False
        return (now.st_size, now.st_mtime_ns, now.st_dev, now.st_ino) == (st.st_size, st.st_mtime_ns, st.st_dev,
                                                                          st.st_ino)

    return Fetched(uri=file_uri(root, rel), acl=sf.acl(), size=st.st_size, mtime_ns=st.st_mtime_ns,
                   copy_to=sf.copy_to, path=os.path.join(root, rel), labels=labels, label_error=label_error,
                   seq=st.st_ctime_ns, same=same)
