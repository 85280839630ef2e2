"""Detection by content, routing, and the ODF / EPUB / RTF / JSON / NDJSON / XML / text /
TSV extractors (issue 3).

Small documents are built here so the assertions can name what was planted in them;
real files come from ``../shared/corpora`` (``need_corpora`` skips outside CI when the
folder is missing, and fails in CI).
"""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")

import bz2
import gzip
import lzma
import tarfile
import zipfile
from pathlib import Path

import pytest
from tests.support.common import need_corpora

import extractors
from extractors import ExtractionError, detect, extract
from extractors.base import ExtractContext

DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
PPTX = "application/vnd.openxmlformats-officedocument.presentationml.presentation"
ODT = "application/vnd.oasis.opendocument.text"
ODS = "application/vnd.oasis.opendocument.spreadsheet"
ODP = "application/vnd.oasis.opendocument.presentation"
EPUB = "application/epub+zip"
DASH = " \u2014 "  # between a table's context and its header row


def corpus(relative: str) -> Path:
    path = need_corpora() / relative
    assert path.is_file(), f"corpus file missing: {path}"
    return path


def error_of(path, **kwargs) -> ExtractionError:
    with pytest.raises(ExtractionError) as info:
        extract(path, **kwargs)
    return info.value


# --------------------------------------------------------------------------- builders


def make_docx(path: Path, text: str = "Disguised Word text about Building 12.") -> Path:
    import docx

    d = docx.Document()
    d.add_heading("Heading", 1)
    d.add_paragraph(text)
    d.save(str(path))
    return path


def make_pdf(path: Path, text: str) -> Path:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_font("Helvetica", size=12)
    pdf.add_page()
    pdf.multi_cell(0, 8, text)
    path.write_bytes(bytes(pdf.output()))
    return path


_ODF_NS = (
    'xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
    'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0" '
    'xmlns:table="urn:oasis:names:tc:opendocument:xmlns:table:1.0" '
    'xmlns:draw="urn:oasis:names:tc:opendocument:xmlns:drawing:1.0" '
    'xmlns:style="urn:oasis:names:tc:opendocument:xmlns:style:1.0" '
    'xmlns:presentation="urn:oasis:names:tc:opendocument:xmlns:presentation:1.0" '
    'office:version="1.2"'
)


def make_odf(path: Path, mime: str, body: str, styles: str = "") -> Path:
    content = (f'<?xml version="1.0" encoding="UTF-8"?>\n<office:document-content {_ODF_NS}>'
               f"<office:body>{body}</office:body></office:document-content>")
    manifest = (
        '<?xml version="1.0" encoding="UTF-8"?>\n<manifest:manifest '
        'xmlns:manifest="urn:oasis:names:tc:opendocument:xmlns:manifest:1.0" manifest:version="1.2">'
        f'<manifest:file-entry manifest:full-path="/" manifest:media-type="{mime}"/>'
        '<manifest:file-entry manifest:full-path="content.xml" manifest:media-type="text/xml"/>'
        "</manifest:manifest>"
    )
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(zipfile.ZipInfo("mimetype"), mime)  # first, stored
        zf.writestr("content.xml", content, zipfile.ZIP_DEFLATED)
        zf.writestr("META-INF/manifest.xml", manifest, zipfile.ZIP_DEFLATED)
        if styles:
            zf.writestr("styles.xml",
                        f'<?xml version="1.0" encoding="UTF-8"?>\n<office:document-styles {_ODF_NS}>'
                        f"{styles}</office:document-styles>", zipfile.ZIP_DEFLATED)
    return path


ODT_BODY = """<office:text>
<text:sequence-decls><text:sequence-decl text:name="Table"/></text:sequence-decls>
<text:table-of-content><text:index-body><text:p>Findings ..... 1</text:p></text:index-body></text:table-of-content>
<text:h text:outline-level="1">Quarterly Review</text:h>
<text:p>The badge code is<text:s text:c="2"/>ALPHA-7731.<text:note text:note-class="footnote"><text:note-citation>1</text:note-citation><text:note-body><text:p>Rotated every March.</text:p></text:note-body></text:note></text:p>
<text:h text:outline-level="2">Findings</text:h>
<text:list><text:list-item><text:p>Rotate keys</text:p>
  <text:list><text:list-item><text:p>monthly</text:p></text:list-item></text:list></text:list-item>
<text:list-item><text:p>Audit firewall</text:p></text:list-item></text:list>
<table:table table:name="Staff"><table:table-column table:number-columns-repeated="2"/>
<table:table-row><table:table-cell><text:p>Name</text:p></table:table-cell><table:table-cell><text:p>Role</text:p></table:table-cell></table:table-row>
<table:table-row><table:table-cell><text:p>Ada</text:p></table:table-cell><table:table-cell><text:p>Engineer</text:p></table:table-cell></table:table-row>
</table:table>
<text:section text:name="S1"><text:p>Inside a section: Building <text:span>12</text:span>.</text:p></text:section>
<text:tracked-changes><text:changed-region><text:deletion><text:p>DELETED TEXT</text:p></text:deletion></text:changed-region></text:tracked-changes>
</office:text>"""

ODT_STYLES = """<office:master-styles><style:master-page style:name="Standard">
<style:header><text:p>ACME Confidential</text:p></style:header>
<style:footer><text:p>Internal use only</text:p></style:footer>
</style:master-page></office:master-styles>"""

