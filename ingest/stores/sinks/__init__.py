"""Vector-database sinks: the outbox pump (``ingest.stores.outbox``) keeps a vector database
current, with permissions, and each sink can answer a permission-aware search itself.

A sink is one module holding one :class:`VectorSink` subclass; it is found by URL scheme
(:data:`SCHEMES` for the built-in ones) or, for third parties, by an entry point in the group
``ingest.sinks`` whose name is the scheme and whose value is the class::

    [project.entry-points."ingest.sinks"]
    mydb = "my_package.sink:MyDBSink"        # url: mydb://host:port

The contract (what the pump calls, all idempotent; a document's rows arrive in outbox order):

* ``replicate(states, meta_only=())``: make these documents exactly as the primary has them
  (``states``: ``export_docs`` of the primary; ``None``: gone). A document's chunks are
  upserted, then the chunks the sink still holds for it that the new version lacks are deleted
  (a shorter version leaves no orphan). For the documents in ``meta_only`` (their outbox rows
  since the last pass were ACL changes, moves or touches) only the payload is re-sent, no
  vector -- unless the sink's chunk ids for the document differ from the primary's, when the
  document is replaced in full.
* ``all_doc_ids()``, ``export(doc_ids)`` (payloads and vectors, for ``ingest sync --check``),
  ``search(vector, tokens, k, model_id)``, ``close()``.
* ``stats``: calls, points and vectors sent, vector bytes sent (what an ACL-only change costs).

The sink's position (the last outbox row it holds) is the primary's ``sink_cursors`` row,
reported by ``ingest status``, ``/metrics`` and ``ingest sync``.

What a chunk is stored as (every sink keeps the same payload; see the README per sink)::

    chunk_id, doc_id, idx, text, page, section, labels, flags, doc_version, acl_version, model_id,
    allow, deny, uri, source, external_id, parent_id,
    metadata: {every other registry and chunk field the primary store has}

One collection per store prefix and model: ``<collection>_<model slug>_<hash>``; the vector
size comes from the vectors themselves (the model's), never a constant. A document without
chunks (failed, quarantined, empty) has no points.

The filter, the same rule as the primary store's search (deny wins; tokens resolved by the
same principal directory): a chunk is readable by a caller holding ``tokens`` when
``allow`` contains any of ``tokens`` AND ``deny`` contains none of them.
"""
from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from urllib.parse import parse_qs, unquote, urlsplit

import numpy as np

from acl.model import ACL

from ingest.stores.base import Hit
from ingest.stores.common import diff_by_doc

SCHEMES: dict[str, str] = {  # URL scheme -> "module:Class"
    "qdrant": "ingest.stores.sinks.qdrant:QdrantSink",
    "qdrant+https": "ingest.stores.sinks.qdrant:QdrantSink",
    "qdrant+local": "ingest.stores.sinks.qdrant:QdrantSink",
    "chroma": "ingest.stores.sinks.chroma:ChromaSink",
    "chroma+https": "ingest.stores.sinks.chroma:ChromaSink",
    "milvus": "ingest.stores.sinks.milvus:MilvusSink",
    "milvus+https": "ingest.stores.sinks.milvus:MilvusSink",
    "milvus+lite": "ingest.stores.sinks.milvus:MilvusSink",
}
ENTRY_POINT_GROUP = "ingest.sinks"
NONE = "-"  # stands for an empty token list where a store cannot hold one; no principal holds it
# primary-side bookkeeping that is not part of a chunk's state in a sink
_SKIP = {"vec", "first_seen", "updated_at", "indexed_at", "created_at", "acl", "content_version", "n_chunks"}
_TOP_DOC = ("doc_id", "source", "external_id", "uri", "acl_version", "parent_id")
_TOP_CHUNK = ("chunk_id", "idx", "text", "page", "section", "doc_version", "model_id")
PAYLOAD_KEYS = (*_TOP_CHUNK, *_TOP_DOC, "labels", "flags", "allow", "deny", "metadata")


class SinkError(ValueError):
    """A sink URL or sink state that cannot be used (bad URL, vector size mismatch)."""


def scheme_of(url: str) -> str | None:
    m = re.match(r"^([a-z][a-z0-9+.-]*)://", str(url))
    return m.group(1) if m else None


def _entry_points() -> dict[str, object]:
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def sink_class(url: str):
    """The sink class for ``url``, or None when the URL is a store (SQLite path, PostgreSQL)."""
    scheme = scheme_of(url)
    if scheme is None or scheme in ("postgresql", "postgres", "sqlite"):
        return None
    if scheme in SCHEMES:
        import importlib

        mod, cls = SCHEMES[scheme].split(":")
        return getattr(importlib.import_module(mod), cls)
    ep = _entry_points().get(scheme)
    if ep is None:
        known = sorted(set(SCHEMES) | set(_entry_points()))
        raise SinkError(f"sink {scheme}://...: no sink for this URL scheme (known: {', '.join(known)}; "
                        f"third-party sinks register an entry point in the group {ENTRY_POINT_GROUP!r})")
    return ep.load()


