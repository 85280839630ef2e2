"""Chroma sink (``chromadb``'s HTTP client against a Chroma server, e.g. ``chroma run``).

URL: ``chroma://[:TOKEN@]host:8000[?collection=NAME&tenant=T&database=D]`` (``chroma+https://``
for TLS; TOKEN is sent as ``Authorization: Bearer``).

Records: id = chunk_id, the embedding (cosine space), document = the chunk text, metadata:
``doc_id``, ``chunk_id``, ``model_id``, ``allow``, ``deny``, ``labels`` (string lists; an empty
list is stored as ``["-"]``, a token nobody holds, since Chroma refuses empty lists) and
``payload`` (the whole payload as JSON).
The filter: ``{"$and": [{"$or": [{"allow": {"$contains": t}} for t in tokens]},
{"$and": [{"deny": {"$not_contains": t}} for t in tokens]}]}`` (a one-element ``$or``/``$and``
is written as its element).
"""
from __future__ import annotations

import json

import numpy as np

from ingest.stores.sinks import NONE, VectorSink


def _one_or(op: str, parts: list[dict]) -> dict:
    return parts[0] if len(parts) == 1 else {op: parts}


def acl_where(tokens: list[str]) -> dict:
    return {"$and": [_one_or("$or", [{"allow": {"$contains": t}} for t in tokens]),
                     _one_or("$and", [{"deny": {"$not_contains": t}} for t in tokens])]}


class ChromaSink(VectorSink):
    def __init__(self, url: str):
        super().__init__(url)
        import chromadb

        headers = {"Authorization": f"Bearer {self.secret}"} if self.secret else None
        kw = {k: self.options[k] for k in ("tenant", "database") if k in self.options}
        self.client = chromadb.HttpClient(host=self.host or "localhost", port=self.port or 8000,
                                          ssl=self.scheme == "chroma+https", headers=headers, **kw)
        self._cols: dict = {}

    def _col(self, name):
        c = self._cols.get(name)
        if c is None:
            c = self._cols[name] = self.client.get_collection(name)
        return c

    def _list(self) -> list[str]:
        return [c.name for c in self.client.list_collections() if c.name.startswith(self.prefix + "_")]

    def _create(self, name: str, dim: int) -> None:
        self._cols[name] = self.client.get_or_create_collection(
            name, metadata={"hnsw:space": "cosine", "dim": dim}, embedding_function=None)

    @staticmethod
    def _meta(p: dict) -> dict:
        return {"doc_id": p["doc_id"], "chunk_id": p["chunk_id"], "model_id": p["model_id"],
                "allow": p["allow"] or [NONE], "deny": p["deny"] or [NONE], "labels": p["labels"] or [NONE],
                "payload": json.dumps(p, sort_keys=True)}

    def _upsert(self, name, points) -> None:
        self._col(name).upsert(ids=[p["chunk_id"] for p, _ in points],
                               embeddings=np.stack([v for _, v in points]),
                               metadatas=[self._meta(p) for p, _ in points],
                               documents=[p["text"] for p, _ in points])

    def _update(self, name, payloads) -> None:
        self._col(name).update(ids=[p["chunk_id"] for p in payloads], metadatas=[self._meta(p) for p in payloads])

    def _delete(self, name, doc_ids, keep) -> None:
        w = {"doc_id": {"$in": list(doc_ids)}}
        if keep:
            w = {"$and": [w, {"chunk_id": {"$nin": list(keep)}}]}
        self._col(name).delete(where=w)

    def _get(self, name, where, include, page: int = 1000):
        off = 0
        while True:
            r = self._col(name).get(where=where, include=include, limit=page, offset=off)
            yield r
            if len(r["ids"]) < page:
                return
            off += page

    def _fetch(self, name, doc_ids, vectors):
        if not doc_ids:
            return []
        out = []
        for r in self._get(name, {"doc_id": {"$in": list(doc_ids)}}, ["metadatas", "embeddings"] if vectors
                           else ["metadatas"]):
            for i, m in enumerate(r["metadatas"]):
                out.append((json.loads(m["payload"]),
                            np.asarray(r["embeddings"][i], dtype=np.float32) if vectors else None))
        return out

    def _doc_ids(self, name) -> set[str]:
        return {m["doc_id"] for r in self._get(name, None, ["metadatas"]) for m in r["metadatas"]}

    def _search(self, name, vector, tokens, k):
        r = self._col(name).query(query_embeddings=[vector], n_results=k, where=acl_where(tokens),
                                  include=["metadatas", "distances"])
        return [(json.loads(m["payload"]), 1.0 - d) for m, d in zip(r["metadatas"][0], r["distances"][0])]

    def drop(self) -> None:
        for n in self._list():
            self.client.delete_collection(n)
        self._names, self._cols = None, {}
