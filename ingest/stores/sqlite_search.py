"""The SQLite store's two retrievals (BM25 and vectors), fast at 100k+ chunks.

Both apply the ACL and the filters to the *whole* match set before ranking and limiting
(``k`` results are ``k`` readable results), through one readable-row mask per (store
generation, principal tokens, filters), computed in SQL (``_readable_sql`` + ``sqlite_where``)
and cached in the process:

* **BM25.** An FTS5 ``OR`` query's ``bm25()`` is the sum, phrase by phrase, of each phrase's
  own ``bm25()`` (its idf depends only on that phrase; the row length and average length are
  the same), so each query word is scored on its own (``SELECT rowid, bm25(...) ... MATCH
  '"word"'``, no join to the large ``chunks`` rows) and its scored postings are kept per
  store generation (a write invalidates them). A query adds its words' postings in query
  order (the order FTS5 adds them, so the sums are the same doubles), drops the rows the
  mask rejects, and ranks the rest (ties: lower rowid first).
* **Vectors.** Exact float32 scoring as before, except at ``PREFILTER_MIN`` rows and more,
  where a bfloat16 copy of the matrix (half the bytes to stream) scores every readable row
  first and the best ``max(4 x limit, limit + 256)`` of them are re-scored exactly in float32
  and ranked by that. A row can be missed only if bfloat16 rounding (relative error ~2^-8 per
  element) moves it from the exact top ``limit`` to below that wider cut.

Needs from the store: ``db``, ``read_snapshot()``, ``generation()``, ``_readable_sql(tokens)``,
``_common_terms_dropped(query, max_df)``.
"""
from __future__ import annotations

import re
import threading
from collections import OrderedDict

from .filters import Filters, sqlite_where

_WORD = re.compile(r"\w+", re.UNICODE)

PREFILTER_MIN = 20_000  # rows from which the vector side pre-scores in bfloat16
POSTINGS_BUDGET = 4_000_000  # scored postings kept (12 bytes each: ~48 MB)


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


class _RowMap:
    """Per generation: chunk rowids (sorted), each row's document index, document -> index;
    with vectors loaded also the float32 matrix (and its bfloat16 copy at scale)."""

    __slots__ = ("gen", "rowids", "dix", "doc_pos", "mat", "mat16")

    def __init__(self, gen, rowids, dix, doc_pos, mat=None, mat16=None):
        self.gen, self.rowids, self.dix, self.doc_pos, self.mat, self.mat16 = gen, rowids, dix, doc_pos, mat, mat16

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


class SQLiteSearchMixin:
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
                    rows = db.execute("SELECT rowid, doc_id, vec FROM chunks ORDER BY rowid").fetchall()
                    rowids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
                    dix, doc_pos = _doc_index([r[1] for r in rows])
                    mat = mat16 = None
                    if rows:
                        mat = np.frombuffer(bytearray(b"".join(r[2] for r in rows)),
                                            dtype=np.float32).reshape(len(rows), -1)
                        if len(rows) >= PREFILTER_MIN:
                            import torch

                            mat16 = torch.from_numpy(mat).to(torch.bfloat16)
                    m = _RowMap(gen, rowids, dix, doc_pos, mat, mat16)
                else:  # rowid and doc_id only: read from the (doc_id, idx) index, not the large rows
                    rows = sorted(tuple(r) for r in db.execute("SELECT rowid, doc_id FROM chunks"))
                    rowids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
                    dix, doc_pos = _doc_index([r[1] for r in rows])
                    m = _RowMap(gen, rowids, dix, doc_pos)
                st["map"] = m
                if st["post_gen"] != gen:
                    st["post"].clear()
                    st["post_n"], st["post_gen"] = 0, gen
                return m

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
    def _postings(self, m: _RowMap, word: str):
        """(positions in ``m``, negated bm25) of the rows matching one word, as FTS5 scores it
        alone; cached per generation within ``POSTINGS_BUDGET``."""
        import numpy as np

        st = self._search_state()
        with st["lock"]:
            hit = st["post"].get(word) if st["post_gen"] == m.gen else None
            if hit is not None:
                st["post"].move_to_end(word)
                return hit
        with self.read_snapshot() as db:
            gen = int(db.execute("SELECT value FROM meta WHERE key='gen'").fetchone()[0])
            rows = db.execute("SELECT rowid, bm25(chunks_fts, 1.0, 0.5) FROM chunks_fts WHERE chunks_fts MATCH ?",
                              (phrase(word),)).fetchall()
        rowids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        scores = np.fromiter((r[1] for r in rows), dtype=np.float64, count=len(rows))
        pos, ok = m.positions(rowids)
        out = (pos[ok], scores[ok])  # a row the map lacks (written since) is left out: fail closed
        if gen == m.gen:
            with st["lock"]:
                if st["post_gen"] == m.gen and word not in st["post"]:
                    st["post"][word] = out
                    st["post_n"] += len(rows)
                    while st["post_n"] > POSTINGS_BUDGET and len(st["post"]) > 1:
                        _, (p, _) = st["post"].popitem(last=False)
                        st["post_n"] -= len(p)
        return out

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
        parts = [self._postings(m, w) for w in words]
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

            approx = torch.mv(m.mat16, torch.from_numpy(q.copy()).to(torch.bfloat16)).float().numpy()
            approx = approx[idx]
            near = idx[np.argpartition(-approx, wide - 1)[:wide]]
            scores, idx = m.mat[near] @ q, near
        else:
            # most rows readable: score all (no copy of the matrix), then pick; few: gather first
            scores = _matvec(m.mat, q)[idx] if len(idx) * 2 > len(m.rowids) else m.mat[idx] @ q
        n = min(limit, len(idx))
        top = np.argpartition(-scores, n - 1)[:n]
        top = top[np.argsort(-scores[top], kind="stable")]
        return [(int(m.rowids[idx[t]]), float(scores[t])) for t in top]
