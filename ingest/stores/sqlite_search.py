"""The SQLite store's two retrievals (BM25 and vectors), fast at 100k+ chunks.

Both apply the ACL and the filters to the *whole* match set before ranking and limiting
(``k`` results are ``k`` readable results), through one readable-row mask per (store
generation, principal tokens, filters), computed in SQL (``_readable_sql`` + ``sqlite_where``)
and cached in the process:

* **BM25.** An FTS5 ``OR`` query's ``bm25()`` is the sum, phrase by phrase, of each phrase's
  own ``bm25()`` (its idf depends only on that phrase; the row length and average length are
  the same), so each query word is scored on its own and its scored postings are kept per
  store generation (a write invalidates them). A word's scores are computed in numpy from
  the index's own data, with FTS5's formula and constants in FTS5's order of operations (the
  same doubles): the rows and per-column counts from the ``fts5vocab`` instance table (one
  aggregate row per word), row lengths from ``chunks_fts_docsize`` and the totals from the
  averages record, loaded once per generation. ``bm25()`` itself costs a docsize lookup and
  a Python tuple per matching row: three times slower. A query adds its words' postings in
  query order (the order FTS5 adds them, so the sums are the same doubles), drops the rows
  the mask rejects, and ranks the rest (ties: lower rowid first).
* **Vectors.** Exact float32 scoring as before, except at ``PREFILTER_MIN`` rows and more,
  where a bfloat16 copy of the matrix (half the bytes to stream) scores every readable row
  first and the best ``max(4 x limit, limit + 256)`` of them are re-scored exactly in float32
  and ranked by that. A row can be missed only if bfloat16 rounding (relative error ~2^-8 per
  element) moves it from the exact top ``limit`` to below that wider cut.

Needs from the store: ``db``, ``read_snapshot()``, ``_generation()``, ``_readable_sql(tokens)``,
``_common_terms_dropped(query, max_df)``, ``_terms(words)`` (each word's index terms; it also makes
the connection's scratch tables, ``temp.ingest_inst`` among them).
"""
from __future__ import annotations

from typing import Any

import math
import re
import threading
from collections import OrderedDict

from ingest.stores import vector_cache
from ingest.stores.common import SQLBase, process_executor
from ingest.stores.filters import Filters, sqlite_where

_WORD = re.compile(r"\w+", re.UNICODE)

PREFILTER_MIN = 20_000  # rows from which the vector side pre-scores in bfloat16
VECTOR_CACHE_MIN = 2_000  # rows from which a cold process maps the vectors from a file (ingest.stores.vector_cache)
POSTINGS_BUDGET = 4_000_000  # scored postings kept (12 bytes each: ~48 MB)
COL_WEIGHTS = (1.0, 0.5)  # bm25(chunks_fts, 1.0, 0.5): the text column, the section column
_K1, _B = 1.2, 0.75  # FTS5's bm25() constants


def varints(blob: bytes) -> list[int]:
    """SQLite's varints (FTS5 docsize and averages records): big-endian 7-bit groups, high bit
    set on every byte but the last; a 9th byte carries 8 bits."""
    out, i, n = [], 0, len(blob)
    while i < n:
        v = 0
        for j in range(9):
            c = blob[i]
            i += 1
            if j == 8:
                v = (v << 8) | c
                break
            v = (v << 7) | (c & 0x7F)
            if c < 0x80:
                break
        out.append(v)
    return out


def query_words(text: str) -> list[str]:
    """The query's distinct words in order, as ``fts_query`` ORs them."""
    return list(dict.fromkeys(_WORD.findall(text.lower())))


def phrase(word: str) -> str:
    return '"' + word.replace('"', '""') + '"'


def _matvec(mat, q):
    """mat @ q. With torch loaded (it is, wherever queries are embedded) torch's kernel runs on
    the intra-op threads the process configured (INGEST_TORCH_THREADS); numpy's BLAS would
    start its own pool per call, which on a busy machine costs more than the product."""
    import sys

    torch = sys.modules.get("torch")
    if torch is None:
        return mat @ q
    return torch.mv(torch.from_numpy(mat), torch.from_numpy(q.copy())).numpy()


