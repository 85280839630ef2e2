"""Issue 15, defects 2-10: odd documents, each on a small file made here."""
from __future__ import annotations

import sys
import zlib
from pathlib import Path

import pytest

import extractors
from extractors.base import ExtractionError

from tests.support.pdf import raw_pdf


def test_a_pypdf_limit_that_is_no_bomb_falls_back_to_pdfium(tmp_path):
    """pypdf's LimitReachedError for a count (here: 17 filters, its limit is 16) is no
    decompression bomb: the page is read by the other engine."""
    import pypdf.filters

    k = pypdf.filters.get_configuration().stream_filters_maximum_length + 1
    data = b"BT /F1 12 Tf 72 700 Td (Quarterly report on kestrel nesting sites) Tj ET"
    for _ in range(k):
        data = zlib.compress(data)
    path = raw_pdf(tmp_path / "filters.pdf", data, "/Filter [" + " ".join(["/FlateDecode"] * k) + "]")
    ex = extractors.extract(path)
    assert "kestrel nesting" in " ".join(e.text for e in ex.elements)


def test_a_real_flate_bomb_is_still_a_decompression_bomb(tmp_path):
    packer = zlib.compressobj(9)
    content = b"".join(packer.compress(b" " * (1 << 20)) for _ in range(100)) + packer.flush()
    path = raw_pdf(tmp_path / "flate.pdf", content, "/Filter /FlateDecode")
    with pytest.raises(ExtractionError) as info:
        extractors.extract(path)
    assert info.value.code == "decompression-bomb"


def test_message_global_enclosed_mail_is_parsed_as_a_mail(tmp_path):
    import base64

    inner = ("From: Zoë <zoe@example.org>\r\nTo: a@example.org\r\nSubject: Résumé of the kestrel survey\r\n"
             "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
             "The real body: nests counted along the river bank.\r\n").encode()
    b64 = base64.encodebytes(inner).decode()
    outer = ("From: a@example.org\r\nTo: b@example.org\r\nSubject: Fwd\r\nMIME-Version: 1.0\r\n"
             'Content-Type: multipart/mixed; boundary="B"\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\n'
             "See the enclosed mail.\r\n--B\r\nContent-Type: message/global\r\n"
             "Content-Transfer-Encoding: base64\r\n\r\n" + b64 + "--B--\r\n")
    path = tmp_path / "fwd.eml"
    path.write_text(outer)
    from extractors.base import ExtractContext

    ex = extractors.extract(path, ctx=ExtractContext(workdir=tmp_path))
    assert b64.split()[0] not in ex.text and "Subject: R" not in ex.text  # no raw headers or base64
    assert len(ex.children) == 1
    child = extractors.extract(ex.children[0].path, ctx=ExtractContext(workdir=tmp_path, depth=1))
    assert "nests counted along the river bank" in child.text and "Content-Type" not in child.text


def test_a_16_bit_greyscale_png_is_scaled_not_clipped_before_ocr(tmp_path):
    import numpy as np
    from PIL import Image, ImageDraw

    from extractors.ocr import prepare_image

    img = Image.new("L", (400, 100), 255)
    ImageDraw.Draw(img).text((10, 40), "Kestrel survey 2026", fill=60)  # dark grey ink
    wide = (np.asarray(img).astype(np.uint16) * 257)
    path = tmp_path / "deep.png"
    Image.fromarray(wide).save(path)
    opened = Image.open(path)
    assert opened.mode.startswith("I")  # 16-bit greyscale as PIL reads it
    out = np.asarray(prepare_image(opened))
    assert out.min() < 80 and out.max() > 225  # grey ink on white, not all white (clipped at 255)


def test_csv_with_cr_only_line_endings(tmp_path):
    path = tmp_path / "old_mac.csv"
    path.write_bytes(b"name,city\rAda,London\rGrace,Arlington\rLinus,Helsinki\r")
    ex = extractors.extract(path)
    assert "Arlington" in ex.text and "Helsinki" in ex.text


@pytest.mark.parametrize("name", ["note.asc", "job.bms"])
def test_plain_text_under_an_unusual_extension_is_text(tmp_path, name):
    path = tmp_path / name
    path.write_text("This is a plain note about kestrels.\nSecond line of ordinary text.\n")
    assert extractors.detect(path) == "text/plain"
    assert "kestrels" in extractors.extract(path).text


