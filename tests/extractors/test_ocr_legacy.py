"""OCR (Tesseract), PDF passwords and legacy Office (LibreOffice) extraction.

Real files come from ``../shared/corpora`` (``need_corpora()``: skipped outside CI
when absent, a failure in CI). The words asserted for scanned pages are the ones a
person reads on the rendered page. Tesseract and LibreOffice are Debian packages
listed in ``.ci/apt-packages``; their absence is tested by hiding the binaries.

LibreOffice conversions cost ~1 s each, so only a handful of files are converted.
"""
from __future__ import annotations

import re
import shutil
import struct
import time
import zlib
from pathlib import Path

import pytest
from tests.support.common import need_corpora

import extractors
from extractors import ExtractionError, legacy_office, ocr
from extractors import pdf as pdf_ex
from extractors.base import ExtractContext, Limits

PDF = "application/pdf"
TIKA_OCR = "tika-test-documents/tika-parsers-extended-integration-tests"
MS = "tika-test-documents/microsoft"


def corpus(relative: str) -> Path:
    path = need_corpora() / relative
    assert path.is_file(), f"corpus file missing: {path}"
    return path


def words(text: str) -> set[str]:
    return set(re.findall(r"[A-Za-z0-9]+", text.lower()))


def error_of(path: Path, ctx: ExtractContext | None = None) -> ExtractionError:
    with pytest.raises(ExtractionError) as info:
        extractors.extract(path, ctx=ctx)
    return info.value


def text_image(lines: list[str], size=(1400, 320)):
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=48)
    image = Image.new("L", size, 255)
    draw = ImageDraw.Draw(image)
    for i, line in enumerate(lines):
        draw.text((40, 40 + 110 * i), line, font=font, fill=0)
    return image


# --------------------------------------------------------------------------- OCR: PDFs


def test_scanned_pdf_tika_is_ocrd():
    result = extractors.extract(corpus("tika-test-documents/pdf/testOCR.pdf"))
    assert result.extractor == "pdf/pypdf+tesseract"
    assert "+tesseract-" in result.extractor_version and "pypdfium2-" in result.extractor_version
    assert {"happy", "new", "year", "2003"} <= words(result.text)  # "Happy New Year 2003!"
    assert set(result.ocr_pages) == {1}
    assert result.ocr_pages[1] > 70
    for element in result.elements:
        assert element.page == 1
        assert element.meta["ocr"] is True
        assert 0 <= element.meta["confidence"] <= 100


def test_scanned_pdf_loremipsum_is_ocrd():
    result = extractors.extract(corpus("unstructured-example-docs/pdf/loremipsum-flat.pdf"))
    assert result.extractor == "pdf/pypdf+tesseract"
    assert "Lorem ipsum dolor sit amet, consectetur adipiscing elit." in result.text
    seen = {"lorem", "ipsum", "sollicitudin", "pellentesque", "fringilla", "vestibulum",
            "habitasse", "platea", "dictumst", "phasellus", "ornare", "malesuada", "pulvinar",
            "scelerisque", "convallis", "tincidunt"}
    assert seen <= words(result.text)
    # five paragraphs on the page; each starts as a person reads it
    starts = ["Lorem ipsum", "Sed posuere", "Nunc elementum", "Donec ut", "Duis quis"]
    assert [e.text[: len(s)] for e, s in zip(result.elements, starts)] == starts
    assert len(result.elements) == len(starts)
    assert result.ocr_pages[1] > 85


def test_pdf_ocr_off_and_page_limit():
    path = corpus("tika-test-documents/pdf/testOCR.pdf")
    off = extractors.extract(path, ctx=ExtractContext(ocr=False))
    assert off.extractor == "pdf/pypdf" and off.elements == [] and off.ocr_pages == {}
    assert any("OCR disabled" in w for w in off.warnings)
    capped = extractors.extract(path, ctx=ExtractContext(limits=Limits(ocr_pages=0)))
    assert capped.elements == [] and capped.ocr_pages == {}
    assert any("OCR limited to 0 pages" in w for w in capped.warnings)