def _halves_mv(mat, q):
    """mat @ q with the two halves of the rows on two threads (torch releases the GIL): the
    product streams the whole matrix, so on two cores it takes half the time, whatever the
    process's intra-op thread count (one per worker process by default)."""
    import torch

    if len(mat) < PREFILTER_MIN:
        return torch.mv(mat, q)
    half = len(mat) // 2
    other = process_executor("mv", 1).submit(torch.mv, mat[half:], q)
    first = torch.mv(mat[:half], q)
    return torch.cat((first, other.result()))


class _RowMap:
    """Per generation: chunk rowids (sorted), each row's document index, document -> index;
    with vectors loaded also the float32 matrix (and its bfloat16 copy at scale)."""

    __slots__ = ("gen", "rowids", "dix", "doc_pos", "mat", "mat16", "bm25")

    def __init__(self, gen, rowids, dix, doc_pos, mat=None, mat16=None):
        self.gen, self.rowids, self.dix, self.doc_pos, self.mat, self.mat16 = gen, rowids, dix, doc_pos, mat, mat16
        self.bm25 = None  # (row lengths, row count, average length): FTS5's BM25 inputs, loaded on use

    def positions(self, rowids):
        """Positions of ``rowids`` in this map, and which of them it holds."""
        import numpy as np

        pos = np.searchsorted(self.rowids, rowids)
        if not len(self.rowids):
            return pos, np.zeros(len(pos), dtype=bool)
        return pos, (pos < len(self.rowids)) & (self.rowids[np.minimum(pos, len(self.rowids) - 1)] == rowids)


def _doc_index(doc_ids) -> tuple:
    import numpy as np

    doc_pos: dict[str, int] = {}
    dix = np.fromiter((doc_pos.setdefault(d, len(doc_pos)) for d in doc_ids), dtype=np.int64, count=len(doc_ids))
    return dix, doc_pos


