"""Child documents end to end in the pipeline: archive members and mail attachments are
documents of their own, addressed <parent>!<member>, inheriting the parent's ACL,
updated and deleted with it."""
import io
import os
import zipfile
from email.message import EmailMessage

import pytest
from tests.support.common import run_events
from ingest.search.index import Index


def _zip(path, members: dict[str, str]):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, text in members.items():
            z.writestr(name, text)


def _rows(store):
    return {r["external_id"]: dict(r) for r in store.db.execute("SELECT * FROM documents")}


def test_archive_members_are_child_documents(pipeline, world_dir, embedder):
    root = world_dir / "share"
    root.mkdir()
    _zip(root / "bundle.zip", {"notes/alpha.md": "# Alpha\n\nThe alpha memo mentions quasarword.\n",
                               "beta.txt": "The beta memo mentions pulsarword.\n"})
    outs = run_events(pipeline, root)
    assert [o.action for o in outs] == ["indexed"] and outs[0].parsed == 3
    rows = _rows(pipeline.store)
    assert set(rows) == {"bundle.zip", "bundle.zip!notes/alpha.md", "bundle.zip!beta.txt"}
    parent = rows["bundle.zip"]
    assert rows["bundle.zip!beta.txt"]["parent_id"] == parent["doc_id"]
    idx = Index(pipeline.store)
    hit = idx.search("quasarword", principal="everyone", k=1, mode="bm25")[0]
    assert hit.uri.endswith("/bundle.zip!notes/alpha.md")
    # edit the archive: one member changes, one goes away, one is new
    n0 = embedder.computed
    _zip(root / "bundle.zip", {"notes/alpha.md": "# Alpha\n\nThe alpha memo mentions quasarword.\n",
                               "gamma.txt": "The gamma memo mentions magnetarword.\n"})
    run_events(pipeline, root)
    rows = _rows(pipeline.store)
    assert set(rows) == {"bundle.zip", "bundle.zip!notes/alpha.md", "bundle.zip!gamma.txt"}
    assert not idx.search("pulsarword", principal="everyone", k=5, mode="bm25")
    assert idx.search("magnetarword", principal="everyone", k=1, mode="bm25")
    assert embedder.computed - n0 <= 2  # gamma's chunk and the archive's member list; alpha untouched
    # permissions of the archive apply to its members
    os.chmod(root / "bundle.zip", 0o600)
    assert [o.action for o in run_events(pipeline, root)] == ["acl"]
    assert not idx.search("quasarword", principal="everyone", k=5, mode="bm25")
    # deleting the archive deletes its members
    os.remove(root / "bundle.zip")
    run_events(pipeline, root)
    assert _rows(pipeline.store) == {}
    assert pipeline.store.db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0] == 0


def test_mail_attachments_are_child_documents(pipeline, world_dir):
    root = world_dir / "mail"
    root.mkdir()
    msg = EmailMessage()
    msg["Subject"], msg["From"], msg["To"] = "Quarterly figures", "ann@example.com", "bob@example.com"
    msg.set_content("Bob, the figures are attached. Nothing secret in the body.")
    buf = io.BytesIO()
    _zip(buf, {"inner.txt": "The nested archive mentions nebulaword."})
    msg.add_attachment("The attached report mentions cometword.".encode(), maintype="text", subtype="plain",
                       filename="../../report.txt")
    msg.add_attachment(buf.getvalue(), maintype="application", subtype="zip", filename="more.zip")
    (root / "m.eml").write_bytes(bytes(msg))
    run_events(pipeline, root)
    rows = _rows(pipeline.store)
    assert set(rows) == {"m.eml", "m.eml!report.txt", "m.eml!more.zip", "m.eml!more.zip!inner.txt"}
    idx = Index(pipeline.store)
    assert idx.search("nebulaword", principal="everyone", k=1, mode="bm25")[0].uri.endswith("m.eml!more.zip!inner.txt")
    assert not any(p.name == "report.txt" for p in world_dir.rglob("report.txt"))  # nothing written outside


# -- a container and its children land together (issue 15) ---------------------------
def _mail_with(path, attachments: dict[str, str], body="The covering note mentions holderword."):
    msg = EmailMessage()
    msg["Subject"], msg["From"], msg["To"] = "Bundle", "ann@example.com", "bob@example.com"
    msg.set_content(body)
    for name, text in attachments.items():
        msg.add_attachment(text.encode(), maintype="text", subtype="plain", filename=name)
    path.write_bytes(bytes(msg))


def _failing_apply(store, monkeypatch, fails):
    """The store's apply raises for documents ``fails(doc)`` picks, wherever it runs: held
    for the unit (a child's write, replayed in the unit's transaction) or done at once."""
    from ingest.stores.unit import held_write

    real = type(store).apply.__wrapped__

    def apply(self, doc, chunks):
        if fails(doc):
            raise RuntimeError(f"injected failure applying {doc.external_id}")
        return real(self, doc, chunks)

    monkeypatch.setattr(type(store), "apply", held_write(apply))


