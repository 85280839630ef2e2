"""The vector matrix cached beside a SQLite store (ingest.stores.vector_cache) for cold processes.

Each "cold process" here is a new ``SQLiteStore`` object on the same file (nothing of an earlier
one's in-memory state). The cache must give exactly the hits the store's own vectors give, follow
every write (a new generation), never be used for another store made at the same path, and be
written again when it is torn or corrupt; the ACL is never read from it.
"""
from __future__ import annotations

import logging
import os

import numpy as np
import pytest

from acl.model import ACL, EVERYONE
from ingest.stores import sqlite_search, vector_cache
from tests.support.store_data import ALICE, BOB, chunks, doc, unit

PRINCIPALS = (ALICE, BOB, frozenset({"group:posix:300"}), frozenset({EVERYONE}))


@pytest.fixture
def small_cache(monkeypatch):
    """Cache from the first row on (the default starts at a size the tests need not build), and a
    record of what each load found: "hit" or "miss"."""
    monkeypatch.setattr(sqlite_search, "VECTOR_CACHE_MIN", 1)
    seen = []
    real = vector_cache.load

    def load(*a, **kw):
        mat = real(*a, **kw)
        seen.append("miss" if mat is None else "hit")
        return mat

    monkeypatch.setattr(vector_cache, "load", load)
    return seen


def fill(store, n_docs: int, tag: str = "") -> None:
    for d in range(n_docs):
        acl = ACL(frozenset({EVERYONE})) if d % 3 else ACL(frozenset({"group:posix:300"}), frozenset({"user:posix:1002"}))
        vecs = [unit(f"{tag}v{d}.{i}") for i in range(3)]
        store.apply(doc(f"d{d:04d}", acl=acl), chunks(f"d{d:04d}", [f"text {d} {i}" for i in range(3)], vecs))


def cold(path):
    from ingest.stores.sqlite import SQLiteStore

    return SQLiteStore(path)


def exact(store, q, tokens, k) -> list[int]:
    """The top ``k`` readable rows by brute force over the store's own vectors."""
    rsql, rargs = store._readable_sql(tokens)
    rows = store.db.execute(f"SELECT rowid, vec FROM chunks WHERE doc_id IN ({rsql})", rargs).fetchall()
    return [r for r, _ in sorted(((r[0], -float(np.frombuffer(r[1], dtype=np.float32) @ q)) for r in rows),
                                 key=lambda x: (x[1], x[0]))[:k]]


def results(store, queries) -> list:
    return [store.vector(q, tokens, 10) for q in queries for tokens in PRINCIPALS]


def test_results_identical_with_and_without_the_cache(tmp_path, small_cache, monkeypatch):
    path = tmp_path / "index.db"
    fill(cold(path), 40)
    queries = [unit(f"q{i}") for i in range(8)]
    first = cold(path)
    want = results(first, queries)  # read from SQLite, cache written
    assert small_cache == ["miss"] and vector_cache.cache_path(path).is_file()
    again = cold(path)
    assert results(again, queries) == want  # mapped from the cache: the same rows, the same doubles
    assert small_cache == ["miss", "hit"]
    monkeypatch.setattr(sqlite_search, "VECTOR_CACHE_MIN", 10**9)  # no cache at all
    assert results(cold(path), queries) == want
    assert small_cache == ["miss", "hit"]


def test_a_write_invalidates_the_cache(tmp_path, small_cache):
    path = tmp_path / "index.db"
    s = cold(path)
    fill(s, 30)
    q = unit("q")
    cold(path).vector(q, frozenset({EVERYONE}), 5)
    assert small_cache == ["miss"]
    # new vectors for every document (same rows count, same ids) and an ACL change: a new generation
    fill(s, 30, tag="new")
    s.set_acl("d0001", ACL(frozenset({"group:posix:300"})))
    fresh = cold(path)
    got = fresh.vector(q, frozenset({EVERYONE}), 5)
    assert small_cache == ["miss", "miss"]
    want = exact(s, q, frozenset({EVERYONE}), 5)
    assert [r for r, _ in got] == want
    assert [r for r, _ in cold(path).vector(q, frozenset({EVERYONE}), 5)] == want
    assert small_cache == ["miss", "miss", "hit"]


def test_a_corrupt_or_torn_cache_is_read_from_the_store_and_written_again(tmp_path, small_cache, caplog):
    path = tmp_path / "index.db"
    fill(cold(path), 30)
    q = unit("q")
    want = cold(path).vector(q, ALICE, 10)
    cp = vector_cache.cache_path(path)
    data = bytearray(cp.read_bytes())
    data[-7] ^= 0xFF  # one flipped byte in the matrix
    cp.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="ingest.stores"):
        assert cold(path).vector(q, ALICE, 10) == want
    assert "checksum mismatch" in caplog.text
    assert cp.read_bytes() != bytes(data)  # written again, and good:
    assert cold(path).vector(q, ALICE, 10) == want
    assert small_cache == ["miss", "miss", "hit"]
    cp.write_bytes(cp.read_bytes()[:-100])  # torn
    assert cold(path).vector(q, ALICE, 10) == want
    assert small_cache[-1] == "miss"
    cp.write_bytes(b"garbage")
    assert cold(path).vector(q, ALICE, 10) == want
    assert small_cache[-1] == "miss"


def test_a_store_made_again_at_the_same_path_does_not_use_the_old_cache(tmp_path, small_cache):
    path = tmp_path / "index.db"
    fill(cold(path), 20)
    q = unit("q")
    cold(path).vector(q, ALICE, 5)
    old_cache = vector_cache.cache_path(path).read_bytes()
    for p in tmp_path.glob("index.db*"):
        if p.is_file():
            p.unlink()
    fill(cold(path), 20, tag="other")  # same rows, same generation, other vectors
    vector_cache.cache_path(path).write_bytes(old_cache)
    s = cold(path)
    got = s.vector(q, ALICE, 5)
    assert small_cache == ["miss", "miss"]
    assert [r for r, _ in got] == exact(s, q, ALICE, 5)


def test_a_link_in_place_of_the_cache_is_not_followed(tmp_path, small_cache):
    path = tmp_path / "index.db"
    fill(cold(path), 20)
    q = unit("q")
    want = cold(path).vector(q, ALICE, 5)
    cp = vector_cache.cache_path(path)
    os.replace(cp, tmp_path / "elsewhere")
    os.symlink(tmp_path / "elsewhere", cp)
    assert cold(path).vector(q, ALICE, 5) == want
    assert small_cache == ["miss", "miss"]
    assert not cp.is_symlink()  # replaced by a file of its own (rename over the link)


def test_the_cache_has_the_store_files_permission_bits(tmp_path, small_cache):
    path = tmp_path / "index.db"
    fill(cold(path), 10)
    os.chmod(path, 0o640)
    vector_cache.cache_path(path).unlink(missing_ok=True)
    cold(path).vector(unit("q"), ALICE, 5)
    assert (os.stat(vector_cache.cache_path(path)).st_mode & 0o777) == 0o640
