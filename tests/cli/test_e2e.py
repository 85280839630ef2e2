"""End to end on the embedded default: `ingest run` as a real process (watchdog, SQLite
broker, Celery worker, real model), files dropped into the watched folder."""
import os
import shutil
import signal
import sqlite3
import subprocess
import time

import pytest

from tests.support.common import IngestRun, indexed_count, wait_for
from corpora.generate import ALL_FORMATS, generate, generate_bench_corpus

pytestmark = pytest.mark.slow


def _search(store, query, principal="everyone", k=5, **kw):
    from ingest.search.index import Index
    from ingest.stores.sqlite import SQLiteStore

    return Index(SQLiteStore(store)).search(query, principal=principal, k=k, **kw)


def _counters(store):
    with sqlite3.connect(store, timeout=30) as c:
        return c.execute("SELECT COALESCE(SUM(parsed),0), COALESCE(SUM(embedded),0), COALESCE(MAX(id),0)"
                         " FROM outcomes").fetchone()


def test_every_format_dropped_into_watched_folder_becomes_searchable(world_dir):
    inbox = world_dir / "inbox"
    inbox.mkdir()
    store = world_dir / "index.db"
    staging = world_dir / "staging"
    facts = generate(staging, formats=ALL_FORMATS, seed=11)
    assert {f.fmt for f in facts} == set(ALL_FORMATS)
    with IngestRun([inbox], store):
        for f in facts:  # drop them in, one by one, as a user would
            shutil.copy(staging / f.file, inbox / os.path.basename(f.file))
        wait_for(lambda: indexed_count(store) == len(facts), timeout=120, what="all formats indexed")
    for f in facts:
        hits = _search(store, f.query, k=3)
        assert hits, f
        assert f.keyword in hits[0].text, (f.fmt, f.query, [h.text[:80] for h in hits])
        assert hits[0].uri.endswith(os.path.basename(f.file))
        assert hits[0].doc_version and hits[0].acl["allow"] == ["everyone"]
    by_fmt = {f.fmt: _search(store, f.keyword, k=1)[0] for f in facts}
    assert by_fmt["pdf"].page is not None  # page numbers survive
    assert by_fmt["docx"].section  # section path survives


def test_chmod_hides_file_from_everyone_within_2s_without_parsing(world_dir):
    inbox = world_dir / "inbox"
    inbox.mkdir()
    store = world_dir / "index.db"
    facts = generate(inbox, formats=("md",), seed=12)
    f = facts[0]
    with IngestRun([inbox], store):
        wait_for(lambda: indexed_count(store) == 1, timeout=60, what="indexed")
        assert f.keyword in _search(store, f.query, k=1)[0].text
        parsed0, embedded0, _ = _counters(store)
        t0 = time.monotonic()
        os.chmod(inbox / f.file, 0o640)  # chmod o-r
        wait_for(lambda: not any(f.keyword in h.text for h in _search(store, f.keyword, k=5, mode="bm25")),
                 timeout=10, interval=0.02, what="everyone loses access")
        elapsed = time.monotonic() - t0
        parsed1, embedded1, _ = _counters(store)
    assert elapsed <= 2.0, elapsed
    assert (parsed1, embedded1) == (parsed0, embedded0)  # zero parses, zero embeddings
    with sqlite3.connect(store) as c:
        assert c.execute("SELECT action FROM outcomes ORDER BY id DESC LIMIT 1").fetchone()[0] == "acl"


def _integrity(store):
    with sqlite3.connect(store) as c:
        docs = c.execute("SELECT doc_id, external_id, n_chunks, status FROM documents").fetchall()
        chunks = c.execute("SELECT doc_id, idx, chunk_id FROM chunks").fetchall()
        fts = c.execute("SELECT COUNT(*) FROM chunks_fts").fetchone()[0]
    return docs, chunks, fts


def test_sigkill_mid_ingest_then_restart_indexes_every_file_exactly_once(world_dir, pipeline):
    inbox = world_dir / "inbox"
    store = world_dir / "index.db"
    paths = generate_bench_corpus(inbox, 100, seed=13, paragraphs=4)
    assert len(paths) == 100
    run = IngestRun([inbox], store).start()
    wait_for(lambda: indexed_count(store) >= 15, timeout=180, what="part of the corpus indexed")
    os.kill(run.proc.pid, signal.SIGKILL)  # no chance to clean up
    run.proc.wait()
    n_mid = indexed_count(store)
    assert n_mid < 100, "the ingest finished before the kill; the test proves nothing"
    # the worker must not outlive `ingest run`
    wait_for(lambda: subprocess.run(["pgrep", "-f", f"worker --store {store}"]).returncode != 0,
             timeout=15, what="worker to die with its parent")
    with IngestRun([inbox], store):
        wait_for(lambda: indexed_count(store) == 100, timeout=300, what="restart to finish")
        time.sleep(1.0)  # let any duplicate deliveries run: they must be no-ops
    docs, chunks, fts = _integrity(store)
    assert len(docs) == 100 and all(d[3] == "indexed" for d in docs)
    assert sorted(d[1] for d in docs) == sorted(p.relative_to(inbox).as_posix() for p in paths)
    per_doc = {}
    for doc_id, idx, _ in chunks:
        per_doc.setdefault(doc_id, []).append(idx)
    for doc_id, _, n_chunks, _ in docs:
        assert sorted(per_doc[doc_id]) == list(range(n_chunks)), doc_id  # none missing, none twice
    assert len({c[2] for c in chunks}) == len(chunks) == fts
    # the same as one uninterrupted in-process ingest of the same folder
    from tests.support.common import run_events

    run_events(pipeline, inbox)
    ref_docs, ref_chunks, _ = _integrity(pipeline.store.path)
    assert sorted(d[:3] for d in docs) == sorted(d[:3] for d in ref_docs)
    assert sorted(chunks) == sorted(ref_chunks)


