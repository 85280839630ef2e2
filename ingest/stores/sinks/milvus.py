"""Milvus sink (``pymilvus``; Milvus Lite from ``milvus-lite`` for an embedded file).

URLs: ``milvus://[:TOKEN@]host:19530[?collection=NAME]`` (``milvus+https://`` for TLS), or
``milvus+lite:///abs/file.db[?collection=NAME]``: Milvus Lite, a file one process may open at a
time (the pump releases it when idle).

Collection schema: ``id`` (VARCHAR primary key = chunk_id), ``vector`` (FLOAT_VECTOR, the model's
dimension, FLAT index, COSINE), ``doc_id`` (VARCHAR), ``allow``, ``deny``, ``labels``
(ARRAY<VARCHAR>, up to 4096 entries of 512 bytes), ``text`` (VARCHAR, up to 65,535 bytes) and
``payload`` (JSON: the rest of the payload). An ACL-only change is a partial upsert
(``partial_update=True``): no vector is sent.
The filter: ``array_contains_any(allow, ["user:x", ...]) and not array_contains_any(deny, ["user:x", ...])``
(the caller's tokens as a JSON list of strings).
"""
from __future__ import annotations

import json

import numpy as np

from ingest.stores.sinks import SinkError, VectorSink

_FIELDS = ("doc_id", "allow", "deny", "labels", "text", "payload")
_OWN = ("doc_id", "chunk_id", "allow", "deny", "labels", "text")  # fields of their own, not in payload


def lit(values) -> str:
    """A list of strings as a Milvus expression literal (Milvus Lite has no filter templating)."""
    return json.dumps(list(values), ensure_ascii=False)


def acl_filter(tokens: list[str]) -> str:
    t = lit(tokens)
    return f"array_contains_any(allow, {t}) and not array_contains_any(deny, {t})"


class MilvusSink(VectorSink):
    def __init__(self, url: str):
        super().__init__(url)
        from pymilvus import MilvusClient

        if self.scheme == "milvus+lite":
            if not self.path.startswith("/") or not self.path.endswith(".db"):
                raise SinkError("milvus+lite:///ABSOLUTE/FILE.db: Milvus Lite needs an absolute path ending in .db")
            self.local = True
            self.client = MilvusClient(self.path)  # fails while another process holds the file
        else:
            proto = "https" if self.scheme == "milvus+https" else "http"
            self.client = MilvusClient(uri=f"{proto}://{self.host or 'localhost'}:{self.port or 19530}",
                                       token=self.secret or "")

    def close(self) -> None:
        self.client.close()
        if self.local:  # Milvus Lite serves the file from a thread of this process until released
            from milvus_lite.server_manager import server_manager_instance

            server_manager_instance.release_server(self.path)

    def _list(self) -> list[str]:
        names = [n for n in self.client.list_collections() if n.startswith(self.prefix + "_")]
        for n in names:  # a collection is "released" after the server (or Milvus Lite's file) was reopened:
            if self.client.get_load_state(n)["state"].name != "Loaded":  # load it before any query or search
                self.client.load_collection(n)
        return names

    def _create(self, name: str, dim: int) -> None:
        from pymilvus import DataType, MilvusClient

        s = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        s.add_field("id", DataType.VARCHAR, is_primary=True, max_length=2048)
        s.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
        s.add_field("doc_id", DataType.VARCHAR, max_length=2048)
        for f in ("allow", "deny", "labels"):
            s.add_field(f, DataType.ARRAY, element_type=DataType.VARCHAR, max_capacity=4096, max_length=512)
        s.add_field("text", DataType.VARCHAR, max_length=65535)
        s.add_field("payload", DataType.JSON)
        ip = self.client.prepare_index_params()
        ip.add_index("vector", index_type="FLAT", metric_type="COSINE")
        self.client.create_collection(name, schema=s, index_params=ip)

    @staticmethod
    def _row(p: dict) -> dict:
        return {"id": p["chunk_id"], "doc_id": p["doc_id"], "allow": p["allow"], "deny": p["deny"],
                "labels": p["labels"], "text": p["text"], "payload": {k: v for k, v in p.items() if k not in _OWN}}

    @staticmethod
    def _payload(r: dict) -> dict:
        p = dict(r["payload"])
        p.update(chunk_id=r["id"], doc_id=r["doc_id"], allow=list(r["allow"]), deny=list(r["deny"]),
                 labels=list(r["labels"]), text=r["text"])
        return p

    def _upsert(self, name, points) -> None:
        self.client.upsert(name, [{**self._row(p), "vector": v} for p, v in points])

    def _update(self, name, payloads) -> None:
        self.client.upsert(name, [self._row(p) for p in payloads], partial_update=True)

    def _delete(self, name, doc_ids, keep) -> None:
        flt = f"doc_id in {lit(doc_ids)}" + (f" and id not in {lit(keep)}" if keep else "")
        self.client.delete(name, filter=flt)

    def _query(self, name, flt, fields):
        it = self.client.query_iterator(name, batch_size=1000, filter=flt, output_fields=fields)
        try:
            while True:
                rows = it.next()
                if not rows:
                    return
                yield from rows
        finally:
            it.close()

    def _fetch(self, name, doc_ids, vectors):
        if not doc_ids:
            return []
        fields = ["id", *_FIELDS] + (["vector"] if vectors else [])
        return [(self._payload(r), np.asarray(r["vector"], dtype=np.float32) if vectors else None)
                for r in self._query(name, f"doc_id in {lit(doc_ids)}", fields)]

    def _doc_ids(self, name) -> set[str]:
        return {r["doc_id"] for r in self._query(name, "", ["doc_id"])}

    def _search(self, name, vector, tokens, k):
        r = self.client.search(name, [vector.tolist()], limit=k, filter=acl_filter(tokens),
                               output_fields=["id", *_FIELDS], search_params={"metric_type": "COSINE"})
        return [(self._payload(h["entity"] | {"id": h["id"]}), h["distance"]) for h in r[0]]

    def drop(self) -> None:
        for n in self._list():
            self.client.drop_collection(n)
        self._names = None
