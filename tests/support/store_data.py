"""Synthetic store rows for the store contract and the search tests: seeded unit vectors (so the
nearest chunk is known by construction, no model needed), document and chunk records, two readers."""
from __future__ import annotations

import hashlib

import numpy as np

from acl.model import ACL, EVERYONE
from ingest.stores.base import ChunkRecord, DocRecord

DIM = 384
ALICE = frozenset({EVERYONE, "user:posix:1001", "group:posix:100"})
BOB = frozenset({EVERYONE, "user:posix:1002", "group:posix:200"})



def unit(seed: str, near: np.ndarray | None = None, noise: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(int(hashlib.sha256(seed.encode()).hexdigest()[:8], 16))
    v = rng.standard_normal(DIM).astype(np.float32)
    if near is not None:
        v = near + noise * v / np.linalg.norm(v)
    return (v / np.linalg.norm(v)).astype(np.float32)


def doc(doc_id, ext=None, acl=ACL(frozenset({EVERYONE})), parent=None, version="v1", **kw) -> DocRecord:
    ext = ext or f"{doc_id}.txt"
    return DocRecord(doc_id=doc_id, source="folder:/r", external_id=ext, uri=f"file:///r/{ext}", mime="text/plain",
                     size=10, mtime_ns=1, content_version=version, acl=acl, parent_id=parent, extractor="text",
                     extractor_version="1", **kw)


def chunks(doc_id, texts, vecs=None) -> list[ChunkRecord]:
    from ingest.pipeline.chunking import chunk_id

    out = []
    for i, t in enumerate(texts):
        h = hashlib.sha256(t.encode()).hexdigest()
        v = vecs[i] if vecs is not None else unit(t)
        out.append(ChunkRecord(chunk_id(doc_id, i, h), i, t, h, len(t.split()), 1, "Intro", v.tobytes(), "c1", "m"))
    return out
