"""Document metadata (extractors.metadata) through the real router, per format family, on files
made here; spot checks on ../shared/corpora; stored per document, on every hit, filterable."""
from __future__ import annotations

import datetime as dt
import zipfile
from pathlib import Path

import pytest

from extractors import extract
from extractors.metadata import iso_utc, person

WHEN = dt.datetime(2024, 3, 1, 12, 30, 0, tzinfo=dt.timezone.utc)
BODY = "Quarterly revenue grew in every region. " * 5


def _pdf(path: Path) -> Path:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_title("Annual Report 2024")
    pdf.set_author("Smith, Jane")
    pdf.set_subject("Finance")
    pdf.set_keywords("revenue, growth")
    pdf.set_creation_date(WHEN)
    pdf.add_page()
    pdf.set_font("helvetica", size=12)
    pdf.multi_cell(0, 10, BODY)
    pdf.output(str(path))
    return path


def _docx(path: Path) -> Path:
    import docx

    d = docx.Document()
    d.add_paragraph(BODY)
    cp = d.core_properties
    cp.title, cp.author, cp.created, cp.modified = "Annual Report 2024", "Jane Smith; Bob Jones", WHEN, WHEN
    cp.subject, cp.keywords, cp.language = "Finance", "revenue; growth", "en-GB"
    d.save(path)
    return path


def _pptx(path: Path) -> Path:
    from pptx import Presentation
    from pptx.util import Inches

    p = Presentation()
    s = p.slides.add_slide(p.slide_layouts[5])
    s.shapes.title.text = "Revenue"
    s.shapes.add_textbox(Inches(1), Inches(2), Inches(6), Inches(2)).text_frame.text = BODY
    cp = p.core_properties
    cp.title, cp.author, cp.created = "Annual Report 2024", "Jane Smith", WHEN
    p.save(path)
    return path


def _xlsx(path: Path) -> Path:
    import openpyxl

    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(["region", "revenue"])
    ws.append(["north", 10])
    wb.properties.title, wb.properties.creator = "Annual Report 2024", "Jane Smith"
    wb.properties.created = WHEN.replace(tzinfo=None)
    wb.save(path)
    return path


_ODT_CONTENT = ('<?xml version="1.0" encoding="UTF-8"?><office:document-content xmlns:office='
                '"urn:oasis:names:tc:opendocument:xmlns:office:1.0" xmlns:text="urn:oasis:names:tc:opendocument:'
                'xmlns:text:1.0" office:version="1.2"><office:body><office:text><text:p>' + BODY
                + '</text:p></office:text></office:body></office:document-content>')
_ODT_META = ('<?xml version="1.0" encoding="UTF-8"?><office:document-meta xmlns:office="urn:oasis:names:tc:'
             'opendocument:xmlns:office:1.0" xmlns:meta="urn:oasis:names:tc:opendocument:xmlns:meta:1.0" '
             'xmlns:dc="http://purl.org/dc/elements/1.1/" office:version="1.2"><office:meta>'
             '<dc:title>Annual Report 2024</dc:title><meta:initial-creator>Jane Smith</meta:initial-creator>'
             '<dc:creator>Bob Jones</dc:creator><meta:creation-date>2024-03-01T12:30:00</meta:creation-date>'
             '<dc:date>2024-03-02T08:00:00+01:00</dc:date><meta:keyword>revenue</meta:keyword>'
             '<meta:document-statistic meta:page-count="3"/></office:meta></office:document-meta>')
_MANIFEST = ('<?xml version="1.0" encoding="UTF-8"?><manifest:manifest xmlns:manifest="urn:oasis:names:tc:'
             'opendocument:xmlns:manifest:1.0"><manifest:file-entry manifest:full-path="/" manifest:media-type='
             '"application/vnd.oasis.opendocument.text"/><manifest:file-entry manifest:full-path="content.xml" '
             'manifest:media-type="text/xml"/></manifest:manifest>')