def test_a_failure_applying_a_child_leaves_neither_parent_nor_children(pipeline, world_dir, monkeypatch):
    root = world_dir / "mail"
    root.mkdir()
    _mail_with(root / "m.eml", {f"a{i}.txt": f"Attachment {i} mentions kidword{i}." for i in range(5)})
    _failing_apply(pipeline.store, monkeypatch, lambda doc: doc.external_id.endswith("!a3.txt"))
    with pytest.raises(RuntimeError, match="injected failure applying m.eml!a3.txt"):
        run_events(pipeline, root)
    assert _rows(pipeline.store) == {}  # not the children applied before the failing one, not the mail
    assert pipeline.store.db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0] == 0
    monkeypatch.undo()
    run_events(pipeline, root)  # the retry lands all of it
    assert set(_rows(pipeline.store)) == {"m.eml", *(f"m.eml!a{i}.txt" for i in range(5))}


def test_a_parent_that_fails_after_its_children_replaces_nothing(pipeline, world_dir, monkeypatch):
    """The children are indexed first; the parent's own write comes last (after its
    embedding, perhaps in a group). If it never happens, no new child is visible and the
    previous parent keeps its previous children; the next re-index replaces the unit."""
    root = world_dir / "mail"
    root.mkdir()
    _mail_with(root / "m.eml", {"a.txt": "Alpha mentions firstword.", "b.txt": "Beta mentions secondword."})
    run_events(pipeline, root)
    before = _rows(pipeline.store)
    assert set(before) == {"m.eml", "m.eml!a.txt", "m.eml!b.txt"}
    # a new version: b.txt dropped, a.txt changed, c.txt new; the mail's own write fails
    _mail_with(root / "m.eml", {"a.txt": "Alpha now mentions changedword.", "c.txt": "Gamma mentions thirdword."},
               body="A new covering note mentions holderword.")
    _failing_apply(pipeline.store, monkeypatch, lambda doc: doc.parent_id is None)
    with pytest.raises(RuntimeError, match="injected failure applying m.eml$"):
        run_events(pipeline, root)
    assert _rows(pipeline.store) == before  # nothing half-replaced
    idx = Index(pipeline.store)
    assert idx.search("secondword", principal="everyone", k=1, mode="bm25")
    assert not idx.search("thirdword", principal="everyone", k=1, mode="bm25")
    assert not idx.search("changedword", principal="everyone", k=1, mode="bm25")
    monkeypatch.undo()
    run_events(pipeline, root)  # the re-index that works replaces the unit: b.txt goes, c.txt comes
    assert set(_rows(pipeline.store)) == {"m.eml", "m.eml!a.txt", "m.eml!c.txt"}
    assert not idx.search("secondword", principal="everyone", k=1, mode="bm25")
    assert idx.search("changedword", principal="everyone", k=1, mode="bm25")[0].uri.endswith("m.eml!a.txt")
    os.remove(root / "m.eml")
    run_events(pipeline, root)
    assert _rows(pipeline.store) == {}


def test_a_quarantined_container_lands_with_its_children(pipeline, world_dir, monkeypatch):
    """A container quarantined on its own text (here: judged so) is recorded with its
    reason in the same transaction as its children, which are indexed."""
    import ingest.pipeline.document as document
    import ingest.pipeline.quality as quality

    real = quality.assess

    def assess(ex, *a, **kw):
        report = real(ex, *a, **kw)
        if ex.mime == "message/rfc822":
            report.verdict, report.reasons = quality.QUARANTINED, ["garbled: judged so by the test"]
        return report

    monkeypatch.setattr(document, "assess", assess)  # as the pipeline calls it
    root = world_dir / "mail"
    root.mkdir()
    _mail_with(root / "m.eml", {"x.txt": "The only text mentions lonelyword."})
    run_events(pipeline, root)
    rows = _rows(pipeline.store)
    assert set(rows) == {"m.eml", "m.eml!x.txt"}
    assert rows["m.eml"]["status"] == "quarantined" and rows["m.eml"]["error_code"] == "garbled"
    assert rows["m.eml!x.txt"]["status"] == "indexed" and rows["m.eml!x.txt"]["parent_id"] == rows["m.eml"]["doc_id"]


def test_children_land_with_their_parent_in_a_group(pipeline, world_dir):
    """Bulk work: the parents wait for one shared embedding call (deferred), their children's
    writes wait with them and land in each parent's transaction."""
    from ingest.sources.base import UPSERT, ChangeEvent

    root = world_dir / "mail"
    root.mkdir()
    for m in range(3):
        _mail_with(root / f"m{m}.eml", {f"a{i}.txt": f"Mail {m} attachment {i} mentions grp{m}word{i}."
                                        for i in range(3)})
    outs = pipeline.handle_many([ChangeEvent(UPSERT, str(root), f"m{m}.eml") for m in range(3)])
    assert [o.action for o in outs] == ["indexed"] * 3
    rows = _rows(pipeline.store)
    assert set(rows) == {f"m{m}.eml{k}" for m in range(3) for k in ("", *(f"!a{i}.txt" for i in range(3)))}
    assert all(rows[f"m{m}.eml!a2.txt"]["parent_id"] == rows[f"m{m}.eml"]["doc_id"] for m in range(3))
    assert Index(pipeline.store).search("grp2word1", principal="everyone", k=1, mode="bm25")
