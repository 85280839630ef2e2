"""The store contract (see DESIGN.md, Stores) and the records that cross it."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from acl.model import ACL


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
    entities: dict = field(default_factory=dict)  # {"TYPE:key": [display, count]} (ingest.pipeline.nlp)

    @property
    def embed_hash(self) -> str:
        """The embedding cache key: the hash of exactly what the model embeds (text and context)."""
        from ingest.pipeline.chunking import embed_text, text_hash

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


class Store(Protocol):
    def apply(self, doc: DocRecord, chunks: list[ChunkRecord]) -> None: ...
    def set_acl(self, doc_id: str, acl: ACL) -> None: ...
    def delete(self, doc_id: str) -> None: ...
    def search(self, query: str, query_vector, tokens: frozenset[str], k: int,
               filters: dict | None = None) -> list[Hit]: ...
    def schema_version(self) -> int: ...
    def migrate(self) -> None: ...