def _odt(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(zipfile.ZipInfo("mimetype"), "application/vnd.oasis.opendocument.text")
        z.writestr("content.xml", _ODT_CONTENT)
        z.writestr("meta.xml", _ODT_META)
        z.writestr("META-INF/manifest.xml", _MANIFEST)
    return path


def _epub(path: Path) -> Path:
    opf = ('<?xml version="1.0"?><package xmlns="http://www.idpf.org/2007/opf" version="3.0" unique-identifier="id">'
           '<metadata xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:identifier id="id">x</dc:identifier>'
           '<dc:title>Annual Report 2024</dc:title><dc:creator>Jane Smith</dc:creator>'
           '<dc:creator>Bob Jones</dc:creator><dc:date>2024-03-01</dc:date><dc:language>en</dc:language>'
           '<meta property="dcterms:modified">2024-03-05T10:00:00Z</meta></metadata>'
           '<manifest><item id="c1" href="c1.xhtml" media-type="application/xhtml+xml"/></manifest>'
           '<spine><itemref idref="c1"/></spine></package>')
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(zipfile.ZipInfo("mimetype"), "application/epub+zip")
        z.writestr("META-INF/container.xml", '<?xml version="1.0"?><container version="1.0" xmlns="urn:oasis:'
                   'names:tc:opendocument:xmlns:container"><rootfiles><rootfile full-path="OEBPS/content.opf" '
                   'media-type="application/oebps-package+xml"/></rootfiles></container>')
        z.writestr("OEBPS/content.opf", opf)
        z.writestr("OEBPS/c1.xhtml", '<?xml version="1.0"?><html xmlns="http://www.w3.org/1999/xhtml"><head>'
                   f'<title>c1</title></head><body><p>{BODY}</p></body></html>')
    return path


def _html(path: Path) -> Path:
    path.write_text('<!DOCTYPE html><html lang="en"><head><title>Annual  Report 2024</title>'
                    '<meta name="author" content="Jane Smith"><meta name="keywords" content="revenue, growth">'
                    '<meta name="dcterms.created" content="2024-03-01T13:30:00+01:00"></head>'
                    f'<body><p>{BODY}</p></body></html>')
    return path


def _eml(path: Path) -> Path:
    path.write_text("From: Jane Smith <jane@example.com>\nTo: Bob Jones <bob@example.com>, carol@example.com\n"
                    "Cc: \"Doe, John\" <john@example.com>\nSubject: Annual Report 2024\n"
                    "Date: Fri, 01 Mar 2024 13:30:00 +0100\nMessage-ID: <abc123@example.com>\n"
                    f"Content-Type: text/plain\n\n{BODY}\n")
    return path


def _zip(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("docs/a.txt", BODY)
        z.writestr("b.txt", BODY)
    return path


MAKERS = {"pdf": _pdf, "docx": _docx, "pptx": _pptx, "xlsx": _xlsx, "odt": _odt, "epub": _epub, "html": _html,
          "eml": _eml}


@pytest.mark.parametrize("ext", sorted(MAKERS))
def test_title_author_created_per_format_family(ext, tmp_path):
    ex = extract(MAKERS[ext](tmp_path / f"report.{ext}"))
    md = ex.metadata
    assert md["title"] in ("Annual Report 2024",), md
    assert md["authors"][0] == "Jane Smith", md
    assert md["created"] == "2024-03-01T12:30:00Z" if ext != "epub" else md["created"] == "2024-03-01T00:00:00Z"


def test_format_specific_fields(tmp_path):
    d = extract(_docx(tmp_path / "r.docx")).metadata
    assert d["authors"] == ["Jane Smith", "Bob Jones"] and d["keywords"] == ["revenue", "growth"]
    assert d["language"] == "en-GB" and d["modified"] == "2024-03-01T12:30:00Z" and d["subject"] == "Finance"
    p = extract(_pdf(tmp_path / "r.pdf")).metadata
    assert p["pages"] == 1 and p["subject"] == "Finance" and p["keywords"] == ["revenue", "growth"]
    o = extract(_odt(tmp_path / "r.odt")).metadata
    assert o["modified"] == "2024-03-02T07:00:00Z" and o["pages"] == 3 and o["keywords"] == ["revenue"]
    e = extract(_epub(tmp_path / "r.epub")).metadata
    assert e["authors"] == ["Jane Smith", "Bob Jones"] and e["modified"] == "2024-03-05T10:00:00Z"
    assert e["language"] == "en"
    m = extract(_eml(tmp_path / "r.eml")).metadata
    assert m["to"] == ["Bob Jones", "carol@example.com"] and m["cc"] == ["John Doe"]
    assert m["message_id"] == "<abc123@example.com>" and m["subject"] == "Annual Report 2024"
    h = extract(_html(tmp_path / "r.html")).metadata
    assert h["language"] == "en" and h["keywords"] == ["revenue", "growth"]
    from extractors.base import ExtractContext

    work = tmp_path / "work"
    work.mkdir()
    z = extract(_zip(tmp_path / "r.zip"), ctx=ExtractContext(workdir=work)).metadata
    assert sorted(z["members"]) == ["b.txt", "docs/a.txt"]


def test_normalisers():
    assert iso_utc("D:20240301133000+01'00'") == "2024-03-01T12:30:00Z"
    assert iso_utc("2024") == "2024-01-01T00:00:00Z"
    assert iso_utc("Fri, 01 Mar 2024 13:30:00 +0100") == "2024-03-01T12:30:00Z"
    assert iso_utc("not a date") is None
    assert person('"Jane Smith" <jane@x.org>') == "Jane Smith"
    assert person("Smith, Jane") == "Jane Smith"
    assert person("Acme Widgets, Inc. Legal") == "Acme Widgets, Inc. Legal"


def test_broken_metadata_never_fails_the_document(tmp_path):
    # an ODT whose meta.xml is not XML: the text is still extracted, the metadata part is a warning
    out = tmp_path / "broken.odt"
    with zipfile.ZipFile(out, "w") as z:
        z.writestr(zipfile.ZipInfo("mimetype"), "application/vnd.oasis.opendocument.text")
        z.writestr("content.xml", _ODT_CONTENT)
        z.writestr("meta.xml", "<office:document-meta><dc:title>unclosed")
        z.writestr("META-INF/manifest.xml", _MANIFEST)
    ex = extract(out)
    assert "Quarterly revenue" in ex.text
    assert any(w.startswith("metadata: odt") for w in ex.warnings)
    assert "title" not in ex.metadata


def test_corpora_spot_checks():
    from tests.support.common import need_corpora

    root = need_corpora()
    found = 0
    for path in sorted(root.rglob("*.docx"))[:15] + sorted(root.rglob("*.pdf"))[:15] + sorted(root.rglob("*.eml"))[:10]:
        try:
            md = extract(path).metadata
        except Exception:  # noqa: BLE001 - a corpus file our extractors refuse: not this test's business
            continue
        for key in ("created", "modified"):
            if key in md:
                assert iso_utc(md[key]) == md[key], (path, md)  # normalised: UTC ISO-8601
        if md.get("title") or md.get("authors"):
            found += 1
    assert found >= 5


def test_metadata_stored_on_hits_filterable_and_exported(world_dir, embedder):
    from ingest.pipeline.document import Pipeline
    from ingest.search.index import Index
    from ingest.stores.sqlite import SQLiteStore

    tmp_path = world_dir
    root = tmp_path / "docs"
    root.mkdir()
    root.chmod(0o755)
    _docx(root / "a.docx")
    _html(root / "b.html")
    (root / "c.txt").write_text("Nothing but plain words about revenue and regions here, no metadata at all.")
    for f in root.iterdir():
        f.chmod(0o644)
    store = SQLiteStore(tmp_path / "i.db")
    p = Pipeline(store, embedder, sandbox=False, nlp=False)
    for rel in ("a.docx", "b.html", "c.txt"):
        assert p.upsert(str(root), rel).action == "indexed"
    idx = Index(store, config={})
    me = "everyone"

    def uris(**f):
        return sorted({h.uri.rsplit("/", 1)[1] for h in idx.search("revenue", principal=me, k=10, filters=f or None)})

    hits = idx.search("revenue", principal=me, k=10)
    by = {h.uri.rsplit("/", 1)[1]: h for h in hits}
    assert by["a.docx"].metadata["title"] == "Annual Report 2024"
    assert uris(author="jane smith") == ["a.docx", "b.html"]
    assert uris(author="Bob") == ["a.docx"]
    assert uris(title_contains="annual report") == ["a.docx", "b.html"]  # whitespace collapsed
    assert uris(created_after="2024-03-01T12:00:00Z", created_before="2024-03-02") == ["a.docx", "b.html"]
    assert uris(created_after="2024-03-01T12:31:00Z") == []
    with pytest.raises(ValueError, match="created_after"):
        idx.search("revenue", principal=me, filters={"created_after": "yesterday"})
    doc = store.export_docs([by["a.docx"].doc_id])[by["a.docx"].doc_id]["doc"]
    import json
    assert json.loads(doc["metadata"])["authors"] == ["Jane Smith", "Bob Jones"]
