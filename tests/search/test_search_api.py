"""The search API where people use it: grouping, neighbours, highlights, the query-embedding
cache, the CLI options, the LangChain and LlamaIndex adapters and the HTTP endpoint, all
on a real index built by the real pipeline from files with real POSIX permissions."""
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from ingest.search.index import Index
from tests.support.common import REPO, http_json
TOPICS = {
    "harbour": ("Harbour Expansion Plan", ["The harbour dredging contract was awarded in March.",
                                           "Crane capacity at the container terminal doubles by 2027.",
                                           "Environmental monitoring of the estuary continues weekly."]),
    "library": ("City Library Budget", ["The library budget grows by four percent next year.",
                                        "Opening hours on Sundays are extended to six hours.",
                                        "A new reading room for children opens in the west wing."]),
    "canteen": ("School Canteen Menu", ["The canteen serves a vegetarian dish every day.",
                                        "Suppliers of fresh vegetables are chosen by tender.",
                                        "Prices for pupils stay the same as last year."]),
}


def _doc_text(title: str, paras: list[str], filler: int) -> str:
    # one section per paragraph, so each lands in a chunk of its own (neighbours exist)
    body = "\n\n".join(f"## Part {i}\n\n" + p + " " + " ".join(f"Detail {j} is noted." for j in range(filler))
                       for i, p in enumerate(paras, 1))
    return f"# {title}\n\n{body}\n"


@pytest.fixture(scope="module")
def built(embedder):
    from ingest.pipeline.document import Pipeline
    from ingest.sources.reconcile import reconcile
    from ingest.stores.sqlite import SQLiteStore

    root = Path(tempfile.mkdtemp(prefix="ingest-api-", dir="/tmp"))
    os.chmod(root, 0o755)
    (root / "public").mkdir(mode=0o755)
    (root / "private").mkdir(mode=0o755)
    for name, (title, paras) in TOPICS.items():
        for folder, mode in (("public", 0o644), ("private", 0o600)):
            p = root / folder / f"{name}.txt"
            p.write_text(_doc_text(title + (" (internal)" if folder == "private" else ""), paras, 3))
            os.chmod(p, mode)
    store = SQLiteStore(root / "index.db")
    pipe = Pipeline(store, embedder, sandbox=False)
    for ev in reconcile(store, str(root)):
        pipe.handle(ev)
    assert store.db.execute("SELECT COUNT(*) FROM documents WHERE status='indexed'").fetchone()[0] == 6
    yield root, store
    store.close()
    shutil.rmtree(root, ignore_errors=True)


def _ids(hits):
    return [h.chunk_id for h in hits]


def test_everyone_sees_public_root_sees_all(built):
    root, store = built
    index = Index(store)
    pub = index.search("harbour dredging contract", principal="everyone", k=50, audit=False)
    assert pub and all("/public/" in h.uri for h in pub)
    everything = index.search("harbour dredging contract", principal="root", k=50, audit=False)
    assert {h.uri for h in everything} > {h.uri for h in pub}


def test_group_by_doc_neighbours_and_highlights(built):
    root, store = built
    index = Index(store)
    hits = index.search("children reading room", principal="root", k=4, group_by_doc=True, context=1,
                        audit=False)
    assert len(hits) == 4 and len({h.doc_id for h in hits}) == 4  # one hit per document
    top = hits[0]
    assert top.uri.endswith("library.txt") and "reading room" in top.text
    # the "reading room" paragraph is the last one: a neighbour before, none after
    assert top.context_before and "Sundays" in top.context_before[-1] and top.context_after == []
    assert top.section.startswith("City Library Budget")
    words = {top.text[s:e].lower() for s, e in top.highlights}
    assert {"children", "reading", "room"} <= words, words
    for s, e in top.highlights:
        assert top.text[s:e].isalnum()
    # stemming: "rooms" highlights "room"
    h2 = index.search("rooms", principal="root", k=1, mode="bm25", audit=False)[0]
    assert [h2.text[s:e] for s, e in h2.highlights] == ["room"] * len(h2.highlights) and h2.highlights
    # ungrouped: several chunks of one document may come back
    flat = index.search("library budget opening hours reading room", principal="root", k=8, audit=False)
    assert len({h.doc_id for h in flat}) < len(flat)