ODS_BODY = """<office:spreadsheet>
<table:table table:name="Budget">
<table:table-row><table:table-cell office:value-type="string"><text:p>Item</text:p></table:table-cell>
  <table:table-cell table:number-columns-repeated="3"/>
  <table:table-cell office:value-type="string"><text:p>Cost</text:p></table:table-cell>
  <table:table-cell table:number-columns-repeated="16379"/></table:table-row>
<table:table-row><table:table-cell><text:p>Rocket</text:p></table:table-cell>
  <table:table-cell table:number-columns-repeated="3"/>
  <table:table-cell office:value-type="float" office:value="900"><text:p>900</text:p></table:table-cell></table:table-row>
<table:table-row table:number-rows-repeated="2"><table:table-cell><text:p>Fuel</text:p></table:table-cell>
  <table:table-cell table:number-columns-repeated="3"/>
  <table:table-cell office:value-type="float" office:value="75"/></table:table-row>
<table:table-row table:number-rows-repeated="1048570"><table:table-cell table:number-columns-repeated="16384"/></table:table-row>
</table:table>
<table:table table:name="Empty"><table:table-row><table:table-cell/></table:table-row></table:table>
<table:table table:name="Staff">
<table:table-header-rows><table:table-row><table:table-cell><text:p>Name</text:p></table:table-cell><table:table-cell><text:p>Team</text:p></table:table-cell></table:table-row></table:table-header-rows>
<table:table-row><table:table-cell><text:p>Grace</text:p></table:table-cell><table:table-cell><text:p>Guidance</text:p></table:table-cell></table:table-row>
</table:table>
</office:spreadsheet>"""

ODP_BODY = """<office:presentation>
<draw:page draw:name="page1">
 <draw:frame presentation:class="title"><draw:text-box><text:p>Launch Plan</text:p></draw:text-box></draw:frame>
 <draw:frame presentation:class="outline"><draw:text-box><text:list><text:list-item><text:p>Window opens 14 March</text:p></text:list-item></text:list></draw:text-box></draw:frame>
 <presentation:notes><draw:frame presentation:class="notes"><draw:text-box><text:p>Mention the budget</text:p></draw:text-box></draw:frame></presentation:notes>
</draw:page>
<draw:page draw:name="page2">
 <draw:frame presentation:class="title"><draw:text-box><text:p>Budget</text:p></draw:text-box></draw:frame>
 <draw:custom-shape><text:p>Rocket costs 900</text:p></draw:custom-shape>
</draw:page>
</office:presentation>"""


def make_epub(path: Path, *, drm: bool = False) -> Path:
    opf = """<?xml version="1.0" encoding="UTF-8"?>
<package xmlns="http://www.idpf.org/2007/opf" version="3.0" unique-identifier="id">
<metadata xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:title>Field Guide</dc:title></metadata>
<manifest>
 <item id="nav" href="nav.xhtml" media-type="application/xhtml+xml" properties="nav"/>
 <item id="c1" href="text/one.xhtml" media-type="application/xhtml+xml"/>
 <item id="c2" href="text/two%20b.xhtml" media-type="application/xhtml+xml"/>
 <item id="css" href="style.css" media-type="text/css"/>
</manifest>
<spine><itemref idref="c2"/><itemref idref="c1"/></spine>
</package>"""
    nav = """<?xml version="1.0" encoding="UTF-8"?>
<html xmlns="http://www.w3.org/1999/xhtml" xmlns:epub="http://www.idpf.org/2007/ops"><body>
<nav epub:type="toc"><ol><li><a href="text/two%20b.xhtml">Getting Started</a></li>
<li><a href="text/one.xhtml#c">Birds of Prey</a></li></ol></nav></body></html>"""
    one = """<?xml version="1.0" encoding="UTF-8"?>
<html xmlns="http://www.w3.org/1999/xhtml"><head><title>one</title><style>p{}</style></head><body>
<h1>Birds of Prey</h1><p>The peregrine falcon dives at 320 kilometres per hour.</p>
<h2>Owls</h2><ul><li>Barn owl</li><li>Snowy owl</li></ul></body></html>"""
    two = """<?xml version="1.0" encoding="UTF-8"?>
<html xmlns="http://www.w3.org/1999/xhtml"><body>
<p>Binoculars with 8x42 magnification are the best start for birdwatching.</p></body></html>"""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(zipfile.ZipInfo("mimetype"), "application/epub+zip")
        zf.writestr("META-INF/container.xml", """<?xml version="1.0"?>
<container version="1.0" xmlns="urn:oasis:names:tc:opendocument:xmlns:container">
<rootfiles><rootfile full-path="OEBPS/book.opf" media-type="application/oebps-package+xml"/></rootfiles>
</container>""")
        zf.writestr("OEBPS/book.opf", opf)
        zf.writestr("OEBPS/nav.xhtml", nav)
        zf.writestr("OEBPS/text/one.xhtml", one)
        zf.writestr("OEBPS/text/two b.xhtml", two)
        zf.writestr("OEBPS/style.css", "p { margin: 0 }")
        if drm:
            zf.writestr("META-INF/encryption.xml", """<?xml version="1.0"?>
<encryption xmlns="urn:oasis:names:tc:opendocument:xmlns:container"
 xmlns:enc="http://www.w3.org/2001/04/xmlenc#"><enc:EncryptedData>
<enc:EncryptionMethod Algorithm="http://www.w3.org/2001/04/xmlenc#aes128-cbc"/>
<enc:CipherData><enc:CipherReference URI="OEBPS/text/one.xhtml"/></enc:CipherData>
</enc:EncryptedData></encryption>""")
    return path


# --------------------------------------------------------------------------- detection