def test_pdf_mixed_text_and_scanned_pages(tmp_path):
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_font("Helvetica", size=12)
    pdf.add_page()
    pdf.multi_cell(0, 8, "Page one has a real text layer about the vault code 9931.")
    pdf.add_page()
    pdf.image(text_image(["Invoice number 4471", "Reactor in Building twelve"]), x=10, y=20, w=190)
    pdf.add_page()
    pdf.rect(20, 20, 100, 50, style="F")  # no text, no image: nothing to OCR
    path = tmp_path / "mixed.pdf"
    path.write_bytes(bytes(pdf.output()))

    result = extractors.extract(path)
    assert result.extractor == "pdf/pypdf+tesseract"
    assert set(result.ocr_pages) == {2}
    by_page = {}
    for e in result.elements:
        by_page.setdefault(e.page, []).append(e)
    assert "vault code 9931" in by_page[1][0].text and not by_page[1][0].meta.get("ocr")
    page2 = " ".join(e.text for e in by_page[2])
    assert {"invoice", "4471", "reactor", "building", "twelve"} <= words(page2)
    assert all(e.meta["ocr"] for e in by_page[2])
    assert 3 not in by_page


def test_scanned_pdf_without_tesseract_is_missing_tool(monkeypatch):
    monkeypatch.setenv("INGEST_TESSERACT", "/nonexistent/tesseract")
    err = error_of(corpus("tika-test-documents/pdf/testOCR.pdf"))
    assert err.code == "missing-tool"
    assert "apt-get install tesseract-ocr" in err.message


# --------------------------------------------------------------------------- OCR: images


@pytest.mark.parametrize(
    "relative, expected",
    [
        (f"{TIKA_OCR}/testOCR.png", "This file contains some words."),
        (f"{TIKA_OCR}/testOCR.jpg", "Apache Tika\nOCR Testing"),
    ],
)
def test_ocr_images(relative, expected):
    result = extractors.extract(corpus(relative))
    assert result.extractor == "image/tesseract"
    assert result.extractor_version.startswith("tesseract-")
    assert result.text == expected
    assert result.pages == 1 and result.ocr_pages[1] > 80
    assert all(e.meta["ocr"] and e.page == 1 for e in result.elements)


def test_ocr_image_api_gives_words_and_confidences():
    text, confidence, found = ocr.ocr_image(corpus(f"{TIKA_OCR}/testOCR.png"))
    assert text == "This file contains some words."
    assert [w.text for w in found] == ["This", "file", "contains", "some", "words."]
    assert all(0 <= w.confidence <= 100 for w in found)
    assert confidence == pytest.approx(sum(w.confidence for w in found) / len(found), abs=0.01)


def test_multipage_tiff_gives_pages(tmp_path):
    first = text_image(["Quarterly report page one"])
    second = text_image(["Appendix about penguins"])
    path = tmp_path / "scan.tiff"
    first.save(path, save_all=True, append_images=[second], compression="tiff_deflate")
    result = ocr.extract(path, "image/tiff", ExtractContext())
    assert result.pages == 2 and set(result.ocr_pages) == {1, 2}
    by_page = {e.page: e.text for e in result.elements}
    assert {"quarterly", "report"} <= words(by_page[1])
    assert {"appendix", "penguins"} <= words(by_page[2])
    one = ocr.extract(path, "image/tiff", ExtractContext(limits=Limits(ocr_pages=1)))
    assert set(one.ocr_pages) == {1} and any("OCR limited" in w for w in one.warnings)


SCAN_LINES = ["The quarterly report shows steady growth", "in every region we serve, with sales up",
              "twelve percent over the previous year and", "costs held flat across the company."]


