"""``ingest.open_index(SINK_URL)``: vector search run inside a vector-database sink
(``ingest.stores.sinks``) under its native ACL filter."""
from __future__ import annotations

from ingest.search.query_cache import QueryCache
from ingest.stores.base import Hit
from ingest.stores.sinks import SinkError, VectorSink


class SinkIndex:
    """``ingest.open_index(SINK_URL)``: vector search run inside a sink with its native ACL filter,
    the caller's principal resolved through the same directory as the primary store's search."""

    def __init__(self, sink: VectorSink, directory, model_id: str | None = None, query_cache: int = 256):
        self.sink, self.directory = sink, directory
        self._model_id = model_id
        self.query_cache = QueryCache(query_cache)

    @property
    def model_id(self) -> str:
        if self._model_id is None:
            models = self.sink.models()
            if len(models) != 1:
                raise SinkError(f"sink holds {len(models)} models ({', '.join(sorted(models)) or 'none'}): "
                                "give model_id")
            self._model_id = next(iter(models))
        return self._model_id

    def _qvec(self, model_id: str, query: str):
        return self.query_cache.get(model_id, query)

    def search(self, query: str, principal=None, k: int = 10, filters: dict | None = None, mode: str = "vector",
               audit: bool = False, **_) -> list[Hit]:
        if not isinstance(query, str) or not query.strip():
            raise ValueError("search: the query is empty")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"search: k must be an integer of at least 1, got {k!r}")
        if mode != "vector":
            raise ValueError(f"search: a vector-database sink answers vector searches only, not {mode!r}")
        if filters:
            raise ValueError("search: filters are not supported against a sink yet (filter by labels in the "
                             "store's own query language, see the README)")
        tokens = self.directory.resolve(principal)
        model = self.model_id
        return self.sink.search(self._qvec(model, query), tokens, k, model)