def test_doc_that_is_really_docx_parses_as_docx(tmp_path):
    path = make_docx(tmp_path / "report.doc")
    assert detect(path) == DOCX
    result = extract(path)
    assert result.extractor.startswith("docx/")
    assert "Building 12" in result.text


def test_txt_that_is_really_a_pdf_parses_as_pdf(tmp_path):
    src = make_pdf(tmp_path / "real.pdf", "Hidden PDF text about the vault code 4471.")
    path = tmp_path / "notes.txt"
    path.write_bytes(src.read_bytes())
    assert detect(path) == "application/pdf"
    result = extract(path)
    assert result.mime == "application/pdf"
    assert "4471" in result.text


def test_zip_family_by_content(tmp_path):
    """ODF vs EPUB vs plain ZIP, whatever the names say."""
    assert detect(make_odf(tmp_path / "a.zip", ODT, ODT_BODY)) == ODT
    assert detect(make_odf(tmp_path / "b.docx", ODS, ODS_BODY)) == ODS
    assert detect(make_odf(tmp_path / "c", ODP, ODP_BODY)) == ODP
    assert detect(make_epub(tmp_path / "d.odt")) == EPUB
    # EPUB without a "mimetype" member: known by its container and package document.
    with zipfile.ZipFile(tmp_path / "d.odt") as src, \
            zipfile.ZipFile(tmp_path / "e.bin", "w") as dst:
        for info in src.infolist():
            if info.filename != "mimetype":
                dst.writestr(info, src.read(info))
    assert detect(tmp_path / "e.bin") == EPUB
    with zipfile.ZipFile(tmp_path / "f.epub", "w") as zf:
        zf.writestr("readme.txt", "just files")
    assert detect(tmp_path / "f.epub") == "application/zip"


def test_compressed_and_archive_signatures(tmp_path):
    member = tmp_path / "member.txt"
    member.write_text("archived text\n")
    with tarfile.open(tmp_path / "a.dat", "w") as tf:
        tf.add(member, arcname="member.txt")
    assert detect(tmp_path / "a.dat") == "application/x-tar"
    with tarfile.open(tmp_path / "b.dat", "w:gz") as tf:
        tf.add(member, arcname="member.txt")
    assert detect(tmp_path / "b.dat") == "application/x-compressed-tar"
    with tarfile.open(tmp_path / "c.dat", "w:bz2") as tf:
        tf.add(member, arcname="member.txt")
    assert detect(tmp_path / "c.dat") == "application/x-bzip-compressed-tar"
    with tarfile.open(tmp_path / "d.dat", "w:xz") as tf:
        tf.add(member, arcname="member.txt")
    assert detect(tmp_path / "d.dat") == "application/x-xz-compressed-tar"
    (tmp_path / "e.dat").write_bytes(gzip.compress(b"plain gzip"))
    assert detect(tmp_path / "e.dat") == "application/gzip"
    (tmp_path / "f.dat").write_bytes(bz2.compress(b"plain bzip2"))
    assert detect(tmp_path / "f.dat") == "application/x-bzip2"
    (tmp_path / "g.dat").write_bytes(lzma.compress(b"plain xz"))
    assert detect(tmp_path / "g.dat") == "application/x-xz"
    (tmp_path / "h.dat").write_bytes(b"7z\xbc\xaf\x27\x1c" + bytes(40))
    assert detect(tmp_path / "h.dat") == "application/x-7z-compressed"
    for mime in ("application/x-tar", "application/x-compressed-tar", "application/gzip",
                 "application/x-bzip2", "application/x-xz", "application/x-7z-compressed",
                 "application/zip"):
        assert extractors.EXTRACTORS[extractors.FAMILY[mime]] == ("archive", "extract")


def test_image_signatures(tmp_path):
    from PIL import Image

    image = Image.new("RGB", (8, 8), "white")
    for fmt, mime in (("PNG", "image/png"), ("JPEG", "image/jpeg"), ("TIFF", "image/tiff"),
                      ("BMP", "image/bmp"), ("GIF", "image/gif"), ("WEBP", "image/webp")):
        path = tmp_path / f"scan-{fmt}.txt"  # the name lies; the bytes decide
        image.save(path, fmt)
        assert detect(path) == mime, fmt
        assert extractors.EXTRACTORS[extractors.FAMILY[mime]] == ("ocr", "extract")
    # "BM" at the start of a note is not a bitmap.
    note = tmp_path / "bmw.txt"
    note.write_text("BMW sales rose in spring.\n")
    assert detect(note) == "text/plain"


def test_text_formats_by_content_with_extension_as_tie_break(tmp_path):
    cases = {
        "data.txt": ('{"a": {"b": 1}}', "application/json"),
        "rows.txt": ('{"a": 1}\n{"a": 2}\n', "application/x-ndjson"),
        "rows.json": ('{"a": 1}\n{"a": 2}\n', "application/x-ndjson"),
        "cut.json": ('{"a": ', "application/json"),  # the extension breaks the tie
        "cut.txt": ('{"a": ', "text/plain"),
        "feed.dat": ('<?xml version="1.0"?><feed><t>x</t></feed>', "application/xml"),
        "page.xml": ("<html><body><p>x</p></body></html>", "text/html"),
        "doc.rtf": ("{\\rtf1\\ansi hello}", "application/rtf"),
        "rtf.txt": ("{\\rtf1\\ansi hello}", "application/rtf"),
        "t.tsv": ("a\tb\n1\t2\n", "text/tab-separated-values"),
        "notes.md": ("[link](http://x)\n", "text/markdown"),
    }
    for name, (content, mime) in cases.items():
        path = tmp_path / name
        path.write_text(content)
        assert detect(path) == mime, name


