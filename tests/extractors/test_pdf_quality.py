"""PDF text quality (issue 3): the per-page choice between pypdf's and PDFium's text,
form field values, word spacing, and the decompression budget.

Real files from ``../shared/corpora`` (``need_corpora()``); synthetic PDFs are written
byte by byte here so that each hostile construct is exactly what the test says.
"""
from __future__ import annotations

import re
import struct
import time
import zlib
from pathlib import Path

import pytest
from tests.support.common import need_corpora

import extractors
from extractors import ExtractionError, _pdfbudget, _pdftext
from extractors.base import ExtractContext, Limits
from tests.support.pdf import pdf_of_objects, raw_pdf


def corpus(relative: str) -> Path:
    path = need_corpora() / relative
    assert path.is_file(), path
    return path


def text_of(path: Path) -> str:
    return extractors.extract(path, ctx=ExtractContext(ocr=False)).text


def jbig2_page_info(width: int, height: int) -> bytes:
    """An embedded JBIG2 stream that is one page-information segment (T.88 7.4.8)."""
    data = struct.pack(">IIIIBH", width, height, 0, 0, 0, 0)
    header = struct.pack(">IBBBI", 0, 48, 0, 1, len(data))
    return header + data


# --------------------------------------------------------------------------- engine choice


def test_cid_font_without_tounicode_reads_as_japanese_not_mojibake():
    # pypdf maps the glyph ids of these slides' CID fonts to Greek/Thaana/Oriya code
    # points; PDFium maps them through the Adobe-Japan1 ordering
    result = extractors.extract(corpus("pdfminer-samples/nonfree/nlp2004slides.pdf"),
                                ctx=ExtractContext(ocr=False))
    text = result.text
    assert "固有表現" in text and "コンパラブルコーパス" in text
    assert _pdftext.junk_share(text) < 0.01
    engines = {e.meta.get("engine") for e in result.elements}
    assert "pdfium" in engines
    assert {e.page for e in result.elements} >= set(range(1, 29))  # page numbers kept


def test_glyph_names_are_not_emitted_as_text():
    text = text_of(corpus("pdfjs-test-pdfs/TAMReview.pdf"))
    assert "/g3" not in text and "g135" not in text
    # and the words PDFium runs together are spaced again from the glyph boxes
    assert "Overview of the Technology Acceptance Model" in " ".join(text.split())
    assert "perceived usefulness" in text.lower()


def test_fake_bold_is_read_once():
    text = text_of(corpus("unstructured-example-docs/pdf/fake-bold-sample.pdf"))
    assert "BOLD TEXT SAMPLE" in text
    assert "B\nB\nO\nO" not in text and "BBOOLLDD" in text  # the sentence quoting it stays


def test_words_pypdf_runs_together_are_apart():
    text = text_of(corpus("pypdf-resources/AutoCad_Diagram.pdf"))
    assert "Thread (M) Range (mm) Torque (NM)" in " ".join(text.split())


def test_form_field_values_are_text():
    result = extractors.extract(corpus("pypdf-resources/SF424_page2.pdf"), ctx=ExtractContext(ocr=False))
    values = [e for e in result.elements if e.meta.get("form_field")]
    assert any(e.text == "U.S. Department of Interior, Fish and Wildlife Service" for e in values)
    assert all(e.page == 1 for e in values)
    # a value already in the page's text is not repeated
    texts = [e.text for e in values]
    assert len(texts) == len(set(texts))
    assert "MBL-SF424FAMILY-ALLFORMS" not in texts


def test_ligatures_are_spelled_out():
    text = text_of(corpus("unstructured-example-docs/pdf/layout-parser-paper-with-table.pdf"))
    assert "\ufb01" not in text and "\ufb00" not in text
    assert "scientific" in text and "different" in text


def test_ordinary_pages_keep_pypdf_text_and_paragraphs():
    result = extractors.extract(corpus("pypdf-sample-files/004-pdflatex-4-pages/pdflatex-4-pages.pdf"),
                                ctx=ExtractContext(ocr=False))
    assert result.pages == 4
    assert all("engine" not in e.meta for e in result.elements)
    assert "+pypdfium2-" in result.extractor_version