def test_sigterm_keeps_queued_work_and_restart_finishes_it(world_dir):
    inbox = world_dir / "inbox"
    store = world_dir / "index.db"
    generate_bench_corpus(inbox, 30, seed=14, paragraphs=3)
    run = IngestRun([inbox], store).start()
    wait_for(lambda: indexed_count(store) >= 3, timeout=120, what="some indexed")
    t0 = time.monotonic()
    assert run.stop(signal.SIGTERM) == 0
    assert time.monotonic() - t0 < 60
    assert indexed_count(store) < 30
    with IngestRun([inbox], store):
        wait_for(lambda: indexed_count(store) == 30, timeout=180, what="restart finishes the queue")


def test_deletes_moves_and_edits_while_running(world_dir):
    inbox = world_dir / "inbox"
    (inbox / "sub").mkdir(parents=True)
    store = world_dir / "index.db"
    (inbox / "a.md").write_text("# A\n\nThe aardvark memo mentions quokkaword.\n")
    (inbox / "sub" / "b.md").write_text("# B\n\nThe badger memo mentions wombatword.\n")
    with IngestRun([inbox], store):
        wait_for(lambda: indexed_count(store) == 2, timeout=60, what="indexed")
        # the outcome row is logged just after the document's transaction: wait for both
        wait_for(lambda: _counters(store)[1] >= 2, timeout=10, what="outcomes logged")
        _, emb0, _ = _counters(store)
        os.rename(inbox / "a.md", inbox / "sub" / "a-renamed.md")
        wait_for(lambda: any(h.uri.endswith("sub/a-renamed.md") for h in _search(store, "quokkaword", mode="bm25")),
                 timeout=10, what="rename seen")
        assert _counters(store)[1] == emb0  # a rename embeds nothing
        os.remove(inbox / "sub" / "b.md")
        wait_for(lambda: not _search(store, "wombatword", mode="bm25"), timeout=10, what="delete seen")
        (inbox / "sub" / "a-renamed.md").write_text("# A\n\nThe aardvark memo now mentions numbatword.\n")
        wait_for(lambda: _search(store, "numbatword", mode="bm25"), timeout=10, what="edit seen")
        assert not _search(store, "quokkaword", mode="bm25")
        (inbox / "~$draft.docx").write_bytes(b"lock")
        (inbox / "x.tmp").write_text("temp")
        time.sleep(1.0)
    with sqlite3.connect(store) as c:
        names = {r[0] for r in c.execute("SELECT external_id FROM documents")}
    assert names == {"sub/a-renamed.md"}


def test_reconcile_at_start_finds_changes_made_while_down(world_dir):
    inbox = world_dir / "inbox"
    inbox.mkdir()
    store = world_dir / "index.db"
    for i in range(3):
        (inbox / f"n{i}.txt").write_text(f"Note {i} mentions token{i}x in passing.\n")
    with IngestRun([inbox], store):
        wait_for(lambda: indexed_count(store) == 3, timeout=60, what="indexed")
    os.remove(inbox / "n0.txt")
    (inbox / "n1.txt").write_text("Note 1 now mentions changedtoken instead.\n")
    (inbox / "n3.txt").write_text("A new note mentions freshtoken.\n")
    os.rename(inbox / "n2.txt", inbox / "moved.txt")
    with IngestRun([inbox], store):
        wait_for(lambda: _search(store, "freshtoken", mode="bm25") and _search(store, "changedtoken", mode="bm25"),
                 timeout=60, what="changes while down")
        wait_for(lambda: not _search(store, "token0x", mode="bm25"), timeout=10, what="delete while down")
    with sqlite3.connect(store) as c:
        names = {r[0] for r in c.execute("SELECT external_id FROM documents")}
        moved = c.execute("SELECT COUNT(*) FROM outcomes WHERE action='moved'").fetchone()[0]
    assert names == {"n1.txt", "n3.txt", "moved.txt"}
    assert moved == 1