def test_utf16_without_bom_is_text(tmp_path):
    path = tmp_path / "wide.txt"
    path.write_bytes("Plain words in UTF-16 without a byte-order mark.\n".encode("utf-16-le"))
    assert detect(path) == "text/plain"
    assert extract(path).text == "Plain words in UTF-16 without a byte-order mark."


def test_libmagic_second_opinion(tmp_path):
    path = tmp_path / "tune.bin"
    path.write_bytes(b"MThd\x00\x00\x00\x06\x00\x01\x00\x01\x00\x60MTrk\x00\x00\x00\x04\x00\xff\x2f\x00")
    assert detect(path) == "audio/midi"
    err = error_of(path)
    assert err.code == "unsupported-type"
    assert "audio/midi" in err.message and "supported:" in err.message


def test_routing_table_covers_every_family():
    for mime, family in extractors.FAMILY.items():
        assert family in extractors.EXTRACTORS, family
        assert mime in extractors.SUPPORTED_MIMES
    table = extractors.EXTRACTORS
    assert table["doc"] == table["xls"] == table["ppt"] == ("legacy_office", "extract")
    assert table["eml"] == table["msg"] == ("email_family", "extract")
    assert table["pdf"] == ("pdf", "extract") and table["docx"] == ("docx", "extract")
    for ext in (".odt", ".ods", ".odp", ".epub", ".rtf", ".json", ".ndjson", ".jsonl", ".xml",
                ".tsv", ".doc", ".xls", ".ppt", ".msg", ".png", ".jpg", ".tif", ".zip", ".tar",
                ".tgz", ".gz", ".bz2", ".xz", ".7z"):
        assert ext in extractors.SUPPORTED_EXTENSIONS, ext


def test_missing_extractor_module_fails_only_its_family(tmp_path, monkeypatch):
    monkeypatch.setitem(extractors.EXTRACTORS, "rtf", ("no_such_module_xyz", "extract"))
    path = tmp_path / "a.rtf"
    path.write_text("{\\rtf1\\ansi hello}")
    err = error_of(path)
    assert err.code == "extractor-crash"
    assert "extractors.no_such_module_xyz" in err.message
    other = tmp_path / "b.txt"
    other.write_text("Other families still work.\n")
    assert "still work" in extract(other).text


@pytest.mark.parametrize(
    "relative, mime",
    [
        ("tika-test-documents/microsoft/testWORD.doc", "application/msword"),
        ("tika-test-documents/microsoft/testWORD6.doc", "application/msword"),
        ("tika-test-documents/microsoft/testEXCEL.xls", "application/vnd.ms-excel"),
        ("tika-test-documents/microsoft/testEXCEL_95.xls", "application/vnd.ms-excel"),  # "Book"
        ("tika-test-documents/microsoft/testPPT.ppt", "application/vnd.ms-powerpoint"),
        ("tika-test-documents/microsoft/testMSG.msg", "application/vnd.ms-outlook"),
        ("unstructured-example-docs/fake-email.msg", "application/vnd.ms-outlook"),
        ("unstructured-example-docs/language-docs/eng_spa_mult.doc", DOCX),  # misnamed
        ("unstructured-example-docs/language-docs/eng_spa_mult.ppt", PPTX),  # misnamed
        ("tika-test-documents/integration-tests/testWORKS.wps", "application/x-ole-storage"),
        ("tika-test-documents/microsoft/testPST_variousBodyTypes.pst",
         "application/vnd.ms-outlook-pst"),  # not an OLE .msg
        ("tika-test-documents/pkg/test-documents.tgz", "application/x-compressed-tar"),
        ("tika-test-documents/pkg/quine.gz", "application/gzip"),
        ("tika-test-documents/miscoffice/testEPUB.epub", EPUB),
        ("tika-test-documents/integration-tests/testStarOffice-6.0-writer.sxw",
         "application/vnd.sun.xml.writer"),  # no "mimetype" member: read from the manifest
    ],
)
def test_corpus_detection(relative, mime):
    assert detect(corpus(relative)) == mime


@pytest.mark.parametrize(
    "relative, code, words",
    [
        ("tika-test-documents/microsoft/testWORD_protected_passtika.docx", "encrypted", "password"),
        ("tika-test-documents/microsoft/testEXCEL_protected_passtika.xlsx", "encrypted", "password"),
        ("tika-test-documents/microsoft/testWORD_protected_passtika.doc", "encrypted", "Word"),
        ("tika-test-documents/microsoft/testEXCEL_protected_passtika.xls", "encrypted", "Excel"),
        ("tika-test-documents/microsoft/testPPT_protected_passtika.ppt", "encrypted", "PowerPoint"),
        ("tika-test-documents/microsoft/testWORD_protected_drm.doc", "irm-protected", "Rights"),
        ("tika-test-documents/miscoffice/testODTEncrypted.odt", "encrypted", "password required"),
    ],
)
def test_corpus_protected_office(relative, code, words):
    err = error_of(corpus(relative))
    assert err.code == code
    assert words in err.message


# --------------------------------------------------------------------------- ODF


