"""Qdrant sink (``qdrant-client``).

URLs: ``qdrant://[:API_KEY@]host:6333[?collection=NAME]`` (``qdrant+https://`` for TLS), or
``qdrant+local:///abs/dir[?collection=NAME]``: Qdrant's embedded local mode, the same client
calls against files that one process may open at a time (the pump releases them when idle).

Points: id = uuid5(chunk_id), the vector (cosine), the payload as in ``ingest.stores.sinks``.
Keyword payload indexes on ``allow``, ``deny``, ``doc_id``, ``chunk_id`` and ``labels``.
The filter: ``must: allow MatchAny(tokens)``, ``must_not: deny MatchAny(tokens)``.

Local mode is qdrant-client's pure-Python engine: no payload index (every filtered read or
delete evaluates the filter on every point in Python, each ``MatchAny`` value compared one by
one), and one SQLite commit, so one fsync, per point written. The sink therefore, in local
mode only, (1) keeps its own map of the chunk ids each document holds, read by one scroll
when a collection is first used (the client holds the files alone, so only this sink changes
them afterwards), and replaces a document's chunks, deletes, ACL-only updates and reads by
point id; (2) switches each collection's file to WAL with ``synchronous=NORMAL`` and
checkpoints once at the end of every ``replicate`` (the batch is on disk before the pump
moves the cursor): one pair of fsyncs per batch instead of one per point. Against a server
the same calls are delete-by-filter and filtered scrolls over the payload indexes.
"""
from __future__ import annotations

import logging
import sqlite3
import uuid
import warnings

import numpy as np

from ingest.stores.sinks import SinkError, VectorSink

_NS = uuid.UUID("6f1d3c2e-9b7a-4e51-8c0d-2a4b6e8f1017")
_INDEXED = ("allow", "deny", "doc_id", "chunk_id", "labels")
_LOCAL_SCROLL = 10_000  # local mode sorts every id for each page: few large pages


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
        self._held: dict[str, dict[str, set[str]]] = {}  # local mode: collection -> doc_id -> chunk ids
        self._files: dict[str, sqlite3.Connection] = {}  # local mode: collection -> its SQLite file, tuned
        self._untuned: set[str] = set()  # local mode: collections whose file could not be tuned (said once)

    def close(self) -> None:
        self._held, self._files = {}, {}
        self.client.close()

    # -- local mode: point ids from the sink's own map, one fsync pair per batch -----------------
    def _local_file(self, name: str) -> None:
        """WAL + synchronous=NORMAL on the collection's SQLite file (commits without fsync; the
        checkpoint in ``replicate`` makes the batch durable). Left as it is when the client's
        internals are not the ones known here: slower, still correct."""
        if not self.local or name in self._files:
            return
        coll = getattr(getattr(self.client, "_client", None), "collections", {}).get(name)
        conn = getattr(getattr(coll, "storage", None), "storage", None)
        if isinstance(conn, sqlite3.Connection):
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._files[name] = conn
        elif name not in self._untuned:  # said once: the sink works, one fsync per point (about 30x slower)
            self._untuned.add(name)
            logging.getLogger("ingest.sinks.qdrant").warning(
                "qdrant %s: this qdrant-client's local storage is not the one known here; its file is left "
                "untuned (correct, but every point is its own transaction)", name)

    def replicate(self, states, meta_only=()) -> None:
        super().replicate(states, meta_only)
        for conn in self._files.values():  # on disk before the pump moves the sink's cursor
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def _held_in(self, name: str) -> dict[str, set[str]]:
        held = self._held.get(name)
        if held is None:
            held = self._held[name] = {}
            for p in self._scroll(name, None, False, payload=["doc_id", "chunk_id"]):
                held.setdefault(p.payload["doc_id"], set()).add(p.payload["chunk_id"])
        return held

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
        if self.local:  # mapped before the write: a map holding more than the files is harmless (deletes by
            self._local_file(name)  # id skip what is absent), one holding less would leave orphans
            held = self._held_in(name)
            for p, _ in points:
                held.setdefault(p["doc_id"], set()).add(p["chunk_id"])
        self.client.upsert(name, points=[m.PointStruct(id=point_id(p["chunk_id"]), vector=v.tolist(), payload=p)
                                         for p, v in points])

    def _update(self, name, payloads) -> None:
        from qdrant_client import models as m

        self._local_file(name)
        self.client.batch_update_points(name, [m.OverwritePayloadOperation(
            overwrite_payload=m.SetPayload(payload=p, points=[point_id(p["chunk_id"])])) for p in payloads])

    @staticmethod
    def _docs(doc_ids):
        from qdrant_client import models as m

        return m.FieldCondition(key="doc_id", match=m.MatchAny(any=list(doc_ids)))

    def _delete(self, name, doc_ids, keep) -> None:
        from qdrant_client import models as m

        if self.local:  # by point id: a filter is evaluated on every point in Python there
            self._local_file(name)
            held, keep = self._held_in(name), set(keep)
            drop = {d: {c for c in held.get(d, ()) if c not in keep} for d in doc_ids}
            ids = [point_id(c) for cs in drop.values() for c in cs]
            if ids:
                self.client.delete(name, points_selector=m.PointIdsList(points=ids))
            for d, cs in drop.items():
                if held.get(d) is not None and cs:
                    held[d] -= cs
                    if not held[d]:
                        del held[d]
            return
        f = m.Filter(must=[self._docs(doc_ids)],
                     must_not=[m.FieldCondition(key="chunk_id", match=m.MatchAny(any=keep))] if keep else None)
        self.client.delete(name, points_selector=m.FilterSelector(filter=f))

    def _scroll(self, name, flt, vectors: bool, payload=True):
        offset = None
        while True:
            pts, offset = self.client.scroll(name, scroll_filter=flt, limit=_LOCAL_SCROLL if self.local else 512,
                                             offset=offset, with_payload=payload, with_vectors=vectors)
            yield from pts
            if offset is None:
                return

    def _fetch(self, name, doc_ids, vectors):
        from qdrant_client import models as m

        if not doc_ids:
            return []
        if self.local:
            held = self._held_in(name)
            ids = [point_id(c) for d in doc_ids for c in sorted(held.get(d, ()))]
            return [(p.payload, np.asarray(p.vector, dtype=np.float32) if vectors else None)
                    for p in (self.client.retrieve(name, ids, with_payload=True, with_vectors=vectors) if ids else [])]
        return [(p.payload, np.asarray(p.vector, dtype=np.float32) if vectors else None)
                for p in self._scroll(name, m.Filter(must=[self._docs(doc_ids)]), vectors)]

    def _doc_ids(self, name) -> set[str]:
        if self.local:  # read from the files again (what ``sync --check`` compares), the map renewed
            self._held.pop(name, None)
            return set(self._held_in(name))
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
        self._names, self._held, self._files = None, {}, {}
