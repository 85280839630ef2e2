"""Quality reports: measured, judged against the policy, visible on hits and in status."""
from extractors.base import Element, Extraction
from ingest.pipeline.quality import FLAGGED, OK, QUARANTINED, QualityPolicy, assess
from tests.support.common import run_events


def _ex(text, pages=None, ocr=None):
    return Extraction([Element("paragraph", text)], "t", "1", "text/plain", pages=pages, ocr_pages=ocr or {})


def test_clean_text_is_ok_and_language_detected():
    r = assess(_ex("The quarterly revenue of the northern division grew by twelve percent this year."))
    assert r.verdict == OK and r.language == "en" and r.bad_char_ratio == 0


def test_empty_and_garbled_are_quarantined():
    assert assess(_ex("   ")).verdict == QUARANTINED
    r = assess(_ex("ab\ufffd\ufffd\ufffd\x01\x02cd"))
    assert r.verdict == QUARANTINED and r.reasons[0].startswith("garbled")


def test_some_garbage_low_ocr_and_sparse_pages_are_flagged():
    r = assess(_ex("Normal text " * 20 + "\ufffd" * 5))
    assert r.verdict == FLAGGED and r.flags == ["quality:garbage-chars"]
    r = assess(_ex("Scanned text that OCR read with some doubt. " * 5, pages=1, ocr={1: 55.0}))
    assert r.verdict == FLAGGED and r.flags == ["quality:low-ocr-confidence"] and r.ocr_confidence == 55.0
    r = assess(_ex("Tiny.", pages=10))
    assert r.verdict == FLAGGED and "sparse-text" in r.reasons[0]
    assert assess(_ex("x " * 30, pages=1, ocr={1: 10.0})).verdict == QUARANTINED


def test_policy_from_environment(monkeypatch):
    monkeypatch.setenv("INGEST_QUALITY_FLAG_BAD_RATIO", "0.5")
    assert QualityPolicy.from_env().flag_bad_ratio == 0.5
    assert assess(_ex("Normal text " * 20 + "\ufffd" * 5)).verdict == OK


def test_flagged_document_is_indexed_and_every_hit_says_so(pipeline, world_dir):
    from ingest.search.index import Index

    root = world_dir / "q"
    root.mkdir()
    (root / "garbled.txt").write_text("The zanzibarword memo is here. " * 20 + "\ufffd" * 12 + "\n")
    (root / "blank.txt").write_text(" \n\n \n")
    outs = run_events(pipeline, root)
    assert sorted(o.action for o in outs) == ["error", "indexed"]
    hits = Index(pipeline.store).search("zanzibarword", principal="everyone", k=3)
    assert hits and all("flag:quality:garbage-chars" in h.labels for h in hits)
    st = pipeline.store.status()
    assert st["flagged"][0]["reasons"][0].startswith("garbage-chars")
    src = next(iter(st["by_reason"]))
    assert st["by_reason"][src] == {"flagged:quality:garbage-chars": 1, "quarantined:no-text": 1}