def test_junk_share_scores_each_failure():
    assert _pdftext.junk_share("The quick brown fox jumps over the lazy dog.") == 0
    assert _pdftext.junk_share("/g18/g152/g135/g148 /g3/g145") == 1
    assert _pdftext.junk_share("ͷগͳ ίϯύϥυϧ") == 1  # glyph ids as Greek + Bengali, Greek + Coptic
    assert _pdftext.junk_share("είΞ ୯ޠ छྨ ස ok words here") > 0.3  # scattered scripts
    assert _pdftext.junk_share("B\nB\nO\nO\nL\nL\nD\nD") == 1
    assert _pdftext.junk_share("MMuunniicciippaalliittéé") == 1
    assert _pdftext.junk_share("日本語のテキスト、コーパス and English") == 0  # CJK + Latin is normal
    assert _pdftext.junk_share("a b c") == 1 and _pdftext.junk_share("I am a cat") == 0


def test_choose_prefers_pypdf_unless_pdfium_is_clearly_better():
    same = "Gland sizes and torque values for every thread size"
    assert _pdftext.choose(same, same + " x") == ("pypdf", same)
    assert _pdftext.choose("/g18/g152 /g3/g135/g150 " * 5, same) == ("pdfium", same)
    assert _pdftext.choose("Test i ng Dedupl i cat i on " * 3, "B B O O L L D D " * 3)[0] == "pypdf"
    assert _pdftext.choose(None, same) == ("pdfium", same)
    assert _pdftext.choose(same, None) == ("pypdf", same)
    glued = "Thread (M)Range (mm)Torque (NM) and more words on the page"
    apart = "Thread (M) Range (mm) Torque (NM) and more words on the page"
    assert _pdftext.choose(glued, apart) == ("pdfium", apart)
    # PDFium splitting a word into letters is not "pypdf glued it"
    assert _pdftext.choose("Pepsi Paris Marseille France sales by quarter",
                           "P epsi P aris M arseille France sales by quarter")[0] == "pypdf"


# --------------------------------------------------------------------------- third engine (pdfminer)

# "日本語の文書です" as Adobe-Japan1 CIDs (the collection's own numbering, not Unicode)
JAPAN1_CIDS = [3284, 3722, 1952, 887, 3592, 2427, 880, 866]


def japan1_pdf(path: Path, encoding: str, repeat: int = 4, pages: int = 1) -> Path:
    """``pages`` pages of "日本語の文書です" x ``repeat`` in a CID font of the Adobe-Japan1
    collection, not embedded and without /ToUnicode (as jo.pdf): the text is CIDs only."""
    hexs = "".join(f"{c:04X}" for c in JAPAN1_CIDS * repeat).encode()
    content = b"BT /F1 24 Tf 72 700 Td <" + hexs + b"> Tj ET"
    kids = " ".join(f"{8 + i} 0 R" for i in range(pages)).encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [" + kids + b"] /Count %d >>" % pages,
        b"<< /Font << /F1 5 0 R >> >>",
        b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream",
        b"<< /Type /Font /Subtype /Type0 /BaseFont /Ryumin-Light /Encoding /" + encoding.encode()
        + b" /DescendantFonts [6 0 R] >>",
        b"<< /Type /Font /Subtype /CIDFontType0 /BaseFont /Ryumin-Light /CIDSystemInfo "
        b"<< /Registry (Adobe) /Ordering (Japan1) /Supplement 2 >> /FontDescriptor 7 0 R /DW 1000 >>",
        b"<< /Type /FontDescriptor /FontName /Ryumin-Light /Flags 6 /FontBBox [0 -141 1000 859] "
        b"/ItalicAngle 0 /Ascent 859 /Descent -141 /CapHeight 709 /StemV 69 >>",
    ] + [b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources 3 0 R >>"
         ] * pages
    return pdf_of_objects(path, objects)


def test_vertical_cid_font_pypdf_garbles_and_pdfium_drops_is_read_with_pdfminer(tmp_path):
    path = japan1_pdf(tmp_path / "vertical.pdf", "Identity-V")
    result = extractors.extract(path, ctx=ExtractContext(ocr=False))
    assert result.text.count("日本語の文書です") == 4
    assert {e.meta.get("engine") for e in result.elements} == {"pdfminer"}
    assert "+pdfminer-" in result.extractor_version and result.warnings == []