@pytest.mark.parametrize("angle", [180, 90])
def test_upside_down_and_sideways_scans_are_read_upright(angle, monkeypatch):
    page = text_image(SCAN_LINES, size=(1400, 520)).rotate(angle, expand=True)
    result = ocr.ocr_image(page)
    assert "The quarterly report shows steady growth" in result.text
    assert {"region", "twelve", "percent", "company"} <= words(result.text)
    assert result.confidence > 80
    monkeypatch.setattr(ocr, "REORIENT_BELOW", 0.0)  # no orientation detection: gibberish
    unturned = ocr.ocr_image(page)
    assert unturned.confidence < 50 and "quarterly" not in unturned.text


def test_upside_down_scan_is_indexed_upright_without_a_flag(pipeline, world_dir):
    from ingest.search.index import Index
    from ingest.sources.reconcile import reconcile

    root = world_dir / "scans"
    root.mkdir()
    text_image(SCAN_LINES, size=(1400, 520)).rotate(180).save(root / "upside-down.png")
    outs = [out for event in reconcile(pipeline.store, str(root)) for out in pipeline.handle(event)]
    assert [o.action for o in outs] == ["indexed"]
    hits = Index(pipeline.store).search("quarterly report steady growth", principal="everyone", k=3)
    assert hits and "The quarterly report shows steady growth" in hits[0].text
    assert not [label for hit in hits for label in hit.labels if label.startswith("flag:")]
    assert not pipeline.store.status()["flagged"]


def test_image_decompression_bomb_is_too_large(tmp_path):
    # a PNG header declaring 100000 x 100000 pixels (10 G pixels) and no data
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
    path = tmp_path / "bomb.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                     + chunk(b"IDAT", zlib.compress(b"\x00" * 1000)) + chunk(b"IEND", b""))
    with pytest.raises(ExtractionError) as info:
        ocr.extract(path, "image/png", ExtractContext())
    assert info.value.code == "too-large"


def test_image_without_tesseract_is_missing_tool(monkeypatch):
    monkeypatch.setenv("INGEST_TESSERACT", "/nonexistent/tesseract")
    with pytest.raises(ExtractionError) as info:
        ocr.extract(corpus(f"{TIKA_OCR}/testOCR.png"), "image/png", ExtractContext())
    assert info.value.code == "missing-tool"
    assert info.value.message == ocr.MISSING_HINT


def test_tesseract_timeout_kills_it():
    with pytest.raises(ExtractionError) as info:
        ocr.ocr_image(text_image(["slow"]), timeout=0.001)
    assert info.value.code == "timeout"
    assert "tesseract" in info.value.message


# --------------------------------------------------------------------------- PDF passwords

# (path relative to the corpora, text on the page) for files that need a password
LOCKED_PDFS = [
    ("pypdf-resources/encryption/r2-user-password.pdf", "pdf encryption test"),
    ("pypdf-resources/encryption/r3-user-password.pdf", "pdf encryption test"),
    ("pypdf-resources/encryption/r4-user-password.pdf", "pdf encryption test"),
    ("pypdf-resources/encryption/r4-aes-user-password.pdf", "pdf encryption test"),
    ("pypdf-resources/encryption/r6-both-passwords.pdf", "pdf encryption test"),
    ("pdfminer-samples/encryption/aes-128.pdf", "Secret!"),
    ("pdfminer-samples/encryption/aes-128-m.pdf", "Secret!"),
    ("pdfminer-samples/encryption/aes-256.pdf", "Secret!"),
    ("pdfminer-samples/encryption/aes-256-m.pdf", "Secret!"),
    ("pdfminer-samples/encryption/aes-256-r6.pdf", "Hello World"),
    ("pdfminer-samples/encryption/rc4-40.pdf", "Secret!"),
    ("pdfminer-samples/encryption/rc4-128.pdf", "Secret!"),
    ("unstructured-example-docs/pdf/password.pdf", "File with password"),
]
# empty user password: open with no password configured
OPEN_PDFS = [
    "pypdf-resources/encryption/r2-empty-password.pdf",
    "pypdf-resources/encryption/r2-owner-password.pdf",
    "pypdf-resources/encryption/r3-empty-password.pdf",
    "pypdf-resources/encryption/r4-owner-password.pdf",
    "pypdf-resources/encryption/r4-aes-v2-no-key-length.pdf",
    "pypdf-resources/encryption/r5-empty-password.pdf",
    "pypdf-resources/encryption/r5-owner-password.pdf",
    "pypdf-resources/encryption/r5-user-password.pdf",  # owner password empty
    "pypdf-resources/encryption/r6-empty-password.pdf",
    "pypdf-resources/encryption/r6-owner-password.pdf",
    "pypdf-resources/encryption/r6-user-password.pdf",  # owner password empty
]
PASSWORDS = [
    ("*/encryption/r6-both-passwords.pdf", "foo"),
    ("*/pypdf-resources/encryption/r*", "asdfzxcv"),
    ("*/aes-256-r6.pdf", "usersecret"),
    ("*/pdfminer-samples/encryption/*", "foo"),
    ("*/pdf/password.pdf", "password"),
]