def test_a_real_pgp_key_is_still_no_document(tmp_path):
    path = tmp_path / "key.asc"
    path.write_text("-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmQINBGExample\n-----END PGP PUBLIC KEY BLOCK-----\n")
    assert extractors.detect(path) != "text/plain"


def test_entity_expansion_xlsx_is_unsafe_xml(tmp_path):
    import zipfile

    import openpyxl

    wb = openpyxl.Workbook()
    wb.active["A1"] = "hello"
    wb.save(tmp_path / "ok.xlsx")
    with zipfile.ZipFile(tmp_path / "ok.xlsx") as zin, zipfile.ZipFile(tmp_path / "lol.xlsx", "w") as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename == "xl/worksheets/sheet1.xml":
                data = data.replace(b"<worksheet", b'<!DOCTYPE l [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;&a;">]>'
                                    b"\n<worksheet", 1)
            zout.writestr(info, data)
    with pytest.raises(ExtractionError) as info:
        extractors.extract(tmp_path / "lol.xlsx")
    assert info.value.code == "unsafe-xml"


def test_ods_repeated_rows_past_the_cap_are_flagged_truncated(tmp_path):
    import zipfile

    from ingest.pipeline.quality import assess

    content = ('<?xml version="1.0" encoding="UTF-8"?><office:document-content '
               'xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
               'xmlns:table="urn:oasis:names:tc:opendocument:xmlns:table:1.0" '
               'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0" office:version="1.2">'
               '<office:body><office:spreadsheet><table:table table:name="S">'
               '<table:table-row><table:table-cell><text:p>kestrel</text:p></table:table-cell></table:table-row>'
               '<table:table-row table:number-rows-repeated="5000"><table:table-cell><text:p>same row</text:p>'
               '</table:table-cell></table:table-row></table:table></office:spreadsheet></office:body>'
               '</office:document-content>')
    path = tmp_path / "rep.ods"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("mimetype", "application/vnd.oasis.opendocument.spreadsheet", compress_type=zipfile.ZIP_STORED)
        z.writestr("content.xml", content)
        z.writestr("META-INF/manifest.xml", '<?xml version="1.0"?><manifest:manifest xmlns:manifest='
                   '"urn:oasis:names:tc:opendocument:xmlns:manifest:1.0"><manifest:file-entry '
                   'manifest:full-path="/" manifest:media-type="application/vnd.oasis.opendocument.spreadsheet"/>'
                   '</manifest:manifest>')
    ex = extractors.extract(path)
    assert any(w.startswith("truncated:") and "5000" in w for w in ex.warnings)
    assert "quality:truncated" in assess(ex).flags


def test_ocr_that_recognises_nothing_is_no_text_not_low_confidence():
    from extractors.base import Element, Extraction
    from ingest.pipeline.quality import assess

    icon = Extraction(elements=[Element("text", "~")], extractor="image/ocr", extractor_version="t", mime="image/gif",
                      pages=1, ocr_pages={1: 0.0})
    r = assess(icon)
    assert r.verdict == "quarantined" and r.reasons[0].startswith("empty:")
    scan = Extraction(elements=[Element("text", "Kestrel survey")], extractor="image/ocr", extractor_version="t",
                      mime="image/png", pages=1, ocr_pages={1: 20.0})
    assert assess(scan).reasons[0].startswith("ocr-confidence")


def test_corpora_generate_needs_only_the_base_install(tmp_path):
    """README "Using it": `python -m corpora.generate ~/archive` after `pip install -e .` only:
    the test extra's modules are blocked, and fpdf2 is a base dependency."""
    import subprocess
    import tomllib

    repo = Path(__file__).resolve().parents[2]
    meta = tomllib.loads((repo / "pyproject.toml").read_text())["project"]
    base = " ".join(meta["dependencies"])
    assert "fpdf2" in base and "fonttools" in base
    extra_only = [m for m in ("pytest", "hypothesis", "wsgidav", "moto", "pytest_timeout")]
    code = ("import sys\nfor m in %r: sys.modules[m] = None\n"
            "import runpy; sys.argv = ['generate', %r]; runpy.run_module('corpora.generate', run_name='__main__')"
            % (extra_only, str(tmp_path / "archive")))
    r = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert any(p.suffix == ".pdf" for p in (tmp_path / "archive").rglob("*"))