class SQLiteSearchMixin(SQLBase):
    # from the store (ingest.stores.sqlite): the readable-documents query and the FTS5 term helpers
    def _readable_sql(self, tokens: frozenset[str]) -> tuple[str, list[str]]:
        raise NotImplementedError

    def _terms(self, words: list[str]) -> list[list[str]]:
        raise NotImplementedError

    def _common_terms_dropped(self, query: str, max_df: float) -> str:
        raise NotImplementedError

    def _search_state(self):
        st = self.__dict__.get("_ss")
        if st is None:
            st = self.__dict__.setdefault("_ss", {"lock": threading.Lock(), "map": None, "cand": {},
                                                  "post": OrderedDict(), "post_n": 0, "post_gen": None})
        return st

    # -- per-generation row map and vectors ---------------------------------------------
    def _rowmap(self, vectors: bool = False) -> _RowMap:
        """The current generation's row map; ``vectors``: with the matrix loaded."""
        import numpy as np

        st = self._search_state()
        with self.read_snapshot() as db:  # the generation and the rows of one committed state
            gen = int(db.execute("SELECT value FROM meta WHERE key='gen'").fetchone()[0])
            with st["lock"]:
                m = st["map"]
                if m is not None and m.gen == gen and (m.mat is not None or not vectors):
                    return m
                if vectors:
                    ids = m if m is not None and m.gen == gen else self._ids_map(db, gen)
                    cache = self._vector_cache_key(db, gen) if len(ids.rowids) >= VECTOR_CACHE_MIN else None
                    mat = vector_cache.load(*cache, ids.rowids) if cache is not None else None
                    if mat is not None:
                        m = _RowMap(gen, ids.rowids, ids.dix, ids.doc_pos, mat)
                    else:
                        rows = db.execute("SELECT rowid, doc_id, vec FROM chunks ORDER BY rowid").fetchall()
                        rowids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
                        dix, doc_pos = _doc_index([r[1] for r in rows])
                        if rows:
                            mat = np.frombuffer(bytearray(b"".join(r[2] for r in rows)),
                                                dtype=np.float32).reshape(len(rows), -1)
                        m = _RowMap(gen, rowids, dix, doc_pos, mat)
                        # written by a process's first read only: a long-lived one does not rewrite it per write
                        if cache is not None and mat is not None and not st.get("vectors_read") \
                                and np.array_equal(rowids, ids.rowids):
                            vector_cache.save(*cache, rowids, mat)
                    st["vectors_read"] = True
                    if ids.bm25 is not None and np.array_equal(m.rowids, ids.rowids):
                        m.bm25 = ids.bm25
                    if mat is not None and len(m.rowids) >= PREFILTER_MIN:
                        import torch

                        m.mat16 = torch.from_numpy(mat).to(torch.bfloat16)
                else:
                    m = self._ids_map(db, gen)
                st["map"] = m
                if st["post_gen"] != gen:
                    st["post"].clear()
                    st["post_n"], st["post_gen"] = 0, gen
                return m

    @staticmethod
    def _ids_map(db, gen: int) -> _RowMap:
        """The row map without vectors: rowid and doc_id only, read from the (doc_id, idx) index,
        not the large rows."""
        import numpy as np

        rows = sorted(tuple(r) for r in db.execute("SELECT rowid, doc_id FROM chunks"))
        rowids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        dix, doc_pos = _doc_index([r[1] for r in rows])
        return _RowMap(gen, rowids, dix, doc_pos)

    def _vector_cache_key(self, db, gen: int) -> tuple[Any, str, int, str] | None:
        """(store path, uid, generation, model id) of the vector cache file beside a store file;
        None for a store without a file or a uid."""
        path = getattr(self, "path", None)
        meta = dict(db.execute("SELECT key, value FROM meta WHERE key IN ('uid', 'model_id')").fetchall())
        if path is None or not meta.get("uid") or not meta.get("model_id"):
            return None
        return path, meta["uid"], gen, meta["model_id"]

    def _vectors(self) -> _RowMap:
        return self._rowmap(vectors=True)

    def _candidates(self, m: _RowMap, tokens: frozenset[str], f: Filters):
        """(positions, mask): the rows of ``m`` the principal may read and the filters admit,
        from SQL (the ACL and the filters are one query); cached per (store generation, tokens,
        filters), so repeated searches by one principal skip the SQL."""
        import numpy as np

        st = self._search_state()
        key = (m.gen, tokens, f)
        with st["lock"]:
            hit = st["cand"].get(key)
        if hit is not None:
            return hit
        rsql, rargs = self._readable_sql(tokens)
        fsql, fargs = sqlite_where(f)
        if f.chunk_level:  # labels live on chunks: select the rows themselves
            found = np.fromiter((r[0] for r in self.db.execute(
                f"SELECT c.rowid FROM chunks c JOIN documents d ON d.doc_id=c.doc_id"
                f" WHERE c.doc_id IN ({rsql}) AND {fsql}", (*rargs, *fargs))), dtype=np.int64)
            pos, ok = m.positions(found)
            idx = np.sort(pos[ok])
        else:
            sql = rsql if fsql == "1" else f"SELECT d.doc_id FROM documents d WHERE d.doc_id IN ({rsql}) AND {fsql}"
            docs = [m.doc_pos[r[0]] for r in self.db.execute(sql, (*rargs, *fargs)) if r[0] in m.doc_pos]
            idx = np.flatnonzero(np.isin(m.dix, np.asarray(docs, dtype=np.int64))) if docs else np.zeros(0, np.int64)
        mask = np.zeros(len(m.rowids), dtype=bool)
        mask[idx] = True
        with st["lock"]:
            cache = st["cand"]
            if len(cache) >= 64 or any(k[0] != m.gen for k in cache):
                cache.clear()
            cache[key] = (idx, mask)
        return idx, mask

    # -- BM25 ---------------------------------------------------------------------------
    def _bm25_stats(self, db, m: _RowMap) -> None:
        """FTS5's own BM25 inputs for ``m``'s generation: each row's token count (all columns,
        from ``chunks_fts_docsize``) aligned with ``m.rowids``, the row count and the average
        row length (from the averages record, as ``xRowCount``/``xColumnTotalSize(-1)``)."""
        import numpy as np

        cur = db.cursor()
        cur.row_factory = None
        rows = cur.execute("SELECT id, sz FROM chunks_fts_docsize").fetchall()
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        sizes = [r[1] for r in rows]
        raw = np.frombuffer(b"".join(sizes), dtype=np.uint8)
        lens = np.fromiter(map(len, sizes), dtype=np.int64, count=len(sizes))
        if len(raw) and (raw < 0x80).all() and (lens > 0).all():  # every column size one byte (< 128)
            totals = np.add.reduceat(raw.astype(np.int64), np.concatenate(([0], np.cumsum(lens)[:-1])))
        else:
            totals = np.fromiter((sum(varints(b)) for b in sizes), dtype=np.int64, count=len(sizes))
        dlen = np.zeros(len(m.rowids), dtype=np.float64)
        pos, ok = m.positions(ids)
        dlen[pos[ok]] = totals[ok]
        avg = cur.execute("SELECT block FROM chunks_fts_data WHERE id=1").fetchone()
        counts = varints(avg[0]) if avg and avg[0] else [0]
        nrow, ntok = counts[0], sum(counts[1:])
        m.bm25 = (dlen, nrow, (float(ntok) / float(nrow)) if nrow else 1.0)

    def _scored(self, db, m: _RowMap, words: list[str]) -> list:
        """Each word's (positions in ``m``, negated bm25) as ``bm25(chunks_fts, 1.0, 0.5)``
        scores a one-phrase query for it, computed from the index's instance list (one
        aggregate row per word: no per-row Python objects, no per-row docsize lookup).

        Same doubles as FTS5 (fts5_aux.c ``fts5Bm25Function``): k1 = 1.2, b = 0.75, idf =
        log((N - n + 0.5) / (n + 0.5)) floored at 1e-6, f = weighted count of the row's
        instances, D = the row's tokens in all columns, the operations in FTS5's order. A word
        the tokenizer does not turn into exactly one term is scored by FTS5 itself."""
        import numpy as np

        terms = self._terms(words)  # also makes this connection's scratch and vocabulary tables
        cur = db.cursor()
        cur.row_factory = None
        if m.bm25 is None:
            self._bm25_stats(db, m)
        dlen, nrow, avgdl = m.bm25
        out = []
        for i, word in enumerate(words):
            if len(terms[i]) != 1:
                out.append(self._match_scores(cur, m, word))
                continue
            docs, secs = cur.execute("SELECT group_concat(doc), group_concat(iif(col = 'section', '1', '0'), '')"
                                     " FROM temp.ingest_inst WHERE term=?", (terms[i][0],)).fetchone()
            if not docs:
                out.append((np.zeros(0, np.int64), np.zeros(0, np.float64)))
                continue
            inst_rows = np.fromstring(docs, dtype=np.int64, sep=",")  # text mode: C parsing, not deprecated
            weight = np.where(np.frombuffer(secs.encode(), dtype=np.uint8) == ord("1"), COL_WEIGHTS[1], COL_WEIGHTS[0])
            if len(weight) != len(inst_rows):
                raise RuntimeError(f"fts5vocab instance rows for {word!r}: {len(inst_rows)} rows, {len(weight)} columns")
            rowids, inv = np.unique(inst_rows, return_inverse=True)
            f = np.bincount(inv, weights=weight)  # sums of 1.0 and 0.5: exact in any order
            n = len(rowids)
            idf = math.log((nrow - n + 0.5) / (n + 0.5))
            if idf <= 0.0:
                idf = 1e-6
            pos, ok = m.positions(rowids)
            pos, f = pos[ok], f[ok]  # a row the map lacks (written since) is left out: fail closed
            d = dlen[pos]
            score = idf * ((f * (_K1 + 1.0)) / (f + _K1 * ((1 - _B) + _B * d / avgdl)))
            out.append((pos, -1.0 * (0.0 + score)))
        return out

    def _postings_many(self, m: _RowMap, words: list[str]) -> list:
        """Each word's (positions in ``m``, negated bm25) of the rows matching it, as FTS5
        scores it alone; cached per generation within ``POSTINGS_BUDGET``."""
        st = self._search_state()
        found: dict[str, tuple] = {}
        with st["lock"]:
            if st["post_gen"] == m.gen:
                for w in words:
                    hit = st["post"].get(w)
                    if hit is not None:
                        st["post"].move_to_end(w)
                        found[w] = hit
        missing = [w for w in words if w not in found]
        if missing:
            with self.read_snapshot() as db:
                gen = int(db.execute("SELECT value FROM meta WHERE key='gen'").fetchone()[0])
                if gen == m.gen:
                    parts = self._scored(db, m, missing)
                else:  # written since the map was read: score on FTS5's own, cache nothing
                    parts = [self._match_scores(db, m, w) for w in missing]
            found.update(zip(missing, parts))
            if gen == m.gen:
                with st["lock"]:
                    if st["post_gen"] == m.gen:
                        for w, out in zip(missing, parts):
                            if w not in st["post"]:
                                st["post"][w] = out
                                st["post_n"] += len(out[0])
                        while st["post_n"] > POSTINGS_BUDGET and len(st["post"]) > 1:
                            _, (p, _) = st["post"].popitem(last=False)
                            st["post_n"] -= len(p)
        return [found[w] for w in words]

    @staticmethod
    def _match_scores(db, m: _RowMap, word: str):
        import numpy as np

        rows = db.execute("SELECT rowid, bm25(chunks_fts, 1.0, 0.5) FROM chunks_fts WHERE chunks_fts MATCH ?",
                          (phrase(word),)).fetchall()
        rowids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        scores = np.fromiter((r[1] for r in rows), dtype=np.float64, count=len(rows))
        pos, ok = m.positions(rowids)
        return pos[ok], scores[ok]  # a row the map lacks (written since) is left out: fail closed

    def bm25(self, query: str, tokens: frozenset[str], limit: int, filters=None,
             max_df: float | None = None) -> list[tuple[int, float]]:
        import numpy as np

        if max_df is not None and 0 < max_df < 1:
            query = self._common_terms_dropped(query, max_df)
        words = query_words(query)
        if not words or not tokens or limit < 1:
            return []
        m = self._rowmap()
        _, mask = self._candidates(m, frozenset(tokens), filters or Filters())
        parts = self._postings_many(m, words)
        pos = np.concatenate([p[0] for p in parts])
        if not len(pos):
            return []
        # in query order, per row: 0.0 + s1 + s2 ... (FTS5's own order of additions)
        total = np.bincount(pos, weights=np.concatenate([p[1] for p in parts]), minlength=len(m.rowids))
        found = np.unique(pos)
        found = found[mask[found]]  # the ACL and the filters, before ranking and limiting
        if not len(found):
            return []
        s = total[found]
        if len(found) > limit:
            cut = np.partition(s, limit - 1)[limit - 1]
            keep = s <= cut  # every row tied with the last one stays for the tie-break
            found, s = found[keep], s[keep]
        order = np.lexsort((m.rowids[found], s))[:limit]  # best (most negative) first; ties: lower rowid
        return [(int(m.rowids[found[i]]), -float(s[i])) for i in order]

    # -- vectors ------------------------------------------------------------------------
    def vector(self, qvec, tokens: frozenset[str], limit: int, filters=None) -> list[tuple[int, float]]:
        import numpy as np

        if not tokens:
            return []
        m = self._vectors()
        if m.mat is None:
            return []
        idx, mask = self._candidates(m, frozenset(tokens), filters or Filters())
        if not len(idx):
            return []
        q = np.asarray(qvec, dtype=np.float32)
        wide = max(4 * limit, limit + 256)
        if m.mat16 is not None and len(idx) > wide:
            import torch

            approx = _halves_mv(m.mat16, torch.from_numpy(q.copy()).to(torch.bfloat16)).float().numpy()
            approx = approx[idx]
            near = idx[np.argpartition(-approx, wide - 1)[:wide]]
            scores, idx = _matvec(m.mat[near], q), near
        else:
            # most rows readable: score all (no copy of the matrix), then pick; few: gather first
            scores = _matvec(m.mat, q)[idx] if len(idx) * 2 > len(m.rowids) else _matvec(m.mat[idx], q)
        n = min(limit, len(idx))
        top = np.argpartition(-scores, n - 1)[:n]
        top = top[np.argsort(-scores[top], kind="stable")]
        return [(int(m.rowids[idx[t]]), float(scores[t])) for t in top]
