"""Named entities per chunk (ingest.pipeline.nlp) through the real pipeline and the real spaCy model:
stored on hits, filterable, faceted under the ACL, incremental (cache by chunk text hash +
model), never from redacted text, and a note (not an error) for unsupported languages."""
from __future__ import annotations

import json
import os

import pytest

from ingest.pipeline.nlp import EntityExtractor, NLPConfig
from ingest.stores.entities import entity_key, normalise, parse_entity

PARAS = [
    "Globex Corporation's board met in Springfield on March 3, 2024. Jane Smith, the chief executive of "
    "Globex Corporation, said the company would pay $5 million to settle the dispute with Initech.",
    "Under the Data Protection Act, Initech must delete the records. Bob Jones of Initech said "
    "the firm would comply, and that Globex Corporation had been informed in London.",
    "The Olympic Games in Paris were mentioned only in passing. Jane Smith travelled to Paris "
    "and met Bob Jones there to discuss the Globex Corporation settlement once more.",
]


def _doc(paras: list[str]) -> str:
    # one heading per paragraph, padded, so every paragraph is a chunk of its own
    filler = " ".join(["The meeting notes continue with routine remarks about schedules and rooms."] * 12)
    return "\n\n".join(f"# Part {i}\n\n{p}\n\n{filler}" for i, p in enumerate(paras))


def test_normalise_case_whitespace_possessive_the():
    assert normalise("  Globex\n Corporation\u2019s ") == "Globex Corporation"
    assert normalise("the  United Nations") == "United Nations"
    assert normalise("James'") == "James"
    assert entity_key("org", "GLOBEX corporation's") == "ORG:globex corporation"
    assert parse_entity("ORG:Globex  Corporation") == "ORG:globex corporation"
    with pytest.raises(ValueError, match="TYPE:name"):
        parse_entity("Globex")


def test_config_is_validated():
    assert NLPConfig.from_config({"nlp": {"types": ["org", "person"]}}).types == ("ORG", "PERSON")
    with pytest.raises(ValueError, match="unknown key"):
        NLPConfig.from_config({"nlp": {"modle": "x"}})
    with pytest.raises(ValueError, match="entities must be true or false"):
        NLPConfig.from_config({"nlp": {"entities": "yes"}})
    from ingest.pipeline.nlp import get_extractor

    assert get_extractor({"nlp": {"entities": False}}) is None


@pytest.fixture
def folder(world_dir):
    root = world_dir / "docs"
    root.mkdir()
    root.chmod(0o755)
    return root


def _write(path, text, mode=0o644):
    path.write_text(text)
    path.chmod(mode)


def _pipeline(store, embedder, **kw):
    from ingest.pipeline.document import Pipeline

    return Pipeline(store, embedder, sandbox=False, nlp=EntityExtractor(NLPConfig(**kw)))


def test_entities_on_hits_filter_facets_and_incremental(folder, store, embedder):
    from ingest.search.index import Index
    from ingest.sources.base import MOVE, UPSERT, ChangeEvent

    _write(folder / "a.md", _doc(PARAS))
    _write(folder / "b.md", _doc(["Nothing of note happened at Umbrella Holdings in Denver on Friday. " * 3]))
    p = _pipeline(store, embedder)
    for rel in ("a.md", "b.md"):
        assert p.upsert(str(folder), rel).action == "indexed"
    n_first = p.nlp.texts_processed
    a_chunks = store.db.execute("SELECT COUNT(*) FROM chunks c JOIN documents d ON d.doc_id=c.doc_id"
                                " WHERE d.external_id='a.md'").fetchone()[0]
    assert a_chunks >= 3
    idx = Index(store, config={})
    hits = idx.search("Globex settlement", principal="everyone", k=10)
    assert any(h.entities.get("ORG:Globex Corporation") for h in hits)
    assert all(not any(k.startswith("CARDINAL:") for k in h.entities) for h in hits)  # only configured types

    found = idx.search("settlement", principal="everyone", k=10, filters={"entities_any": ["org:globex corporation"]})
    assert found and all(h.uri.endswith("a.md") for h in found)
    assert all("ORG:Globex Corporation" in h.entities for h in found)

    orgs = {f["name"]: f for f in idx.facets("ORG", principal="everyone")}
    assert orgs["ORG:Globex Corporation"]["count"] >= 2 and orgs["ORG:Globex Corporation"]["docs"] == 1
    people = {f["name"] for f in idx.facets("person", principal="everyone", k=5)}
    assert {"PERSON:Jane Smith", "PERSON:Bob Jones"} <= people
    only_b = idx.facets("ORG", principal="everyone", filters={"path_prefix": str(folder / "b.md")})
    assert [f["name"] for f in only_b] == ["ORG:Umbrella Holdings"]

    # an edit of one paragraph: the model runs on the changed chunk(s) only
    edited = list(PARAS)
    edited[1] = edited[1].replace("London", "Manchester")
    _write(folder / "a.md", _doc(edited))
    assert p.upsert(str(folder), "a.md").action == "indexed"
    assert 1 <= p.nlp.texts_processed - n_first < a_chunks
    assert "GPE:Manchester" in {f["name"] for f in idx.facets("GPE", principal="everyone", k=50)}
    n_edit = p.nlp.texts_processed

    # a rename and an ACL change run nothing
    os.rename(folder / "a.md", folder / "c.md")
    p.handle(ChangeEvent(MOVE, str(folder), "a.md", "c.md"))
    (folder / "c.md").chmod(0o600)
    assert p.handle(ChangeEvent(UPSERT, str(folder), "c.md"))[0].action == "acl"
    assert p.nlp.texts_processed == n_edit
    # and the facet counts follow the ACL at once: "everyone" no longer reads c.md
    assert "ORG:Globex Corporation" not in {f["name"] for f in idx.facets("ORG", principal="everyone", k=50)}


