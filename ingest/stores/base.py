"""The store contract (see DESIGN.md, Stores) and the records that cross it."""
from __future__ import annotations

from dataclasses import dataclass, field
from contextlib import AbstractContextManager
from enum import StrEnum
from typing import Any, Protocol

from acl.model import ACL
from ingest.embedding import embed_text, text_hash


class Action(StrEnum):
    """What happened to a document, as the outcome log records it (``outcomes.action``).

    A ``StrEnum``: stored values and JSON are the plain strings."""

    INDEXED = "indexed"  # extracted, chunked, embedded, applied
    ERROR = "error"  # failed or quarantined (the document's error_code says why)
    ACL = "acl"  # permissions changed, content not re-read
    TOUCHED = "touched"  # size/mtime changed, content the same
    MOVED = "moved"
    DELETED = "deleted"
    SKIPPED = "skipped"  # nothing to do (unchanged, or the event no longer applies)
    MISSING = "missing"  # the path is gone and was never indexed
    IGNORED = "ignored"  # not a document (ignore rules, a labels sidecar ...)
    STALE = "stale"  # an older version arrived after a newer one was indexed: dropped
    DEAD_LETTER = "dead-letter"  # the task gave up (workers: retries exhausted or a permanent fault)


class BatchEnd(StrEnum):
    """How a document of a batch ended (``Store.batch_ends``)."""

    INDEXED = "indexed"
    FLAGGED = "flagged"  # indexed with quality flags
    QUARANTINED = "quarantined"
    FAILED = "failed"
    DEAD_LETTERED = "dead-lettered"
    UNCHANGED = "unchanged"  # skipped, moved, deleted, ...


@dataclass
class DocRecord:
    doc_id: str
    source: str
    external_id: str
    uri: str
    mime: str | None
    size: int | None
    mtime_ns: int | None
    content_version: str | None
    acl: ACL
    extractor: str | None = None
    extractor_version: str | None = None
    status: str = "indexed"  # indexed | error | quarantined
    error_code: str | None = None
    error: str | None = None
    flags: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    parent_id: str | None = None  # set for child documents (attachments, archive members)
    quality: dict | None = None  # ingest.pipeline.quality.QualityReport.to_dict()
    source_labels: list[str] = field(default_factory=list)  # from the source (sidecar, xattr, DMS metadata)
    redactions: dict[str, int] = field(default_factory=dict)  # label -> spans redacted before chunking
    metadata: dict = field(default_factory=dict)  # title, authors, dates ... (extractors.metadata)


class ModelChanged(RuntimeError):
    """Chunks were embedded with a model that is no longer the store's active model."""


@dataclass
class ChunkRecord:
    chunk_id: str
    index: int
    text: str
    text_hash: str
    tokens: int
    page: int | None
    section: str
    vector: bytes  # float32, L2-normalised
    chunker: str
    model_id: str
    context: str = ""  # the section path the model embeds in front of the text (ingest.pipeline.chunking.Chunk.context)
    # {"TYPE:key": [display, count]} (ingest.pipeline.nlp); None: owed, computed after indexing
    entities: dict | None = field(default_factory=dict)

    @property
    def embed_hash(self) -> str:
        """The embedding cache key: the hash of exactly what the model embeds (text and context)."""
        return text_hash(embed_text(self.text, self.context))


@dataclass
class Hit:
    chunk_id: str
    doc_id: str
    score: float
    text: str
    uri: str
    page: int | None
    section: str
    doc_version: str | None
    labels: list[str]
    acl: dict
    extractor: str | None = None
    model_id: str | None = None
    bm25_rank: int | None = None
    vector_rank: int | None = None
    highlights: list[tuple[int, int]] = field(default_factory=list)  # (start, end) of matched terms in text
    context_before: list[str] = field(default_factory=list)  # neighbouring chunks, on request
    context_after: list[str] = field(default_factory=list)
    metadata: dict = field(default_factory=dict)  # its document's metadata (title, authors, created ...)
    entities: dict[str, int] = field(default_factory=dict)  # "TYPE:name" -> mentions in this chunk


# -- the contract: one small protocol per responsibility ------------------------------------------
# Both stores (SQLite, PostgreSQL) implement every protocol below; `python -m mypy` checks it
# (ingest/stores/_conformance.py), tests/test_store_contract.py tests each protocol's share against
# both, and tests/test_store_protocols.py checks that callers outside ingest/stores use nothing else.
# Callers type their store with the narrowest protocol they need, or with ``Store`` (all of them).