def is_vector_sink(url: str) -> bool:
    scheme = scheme_of(url)
    return scheme is not None and scheme not in ("postgresql", "postgres", "sqlite")


def open_sink(url: str) -> "VectorSink":
    cls = sink_class(url)
    if cls is None:
        raise SinkError(f"{url!r} is a store URL, not a vector-database sink")
    return cls(url)


def _loads(v):
    if isinstance(v, str) and v[:1] in "[{":
        try:
            return json.loads(v)
        except ValueError:
            return v
    return v


def chunk_payloads(state: dict) -> list[tuple[dict, bytes]]:
    """A document's state as the primary exports it -> (payload, float32 vector bytes) per chunk."""
    d = state["doc"]
    acl = ACL.from_json(d["acl"])
    doc_meta = {k: _loads(v) for k, v in dict(d).items() if k not in _SKIP and k not in _TOP_DOC
                and k not in ("labels", "flags")}
    flags = _loads(d["flags"]) or []
    out = []
    for c in state["chunks"]:
        c = dict(c)
        p = {k: c.get(k) for k in _TOP_CHUNK}
        p.update({k: d[k] for k in _TOP_DOC})
        p["section"] = p["section"] or ""
        p["labels"] = list(_loads(c.get("labels")) or _loads(d.get("labels")) or [])
        p["flags"] = list(flags)
        p["allow"], p["deny"] = sorted(acl.allow), sorted(acl.deny)
        p["metadata"] = {**doc_meta, **{k: _loads(v) for k, v in c.items() if k not in _SKIP and k not in p}}
        out.append((p, c["vec"]))
    return out


def slug(model_id: str) -> str:
    s = re.sub(r"[^A-Za-z0-9]+", "_", model_id).strip("_")[:40]
    return f"{s}_{hashlib.sha1(model_id.encode()).hexdigest()[:8]}"