def test_odt_structure(tmp_path):
    result = extract(make_odf(tmp_path / "review.odt", ODT, ODT_BODY, ODT_STYLES))
    assert result.extractor == "odt/lxml" and result.mime == ODT
    assert result.extractor_version.startswith("lxml-")
    els = result.elements
    assert (els[0].kind, els[0].text) == ("header", "ACME Confidential")
    assert (els[-1].kind, els[-1].text) == ("footer", "Internal use only")
    body = els[1:-1]
    assert [(e.kind, e.level) for e in body if e.kind == "heading"] == [("heading", 1), ("heading", 2)]
    assert body[0].text == "Quarterly Review"
    assert body[1].text == "The badge code is ALPHA-7731."
    assert body[2].text == "Rotated every March." and body[2].meta.get("note")
    items = [(e.text, e.meta["depth"]) for e in body if e.kind == "list_item"]
    assert items == [("Rotate keys", 0), ("monthly", 1), ("Audit firewall", 0)]
    (table,) = [e for e in body if e.kind == "table"]
    assert table.meta["cells"] == [["Name", "Role"], ["Ada", "Engineer"]]
    assert table.text.splitlines() == ["Name | Role", "--- | ---", "Ada | Engineer"]
    assert "Inside a section: Building 12." in result.text
    assert "DELETED TEXT" not in result.text  # tracked deletion
    assert "....." not in result.text  # table of contents skipped


def test_ods_sheets_keep_name_and_header(tmp_path):
    result = extract(make_odf(tmp_path / "book.ods", ODS, ODS_BODY))
    assert result.extractor == "ods/lxml"
    assert result.pages == 3
    tables = [e for e in result.elements if e.kind == "table"]
    assert [(t.page, t.meta["sheet"]) for t in tables] == [(1, "Budget"), (3, "Staff")]
    assert tables[0].text.splitlines() == [
        f"Sheet: Budget{DASH}Item | Cost", "--- | ---", "Rocket | 900", "Fuel | 75", "Fuel | 75",
    ]  # empty columns dropped, repeated row expanded, value from office:value
    assert tables[1].text.splitlines()[0] == f"Sheet: Staff{DASH}Name | Team"


def test_ods_header_travels_with_every_chunk(tmp_path):
    from ingest.pipeline.chunking import Chunker

    rows = "".join(
        f"<table:table-row><table:table-cell><text:p>item {i}</text:p></table:table-cell>"
        f"<table:table-cell><text:p>{i * 10} euro</text:p></table:table-cell></table:table-row>"
        for i in range(300)
    )
    body = ("<office:spreadsheet><table:table table:name=\"Ledger\"><table:table-row>"
            "<table:table-cell><text:p>Item</text:p></table:table-cell><table:table-cell>"
            "<text:p>Amount</text:p></table:table-cell></table:table-row>"
            f"{rows}</table:table></office:spreadsheet>")
    result = extract(make_odf(tmp_path / "ledger.ods", ODS, body))
    chunks = Chunker(lambda text: len(text.split()), max_tokens=120).chunk(result.elements)
    assert len(chunks) > 5
    for chunk in chunks:
        assert chunk.text.startswith(f"Sheet: Ledger{DASH}Item | Amount"), chunk.text[:80]


def test_odp_slides(tmp_path):
    result = extract(make_odf(tmp_path / "deck.odp", ODP, ODP_BODY))
    assert result.extractor == "odp/lxml" and result.pages == 2
    first = [e for e in result.elements if e.page == 1]
    assert (first[0].kind, first[0].text, first[0].level) == ("heading", "Launch Plan", 1)
    assert first[1].text == "Window opens 14 March"
    assert first[-1].text == "Mention the budget" and first[-1].meta.get("notes") is True
    second = [e for e in result.elements if e.page == 2]
    assert [e.text for e in second] == ["Budget", "Rocket costs 900"]


def test_odt_deeply_nested_is_refused_not_crashed(tmp_path):
    body = "<office:text>" + "<text:section>" * 5000 + "<text:p>x</text:p>" + \
        "</text:section>" * 5000 + "</office:text>"
    err = error_of(make_odf(tmp_path / "deep.odt", ODT, body))
    assert err.code == "corrupt"


def test_corpus_odf():
    simple = extract(corpus("unstructured-example-docs/simple.odt"))
    assert "These are a few of my favorite things" in simple.text
    fake = extract(corpus("unstructured-example-docs/fake.odt"))
    (table,) = [e for e in fake.elements if e.kind == "table"]
    assert table.text.splitlines()[0] == "Header row | Mon | Wed | Fri"
    footer = extract(corpus("tika-test-documents/miscoffice/testFooter.odt"))
    assert footer.elements[-1].kind == "footer" and "footer text" in footer.elements[-1].text
    ods = extract(corpus("tika-test-documents/miscoffice/testFooter.ods"))
    assert ods.elements[0].text.splitlines()[0] == f"Sheet: Sheet1{DASH}Data 1 | Data 2"
    odp = extract(corpus("tika-test-documents/miscoffice/testMasterFooter.odp"))
    assert "Master footer is here" in odp.text
    ooo3 = extract(corpus("tika-test-documents/miscoffice/testODFwithOOo3.odt"))
    assert ooo3.elements[0].kind == "heading" and ooo3.elements[0].text == "Apache Tika Test Document"
    sxw = extract(corpus("tika-test-documents/integration-tests/testStarOffice-6.0-writer.sxw"))
    assert "Marginalia" in sxw.text


def test_corpus_encrypted_odt_with_configured_password():
    path = corpus("tika-test-documents/miscoffice/testODTEncrypted.odt")
    result = extract(path, ctx=ExtractContext(passwords=[("*/testODTEncrypted.odt", "tika")]))
    assert "This should be encrypted." in result.text
    err = error_of(path, ctx=ExtractContext(passwords=[("*", "wrong")]))
    assert err.code == "encrypted" and "did not open" in err.message


# --------------------------------------------------------------------------- EPUB


