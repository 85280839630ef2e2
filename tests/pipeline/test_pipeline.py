"""The per-document pipeline in-process with the real model and the real store:
incremental decisions, counts of parses and embeddings, errors, permissions."""
import os

import pytest

from corpora.generate import edit_paragraph, generate, generate_long_docx
from tests.support.common import kernel_can_read, run_events
from ingest.search.index import Index


def _actions(outs):
    return sorted(o.action for o in outs)


def _chunks(store, doc_id):
    return store.db.execute("SELECT chunk_id, text_hash, vec FROM chunks WHERE doc_id=? ORDER BY idx",
                            (doc_id,)).fetchall()


def _doc(store, root, rel):
    from ingest.pipeline.document import folder_source

    return store.get_doc(folder_source(str(root)), rel)


@pytest.fixture
def root(world_dir):
    r = world_dir / "docs"
    r.mkdir()
    return r


def test_unchanged_files_are_skipped_without_reading(pipeline, root):
    (root / "a.md").write_text("# Notes\n\nThe launch code word is periwinkle.\n")
    assert _actions(run_events(pipeline, root)) == ["indexed"]
    assert run_events(pipeline, root) == []  # size+mtime+ACL equal: no event at all
    os.utime(root / "a.md")  # new mtime, same bytes: hashed, not parsed
    outs = run_events(pipeline, root)
    assert _actions(outs) == ["touched"] and outs[0].parsed == 0 and outs[0].embedded == 0
    assert run_events(pipeline, root) == []


def test_edit_one_paragraph_reembeds_only_changed_chunks(pipeline, root, embedder):
    path = root / "long.docx"
    generate_long_docx(path, sections=10, paragraphs_per_section=4)
    outs = run_events(pipeline, root)
    assert _actions(outs) == ["indexed"]
    doc = _doc(pipeline.store, root, "long.docx")
    before = _chunks(pipeline.store, doc["doc_id"])
    assert len(before) >= 15, len(before)  # a ~20-chunk document
    n0 = embedder.computed
    edit_paragraph(path, 4, 2, "This paragraph was rewritten: the audit committee approved the new ledger "
                   "policy for the Oslo office after a long discussion of the risks involved.")
    outs = run_events(pipeline, root)
    assert _actions(outs) == ["indexed"]
    after = _chunks(pipeline.store, doc["doc_id"])
    new_hashes = {r["text_hash"] for r in after} - {r["text_hash"] for r in before}
    computed = embedder.computed - n0
    assert computed == outs[0].embedded == len(new_hashes)  # counted by the embedder
    assert 1 <= computed <= 3, computed  # the changed chunk plus re-chunked neighbours
    assert len(after) >= 15


def test_rename_keeps_chunks_and_vectors(pipeline, root, embedder):
    generate(root, formats=("docx",), seed=3)
    rel = "docx/docx-000.docx"
    run_events(pipeline, root)
    doc = _doc(pipeline.store, root, rel)
    before = _chunks(pipeline.store, doc["doc_id"])
    n0 = embedder.computed
    os.rename(root / rel, root / "renamed.docx")
    outs = run_events(pipeline, root)
    assert [o.action for o in outs] == ["moved", "skipped"]
    assert sum(o.parsed for o in outs) == 0 and embedder.computed == n0
    moved = _doc(pipeline.store, root, "renamed.docx")
    assert moved["doc_id"] == doc["doc_id"] and moved["uri"].endswith("/renamed.docx")
    assert _doc(pipeline.store, root, rel) is None
    after = _chunks(pipeline.store, doc["doc_id"])
    assert [r["chunk_id"] for r in after] == [r["chunk_id"] for r in before]
    assert all(a["vec"] == b["vec"] for a, b in zip(after, before))


def test_delete_removes_document_and_chunks(pipeline, root):
    facts = generate(root, formats=("md", "txt"), seed=5)
    run_events(pipeline, root)
    idx = Index(pipeline.store)
    assert any(facts[0].keyword in h.text for h in idx.search(facts[0].query, principal="everyone", k=5))
    os.remove(root / facts[0].file)
    assert _actions(run_events(pipeline, root)) == ["deleted"]
    assert not any(facts[0].keyword in h.text for h in idx.search(facts[0].query, principal="everyone", k=50))
    n = pipeline.store.db.execute("SELECT COUNT(*) FROM chunks_fts WHERE chunks_fts MATCH ?",
                                  (f'"{facts[0].keyword}"',)).fetchone()[0]
    assert n == 0