def test_redacted_text_yields_no_entities(folder, store, embedder):
    from ingest.pipeline.classify import LabelPolicy
    from ingest.pipeline.document import Pipeline
    from ingest.search.index import Index

    text = ("Please write to jane.smith@globex-industries.com about the contract. "
            "Jane Smith of Initech will answer from Chicago. ") * 3
    _write(folder / "r.txt", text)
    p = Pipeline(store, embedder, sandbox=False, nlp=EntityExtractor(),
                 policy=LabelPolicy(rules={"pii:email": "redact"}))
    assert p.upsert(str(folder), "r.txt").action == "indexed"
    rows = store.db.execute("SELECT text, entities FROM chunks").fetchall()
    assert rows and all("globex-industries" not in r["text"] for r in rows)
    keys = [k for r in rows for k in json.loads(r["entities"])]
    assert keys and not any("globex" in k or "REDACTED" in k.upper() for k in keys)
    assert any(k == "PERSON:jane smith" for k in keys)
    assert not any("globex" in f["key"] for f in Index(store, config={}).facets("ORG", principal="everyone"))


def test_unsupported_language_is_a_note_not_an_error(folder, store, embedder):
    from ingest.sources.base import UPSERT, ChangeEvent

    _write(folder / "de.txt", "Die Bundesregierung hat am Montag in Berlin beschlossen, dass die Deutsche Bahn "
                              "mehr Geld für neue Züge bekommt. Angela Merkel sagte dazu, das sei richtig. " * 3)
    p = _pipeline(store, embedder)
    out = p.handle(ChangeEvent(UPSERT, str(folder), "de.txt"))[0]
    assert out.action == "indexed"
    assert p.nlp.texts_processed == 0
    trace = json.loads(store.db.execute("SELECT trace FROM outcomes WHERE doc_id=? ORDER BY id DESC LIMIT 1",
                                        (out.doc_id,)).fetchone()[0])
    assert trace["notes"] == ["nlp:unsupported-language"]
    assert all(r[0] == "{}" for r in store.db.execute("SELECT entities FROM chunks"))


def test_entities_off_and_type_selection(folder, store, embedder):
    from ingest.pipeline.document import Pipeline

    _write(folder / "a.md", _doc(PARAS[:1]))
    p = Pipeline(store, embedder, sandbox=False, nlp=False)
    assert p.upsert(str(folder), "a.md").action == "indexed"
    assert all(r[0] == "{}" for r in store.db.execute("SELECT entities FROM chunks"))
    p2 = _pipeline(store, embedder, types=["MONEY"])
    _write(folder / "a.md", _doc(PARAS[:1]) + "\n\nMore.")
    assert p2.upsert(str(folder), "a.md").action == "indexed"
    keys = {k for (e,) in store.db.execute("SELECT entities FROM chunks") for k in json.loads(e)}
    assert keys == {"MONEY:$5 million"}