def test_epub_spine_order_and_chapter_headings(tmp_path):
    result = extract(make_epub(tmp_path / "guide.epub"))
    assert result.extractor == "epub/unstructured" and result.mime == EPUB
    els = result.elements
    # Spine order (two, then one), not file order; chapter two has no heading of its
    # own, so the table of contents supplies one.
    assert (els[0].kind, els[0].text, els[0].level) == ("heading", "Getting Started", 1)
    assert "8x42" in els[1].text and els[1].meta["chapter"] == 1
    headings = [(e.text, e.level) for e in els if e.kind == "heading"]
    assert headings == [("Getting Started", 1), ("Birds of Prey", 1), ("Owls", 2)]
    assert [e.text for e in els if e.kind == "list_item"] == ["Barn owl", "Snowy owl"]
    assert {e.meta["chapter"] for e in els} == {1, 2}
    assert "p{}" not in result.text and "margin" not in result.text


def test_epub_drm_is_irm_protected(tmp_path):
    err = error_of(make_epub(tmp_path / "locked.epub", drm=True))
    assert err.code == "irm-protected"


def test_corpus_epub():
    result = extract(corpus("tika-test-documents/miscoffice/testEPUB.epub"))
    headings = [e.text for e in result.elements if e.kind == "heading"]
    assert "Chapter 1" in headings and "Subchapter 2.1" in headings
    assert "This is the text for chapter One" in result.text


# --------------------------------------------------------------------------- RTF


def test_rtf_code_page_unicode_lists_and_tables(tmp_path):
    rtf = (
        r"{\rtf1\ansi\ansicpg1251\deff0{\fonttbl{\f0 Arial;}}"
        r"\pard \'cf\'f0\'e8\'e2\'e5\'f2, \'ec\'e8\'f0!\par"
        r"\pard Caf\u233?s and na\u239?ve\par"
        "\\pard \\'b7\\tab First bullet\\par"
        r"\trowd\cellx1000\cellx2000 Name\cell Role\cell\row"
        r"\trowd\cellx1000\cellx2000 Ada\cell Engineer\cell\row"
        r"\pard After the table\par}"
    )
    path = tmp_path / "memo.rtf"
    path.write_bytes(rtf.encode("ascii"))
    result = extract(path)
    assert result.extractor == "rtf/striprtf"
    els = result.elements
    assert els[0].text == "Привет, мир!"
    assert els[1].text == "Cafés and naïve"
    assert (els[2].kind, els[2].text) == ("list_item", "First bullet")
    assert els[3].kind == "table" and els[3].meta["cells"] == [["Name", "Role"], ["Ada", "Engineer"]]
    assert els[4].text == "After the table"


@pytest.mark.parametrize(
    "relative, needle",
    [
        ("tika-test-documents/microsoft/testRTFWindowsCodepage1250.rtf", "zażółć gęślą jaźń"),
        ("tika-test-documents/microsoft/testRTF-ms932.rtf", "こんにちは"),
        ("tika-test-documents/microsoft/testRTFJapanese.rtf", "ゾルゲと尾崎"),
        ("tika-test-documents/microsoft/testRTFWord2010CzechCharacters.rtf", "Článek týdne"),
        ("tika-test-documents/integration-tests/testOptionalHyphen.rtf", "optionalhyphen"),
        ("unstructured-example-docs/fake-doc.rtf", "Row 1, Cell 1 | Row 1, Cell 2"),
    ],
)
def test_corpus_rtf(relative, needle):
    assert needle in extract(corpus(relative)).text


# --------------------------------------------------------------------------- JSON / XML


def test_json_flattened_and_grouped(tmp_path):
    path = tmp_path / "inventory.json"
    path.write_text(
        '{"store": "Harbour St", "open": true, "tags": ["garden", "tools"],'
        ' "address": {"city": "Leeds", "zip": null},'
        ' "items": [{"sku": "GRD-8842", "price": 12.5, "dims": {"w": 3}},'
        '           {"sku": "GRD-1290", "price": 18.0}]}'
    )
    result = extract(path)
    assert result.extractor == "json/json"
    texts = [e.text for e in result.elements]
    assert texts == [
        "store: Harbour St\nopen: true\ntags: garden, tools",
        "address.city: Leeds\naddress.zip: null",
        "items[0].sku: GRD-8842\nitems[0].price: 12.5\nitems[0].dims.w: 3",
        "items[1].sku: GRD-1290\nitems[1].price: 18.0",
    ]


def test_json_top_level_list_is_records(tmp_path):
    path = tmp_path / "records.json"
    path.write_text('[{"name": "Ada", "langs": ["en", "fr"]}, {"name": "Grace"}]')
    result = extract(path)
    assert [e.text for e in result.elements] == ["name: Ada\nlangs: en, fr", "name: Grace"]
    assert [e.meta["record"] for e in result.elements] == [0, 1]


def test_ndjson_lines_and_bad_line(tmp_path):
    path = tmp_path / "events.ndjson"
    path.write_text('{"event": "login", "user": "ada"}\nnot json\n\n{"event": "logout"}\n')
    result = extract(path)
    assert result.extractor == "ndjson/json"
    assert [(e.text, e.meta["line"]) for e in result.elements] == [
        ("event: login\nuser: ada", 1), ("event: logout", 4)]
    assert any("1 line(s) not valid JSON" in w for w in result.warnings)


