"""Query vectors, cached per (model, query): shared by the store's search (``ingest.search.index``)
and a sink's (``ingest.search.sink_index``)."""
from __future__ import annotations

import threading
from collections import OrderedDict

from ingest.pipeline.embed import query_embedder


class QueryCache:
    """(model, query) -> vector, least recently used dropped first; thread-safe."""

    def __init__(self, size: int):
        self.size = size
        self._d: OrderedDict = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, model_id: str, query: str):
        key = (model_id, query)
        with self._lock:
            v = self._d.get(key)
            if v is not None:
                self._d.move_to_end(key)
                self.hits += 1
                return v
            self.misses += 1
        v = query_embedder(model_id).encode([query])[0]
        v.setflags(write=False)
        if self.size:
            with self._lock:
                self._d[key] = v
                while len(self._d) > self.size:
                    self._d.popitem(last=False)
        return v