def test_horizontal_cid_font_pdfium_maps_is_not_read_a_third_time(tmp_path):
    path = japan1_pdf(tmp_path / "horizontal.pdf", "Identity-H")
    result = extractors.extract(path, ctx=ExtractContext(ocr=False))
    assert result.text.count("日本語の文書です") == 4
    assert {e.meta.get("engine") for e in result.elements} == {"pdfium"}
    assert "pdfminer" not in result.extractor_version


def test_pdfminer_pages_are_bounded_per_document(tmp_path, monkeypatch):
    from extractors import _pdfminer

    monkeypatch.setattr(_pdfminer, "MAX_PAGES", 2)
    path = japan1_pdf(tmp_path / "three.pdf", "Identity-V", pages=3)
    result = extractors.extract(path, ctx=ExtractContext(ocr=False))
    assert [e.meta.get("engine") for e in result.elements] == ["pdfminer", "pdfminer", None]
    assert result.text.count("日本語の文書です") == 8  # page 3 keeps pypdf's (garbled) text
    assert any(w.startswith("page(s) 3 may be garbled") and "limit of 2 pages" in w
               for w in result.warnings), result.warnings


def test_corpus_vertical_japanese_is_read_whole():
    # pypdf garbles every glyph of this Adobe-Japan1 font, PDFium maps about a third
    result = extractors.extract(corpus("pdfminer-samples/jo.pdf"), ctx=ExtractContext(ocr=False))
    text = "".join(result.text.split())
    for line in ("わたくしといふ現象は", "假定された有機交流電燈の", "大正十三年一月廿日", "宮澤賢治"):
        assert line in text
    assert _pdftext.junk_share(result.text) == 0


def test_corpus_embedded_truetype_cid_font_is_mapped_through_its_cmap():
    # Identity-H TrueType CID fonts without /ToUnicode: pypdf and PDFium emit glyph ids
    result = extractors.extract(corpus("pdfjs-test-pdfs/ThuluthFeatures.pdf"), ctx=ExtractContext(ocr=False))
    assert {e.meta.get("engine") for e in result.elements} == {"pdfminer"}
    words = set(re.findall(r"\w+", result.text))
    assert {"Contextual", "Ligatures", "Diacritics", "Forms"} <= words
    assert "(cid:" not in result.text and _pdftext.junk_share(result.text) < 0.05


def test_glyph_name_pages_do_not_cost_a_pdfminer_pass():
    # TAMReview's glyph-named Type1 fonts: pdfminer cannot map them either
    result = extractors.extract(corpus("pdfjs-test-pdfs/TAMReview.pdf"), ctx=ExtractContext(ocr=False))
    assert "pdfminer" not in {e.meta.get("engine") for e in result.elements}
    assert "pdfminer" not in result.extractor_version


def test_doubtful_and_can_map(tmp_path):
    import pypdf

    from extractors import _pdfminer

    clean = "The quick brown fox jumps over the lazy dog."
    mojibake = "\u0cd4ຊޠͷจॻͰ͢ " * 5
    assert not _pdftext.doubtful(clean, clean, clean)
    assert not _pdftext.doubtful("/g18/g152/g135 " * 9, clean, clean)  # ASCII: no third engine
    assert _pdftext.doubtful(mojibake, None, mojibake)
    assert _pdftext.doubtful(mojibake, "日本語", "日本語")  # the chosen text is short, the other junk
    assert not _pdftext.doubtful("日本語の文書です" * 5, "日本語の文書です" * 5, "日本語の文書です" * 5)
    page = pypdf.PdfReader(japan1_pdf(tmp_path / "j.pdf", "Identity-H")).pages[0]
    assert _pdfminer.can_map(page)
    helvetica = pypdf.PdfReader(raw_pdf(tmp_path / "h.pdf", b"BT /F1 9 Tf (x) Tj ET")).pages[0]
    assert not _pdfminer.can_map(helvetica)


# --------------------------------------------------------------------------- decompression budget