def test_json_errors(tmp_path, monkeypatch):
    bad = tmp_path / "bad.json"
    bad.write_text('{"a": [1, 2,, 3]}')
    err = error_of(bad)
    assert err.code == "corrupt" and "line 1" in err.message
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 200_000 + "]" * 200_000)
    assert error_of(deep).code == "corrupt"
    from extractors import structured

    monkeypatch.setattr(structured, "MAX_JSON_BYTES", 10)
    big = tmp_path / "big.json"
    big.write_text('{"key": "a value longer than ten bytes"}')
    assert error_of(big).code == "too-large"


def test_xml_records_mixed_content_and_attributes(tmp_path):
    path = tmp_path / "factbook.xml"
    path.write_text(
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<factbook xmlns="urn:example"><country code="NO"><name>Norway</name>'
        "<capital>Oslo</capital></country>"
        "<country><name>Chile</name><note>Long <b>and</b> thin.</note>"
        '<flag colour="red" stars="1"/></country></factbook>'
    )
    result = extract(path)
    assert result.extractor == "xml/defusedxml"
    assert [e.text for e in result.elements] == [
        "factbook.country.name: Norway\nfactbook.country.capital: Oslo",
        "factbook.country.name: Chile\nfactbook.country.note: Long and thin.\n"
        "factbook.country.flag@colour: red\nfactbook.country.flag@stars: 1",
    ]


BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<lolz>&lol9;</lolz>
"""


def test_billion_laughs_is_refused(tmp_path):
    path = tmp_path / "lolz.xml"
    path.write_text(BILLION_LAUGHS)
    err = error_of(path)
    assert err.code == "unsafe-xml"
    assert "entity" in err.message and "billion-laughs" in err.message


def test_external_entity_is_refused(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-VALUE")
    path = tmp_path / "xxe.xml"
    path.write_text(f'<?xml version="1.0"?>\n<!DOCTYPE r [<!ENTITY x SYSTEM "file://{secret}">]>'
                    "<r>&x;</r>")
    err = error_of(path)
    assert err.code == "unsafe-xml"
    assert "TOP-SECRET-VALUE" not in err.message


def test_malformed_xml_is_corrupt(tmp_path):
    path = tmp_path / "broken.xml"
    path.write_text("<?xml version='1.0'?><a><b></a>")
    err = error_of(path)
    assert err.code == "corrupt" and "line 1" in err.message


@pytest.mark.parametrize(
    "relative, needle",
    [
        ("unstructured-example-docs/factbook.xml", "factbook.country.capital: Washington, DC"),
        ("unstructured-example-docs/factbook-utf-16.xml", "factbook.country.name: United States"),
        ("unstructured-example-docs/simple.ndjson", "text:"),
        ("unstructured-example-docs/arbitrary-records.json", "sku: GRD-8842"),
        ("unstructured-example-docs/spring-weather.html.json", "text: News Around NOAA"),
    ],
)
def test_corpus_structured(relative, needle):
    assert needle in extract(corpus(relative)).text


# --------------------------------------------------------------------------- text


CHARSET_TEXTS = {
    "utf-16": "Résumé of the Zürich office move: 1 200 € «approximately».",
    "utf-16-le": "Résumé of the Zürich office move, costs are estimated and approved.",
    "utf-8-sig": "Naïve café owners renovated the façade — finally.",
    "cp1252": "Résumé of the Zürich office move — costs €1,200 «approx». Naïve café façade.",
    "cp866": "Привет, мир! Это тестовый документ о переезде офиса в Москве. Стоимость 1200 рублей.",
    "cp1251": "Привет, мир! Это тестовый документ о переезде офиса в Москве.",
    "shift_jis": "これは日本語のテスト文書です。東京オフィスの移転について説明します。",
    "gb18030": "这是一个关于北京办公室搬迁的中文测试文件。费用已经批准。",
    "cp1250": "Příliš žluťoučký kůň úpěl ďábelské ódy. Zażółć gęślą jaźń.",
}


@pytest.mark.parametrize("encoding", sorted(CHARSET_TEXTS))
def test_charsets_give_exact_text(tmp_path, encoding):
    text = CHARSET_TEXTS[encoding]
    path = tmp_path / f"{encoding}.txt"
    path.write_bytes(f"{text}\n\n{text}\n".encode(encoding))
    result = extract(path)
    assert [e.text for e in result.elements] == [text, text]
    assert "\ufffd" not in result.text


@pytest.mark.parametrize(
    "relative, needle",
    [
        ("tika-test-documents/text/russian.cp866.txt", "Однажды, в студеную зимнюю пору"),
        ("tika-test-documents/text/testTXT_win-1252.txt", "“win"),
        ("unstructured-example-docs/fake-text-utf-16-be.txt", "This is a test document"),
        ("unstructured-example-docs/fake-text-utf-16-le.txt", "This is a test document"),
        ("unstructured-example-docs/fake-text-utf-32.txt", "This is a test document"),
    ],
)
def test_corpus_charsets(relative, needle):
    assert needle in extract(corpus(relative)).text


def test_paragraph_splitting(tmp_path):
    path = tmp_path / "book.txt"
    path.write_text(
        "CHAPTER I\n\n"
        "It was a bright cold day in April,\nand the clocks were striking thirteen.\n\n"
        "# Supplies\n\n"
        "- rope\n- lamp oil\n\n"
        '"Very," said Pierre.\n\n'
        "Results\n=======\n\n"
        "Everything went fine.\f"
        "Second page text.\n"
    )
    result = extract(path)
    assert result.extractor == "txt/text"
    assert [(e.kind, e.text, e.level, e.page) for e in result.elements] == [
        ("heading", "CHAPTER I", 1, 1),
        ("paragraph", "It was a bright cold day in April,\nand the clocks were striking thirteen.",
         None, 1),
        ("heading", "Supplies", 1, 1),
        ("list_item", "- rope", None, 1),
        ("list_item", "- lamp oil", None, 1),
        ("paragraph", '"Very," said Pierre.', None, 1),
        ("heading", "Results", 1, 1),
        ("paragraph", "Everything went fine.", None, 1),
        ("paragraph", "Second page text.", None, 2),
    ]
    assert result.pages == 2


def test_long_text_is_fast():
    import time

    path = corpus("unstructured-example-docs/book-war-and-peace-1225p.txt")
    started = time.monotonic()
    result = extract(path)
    assert time.monotonic() - started < 5  # unstructured's partition_text: ~26 s
    assert len(result.text) > 3_000_000 * 0.8
    assert sum(e.kind == "heading" for e in result.elements) > 300  # the chapters


def test_tsv_header_first(tmp_path):
    path = tmp_path / "staff.tsv"
    path.write_bytes("name\tcity\tbadge\nAda\tZürich\t7731\n\nGrace\tArlington\t4471\n".encode("cp1252"))
    result = extract(path)
    assert result.extractor == "tsv/csv"  # streamed by extractors.spreadsheet since issue 3
    (table,) = result.elements
    assert table.meta["header"] == ["name", "city", "badge"]
    assert "encoding: cp1252 (detected)" in result.warnings
    assert table.text.splitlines() == [
        "name | city | badge", "--- | --- | ---", "Ada | Zürich | 7731", "Grace | Arlington | 4471"]


def test_corpus_tsv():
    result = extract(corpus("unstructured-example-docs/stanley-cups.tsv"))
    (table,) = result.elements
    assert table.text.splitlines()[0].startswith("Stanley Cups")


# --------------------------------------------------------------------------- HTML


def test_html_boilerplate_removed(tmp_path):
    path = tmp_path / "page.html"
    path.write_text(
        "<html><head><title>t</title><style>.x{color:red}</style>"
        "<script>var leak='SCRIPT-SECRET'</script></head><body>"
        "<header><a href='/'>Home</a> <a href='/about'>About us</a></header>"
        "<nav><ul><li><a href='/1'>Menu one</a></li><li><a href='/2'>Menu two</a></li></ul></nav>"
        "<main><article><h1>Travel Policy</h1>"
        "<p>Economy class is required for flights under six hours.</p></article></main>"
        "<aside><p>Related: advert for cruises</p></aside>"
        "<footer><p>Copyright 2024 Example Corp. All rights reserved.</p></footer>"
        "</body></html>"
    )
    result = extract(path)
    assert "under six hours" in result.text
    for junk in ("SCRIPT-SECRET", "color:red", "Menu one", "About us", "advert", "Copyright"):
        assert junk not in result.text, junk


def test_sentence_without_full_stop_is_not_a_heading(tmp_path):
    path = tmp_path / "pangrams.txt"
    path.write_text("The quick brown fox jumps over the lazy dog\n\n"
                    "Le renard brun rapide saute par-dessus le chien paresseux\n")
    assert {e.kind for e in extract(path).elements} == {"paragraph"}


# --------------------------------------------------------------------------- CSV


def test_ragged_csv_is_read_leniently(tmp_path):
    path = tmp_path / "ragged.csv"
    path.write_text("name,city\nAda,London\nGrace,Arlington,VA\n")
    result = extract(path)
    (table,) = result.elements
    # Streamed row by row (extractors.spreadsheet): a longer row keeps its extra cell.
    assert table.text.splitlines() == ["name | city", "--- | ---", "Ada | London",
                                       "Grace | Arlington | VA"]


def test_corpus_ragged_csv():
    result = extract(corpus("unstructured-example-docs/single-column.csv"))
    assert "Ut enim | ad minim | veniam" in result.text


# --------------------------------------------------------------------------- passwords


@pytest.mark.parametrize(
    "relative, needle",
    [
        ("tika-test-documents/microsoft/testWORD_protected_passtika.docx",
         "This is an encrypted Word 2007 File."),
        ("tika-test-documents/microsoft/testPPT_protected_passtika.pptx",
         "This is an encrypted PowerPoint 2007 slide."),
    ],
)
def test_corpus_encrypted_office_with_configured_password(relative, needle, tmp_path):
    path = corpus(relative)
    ctx = ExtractContext(workdir=tmp_path, passwords=[("*/testWORD_*", "tika"),
                                                      ("*/testPPT_*", "tika")])
    result = extract(path, ctx=ctx)
    assert needle in result.text
    assert "decrypted with a configured password" in result.warnings
    assert list(tmp_path.iterdir()) == []  # the decrypted copy is gone
    err = error_of(path, ctx=ExtractContext(workdir=tmp_path, passwords=[("*", "wrong")]))
    assert err.code == "encrypted" and "did not open" in err.message


def test_xlsx_sheet_and_header_travel_with_every_chunk(tmp_path):
    import openpyxl

    from ingest.pipeline.chunking import Chunker

    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "Payroll"
    ws.append(("Employee", "Salary"))
    for i in range(300):
        ws.append((f"person {i}", 1000 + i))
    wb.save(tmp_path / "pay.xlsx")
    result = extract(tmp_path / "pay.xlsx")
    chunks = Chunker(lambda text: len(text.split()), max_tokens=120).chunk(result.elements)
    assert len(chunks) > 5
    for chunk in chunks:
        assert chunk.text.startswith(f"Sheet: Payroll{DASH}Employee | Salary"), chunk.text[:80]
