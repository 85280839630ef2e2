"""The no-leak property's core, shared by tests/search/test_no_leak.py (the stores' own search) and
tests/stores/test_sinks.py (each vector sink's search): Hypothesis scenarios of documents with random
ACLs and a nested-group directory, a plain-Python reference filter, and :func:`find_violations`,
which runs every search (and, where the index has them, every facet count) of a scenario.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass

import numpy as np
from hypothesis import strategies as st

from acl.model import ACL, EVERYONE
from ingest.search.index import Index, Ranking
from ingest.stores.base import ChunkRecord, DocRecord

USERS = [f"u{i}" for i in range(5)]
GROUPS = [f"g{i}" for i in range(5)]
WORDS = ["alpha", "bravo", "delta", "echo", "kilo", "lima"]
TOKENS = ([f"user:file:{u}" for u in USERS] + [f"group:file:{g}" for g in GROUPS]
          + [EVERYONE, "user:posix:4242", "group:dms:g0"])  # the last two: tokens nobody here holds
DIM = 16
# word -> the entity it stands for in a chunk (two words share one entity: counts must add up)
ENTITY_OF = {"alpha": ("ORG", "Alpha Corp"), "bravo": ("ORG", "Bravo"), "echo": ("ORG", "Alpha Corp"),
             "delta": ("PERSON", "Delta Jones"), "kilo": ("PERSON", "Kilo"), "lima": ("GPE", "Lima")}
FACET_TYPES = ("ORG", "PERSON", "GPE")
EXAMPLES = int(os.environ.get("NO_LEAK_EXAMPLES", "150"))


def fake_vector(text: str) -> np.ndarray:
    """Deterministic, L2-normalised stand-in for an embedding."""
    v = np.frombuffer(hashlib.sha256(text.encode()).digest()[:DIM], dtype=np.uint8).astype(np.float32) - 127.5
    return v / np.linalg.norm(v)


class StubEmbeddingIndex(Index):
    """The real Index; only the query embedding is the stand-in. BM25 keeps every query word
    (``bm25_max_df = 1.0``): the reference filter expects every chunk with a query word, and
    dropping common words is ranking, not access (with the default 0.1, a one-document store
    drops every word it holds)."""

    def __init__(self, store, directory=None):
        super().__init__(store, directory, ranking=Ranking(bm25_max_df=1.0))

    def _qvec(self, *args):  # (query) or (model_id, query): the query is last
        return fake_vector(args[-1])


def doc_record(doc_id: str, acl: ACL, uri: str | None = None) -> DocRecord:
    return DocRecord(doc_id=doc_id, source="prop", external_id=doc_id, uri=uri or f"prop:///{doc_id}",
                     mime="text/plain", size=1, mtime_ns=1, content_version="v1", acl=acl,
                     flags=[] if acl.known else ["acl-unknown"])


def text_entities(text: str) -> dict[str, list]:
    """A chunk's stored entities as ingest.pipeline.nlp writes them: {"TYPE:key": [display, count]}."""
    out: dict[str, list] = {}
    for w in text.split():
        if w in ENTITY_OF:
            label, name = ENTITY_OF[w]
            e = out.setdefault(f"{label}:{name.casefold()}", [name, 0])
            e[1] += 1
    return out


def chunk_records(doc_id: str, texts: list[str]) -> list[ChunkRecord]:
    return [ChunkRecord(f"{doc_id}-{i}", i, t, hashlib.sha1(t.encode()).hexdigest(), len(t.split()), None, "",
                        fake_vector(t).tobytes(), "test", "stub", entities=text_entities(t))
            for i, t in enumerate(texts)]


def reference_facets(s: Scenario, tokens: frozenset[str], label: str) -> dict[str, tuple[int, int, int]]:
    """key -> (mentions, chunks, documents) over the chunks ``tokens`` may read."""
    out: dict[str, list] = {}
    for d in s.docs:
        if d.deleted or not reference_readable(d.final_acl, tokens):
            continue
        for t in d.texts:
            for key, (_, n) in text_entities(t).items():
                if key.startswith(label + ":"):
                    e = out.setdefault(key, [0, 0, set()])
                    e[0] += n
                    e[1] += 1
                    e[2].add(d.doc_id)
    return {k: (m, c, len(ds)) for k, (m, c, ds) in out.items()}


@dataclass
class Doc:
    doc_id: str
    texts: list[str]
    acl: ACL              # as first indexed
    new_acl: ACL | None   # an ACL-only change after indexing, or None
    deleted: bool

    @property
    def final_acl(self) -> ACL:
        return self.new_acl if self.new_acl is not None else self.acl


@dataclass
class Scenario:
    user_groups: dict[str, list[str]]    # user -> groups it is directly in
    group_parents: dict[str, list[str]]  # group -> groups that contain it (nesting; cycles allowed)
    docs: list[Doc]
    searches: list[tuple[str, str, int, str]]  # (principal, query, k, mode)


# -- the reference: plain Python, independent of acl.directory and the stores -----------
def reference_tokens(s: Scenario, principal: str) -> frozenset[str]:
    if principal == "everyone":
        return frozenset({EVERYONE})
    groups = set(s.user_groups.get(principal, ()))
    while True:  # fixpoint: add every group that contains one we have
        more = {p for g in groups for p in s.group_parents.get(g, ())} - groups
        if not more:
            break
        groups |= more
    return frozenset({EVERYONE, f"user:file:{principal}", *(f"group:file:{g}" for g in groups)})


def reference_readable(acl: ACL, tokens: frozenset[str]) -> bool:
    if not acl.known:
        return False
    return any(t in tokens for t in acl.allow) and not any(t in tokens for t in acl.deny)