def test_bomb_giant_is_stopped_by_the_budget_before_decoding():
    path = corpus("pdfjs-test-pdfs/bomb_giant.pdf")
    started = time.monotonic()
    with pytest.raises(ExtractionError) as info:
        extractors.extract(path)
    assert info.value.code == "decompression-bomb"
    assert "JBIG2" in info.value.message and "1,192 MiB" in info.value.message
    assert "page 1" in info.value.message
    assert time.monotonic() - started < 5  # declared, not decoded


def test_jbig2_declared_size_is_read_from_the_segment_header(tmp_path):
    assert _pdfbudget.jbig2_declared_bytes(jbig2_page_info(100_000, 100_000)) == 1_250_000_000
    assert _pdfbudget.jbig2_declared_bytes(jbig2_page_info(2480, 3508)) == 310 * 3508
    assert _pdfbudget.jbig2_declared_bytes(jbig2_page_info(10, 0xFFFFFFFF)) is None  # striped
    assert _pdfbudget.jbig2_declared_bytes(b"\x00\x01") is None
    bomb = raw_pdf(tmp_path / "bomb.pdf", jbig2_page_info(60_000, 60_000), "/Filter /JBIG2Decode")
    with pytest.raises(ExtractionError) as info:
        extractors.extract(bomb)
    assert info.value.code == "decompression-bomb" and "429 MiB" in info.value.message


def test_many_streams_against_the_document_budget(tmp_path):
    path = raw_pdf(tmp_path / "four.pdf", jbig2_page_info(20_000, 20_000), "/Filter /JBIG2Decode")
    tight = Limits(max_stream_bytes=64 * 1024 * 1024, max_decoded_bytes=40 * 1024 * 1024)
    import pypdf

    with pytest.raises(ExtractionError) as info:
        _pdfbudget.check(pypdf.PdfReader(path).pages, tight)
    assert info.value.code == "decompression-bomb" and "limit 40 MiB" in info.value.message
    _pdfbudget.check(pypdf.PdfReader(path).pages, Limits())  # 48 MiB: within the defaults


def test_flate_bomb_stopped_by_the_decoder_cap(tmp_path):
    packer = zlib.compressobj(9)
    content = b"".join(packer.compress(b" " * (1 << 20)) for _ in range(200)) + packer.flush()
    assert len(content) < 1 << 20  # 200 MiB of spaces in under 1 MiB
    path = raw_pdf(tmp_path / "flate.pdf", content, "/Filter /FlateDecode")
    with pytest.raises(ExtractionError) as info:
        extractors.extract(path)
    assert info.value.code == "decompression-bomb" and "page 1" in info.value.message


# --------------------------------------------------------------------------- stage names


def _hang_in(name: str) -> None:
    from extractors import sandbox

    sandbox.stage(name)
    time.sleep(60)


def _crash_in(name: str) -> None:
    import os
    import signal

    from extractors import sandbox

    sandbox.stage(name)
    os.kill(os.getpid(), signal.SIGSEGV)


def test_timeout_names_the_stage_not_only_the_extension():
    from extractors import sandbox

    with pytest.raises(ExtractionError) as info:
        sandbox.run(_hang_in, "pdf/ocr", timeout=1, label="pdf")
    assert info.value.code == "timeout"
    assert info.value.message == "timeout after 1 s in pdf/ocr"
    with pytest.raises(ExtractionError) as info:
        sandbox.run(_crash_in, "docx", timeout=30, label="bin")
    assert info.value.code == "extractor-crash" and info.value.message.endswith("in docx")
    # the next parse starts from its own label again
    with pytest.raises(ExtractionError) as info:
        sandbox.run(time.sleep, 60, timeout=1, label="xlsx")
    assert info.value.message == "timeout after 1 s in xlsx"


def test_the_router_and_the_pdf_extractor_announce_their_stages(tmp_path):
    # a real scanned PDF whose OCR cannot finish in 1 s: the timeout names pdf/ocr
    from extractors import sandbox

    from extractors import ocr

    if not ocr.available():
        from tests.support.ci import missing

        missing("tesseract not installed (.ci/apt-packages)")
    path = corpus("unstructured-example-docs/pdf/loremipsum-flat.pdf")
    warm = sandbox.run(extractors.extract, str(need_corpora() / "pypdf-resources/crazyones.pdf"),
                       timeout=60, label="pdf")  # imports done before the timed parse
    assert "Crazy" in warm.text
    with pytest.raises(ExtractionError) as info:
        sandbox.run(extractors.extract, str(path), timeout=1.5, label="pdf")
    assert info.value.message.startswith("timeout after") and info.value.message.endswith("in pdf/ocr")


