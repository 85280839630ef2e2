"""Issue 15: per-document time bounds. A group task's time limit never costs a document that
did not cause it; a document that always times out is quarantined alone with the reason; a
very large document indexes with the default limits; `ingest add` tells the truth."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _add(root: Path, store: Path, *, timeout: float = 900, **env) -> subprocess.CompletedProcess:
    e = dict(os.environ, PYTHONPATH=str(REPO), **env)
    for k in ("INGEST_TASK_TIME_LIMIT", "INGEST_EMBED_PIECE", "INGEST_BULK_GROUP"):
        if k not in env:
            e.pop(k, None)  # the defaults unless the test sets one
    return subprocess.run([sys.executable, "-m", "ingest.cli.main", "add", str(root), "--store", str(store),
                           "--no-progress", "--concurrency", "1"], env=e, cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


def _me() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


def _big_docx(path: Path, sections: int, sentences: int = 1) -> None:
    """One heading + ``sentences`` sentences per section: a chunk each."""
    import docx

    d = docx.Document()
    more = [f"Observer {j} counted {j + 3} fledglings near marker {j * 7} before the spring floods came."
            for j in range(sentences - 1)]
    for i in range(sections):
        d.add_heading(f"Section {i}", level=1)
        d.add_paragraph(" ".join([f"Entry {i} records the survey of kestrel{i} nests along the river bank.", *more]))
    d.save(path)


def _hanging_tesseract(tmp: Path) -> Path:
    """A tesseract that never answers (OCR of one image hangs, every time)."""
    b = tmp / "bin"
    b.mkdir()
    t = b / "tesseract"
    t.write_text('#!/bin/sh\ncase "$1" in --version) echo "tesseract 5.3.0"; exit 0;; esac\nexec sleep 900\n')
    t.chmod(0o755)
    return t


def _scan(path: Path) -> None:
    from PIL import Image, ImageDraw

    img = Image.new("L", (400, 120), 255)
    ImageDraw.Draw(img).text((10, 40), "A scanned page that never finishes", fill=0)
    img.save(path)


def test_one_document_that_always_times_out_in_a_group_of_sixteen(tmp_path):
    root = tmp_path / "docs"
    root.mkdir()
    for i in range(15):
        (root / f"good{i:02d}.md").write_text(f"# Note {i}\n\nGood document {i} about the zebrafinch{i} survey.\n")
    _scan(root / "scan.png")
    store = tmp_path / "index.db"
    # one group of all 16; the task's soft limit 12 s (INGEST_TASK_TIME_LIMIT - 30)
    r = _add(root, store, INGEST_TESSERACT=str(_hanging_tesseract(tmp_path)), INGEST_TASK_TIME_LIMIT="42",
             INGEST_BULK_GROUP="16")
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    lines = r.stdout.strip().splitlines()
    assert lines[-1].startswith("15 indexed, 0 flagged, 1 quarantined, 0 failed, 0 dead-lettered"), r.stdout
    assert f"`ingest status --store {store}` lists them" in lines[-1]
    assert any(ln.strip().startswith("quarantined: scan.png: timeout: timeout after") for ln in lines), r.stdout

    from ingest.stores import open_store

    s = open_store(str(store))
    docs = {d["external_id"]: d for d in (s.get_doc(f"folder:{root}", n) for n in os.listdir(root))}
    assert [n for n, d in docs.items() if d["status"] == "indexed"] == [n for n in docs if n.startswith("good")]
    scan = docs["scan.png"]
    assert (scan["status"], scan["error_code"]) == ("quarantined", "timeout")
    assert scan["error"].startswith("timeout after") and " s in " in scan["error"]
    assert s.dead_letters() == []
    from ingest.search.index import open_index

    assert open_index(str(store)).search("zebrafinch7", principal=_me(), mode="bm25")


def test_a_failed_document_makes_ingest_add_exit_non_zero(tmp_path):
    root = tmp_path / "docs"
    root.mkdir()
    (root / "ok.md").write_text("# Fine\n\nAn ordinary note.\n")
    bad = root / "labelled.md"
    bad.write_text("# Labelled\n\nA note with broken labels.\n")
    os.setxattr(bad, "user.ingest.labels", b"[not json")  # the labels cannot be read: failed, no reason to index
    r = _add(root, tmp_path / "index.db")
    assert r.returncode == 1, r.stdout + r.stderr[-2000:]
    last = r.stdout.strip().splitlines()[-1]
    assert last.startswith("1 indexed, 0 flagged, 0 quarantined, 1 failed, 0 dead-lettered"), r.stdout
    assert "SecurityWarning" not in r.stderr  # no Celery wall when run as root; our one line instead
    if os.geteuid() == 0:
        assert r.stderr.count("running as root:") == 1


def test_dead_lettered_documents_count_and_fail_the_run(store):
    from ingest.cli.runner import add_exit_code

    store.log_outcome(action="indexed", source="folder:/r", external_id="a.md", doc_id=None, batch="b1")
    store.log_outcome(action="dead-letter", source="folder:/r", external_id="b.md", doc_id=None, batch="b1",
                      detail="permanent: ValueError: boom")
    ends = store.batch_ends("b1")
    assert [p for p, _ in ends["dead-lettered"]] == ["b.md"] and len(ends["indexed"]) == 1
    assert add_exit_code({k: len(v) for k, v in ends.items()}) == 1
    assert add_exit_code({"indexed": 3, "flagged": 1, "quarantined": 2, "failed": 0, "dead-lettered": 0}) == 0


def test_a_document_longer_than_a_task_goes_on_in_new_tasks_from_the_cache(tmp_path):
    """A task budget far too short for the document: each task embeds pieces (cached) and
    hands the rest on; the document gets there, nothing is dead-lettered or quarantined."""
    root = tmp_path / "docs"
    root.mkdir()
    _big_docx(root / "long.docx", 3000, sentences=6)
    store = tmp_path / "index.db"
    # a 12 s budget (soft limit 15 s) against ~100-token chunks: embedding (onnx-int8) and named
    # entities (~150 chunks/s here) together take well over 20 s for 3,000 of them on 2 cores, so the
    # document needs 2 tasks or more (3,000 one-sentence chunks fitted in one task once int8 embedding
    # was the default)
    r = _add(root, store, INGEST_TASK_TIME_LIMIT="45", INGEST_EMBED_PIECE="16")
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    assert r.stdout.strip().splitlines()[-1].startswith("1 indexed, 0 flagged, 0 quarantined"), r.stdout
    assert "continued in a new task" in r.stderr
    from ingest.search.index import open_index
    from ingest.stores import open_store

    s = open_store(str(store))
    assert s.get_doc(f"folder:{root}", "long.docx")["n_chunks"] == 3000 and s.dead_letters() == []
    assert open_index(str(store)).search("kestrel2999", principal=_me(), mode="bm25")


@pytest.mark.slow
def test_a_document_of_6000_chunks_indexes_with_the_default_limits(tmp_path):
    """Acceptance (issue 15): >= 6,000 chunks on the embedded default, default limits:
    indexed, searchable, nothing dead-lettered, with progress lines while it embeds."""
    root = tmp_path / "docs"
    root.mkdir()
    _big_docx(root / "big.docx", 6100)
    store = tmp_path / "index.db"
    r = _add(root, store, timeout=3600)
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    assert r.stdout.strip().splitlines()[-1].startswith("1 indexed, 0 flagged, 0 quarantined, 0 failed, "
                                                        "0 dead-lettered"), r.stdout
    assert "/6100 chunks (" in r.stderr  # the progress line
    from ingest.search.index import open_index
    from ingest.stores import open_store

    s = open_store(str(store))
    assert s.get_doc(f"folder:{root}", "big.docx")["n_chunks"] >= 6000 and s.dead_letters() == []
    assert open_index(str(store)).search("kestrel6042", principal=_me(), mode="bm25")