class Lifecycle(Protocol):
    """Opening, schema, locks, snapshots and the active embedding model."""

    @property
    def model_id(self) -> str: ...
    def schema_version(self) -> int: ...
    def migrate(self) -> None: ...
    def close(self) -> None: ...
    def status(self) -> dict: ...
    def lock(self, *keys: str) -> AbstractContextManager: ...
    def read_snapshot(self) -> AbstractContextManager: ...


class Registry(Protocol):
    """Documents: their registry rows, chunks written with them, ACLs, moves and deletions."""

    def get_doc(self, source: str, external_id: str) -> dict | None: ...
    def get_doc_by_id(self, doc_id: str) -> dict | None: ...
    def get_doc_by_uri(self, uri: str) -> dict | None: ...
    def docs_for_source(self, source: str) -> dict[str, dict]: ...
    def children_of(self, doc_id: str) -> dict[str, dict]: ...
    def doc_id_taken(self, doc_id: str) -> bool: ...
    def all_doc_ids(self) -> list[str]: ...
    def doc_counts(self) -> list[tuple[str, str, int]]: ...
    def not_indexed(self, limit: int = 200) -> list[dict]: ...
    def apply(self, doc: DocRecord, chunks: list[ChunkRecord]) -> None: ...
    def record_failure(self, doc: DocRecord) -> None: ...
    def set_acl(self, doc_id: str, acl: ACL, *, size: int | None = None, mtime_ns: int | None = None) -> None: ...
    def touch(self, doc_id: str, size: int, mtime_ns: int) -> None: ...
    def move(self, doc_id: str, external_id: str, uri: str) -> None: ...
    def delete(self, doc_id: str) -> None: ...
    def set_source_seq(self, doc_id: str, seq: int) -> None: ...
    def hold(self) -> Any: ...  # a container and its children as one unit (ingest/stores/unit.py)
    def unit(self, held: list | None) -> Any: ...


class ChunkIndex(Protocol):
    """Search primitives over the chunks a principal's tokens may read: ranked chunk row ids
    (full text, vector), then hits, highlights and neighbouring chunks (ingest.search.index)."""

    def bm25(self, query: str, tokens: frozenset[str], limit: int, filters=None,
             max_df: float | None = None) -> list[tuple[int, float]]: ...
    def vector(self, qvec, tokens: frozenset[str], limit: int, filters=None) -> list[tuple[int, float]]: ...
    def doc_ids(self, rowids) -> dict[int, str]: ...
    def hits(self, scored: list[tuple[int, float, int | None, int | None]]) -> list[Hit]: ...
    def highlights(self, query: str, rowids: list[int]) -> dict[str, list[tuple[int, int]]]: ...
    def neighbours(self, hits: list[Hit], n: int, tokens: frozenset[str], filters=None) -> None: ...


class Entities(Protocol):
    """Named entities: facets over readable chunks, the entity cache by (model, text hash), and the
    backlog of chunks whose entities come after indexing (a ``ChunkRecord`` with ``entities=None``)."""

    def facets(self, entity_type: str, tokens: frozenset[str], k: int = 20, filters=None) -> list[dict]: ...
    def cached_entities(self, model_id: str, hashes: list[str]) -> dict[str, dict]: ...
    def cache_entities(self, model_id: str, items: list[tuple[str, dict]]) -> None: ...
    def claim_entities(self, limit: int, lease_s: float) -> tuple[list[tuple[str, str, str]], int]: ...
    def set_entities(self, items: list[tuple[str, dict]]) -> int: ...
    def entities_owed(self) -> int: ...


class EmbeddingCache(Protocol):
    """Vectors by (model, embed hash): a re-embed of unchanged text costs nothing."""

    def cached_vectors(self, model_id: str, hashes: list[str]) -> dict[str, bytes]: ...
    def cache_vectors(self, model_id: str, items: list[tuple[str, bytes]]) -> None: ...


class ModelSwitch(Protocol):
    """Re-embedding into a new model, then switching every chunk at once (ingest.pipeline.reembed)."""

    def model_missing(self, model_id: str, limit: int) -> list[tuple[str, str]]: ...
    def model_coverage(self, model_id: str) -> tuple[int, int]: ...
    def set_reembed_target(self, model_id: str | None) -> None: ...
    def switch_model(self, model_id: str) -> int | None: ...