def test_repeated_query_embedding_comes_from_the_cache(built, embedder):
    from ingest.pipeline.embed import query_embedder

    root, store = built
    index = Index(store)
    index.search("vegetarian dish", principal="everyone", k=3, audit=False)
    qe = query_embedder(store.model_id)  # queries go through the light (ONNX) embedder
    before = qe.computed
    for _ in range(3):
        index.search("vegetarian dish", principal="everyone", k=3, audit=False)
    assert qe.computed == before and index.query_cache.hits >= 3
    index.search("a query never seen before", principal="everyone", k=3, audit=False)
    assert qe.computed == before + 1


def test_langchain_and_llamaindex_return_the_native_chunks(built):
    import importlib

    from tests.support.ci import missing

    for mod, extra in (("langchain_core", "langchain"), ("llama_index.core", "llamaindex")):
        try:
            importlib.import_module(mod)
        except ImportError:
            missing(f"{mod} is not installed (pip install -e '.[{extra}]'; the test extras include it)")
    from ingest.search.adapters.langchain import IngestRetriever as LCRetriever
    from ingest.search.adapters.llamaindex import IngestRetriever as LIRetriever

    root, store = built
    index = Index(store)
    cases = [("everyone", None, False), ("root", None, False), ("root", {"path_prefix": str(root / "private")}, True),
             ("everyone", {"exclude_labels": "secret"}, False)]
    for principal, filters, per_doc in cases:
        for q in ("crane capacity at the terminal", "prices for pupils", "opening hours"):
            native = index.search(q, principal=principal, k=5, filters=filters, group_by_doc=per_doc, audit=False)
            assert native
            lc = LCRetriever(index=index, principal=principal, k=5, filters=filters, group_by_doc=per_doc).invoke(q)
            li = LIRetriever(index, principal=principal, k=5, filters=filters, group_by_doc=per_doc).retrieve(q)
            assert [d.id for d in lc] == _ids(native)
            assert [d.page_content for d in lc] == [h.text for h in native]
            assert [d.metadata["uri"] for d in lc] == [h.uri for h in native]
            assert [n.node.node_id for n in li] == _ids(native)
            assert [n.node.get_content() for n in li] == [h.text for h in native]
            assert [n.score for n in li] == pytest.approx([h.score for h in native])
    # for_index opens a store path too
    r = LCRetriever.for_index(str(store.path), principal="everyone", k=2)
    assert all("/public/" in d.metadata["uri"] for d in r.invoke("harbour"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(built, monkeypatch, tmp_path):
    from ingest.serve.app import MOUNTS, make_server

    root, store = built
    monkeypatch.setenv("INGEST_TEST_TOKEN_PUBLIC", "pub-" + "x" * 30)
    (tmp_path / "root.token").write_text("root-" + "y" * 30 + "\n")
    cfg = {"serve": {"tokens": {"env:INGEST_TEST_TOKEN_PUBLIC": "everyone",
                                f"file:{tmp_path / 'root.token'}": {"user": "0", "groups": ["0"]}}}}
    port = _free_port()
    srv = make_server(str(store.path), cfg, "127.0.0.1", port, mounts={"/search": MOUNTS["/search"]})
    srv.prepare()
    import threading

    t = threading.Thread(target=srv.serve, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{port}/search", {"public": "pub-" + "x" * 30, "root": "root-" + "y" * 30}
    srv.stop()


_get = http_json


def test_http_search_needs_a_token_and_takes_the_principal_from_it(server, built):
    from urllib.parse import urlencode

    url, tokens = server
    root, store = built
    q = urlencode({"q": "harbour dredging contract", "k": 10})
    assert _get(f"{url}?{q}")[0] == 401
    assert _get(f"{url}?{q}", token="wrong-token-wrong-token")[0] == 401
    status, body = _get(f"{url}?{q}", token=tokens["public"])
    assert status == 200 and body["hits"]
    assert all("/public/" in h["uri"] for h in body["hits"]) and "acl" not in body["hits"][0]
    native = Index(store).search("harbour dredging contract", principal="everyone", k=10, audit=False)
    assert [h["chunk_id"] for h in body["hits"]] == _ids(native)
    status, body = _get(f"{url}?{q}", token=tokens["root"])
    assert status == 200 and any("/private/" in h["uri"] for h in body["hits"])
    # a principal in the query string is refused, whatever the token
    for p in ("principal=root", "as=root", "user=0"):
        status, body = _get(f"{url}?{q}&{p}", token=tokens["public"])
        assert status == 400 and "bearer token only" in body["error"]
    assert _get(f"{url}?{q}", token=tokens["public"], method="POST")[0] == 405
    # filters and shaping by parameter
    f = urlencode({"q": "budget", "k": 5, "per_doc": 1, "path_prefix": str(root / "private"), "context": 1})
    status, body = _get(f"{url}?{f}", token=tokens["root"])
    assert status == 200 and body["hits"] and all("/private/" in h["uri"] for h in body["hits"])
    assert len({h["doc_id"] for h in body["hits"]}) == len(body["hits"])
    status, body = _get(f"{url}?{f}", token=tokens["public"])  # a filter never widens access
    assert status == 200 and body["hits"] == []
    status, body = _get(f"{url}?q=x&colour=red", token=tokens["public"])
    assert status == 400 and "unknown parameter" in body["error"]
    status, body = _get(f"{url}?q=x&source=", token=tokens["public"])
    assert status == 400 and "'source'" in body["error"]
    status, body = _get(f"{url}?q=x&k=1000", token=tokens["public"])
    assert status == 400 and "'k'" in body["error"]


def test_http_tokens_config_errors(monkeypatch):
    from ingest.config import ConfigError
    from ingest.serve.search_http import load_tokens

    monkeypatch.delenv("INGEST_NOT_SET", raising=False)
    with pytest.raises(ConfigError, match="INGEST_NOT_SET"):
        load_tokens({"serve": {"tokens": {"env:INGEST_NOT_SET": "alice"}}})
    with pytest.raises(ConfigError, match="at least 16"):
        load_tokens({"serve": {"tokens": {"short": "alice"}}})
    with pytest.raises(ConfigError, match="user and groups"):
        load_tokens({"serve": {"tokens": {"a" * 20: {"groups": ["1"]}}}})


def test_cli_search_filters_and_shaping(built):
    root, store = built
    env = dict(os.environ, PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "ingest.cli.main", "search", "budget", "--store", str(store.path), "--as", "root",
           "--json", "-k", "5", "--per-doc", "--context", "1", "--path-prefix", str(root / "private") + "/",
           "--exclude-label", "secret", "--modified-after", "2000-01-01"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    hits = json.loads(out.stdout)
    assert hits and all("/private/" in h["uri"] for h in hits)
    assert len({h["doc_id"] for h in hits}) == len(hits)
    assert any(h["context_before"] or h["context_after"] for h in hits)
    bad = subprocess.run(cmd[:-2] + ["--modified-after", "yesterday"], capture_output=True, text=True, env=env,
                         timeout=300)
    assert bad.returncode == 2 and "modified_after" in bad.stderr
    plain = subprocess.run([sys.executable, "-m", "ingest.cli.main", "search", "children reading room", "--store",
                            str(store.path), "--as", "everyone", "-k", "1"], capture_output=True, text=True,
                           env=env, timeout=300)
    assert plain.returncode == 0 and "[reading]" in plain.stdout and "/public/" in plain.stdout
