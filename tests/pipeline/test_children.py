"""Child documents end to end in the pipeline: archive members and mail attachments are
documents of their own, addressed <parent>!<member>, inheriting the parent's ACL,
updated and deleted with it."""
import io
import os
import zipfile
from email.message import EmailMessage

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
