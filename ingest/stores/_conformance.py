"""Static proof that both stores implement every store protocol (ingest.stores.base): run by
``python -m mypy`` (configured in pyproject.toml, run by .ci/run). A store that loses a method, or
whose method no longer matches the protocol's signature, fails the type check. Never imported at
run time."""
from __future__ import annotations

from ingest.stores.base import (AuditLog, ChunkIndex, EmbeddingCache, Entities, GroupSync, Lifecycle, ModelSwitch,
                                OperationsLog, Outbox, QualityLog, Registry, Store)
from ingest.stores.postgres import PostgresStore
from ingest.stores.sqlite import SQLiteStore


_EVERY = tuple[Lifecycle, Registry, ChunkIndex, Entities, EmbeddingCache, ModelSwitch, AuditLog, Outbox, OperationsLog,
               GroupSync, QualityLog, Store]


def _sqlite(s: SQLiteStore) -> _EVERY:
    return s, s, s, s, s, s, s, s, s, s, s, s


def _postgres(s: PostgresStore) -> _EVERY:
    return s, s, s, s, s, s, s, s, s, s, s, s