def test_chmod_updates_acl_only(pipeline, root, embedder):
    facts = generate(root, formats=("pdf",), seed=7)
    run_events(pipeline, root)
    idx = Index(pipeline.store)
    f = facts[0]
    assert any(f.keyword in h.text for h in idx.search(f.query, principal="everyone", k=5))
    n0 = embedder.computed
    os.chmod(root / f.file, 0o640)
    outs = run_events(pipeline, root)
    assert _actions(outs) == ["acl"] and outs[0].parsed == 0 and embedder.computed == n0
    assert not any(f.keyword in h.text for h in idx.search(f.query, principal="everyone", k=50))


def test_bad_files_get_specific_errors_and_good_files_index(pipeline, root):
    facts = generate(root, formats=("md",), seed=9)
    (root / "broken.pdf").write_bytes(b"%PDF-1.7\n1 0 obj << /Type /Catalog /Pages 2 0 R >>\nendobj\ntrailer\n%%EOF")
    (root / "empty.txt").write_bytes(b"")
    (root / "setup.exe").write_bytes(b"MZ\x90\x00" + os.urandom(2000))
    outs = run_events(pipeline, root)
    assert _actions(outs) == ["error", "error", "error", "indexed"]
    st = pipeline.store.status()
    errs = {e["uri"].rsplit("/", 1)[1]: e["error_code"] for e in st["errors"]}
    assert errs == {"broken.pdf": "corrupt", "empty.txt": "empty-file", "setup.exe": "unsupported-type"}
    assert all(e["error"] for e in st["errors"])
    assert st["by_status"]["indexed"] == 1
    hits = Index(pipeline.store).search(facts[0].query, principal="everyone", k=3)
    assert facts[0].keyword in hits[0].text


def test_two_users_see_exactly_what_they_may_read(pipeline, world_dir, os_users):
    """Three files with different owners/groups/modes; every search agrees with the kernel,
    also when k is larger than what the user may read."""
    root = world_dir / "share"
    root.mkdir()
    alice, bob, carol = os_users["ingt_alice"], os_users["ingt_bob"], os_users["ingt_carol"]
    specs = {  # name: (owner, group owner, mode)
        "alice-private.md": (alice, alice.pw_gid, 0o600),
        "team.md": (bob, bob.pw_gid, 0o640),       # ingt_team: alice and bob
        "carol-public.md": (carol, carol.pw_gid, 0o604),
    }
    for i, (name, (owner, gid, mode)) in enumerate(specs.items()):
        p = root / name
        p.write_text(f"# Budget note {i}\n\nThe shared budget keyword is budgetword and item {name}.\n\n"
                     + "\n\n".join(f"Budget paragraph {j} for {name} with budgetword." for j in range(5)))
        os.chown(p, owner.pw_uid, gid)
        os.chmod(p, mode)
    run_events(pipeline, root)
    idx = Index(pipeline.store)
    all_chunks = pipeline.store.db.execute("SELECT c.chunk_id, d.uri FROM chunks c JOIN documents d USING(doc_id)").fetchall()
    for user in ("ingt_alice", "ingt_bob", "ingt_carol"):
        readable = {r["chunk_id"] for r in all_chunks
                    if kernel_can_read(user, r["uri"][len("file://"):])}
        for k in (1, 3, 100):
            hits = idx.search("budgetword budget", principal=user, k=k)
            got = {h.chunk_id for h in hits}
            assert got <= readable, (user, k)
            assert len(hits) == min(k, len(readable)), (user, k, len(hits), len(readable))
        assert {h.chunk_id for h in idx.search("budgetword", principal=user, k=100, mode="bm25")} == readable
        assert {h.chunk_id for h in idx.search("budgetword", principal=user, k=100, mode="vector")} == readable
    # sanity: the three users do see different things
    seen = {u: {h.uri for h in idx.search("budgetword", principal=u, k=100)} for u in ("ingt_alice", "ingt_carol")}
    assert seen["ingt_alice"] != seen["ingt_carol"]