def test_postgres_entities_facets_and_metadata_filters(folder, embedder, pg_store_url):
    from ingest.search.index import Index
    from ingest.stores.postgres import PostgresStore

    store = PostgresStore(pg_store_url)
    _write(folder / "a.md", _doc(PARAS))
    _write(folder / "b.md", _doc(["Nothing of note happened at Umbrella Holdings in Denver on Friday. " * 3]))
    p = _pipeline(store, embedder)
    for rel in ("a.md", "b.md"):
        assert p.upsert(str(folder), rel).action == "indexed"
    idx = Index(store, config={})
    found = idx.search("settlement", principal="everyone", k=10, filters={"entities_any": ["ORG:Globex Corporation"]})
    assert found and all(h.uri.endswith("a.md") for h in found)
    assert all("ORG:Globex Corporation" in h.entities for h in found)
    both = idx.search("settlement", principal="everyone", k=10,
                      filters={"entities": ["ORG:Globex Corporation", "PERSON:Bob Jones"]})
    assert both and all({"ORG:Globex Corporation", "PERSON:Bob Jones"} <= set(h.entities) for h in both)
    orgs = {f["name"]: f for f in idx.facets("ORG", principal="everyone")}
    assert orgs["ORG:Globex Corporation"]["docs"] == 1 and "ORG:Umbrella Holdings" in orgs
    assert store.facets("ORG", frozenset({"user:posix:h18_nobody"})) == []  # reads nothing: counts nothing
    assert all(h.metadata.get("language") == "en" for h in found)
    # the same counts as SQLite would give: computed from the chunks themselves
    want: dict[str, int] = {}
    for (e,) in [(r["entities"],) for r in store.db.execute("SELECT entities FROM chunks")]:
        for key, (_, n) in json.loads(e).items():
            if key.startswith("ORG:"):
                want[key] = want.get(key, 0) + n
    assert {f["key"]: f["count"] for f in idx.facets("ORG", principal="everyone", k=1000)} == want


