"""Bulk work shares one embedding call across documents (Pipeline.handle_many), and the
result is the same as handling the documents one by one."""
import os
import sqlite3

import pytest

from ingest.pipeline.document import Pipeline
from ingest.sources.base import DELETE, UPSERT, ChangeEvent
from ingest.stores.sqlite import SQLiteStore
from tests.support.common import RecordingEmbedder

pytestmark = pytest.mark.slow


def _corpus(root, n=6):
    for i in range(n):
        paras = "\n\n".join(f"Paragraph {j} of note {i}: the {['amber', 'basalt', 'cedar'][j % 3]} ledger "
                            f"records item {i * 100 + j} with remarks about shipping." for j in range(12))
        (root / f"note{i}.md").write_text(f"# Note {i}\n\n{paras}\n")
    (root / "broken.pdf").write_bytes(b"%PDF-1.7\nthis is not a pdf at all")
    (root / "empty.txt").write_bytes(b"")


def _snapshot(db):
    with sqlite3.connect(db) as c:
        docs = c.execute("SELECT external_id, doc_id, status, error_code, content_version, acl_version, n_chunks"
                         " FROM documents ORDER BY external_id").fetchall()
        chunks = c.execute("SELECT d.external_id, c.chunk_id, c.text, c.vec FROM chunks c"
                           " JOIN documents d ON d.doc_id=c.doc_id ORDER BY c.chunk_id").fetchall()
    return docs, chunks


def _two_notes(world_dir, embedder):
    root = world_dir / "docs"
    root.mkdir()
    os.chmod(root, 0o755)
    _corpus(root, n=2)
    store = SQLiteStore(world_dir / "i.db")
    return root, store, Pipeline(store, embedder, sandbox=False)


def test_handle_many_equals_one_by_one_with_one_encode_call(world_dir, embedder):
    root = world_dir / "docs"
    root.mkdir()
    os.chmod(root, 0o755)
    _corpus(root)
    events = [ChangeEvent(UPSERT, str(root), p.name) for p in sorted(root.iterdir())]

    one = SQLiteStore(world_dir / "one.db")
    e1 = RecordingEmbedder(embedder)
    outs1 = [o for ev in events for o in Pipeline(one, e1, sandbox=False).handle(ev)]
    many = SQLiteStore(world_dir / "many.db")
    e2 = RecordingEmbedder(embedder)
    outs2 = Pipeline(many, e2, sandbox=False).handle_many(events)

    assert [o.action for o in outs1] == [o.action for o in outs2]
    assert sorted(o.action for o in outs2) == ["error", "error"] + ["indexed"] * 6
    assert _snapshot(world_dir / "one.db")[0] == _snapshot(world_dir / "many.db")[0]
    d1, d2 = _snapshot(world_dir / "one.db")[1], _snapshot(world_dir / "many.db")[1]
    assert [r[:3] for r in d1] == [r[:3] for r in d2]
    import numpy as np

    for a, b in zip(d1, d2):  # same vectors up to batch-padding float noise
        assert float(np.frombuffer(a[3], "float32") @ np.frombuffer(b[3], "float32")) > 0.999
    assert len(e1.calls) == 6 and len(e2.calls) == 1
    assert e2.calls[0] == sum(e1.calls)  # every new chunk embedded once, in one call
    assert sum(o.embedded for o in outs2) == sum(o.embedded for o in outs1) == e2.calls[0]
    # the errors are specific, per document
    st = many.status()
    assert {e["uri"].rsplit("/", 1)[1]: e["error_code"] for e in st["errors"]} == \
        {"broken.pdf": "corrupt", "empty.txt": "empty-file"}
    one.close()
    many.close()


def test_document_changed_between_read_and_apply_is_done_again(world_dir, embedder):
    """The file is edited after it was chunked but before the batch applies: the batch
    must not store the old text; the document is redone the ordinary way."""
    root, store, pipe = _two_notes(world_dir, embedder)
    real_vectors = pipe.vectors

    def edit_then_embed(texts, hashes, **kw):
        (root / "note1.md").write_text("# Note 1\n\nA completely new text about quartz turbines.\n")
        os.utime(root / "note1.md", ns=(1, 1))
        return real_vectors(texts, hashes, **kw)

    pipe.vectors = edit_then_embed
    outs = pipe.handle_many([ChangeEvent(UPSERT, str(root), f"note{i}.md") for i in range(2)])
    assert [o.action for o in outs] == ["indexed", "indexed"]
    texts = " ".join(r[0] for r in store.db.execute(
        "SELECT c.text FROM chunks c JOIN documents d ON d.doc_id=c.doc_id WHERE d.external_id='note1.md'"))
    assert "quartz turbines" in texts and "ledger" not in texts
    store.close()


def test_non_upsert_events_in_a_group_still_apply(world_dir, embedder):
    root, store, pipe = _two_notes(world_dir, embedder)
    pipe.handle_many([ChangeEvent(UPSERT, str(root), f"note{i}.md") for i in range(2)])
    (root / "note0.md").unlink()
    outs = pipe.handle_many([ChangeEvent(DELETE, str(root), "note0.md"), ChangeEvent(UPSERT, str(root), "note1.md")])
    assert [o.action for o in outs] == ["deleted", "skipped"]
    assert store.get_doc(f"folder:{root}", "note0.md") is None
    store.close()


@pytest.mark.parametrize("n,procs", [(1, 2), (2, 2), (5, 2), (60, 2), (61, 1), (200, 2), (5183, 2), (40, 8)])
def test_bulk_groups_shrink_to_small_last_tasks(n, procs):
    """The bulk schedule covers every document once, never grows, keeps each task within
    [BULK_GROUP_MIN, BULK_GROUP_MAX] (but for a remainder), and ends with small tasks."""
    from ingest.cli.runner import BULK_GROUP_MAX, BULK_GROUP_MIN, bulk_group

    sizes = bulk_group(n, procs)
    assert sum(sizes) == n
    assert all(a >= b for a, b in zip(sizes, sizes[1:])), sizes
    assert max(sizes) <= BULK_GROUP_MAX
    assert all(s >= BULK_GROUP_MIN for s in sizes[:-1])
    if n >= 4 * procs * BULK_GROUP_MIN:
        assert sizes[-1] <= BULK_GROUP_MIN + 1 and sizes[0] > sizes[-1]


def test_producer_packs_groups_by_the_schedule(tmp_path):
    """Producer.send with a list of sizes sends ingest.changes tasks of exactly those sizes, on
    the embedded broker (kombu's SQLite transport, no server)."""
    from ingest.cli.runner import broker_for
    from workers.lanes import Producer

    store = tmp_path / "index.db"
    SQLiteStore(store).close()
    broker = broker_for(str(store), None)
    prod = Producer(str(store), broker)
    evs = [ChangeEvent(UPSERT, str(tmp_path), f"f{i}.txt") for i in range(11)]
    sent_sizes = []
    orig = prod.app.send_task

    def record(name, args=None, **kw):
        if name == "ingest.changes":
            sent_sizes.append(len(args[1]))
        return orig(name, args=args, **kw)

    prod.app.send_task = record
    assert prod.send(evs, "bulk", group=[5, 3, 2]) == 11
    assert sent_sizes == [5, 3, 2, 1]  # the last size repeats; the rest goes in a last task
    with pytest.raises(ValueError, match="at least 1"):
        prod.send(evs, "bulk", group=[4, 0])