@pytest.mark.parametrize("relative, text", LOCKED_PDFS)
def test_locked_pdf_needs_password(relative, text):
    path = corpus(relative)
    err = error_of(path)
    assert err.code == "encrypted"
    assert "password required" in err.message
    result = extractors.extract(path, ctx=ExtractContext(passwords=PASSWORDS))
    assert text in result.text
    assert "encrypted; opened with a configured password" in result.warnings


@pytest.mark.parametrize("relative", OPEN_PDFS)
def test_empty_user_password_pdf_opens(relative):
    result = extractors.extract(corpus(relative))
    assert "pdf encryption test" in result.text


def test_wrong_configured_password_and_owner_password():
    path = corpus("pypdf-resources/encrypted-file.pdf")  # user password "test"
    err = error_of(path, ExtractContext(passwords=[("*encrypted-file.pdf", "qwerty")]))
    assert err.code == "encrypted"
    assert "configured password did not open it" in err.message
    # passwords are tried in order; a later right one opens it
    ok = extractors.extract(path, ctx=ExtractContext(
        passwords=[("*", "qwerty"), ("*encrypted-file.pdf", "test")]))
    assert ok.elements
    # the owner password opens a file too
    both = corpus("pypdf-resources/encryption/r6-both-passwords.pdf")
    assert "pdf encryption test" in extractors.extract(
        both, ctx=ExtractContext(passwords=[("*", "bar")])).text


def test_passwords_match_the_source_path():
    path = corpus("unstructured-example-docs/pdf/password.pdf")
    ctx = ExtractContext(passwords=[("/shares/hr/*", "password")], source_path="/shares/hr/x.pdf")
    assert "File with password" in pdf_ex.extract(path, PDF, ctx).text


def test_irm_protected_pdf():
    err = error_of(corpus("tika-test-documents/pdf/testMicrosoftIRMServices.pdf"))
    assert err.code == "irm-protected"


# --------------------------------------------------------------------------- legacy Office


@pytest.mark.parametrize(
    "relative, extractor, needles",
    [
        (f"{MS}/testWORD.doc", "doc/libreoffice+python-docx",
         ["Sample Word Document", "Heading Level 1", "This is the header for our document"]),
        (f"{MS}/testEXCEL.xls", "xls/libreoffice+unstructured",
         ["Sample Excel Worksheet - Numbers and their Squares", "Number | Square"]),
        (f"{MS}/testPPT.ppt", "ppt/libreoffice+unstructured",
         ["Sample Powerpoint Slide", "Created with Microsoft"]),
    ],
)
def test_legacy_office_converts(relative, extractor, needles):
    result = extractors.extract(corpus(relative))
    assert result.extractor == extractor
    assert re.match(r"libreoffice-\d+\.\d+[\d.]*\+", result.extractor_version)
    assert result.mime in (legacy_office.DOC_MIME, legacy_office.XLS_MIME, legacy_office.PPT_MIME)
    for needle in needles:
        assert needle in result.text
    if extractor.startswith("doc/"):  # structure survives the conversion
        assert {"heading", "header"} <= {e.kind for e in result.elements}