def directory_file(s: Scenario, path) -> None:
    data = {"users": {u: {"groups": gs} for u, gs in s.user_groups.items()},
            "groups": {g: {"groups": []} for g in GROUPS}}
    for g, parents in s.group_parents.items():
        for p in parents:
            data["groups"][p]["groups"].append(g)
    path.write_text(json.dumps(data))


def load(store, s: Scenario) -> None:
    """Replace what the store holds with the scenario, through the store API (delete, apply, set_acl)."""
    for row in store.docs_for_source("prop").values():
        store.delete(row["doc_id"])
    for d in s.docs:
        store.apply(doc_record(d.doc_id, d.acl), chunk_records(d.doc_id, d.texts))
    for d in s.docs:
        if d.new_acl is not None:
            store.set_acl(d.doc_id, d.new_acl)
        if d.deleted:
            store.delete(d.doc_id)


def find_violations(index: Index, s: Scenario, stats: dict | None = None, facets: bool = True) -> list[str]:
    """The property's core: every violation found by running every search of the scenario.
    ``stats`` (optional) counts searches, hits, and searches where a deny decided for a document.
    ``facets=False``: an index without facets (a vector-database sink's search: facets are computed
    by the primary store, whose facets this property checks already)."""
    problems = []
    stats = stats if stats is not None else {}
    live = {d.doc_id: d for d in s.docs if not d.deleted}
    for principal in sorted({p for p, *_ in s.searches}):
        got, want = index.directory.resolve(principal), reference_tokens(s, principal)
        if got != want:
            problems.append(f"directory: {principal} resolves to {sorted(got)}, reference {sorted(want)}")
    for principal in sorted({p for p, *_ in s.searches} if facets else ()):  # facets: over readable chunks only
        tokens = reference_tokens(s, principal)
        for label in FACET_TYPES:
            want = reference_facets(s, tokens, label)
            got = {f["key"]: (f["count"], f["chunks"], f["docs"])
                   for f in index.facets(label, principal=principal, k=1000, audit=False)}
            stats["facets"] = stats.get("facets", 0) + 1
            stats["facet_counts"] = stats.get("facet_counts", 0) + len(got)
            if got != want:
                problems.append(f"LEAK facets {label} as {principal}: {got}, reference {want}")
            top = index.facets(label, principal=principal, k=1, audit=False)
            best = max((v[0] for v in want.values()), default=None)
            if (best is None and top) or (best is not None and (len(top) != 1 or top[0]["count"] != best)):
                problems.append(f"facets {label} k=1 as {principal}: {top}, reference best count {best}")
    for principal, query, k, mode in s.searches:
        tokens = reference_tokens(s, principal)
        qwords = set(query.split())
        expected = {f"{d.doc_id}-{i}" for d in live.values() if reference_readable(d.final_acl, tokens)
                    for i, t in enumerate(d.texts) if mode != "bm25" or qwords & set(t.split())}
        hits = index.search(query, principal=principal, k=k, mode=mode, audit=False)
        stats["searches"] = stats.get("searches", 0) + 1
        stats["hits"] = stats.get("hits", 0) + len(hits)
        stats["deny_decides"] = stats.get("deny_decides", 0) + any(
            d.final_acl.allow & tokens and d.final_acl.deny & tokens for d in live.values())
        ids = [h.chunk_id for h in hits]
        where = f"{mode} search {query!r} k={k} as {principal}"
        for h in hits:
            d = live.get(h.doc_id)
            if d is None:
                problems.append(f"{where}: returned {h.chunk_id} of a document deleted or never indexed")
            elif not reference_readable(d.final_acl, tokens):
                problems.append(f"LEAK {where}: returned {h.chunk_id}, allow={sorted(d.final_acl.allow)} "
                                f"deny={sorted(d.final_acl.deny)} known={d.final_acl.known}")
        if len(set(ids)) != len(ids):
            problems.append(f"{where}: duplicate chunks {ids}")
        if len(hits) != min(k, len(expected)):
            problems.append(f"{where}: {len(hits)} results, reference filter allows {min(k, len(expected))}")
        if k >= len(expected) and set(ids) != expected:
            problems.append(f"{where}: returned {sorted(ids)}, reference {sorted(expected)}")
    return problems


# -- strategies -------------------------------------------------------------------------
def acls():
    tokens = st.frozensets(st.sampled_from(TOKENS), max_size=4)
    known = st.builds(lambda a, d: ACL(a, d), tokens, st.frozensets(st.sampled_from(TOKENS), max_size=2))
    return st.one_of(known, known, known, st.just(ACL.unknown("test: unreadable")))


@st.composite
def scenarios(draw):
    user_groups = {u: draw(st.lists(st.sampled_from(GROUPS), max_size=2, unique=True)) for u in USERS}
    group_parents = {g: draw(st.lists(st.sampled_from(GROUPS), max_size=2, unique=True)) for g in GROUPS}
    n = draw(st.integers(1, 10))
    docs = []
    for i in range(n):
        texts = [" ".join(draw(st.lists(st.sampled_from(WORDS), min_size=1, max_size=3)))
                 for _ in range(draw(st.integers(1, 3)))]
        docs.append(Doc(f"d{i}", texts, draw(acls()), draw(st.one_of(st.none(), acls())), draw(st.booleans())
                        if draw(st.integers(0, 4)) == 0 else False))
    searches = draw(st.lists(st.tuples(st.sampled_from(USERS + ["everyone"]),
                                       st.lists(st.sampled_from(WORDS), min_size=1, max_size=2).map(" ".join),
                                       st.integers(1, 40), st.sampled_from(["hybrid", "bm25", "vector"])),
                             min_size=1, max_size=6))
    return Scenario(user_groups, group_parents, docs, searches)