# --------------------------------------------------------------------------- library warnings


def pdf_that_makes_pypdf_warn(path: Path) -> Path:
    """A readable PDF whose ``startxref`` points 3 bytes past the xref table: pypdf logs
    "incorrect startxref pointer" and rebuilds the table."""
    raw_pdf(path, b"BT /F1 12 Tf 72 720 Td (The zanzibar memo about harbour fees) Tj ET")
    data = path.read_bytes()
    xref = int(re.search(rb"startxref\n(\d+)", data).group(1))
    path.write_bytes(data.replace(b"startxref\n%d" % xref, b"startxref\n%d" % (xref + 3)))
    return path


def test_pypdf_warnings_are_counted_not_logged(tmp_path, caplog):
    import pypdf

    path = pdf_that_makes_pypdf_warn(tmp_path / "warns.pdf")
    with caplog.at_level("WARNING"):
        pypdf.PdfReader(path).pages[0].extract_text()  # the file does make pypdf warn
    from_pypdf = [r for r in caplog.records if r.name.startswith("pypdf")]
    assert from_pypdf and all(r.levelname == "WARNING" for r in from_pypdf)
    caplog.clear()
    with caplog.at_level("WARNING"):
        result = extractors.extract(path)
    assert "The zanzibar memo about harbour fees" in result.text
    assert not [r for r in caplog.records if r.name.startswith("pypdf")]
    assert result.third_party_warnings >= len(from_pypdf)
    with caplog.at_level("DEBUG", logger="extractors.library_warnings"):
        extractors.extract(path)
    assert any("incorrect startxref pointer" in r.getMessage() for r in caplog.records
               if r.name == "extractors.library_warnings" and r.levelname == "DEBUG")
    # warnings.warn from a parser is counted too, and our own WARNING lines still show
    from extractors import library_warnings

    caplog.clear()
    with caplog.at_level("WARNING"), library_warnings.capture() as seen:
        import logging
        import warnings

        warnings.warn("odd style in sheet", UserWarning)
        logging.getLogger("openpyxl.styles").warning("odd style")
        logging.getLogger("extractors.pdf").warning("ours")
    assert seen.count == 2
    assert [r.getMessage() for r in caplog.records] == ["ours"]


def test_the_default_log_has_no_pypdf_line_and_the_trace_counts_them(tmp_path, pipeline, world_dir):
    import json
    import subprocess
    import sys

    path = pdf_that_makes_pypdf_warn(tmp_path / "warns.pdf")
    # the log as `ingest` sets it up (INFO to stderr), the parse in the sandbox process
    code = ("import logging, sys\nfrom ingest.obs.logs import setup\nsetup(logging.INFO)\n"
            "from extractors import extract, sandbox\n"
            "print(sandbox.run(extract, sys.argv[1], label='pdf').third_party_warnings)\n")
    run = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True,
                         timeout=120, cwd=Path(__file__).resolve().parents[2])
    assert run.returncode == 0, run.stderr
    assert int(run.stdout.strip()) >= 1
    assert "pypdf" not in run.stderr and "WARNING" not in run.stderr, run.stderr

    from ingest.obs.trace import doc_trip
    from ingest.sources.reconcile import reconcile

    root = world_dir / "pdfs"
    root.mkdir()
    pdf_that_makes_pypdf_warn(root / "warns.pdf")
    outs = [out for event in reconcile(pipeline.store, str(root)) for out in pipeline.handle(event)]
    assert [o.action for o in outs] == ["indexed"]
    trip = doc_trip(pipeline.store, str(root / "warns.pdf"))
    assert trip["steps"][-1]["third_party_warnings"] >= 1
    assert trip["document"]["quality"]["third_party_warnings"] == trip["steps"][-1]["third_party_warnings"]
    assert json.dumps(trip)  # the trace stays JSON