@pytest.mark.parametrize(
    "name", ["testWORD_protected_passtika.doc", "testEXCEL_protected_passtika.xls",
             "testPPT_protected_passtika.ppt"],
)
def test_encrypted_legacy_office(name):
    path = corpus(f"{MS}/{name}")
    err = error_of(path)
    assert err.code == "encrypted" and "password required" in err.message
    # the extractor itself (the router may refuse before it is reached)
    mime = extractors.detect(path)
    with pytest.raises(ExtractionError) as info:
        legacy_office.extract(path, mime, ExtractContext())
    assert info.value.code == "encrypted" and "password required" in info.value.message
    with pytest.raises(ExtractionError) as info:
        legacy_office.extract(path, mime, ExtractContext(passwords=[("*passtika*", "nope")]))
    assert info.value.code == "encrypted"
    assert "configured password did not open it" in info.value.message


@pytest.mark.parametrize(
    "name, mime, text",
    [
        ("testWORD_protected_passtika.doc", legacy_office.DOC_MIME, "This is an encrypted Word 2007 File."),
        ("testEXCEL_protected_passtika.xls", legacy_office.XLS_MIME, "This is an Encrypted Excel spreadsheet."),
        # msoffcrypto decrypts; the .ppt's EncryptedSummary entry is then renamed so
        # that LibreOffice loads the result
        ("testPPT_protected_passtika.ppt", legacy_office.PPT_MIME, "This is an encrypted PowerPoint 2007 slide."),
    ],
)
def test_encrypted_legacy_office_opens_with_configured_password(name, mime, text):
    result = legacy_office.extract(corpus(f"{MS}/{name}"), mime,
                                   ExtractContext(passwords=[("*passtika*", "tika")]))
    assert text in result.text
    assert "encrypted; opened with a configured password" in result.warnings


def test_drm_protected_doc_is_irm():
    err = error_of(corpus(f"{MS}/testWORD_protected_drm.doc"))
    assert err.code == "irm-protected"


def test_missing_soffice_is_missing_tool(monkeypatch):
    monkeypatch.setattr(legacy_office.shutil, "which", lambda *a, **k: None)
    with pytest.raises(ExtractionError) as info:
        legacy_office.extract(corpus(f"{MS}/testWORD.doc"), legacy_office.DOC_MIME,
                              ExtractContext())
    assert info.value.code == "missing-tool"
    assert "apt-get install" in info.value.message and "libreoffice" in info.value.message


def test_libreoffice_timeout_kills_its_process_tree(tmp_path):
    work = tmp_path / "w"
    with pytest.raises(ExtractionError) as info:
        legacy_office.convert(corpus(f"{MS}/testWORD.doc"), "doc", work, timeout=0.3)
    assert info.value.code == "timeout"
    assert "doc/libreoffice" in info.value.message
    # nothing started for this conversion (its profile path is in every argv) lives on;
    # killed processes may linger as zombies until they are reaped
    deadline = time.monotonic() + 5
    while _live_processes_mentioning(str(work)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _live_processes_mentioning(str(work)) == []


def _live_processes_mentioning(needle: str) -> list[str]:
    live = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
        except (OSError, IndexError):
            continue
        if needle in cmdline and state not in ("Z", "X"):
            live.append(cmdline)
    return live


def test_conversion_uses_workdir_and_cleans_up(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    result = legacy_office.extract(corpus(f"{MS}/testWORD6.doc"), legacy_office.DOC_MIME,
                                   ExtractContext(workdir=work))
    assert "The quick brown fox jumps over the lazy dog" in result.text
    assert list(work.iterdir()) == []  # temp folder and LibreOffice profile removed


@pytest.fixture(autouse=True, scope="module")
def _tools_present():
    if not shutil.which("tesseract") or not shutil.which("soffice"):
        from tests.support.ci import missing

        missing("tesseract or LibreOffice not installed (apt-get install tesseract-ocr "
                "libreoffice-writer-nogui libreoffice-calc-nogui libreoffice-impress-nogui)")