def test_facets_over_http_and_cli_follow_the_principal(world_dir, embedder, monkeypatch):
    import socket
    import subprocess
    import sys
    import threading
    from pathlib import Path
    from urllib.parse import urlencode

    from ingest.serve.app import MOUNTS, make_server
    from tests.support.common import http_json
    from ingest.stores.sqlite import SQLiteStore

    for folder, mode, text in (("public", 0o644, "The Microsoft Corporation signed a contract with Initech in Boston last week. " * 3),
                               ("private", 0o600, "Microsoft Corporation and the Ford Motor Company met in Denver secretly last week. " * 3)):
        d = world_dir / folder
        d.mkdir(mode=0o755)
        _write(d / "n.txt", text, mode)
    store = SQLiteStore(world_dir / "index.db")
    p = _pipeline(store, embedder)
    for rel in ("public/n.txt", "private/n.txt"):
        assert p.upsert(str(world_dir), rel).action == "indexed"
    store.close()
    tok = "pub-" + "x" * 30
    monkeypatch.setenv("INGEST_TEST_TOKEN_H18", tok)
    cfg = {"serve": {"tokens": {"env:INGEST_TEST_TOKEN_H18": "everyone", "root-" + "y" * 30: {"user": "0",
                                                                                              "groups": ["0"]}}}}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = make_server(str(world_dir / "index.db"), cfg, "127.0.0.1", port, mounts={"/facets": MOUNTS["/facets"]})
    srv.prepare()
    threading.Thread(target=srv.serve, daemon=True).start()

    def get(query, token):
        return http_json(f"http://127.0.0.1:{port}/facets?{query}", token)

    try:
        q = urlencode({"type": "ORG", "k": 10})
        assert get(q, None)[0] == 401
        status, body = get(q, tok)
        names = {f["name"]: f["docs"] for f in body["facets"]}
        assert status == 200 and names.get("ORG:Microsoft Corporation") == 1 and "ORG:Ford Motor Company" not in names
        status, body = get(q, "root-" + "y" * 30)
        names = {f["name"]: f["docs"] for f in body["facets"]}
        assert status == 200 and names["ORG:Microsoft Corporation"] == 2
        status, body = get(urlencode({"type": "ORG", "path_prefix": str(world_dir / "public")}), "root-" + "y" * 30)
        assert status == 200 and {f["docs"] for f in body["facets"]} == {1}
        assert get(urlencode({"type": "ORG", "as": "root"}), tok)[0] == 400
        status, body = get("k=5", tok)
        assert status == 400 and "'type'" in body["error"]
    finally:
        srv.stop()

    repo = Path(__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=str(repo))
    out = subprocess.run([sys.executable, "-m", "ingest.cli.main", "facets", "ORG", "--store", str(world_dir / "index.db"),
                          "--as", "everyone", "--json"], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    rows = {r["name"]: r["docs"] for r in json.loads(out.stdout)}
    assert rows.get("ORG:Microsoft Corporation") == 1 and "ORG:Ford Motor Company" not in rows
    out = subprocess.run([sys.executable, "-m", "ingest.cli.main", "search", "signed", "--store", str(world_dir / "index.db"),
                          "--as", "root", "--json", "--entity", "ORG:ford motor company"], capture_output=True, text=True,
                         env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert {Path(h["uri"]).parent.name for h in json.loads(out.stdout)} == {"private"}


def _budget(left):
    """A task budget of 100 s whose time left is ``left()``: a stand-in for the clock, so a slow model
    is simulated deterministically."""
    from ingest.pipeline.budget import Budget

    class Scripted(Budget):
        def left(self) -> float:
            return left()

    return Scripted(100.0)


def _time_up_after_first_entity_piece(p):
    return _budget(lambda: 0.0 if p.nlp.texts_processed else 100.0)


def test_entities_run_in_bounded_pieces_and_go_on_from_the_cache(folder, store, embedder, monkeypatch):
    """A document whose named entities do not fit the task's time: the model runs in pieces of
    INGEST_EMBED_PIECE texts, each cached; out of time, the document goes back to the queue
    (OutOfTime with progress, never quarantined), and the next try runs only what is missing."""
    from ingest.pipeline.budget import OutOfTime

    monkeypatch.setenv("INGEST_EMBED_PIECE", "2")
    _write(folder / "long.md", _doc(PARAS * 3))  # 9 paragraphs: a chunk each
    p = _pipeline(store, embedder)
    p.budget = _time_up_after_first_entity_piece(p)
    with pytest.raises(OutOfTime) as e:
        p.upsert(str(folder), "long.md")
    assert e.value.stage == "entities" and e.value.progress
    assert p.nlp.texts_processed == 2  # one piece ran, then time was up
    assert store.get_doc(f"folder:{folder}", "long.md") is None  # not written, not quarantined: queued again

    p.budget = None  # a new task: the first piece comes from the cache
    out = p.upsert(str(folder), "long.md")
    assert out.action == "indexed" and out.chunks >= 9
    assert p.nlp.texts_processed == 2 + (out.chunks - 2)  # the cached piece did not run again
    from ingest.search.index import Index

    hits = Index(store, config={}).search("Globex settlement", principal="everyone", k=20)
    assert any(h.entities.get("ORG:Globex Corporation") for h in hits)


def test_a_group_whose_entities_run_out_of_time_queues_its_documents_again(folder, store, embedder, monkeypatch):
    from ingest.pipeline.budget import Requeue
    from ingest.sources.base import UPSERT, ChangeEvent

    monkeypatch.setenv("INGEST_EMBED_PIECE", "2")
    _write(folder / "a.md", _doc(PARAS))
    _write(folder / "b.md", _doc(list(reversed(PARAS))))
    p = _pipeline(store, embedder)
    p.budget = _time_up_after_first_entity_piece(p)
    evs = [ChangeEvent(UPSERT, str(folder), "a.md"), ChangeEvent(UPSERT, str(folder), "b.md")]
    with pytest.raises(Requeue) as r:
        p.handle_many(evs)
    assert sorted(ev.key for ev in r.value.events) == ["a.md", "b.md"]  # back to the queue, none failed
    assert store.dead_letters() == [] and store.get_doc(f"folder:{folder}", "a.md") is None
    p.budget = None
    assert [o.action for o in p.handle_many(evs)] == ["indexed", "indexed"]


def test_a_document_that_cannot_start_its_entities_in_its_own_task_is_quarantined(folder, store, embedder):
    """No time left before the first entity piece and nothing of the document kept in this task
    (its vectors were all cached): handing it on would loop for ever, so it is quarantined."""
    from ingest.pipeline.document import Pipeline

    _write(folder / "b.md", _doc(PARAS))  # the same text indexed without entities: its vectors are cached
    assert Pipeline(store, embedder, sandbox=False, nlp=False).upsert(str(folder), "b.md").action == "indexed"
    _write(folder / "a.md", _doc(PARAS))
    p = _pipeline(store, embedder)
    p.budget = _budget(lambda: 0.0)
    out = p.upsert(str(folder), "a.md")
    assert "timeout after 100 s in entities" in out.detail, (out.action, out.detail)
    assert store.get_doc(f"folder:{folder}", "a.md")["status"] == "quarantined"
    assert p.nlp.texts_processed == 0


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_entities_after_indexing_text_first_then_the_backlog(folder, embedder, kind, request):
    """A worker's pipeline (``defer_entities``) stores text and vectors at once, leaves the entities
    owed in the store's backlog, and :meth:`settle_entities` fills them: the same entities as inline,
    the cache used, a claim held for its lease, a chunk replaced meanwhile never written."""
    from ingest.pipeline.document import Pipeline
    from ingest.search.index import Index

    if kind == "sqlite":
        from ingest.stores.sqlite import SQLiteStore

        store = SQLiteStore(folder.parent / "deferred.db")
    else:
        from ingest.stores.postgres import PostgresStore

        store = PostgresStore(request.getfixturevalue("pg_store_url"))
    _write(folder / "a.md", _doc(PARAS))
    p = Pipeline(store, embedder, sandbox=False, nlp=EntityExtractor(NLPConfig()), defer_entities=True)
    assert p.upsert(str(folder), "a.md").action == "indexed"
    n = store.db.execute("SELECT COUNT(*) AS n FROM chunks").fetchone()
    n = n["n"] if isinstance(n, dict) else n[0]
    assert p.nlp.texts_processed == 0 and p.entities_owed == n == store.entities_owed() >= 3
    idx = Index(store, config={})
    hits = idx.search("Globex settlement", principal="everyone", k=10)
    assert hits and all(h.uri.endswith("a.md") and h.entities == {} for h in hits)  # the text is searchable now
    assert idx.search("settlement", principal="everyone", filters={"entities_any": ["ORG:Globex Corporation"]}) == []
    assert idx.facets("ORG", principal="everyone") == []  # owed entities count nowhere yet

    # a claim holds for its lease: a second worker takes the rest, never the same rows
    first, k1 = store.claim_entities(2, lease_s=600)
    rest, k2 = store.claim_entities(100, lease_s=600)
    assert k1 == 2 and k2 == n - 2 and not {c for c, _, _ in first} & {c for c, _, _ in rest}
    assert store.claim_entities(100, lease_s=600) == ([], 0)
    again, k3 = store.claim_entities(100, lease_s=0)  # the lease is over (a worker killed): taken again
    assert k3 == n
    outbox = store.db.execute("SELECT COUNT(*) AS n FROM outbox").fetchone()
    outbox = outbox["n"] if isinstance(outbox, dict) else outbox[0]

    done, more = p.settle_entities(lease_s=0)
    assert (done, more) == (n, False) and store.entities_owed() == 0 and p.nlp.texts_processed == n
    after = store.db.execute("SELECT COUNT(*) AS n FROM outbox").fetchone()
    assert (after["n"] if isinstance(after, dict) else after[0]) == outbox + 1  # the sinks get the entities
    found = idx.search("settlement", principal="everyone", k=10, filters={"entities_any": ["ORG:Globex Corporation"]})
    assert found and all("ORG:Globex Corporation" in h.entities for h in found)
    deferred = {f["name"]: f["count"] for f in idx.facets("PERSON", principal="everyone", k=50)}
    assert {"PERSON:Jane Smith", "PERSON:Bob Jones"} <= set(deferred)

    # an edit: the unchanged chunks take their entities from the cache at once, only the changed one is owed
    edited = list(PARAS)
    edited[1] = edited[1].replace("London", "Manchester")
    _write(folder / "a.md", _doc(edited))
    assert p.upsert(str(folder), "a.md").action == "indexed"
    assert store.entities_owed() == 1 and p.entities_owed == n + 1
    (stale, _, _), = store.claim_entities(10, lease_s=600)[0]
    _write(folder / "a.md", _doc(PARAS))  # back: the owed chunk is replaced by one the cache knows
    assert p.upsert(str(folder), "a.md").action == "indexed"
    assert store.entities_owed() == 0
    assert store.set_entities([(stale, {"ORG:x": ["X", 1]})]) == 0  # its chunk is gone: nothing written
    inline = Pipeline(store, embedder, sandbox=False, nlp=EntityExtractor(NLPConfig()))
    assert inline.settle_entities() == (0, False)
    assert {f["name"]: f["count"] for f in idx.facets("PERSON", principal="everyone", k=50)} == deferred
    store.close()


def test_entities_after_indexing_can_be_turned_off(folder, store, embedder):
    """``[nlp] after_indexing = false``: a worker's pipeline computes them inline, nothing owed."""
    from ingest.pipeline.document import Pipeline

    _write(folder / "a.md", _doc(PARAS[:1]))
    p = Pipeline(store, embedder, sandbox=False, nlp=EntityExtractor(NLPConfig(after_indexing=False)),
                 defer_entities=True)
    assert p.upsert(str(folder), "a.md").action == "indexed"
    assert store.entities_owed() == 0 and p.entities_owed == 0 and p.nlp.texts_processed >= 1
    with pytest.raises(ValueError, match="after_indexing must be true or false"):
        NLPConfig.from_config({"nlp": {"after_indexing": "later"}})


def test_a_chunk_the_entity_model_fails_on_does_not_hold_the_backlog_up(folder, store, embedder, monkeypatch, caplog):
    """The model fails on one chunk of a piece: the others get their entities, that one none (logged
    by hash, never its text, and not cached, so a fixed model tries it again), nothing stays owed."""
    from ingest.pipeline.document import Pipeline

    _write(folder / "a.md", _doc(PARAS))
    ex = EntityExtractor(NLPConfig())
    p = Pipeline(store, embedder, sandbox=False, nlp=ex, defer_entities=True)
    assert p.upsert(str(folder), "a.md").action == "indexed"
    real = ex.run

    def run(texts):
        if any("Olympic" in t for t in texts):
            raise ValueError("the model broke")
        return real(texts)

    monkeypatch.setattr(ex, "run", run)
    with caplog.at_level("DEBUG", logger="ingest.pipeline.document"):
        done, more = p.settle_entities()
    assert (done, more) == (store.db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0], False)
    assert store.entities_owed() == 0
    rows = [(t, json.loads(e)) for t, e in store.db.execute("SELECT text, entities FROM chunks")]
    assert all(e == {} for t, e in rows if "Olympic" in t) and any("Olympic" in t for t, _ in rows)
    assert all(e for t, e in rows if "Globex Corporation's board" in t)
    assert "the model broke" in caplog.text and "Olympic" not in caplog.text
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warned and all("ValueError" in w and "the model broke" not in w for w in warned)  # the message: debug only
    (h,) = [r[0] for r in store.db.execute("SELECT text_hash FROM chunks WHERE text LIKE '%Olympic%'")]
    assert store.cached_entities(ex.model_id, [h]) == {}


def test_ingest_add_stops_waiting_for_entities_that_no_worker_computes(folder, embedder, caplog):
    """``ingest add`` waits for the entity backlog, but not for ever: when nothing moves it (no worker
    reads the maintenance lane) it returns what is still owed, says why, and leaves a task queued for
    whichever worker comes."""
    import time

    from ingest.cli.runner import Queue, settle_entities
    from ingest.pipeline.document import Pipeline
    from ingest.stores.sqlite import SQLiteStore
    from workers.app import embedded_broker
    from workers.lanes import entities_lane

    db = folder.parent / "owed.db"
    store = SQLiteStore(db)
    _write(folder / "a.md", _doc(PARAS))
    assert Pipeline(store, embedder, sandbox=False, nlp=EntityExtractor(NLPConfig()),
                    defer_entities=True).upsert(str(folder), "a.md").action == "indexed"
    owed = store.entities_owed()
    q = Queue(str(db), embedded_broker(db))
    t0 = time.monotonic()
    with caplog.at_level("WARNING", logger="ingest.cli.runner"):
        assert settle_entities(q, store, progress=False, deadline=None, stall_s=0.3) == owed > 0
    assert time.monotonic() - t0 < 30
    assert f"is a worker reading the {entities_lane()} lane" in caplog.text
    assert q.depth()[entities_lane()] >= 1  # queued for the next worker
    with pytest.raises(TimeoutError, match="still owe their named entities"):
        settle_entities(q, store, progress=False, deadline=time.monotonic() + 0.2, stall_s=60)
    store.close()