class VectorSink:
    """Base of every vector-database sink: the generic half of the contract (replace, ACL-only
    update, delete, compare) over a few store primitives a subclass implements."""

    local = False  # True: embedded files one process may open at a time (released when the pump is idle)
    batch = 256    # points per upsert call

    def __init__(self, url: str):
        self.url = url
        u = urlsplit(url)
        self.scheme, self.host, self.port = u.scheme, u.hostname, u.port
        self.path = unquote(u.path)
        self.secret = unquote(u.password) if u.password else None
        q = {k: v[-1] for k, v in parse_qs(u.query).items()}
        self.prefix = q.pop("collection", "ingest")
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,63}", self.prefix):
            raise SinkError(f"sink {self.scheme}: collection={self.prefix!r}: use letters, digits and _ "
                            "(starting with a letter, at most 64)")
        self.options = q
        self.stats: Counter = Counter()
        self._names: dict[str, str] | None = None  # collection name -> dim, cached

    # -- primitives (one store) ------------------------------------------------------
    def _list(self) -> list[str]:
        """Names of this sink's collections (those starting with the prefix)."""
        raise NotImplementedError

    def _create(self, name: str, dim: int) -> None:
        raise NotImplementedError

    def _upsert(self, name: str, points: list[tuple[dict, np.ndarray]]) -> None:
        raise NotImplementedError

    def _update(self, name: str, payloads: list[dict]) -> None:
        """Replace the payload of existing points; no vector is sent."""
        raise NotImplementedError

    def _delete(self, name: str, doc_ids: list[str], keep: list[str]) -> None:
        """Delete the points of ``doc_ids`` whose chunk id is not in ``keep``."""
        raise NotImplementedError

    def _fetch(self, name: str, doc_ids: list[str], vectors: bool) -> list[tuple[dict, np.ndarray | None]]:
        raise NotImplementedError

    def _doc_ids(self, name: str) -> set[str]:
        raise NotImplementedError

    def _search(self, name: str, vector: np.ndarray, tokens: list[str], k: int) -> list[tuple[dict, float]]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def drop(self) -> None:
        """Drop every collection of this sink (tests, ``ingest sync --rebuild --drop``)."""
        raise NotImplementedError

    # -- the generic contract ----------------------------------------------------------
    def collection(self, model_id: str) -> str:
        return f"{self.prefix}_{slug(model_id)}"

    def collections(self) -> list[str]:
        if self._names is None:
            self._names = {n: None for n in self._list()}
        return list(self._names)

    def _ensure(self, model_id: str, dim: int) -> str:
        name = self.collection(model_id)
        if name not in self.collections():
            self._create(name, dim)
            self._names[name] = dim
        return name

    def replicate(self, states: dict[str, dict | None], meta_only=()) -> None:
        meta_only = set(meta_only)
        gone = [d for d, st in states.items() if st is None or not st["chunks"]]
        cand = {d: chunk_payloads(st) for d, st in states.items() if d not in gone}
        by_model: dict[str, list[str]] = {}
        for d, pts in cand.items():
            by_model.setdefault(pts[0][0]["model_id"], []).append(d)
        full: dict[str, list[str]] = {}
        for model, docs in by_model.items():
            name = self.collection(model)
            meta = [d for d in docs if d in meta_only]
            if meta and name in self.collections():
                held: dict[str, set] = {}
                for p, _ in self._fetch(name, meta, vectors=False):
                    held.setdefault(p["doc_id"], set()).add(p["chunk_id"])
                self.stats["calls"] += 1
                same = [d for d in meta if held.get(d) == {p["chunk_id"] for p, _ in cand[d]}]
                payloads = [p for d in same for p, _ in cand[d]]
                for i in range(0, len(payloads), self.batch):
                    self._update(name, payloads[i:i + self.batch])
                    self.stats["calls"] += 1
                    self.stats["points"] += len(payloads[i:i + self.batch])
                docs = [d for d in docs if d not in same]
            full[model] = docs
        for model, docs in full.items():
            if not docs:
                continue
            pts = [(p, np.frombuffer(v, dtype=np.float32)) for d in docs for p, v in cand[d]]
            name = self._ensure(model, len(pts[0][1]))
            for i in range(0, len(pts), self.batch):
                part = pts[i:i + self.batch]
                self._upsert(name, part)
                self.stats["calls"] += 1
                self.stats["points"] += len(part)
                self.stats["vectors"] += len(part)
                self.stats["vector_bytes"] += sum(v.nbytes for _, v in part)
            self._delete(name, docs, [p["chunk_id"] for p, _ in pts])  # what a shorter version no longer has
            self.stats["calls"] += 1
        for name in self.collections():  # gone, emptied, or now under another model
            drop = gone + [d for model, docs in full.items() if self.collection(model) != name for d in docs]
            if drop:
                self._delete(name, drop, [])
                self.stats["calls"] += 1

    def all_doc_ids(self) -> list[str]:
        out: set[str] = set()
        for name in self.collections():
            out |= self._doc_ids(name)
        return sorted(out)

    def export(self, doc_ids: list[str]) -> dict[str, list[tuple[dict, np.ndarray]]]:
        """{doc_id: [(payload, vector)] by chunk index} of what the sink holds."""
        out: dict[str, list] = {}
        for name in self.collections():
            for p, v in self._fetch(name, doc_ids, vectors=True):
                out.setdefault(p["doc_id"], []).append((p, v))
        return {d: sorted(pts, key=lambda pv: pv[0]["idx"]) for d, pts in out.items()}

    def diff(self, primary, limit: int = 50, atol: float = 1e-6) -> list[str]:
        """Documents where this sink differs from the primary (ids, versions, ACL, labels, chunk ids,
        texts, every payload field, vectors within ``atol``); ``[]`` when equal."""
        def differ(part: list[str]):
            want, have = primary.export_docs(part), self.export(part)
            for d in part:
                w = chunk_payloads(want[d]) if want[d] is not None else []
                h = have.get(d, [])
                if not w and not h:
                    continue
                if not h or not w:
                    yield f"{d}: {'missing in the sink' if not h else 'in the sink, not in the primary'}"
                elif [p["chunk_id"] for p, _ in w] != [p["chunk_id"] for p, _ in h]:
                    yield f"{d}: chunk ids differ ({len(w)} vs {len(h)})"
                else:
                    for (pw, vw), (ph, vh) in zip(w, h):
                        keys = [k for k in PAYLOAD_KEYS if pw.get(k) != ph.get(k)]
                        if keys:
                            yield f"{d}: chunk {pw['chunk_id']}: {', '.join(keys)} differ"
                            break
                        vw = np.frombuffer(vw, dtype=np.float32)
                        if vh is None or len(vh) != len(vw) or not np.allclose(vw, vh, rtol=0, atol=atol):
                            yield f"{d}: chunk {pw['chunk_id']}: vector differs"
                            break

        return diff_by_doc(primary, self, differ, limit)

    def models(self) -> dict[str, str]:
        """{model_id: collection} of what the sink holds."""
        out = {}
        for name in self.collections():
            for p, _ in self._fetch_one(name):
                out[p["model_id"]] = name
        return out

    def _fetch_one(self, name: str) -> list[tuple[dict, None]]:
        ids = sorted(self._doc_ids(name))[:1]
        return self._fetch(name, ids, vectors=False)[:1] if ids else []

    def search(self, vector, tokens, k: int, model_id: str) -> list[Hit]:
        """The ``k`` nearest chunks whose ACL lets ``tokens`` read them, filtered inside the store."""
        name = self.collection(model_id)
        if name not in self.collections():
            return []
        toks = sorted(set(tokens))
        if not toks:
            return []
        out = []
        for p, score in self._search(name, np.asarray(vector, dtype=np.float32), toks, k):
            acl = {"allow": p["allow"], "deny": p["deny"]}
            out.append(Hit(p["chunk_id"], p["doc_id"], float(score), p["text"], p["uri"], p["page"],
                           p["section"] or "", p["doc_version"], list(p["labels"]) + [f"flag:{f}" for f in p["flags"]],
                           acl, p["metadata"].get("extractor"), p["model_id"]))
        return out
