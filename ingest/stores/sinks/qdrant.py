"""Qdrant sink (``qdrant-client``).

URLs: ``qdrant://[:API_KEY@]host:6333[?collection=NAME]`` (``qdrant+https://`` for TLS), or
``qdrant+local:///abs/dir[?collection=NAME]``: Qdrant's embedded local mode, the same client
calls against files that one process may open at a time (the pump releases them when idle).

Points: id = uuid5(chunk_id), the vector (cosine), the payload as in ``ingest.stores.sinks``.
Keyword payload indexes on ``allow``, ``deny``, ``doc_id``, ``chunk_id`` and ``labels``.
The filter: ``must: allow MatchAny(tokens)``, ``must_not: deny MatchAny(tokens)``.
"""
from __future__ import annotations

import uuid
import warnings

import numpy as np

from ingest.stores.sinks import SinkError, VectorSink

_NS = uuid.UUID("6f1d3c2e-9b7a-4e51-8c0d-2a4b6e8f1017")
_INDEXED = ("allow", "deny", "doc_id", "chunk_id", "labels")


def point_id(chunk_id: str) -> str:
    return str(uuid.uuid5(_NS, chunk_id))


class QdrantSink(VectorSink):
    def __init__(self, url: str):
        super().__init__(url)
        from qdrant_client import QdrantClient

        if self.scheme == "qdrant+local":
            if not self.path.startswith("/"):
                raise SinkError("qdrant+local:///ABSOLUTE/DIR: the local-mode directory must be absolute")
            self.local = True
            self.client = QdrantClient(path=self.path)  # raises while another process holds the directory
        else:
            self.client = QdrantClient(host=self.host or "localhost", port=self.port or 6333, api_key=self.secret,
                                       https=self.scheme == "qdrant+https", timeout=30)

    def close(self) -> None:
        self.client.close()

    def _list(self) -> list[str]:
        return [c.name for c in self.client.get_collections().collections if c.name.startswith(self.prefix + "_")]

    def _create(self, name: str, dim: int) -> None:
        from qdrant_client import models as m

        self.client.create_collection(name, vectors_config=m.VectorParams(size=dim, distance=m.Distance.COSINE))
        with warnings.catch_warnings():  # local mode: indexes have no effect there (it scans), harmless
            warnings.simplefilter("ignore")
            for f in _INDEXED:
                self.client.create_payload_index(name, f, m.PayloadSchemaType.KEYWORD)

    def _upsert(self, name, points) -> None:
        from qdrant_client import models as m

        dim = self.client.get_collection(name).config.params.vectors.size if self._names.get(name) is None \
            else self._names[name]
        self._names[name] = dim
        if len(points[0][1]) != dim:
            raise SinkError(f"qdrant {name}: vectors of {len(points[0][1])} dimensions, the collection has {dim}")
        self.client.upsert(name, points=[m.PointStruct(id=point_id(p["chunk_id"]), vector=v.tolist(), payload=p)
                                         for p, v in points])

    def _update(self, name, payloads) -> None:
        from qdrant_client import models as m

        self.client.batch_update_points(name, [m.OverwritePayloadOperation(
            overwrite_payload=m.SetPayload(payload=p, points=[point_id(p["chunk_id"])])) for p in payloads])

    @staticmethod
    def _docs(doc_ids):
        from qdrant_client import models as m

        return m.FieldCondition(key="doc_id", match=m.MatchAny(any=list(doc_ids)))

    def _delete(self, name, doc_ids, keep) -> None:
        from qdrant_client import models as m

        f = m.Filter(must=[self._docs(doc_ids)],
                     must_not=[m.FieldCondition(key="chunk_id", match=m.MatchAny(any=keep))] if keep else None)
        self.client.delete(name, points_selector=m.FilterSelector(filter=f))

    def _scroll(self, name, flt, vectors: bool, payload=True):
        offset = None
        while True:
            pts, offset = self.client.scroll(name, scroll_filter=flt, limit=512, offset=offset,
                                             with_payload=payload, with_vectors=vectors)
            yield from pts
            if offset is None:
                return

    def _fetch(self, name, doc_ids, vectors):
        from qdrant_client import models as m

        if not doc_ids:
            return []
        return [(p.payload, np.asarray(p.vector, dtype=np.float32) if vectors else None)
                for p in self._scroll(name, m.Filter(must=[self._docs(doc_ids)]), vectors)]

    def _doc_ids(self, name) -> set[str]:
        return {p.payload["doc_id"] for p in self._scroll(name, None, False, payload=["doc_id"])}

    def _search(self, name, vector, tokens, k):
        from qdrant_client import models as m

        f = m.Filter(must=[m.FieldCondition(key="allow", match=m.MatchAny(any=tokens))],
                     must_not=[m.FieldCondition(key="deny", match=m.MatchAny(any=tokens))])
        r = self.client.query_points(name, query=vector.tolist(), query_filter=f, limit=k, with_payload=True)
        return [(p.payload, p.score) for p in r.points]

    def drop(self) -> None:
        for n in self._list():
            self.client.delete_collection(n)
        self._names = None