class AuditLog(Protocol):
    """The tamper-evident search audit log and document lineage (ingest.cli.lineage)."""

    def audit(self, principal: str, query: str, filters: dict | None,
              results: list[tuple[str, str | None]]) -> int: ...
    def audit_records(self, *, principal: str | None = None, since: float | None = None,
                      until: float | None = None, chunk_ids: list[str] | None = None,
                      limit: int | None = 100) -> list[dict]: ...
    def audit_verify(self) -> dict: ...
    def audit_checkpoint(self) -> dict: ...
    def lineage(self, ref: str, searches: int = 20) -> dict | None: ...


class Outbox(Protocol):
    """This store as a primary feeding secondary stores (sinks), and as a sink itself
    (ingest.stores.outbox): change rows, sink cursors, document states."""

    def outbox_entries(self, after: int, limit: int) -> list[tuple[int, str, str]]: ...
    def outbox_head(self) -> int: ...
    def prune_outbox(self) -> int: ...
    def sink_cursor(self, name: str) -> int | None: ...
    def set_sink_cursor(self, name: str, url: str, position: int) -> None: ...
    def sink_error(self, name: str, url: str, error: str) -> None: ...
    def sink_lag(self) -> list[dict]: ...
    def export_docs(self, doc_ids: list[str]) -> dict[str, dict | None]: ...
    def replicate(self, states: dict[str, dict | None]) -> None: ...


class OperationsLog(Protocol):
    """What happened to each document (outcomes, with traces), batches, dead letters and the
    change cursors of DMS sources."""

    def log_outcome(self, *, action: str, source: str | None, external_id: str | None,
                    doc_id: str | None, batch: str | None = None, parsed: int = 0, embedded: int = 0,
                    detail: str | None = None, trace: dict | None = None) -> None: ...
    def counters(self, since_id: int = 0) -> dict: ...
    def batch_progress(self, batch: str) -> int: ...
    def batch_done(self, batch: str) -> set[str]: ...
    def batch_outcomes(self, batch: str) -> dict[str, int]: ...
    def batch_ends(self, batch: str) -> dict[str, list[tuple[str, str | None]]]: ...
    def doc_outcomes(self, doc_id: str, source: str, external_id: str) -> list[dict]: ...
    def outcomes_after(self, last_id: int) -> list[dict]: ...
    def last_indexed_outcomes(self) -> list[dict]: ...
    def add_dead_letter(self, *, task: str, lane: str | None, args: list, kwargs: dict, fault: str, reason: str,
                        attempts: int) -> int: ...
    def dead_letters(self, ids: list[int] | None = None, *, include_requeued: bool = False) -> list[dict]: ...
    def mark_requeued(self, dead_id: int) -> None: ...
    def get_cursor(self, source: str) -> str | None: ...
    def set_cursor(self, source: str, cursor: str | None) -> None: ...


class GroupSync(Protocol):
    """Groups that DMS connectors report, kept for ACL resolution (acl.directory.SyncBackend)."""

    def sync_groups(self, source: str, edges: list[tuple[str, str, str]]) -> None: ...
    def groups_of(self, user: str) -> list[tuple[str, str]]: ...


class QualityLog(Protocol):
    """Extraction quality over time and its alerts (ingest.obs.quality)."""

    def quality_gauges(self) -> dict[str, dict]: ...
    def save_quality_snapshot(self, period: str, ts: float, gauges: dict[str, dict]) -> None: ...
    def quality_snapshots(self, source: str | None = None) -> list[dict]: ...
    def sync_quality_alerts(self, found: dict[tuple[str, str], dict],
                            now: float) -> tuple[list[dict], list[tuple]]: ...
    def open_quality_alerts(self) -> list[dict]: ...


PROTOCOLS: tuple[type, ...] = (Lifecycle, Registry, ChunkIndex, Entities, EmbeddingCache, ModelSwitch, AuditLog,
                               Outbox, OperationsLog, GroupSync, QualityLog)


class Store(Lifecycle, Registry, ChunkIndex, Entities, EmbeddingCache, ModelSwitch, AuditLog, Outbox, OperationsLog,
            GroupSync, QualityLog, Protocol):
    """Every protocol: what ``ingest.stores.open_store`` returns."""


def members(protocol: type) -> frozenset[str]:
    """The public names a protocol declares (its own, not its bases')."""
    return frozenset(n for n in vars(protocol) if not n.startswith("_"))
