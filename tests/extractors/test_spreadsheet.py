"""Streaming spreadsheet extractor (extractors.spreadsheet): sheet and header context in
every batch and chunk, bounded memory on large sheets, limits that cut loudly, corrupt
files refused with a specific error, and agreement with the old unstructured path on
the corpus workbooks."""
from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import sys
import zipfile
from collections import Counter
from pathlib import Path

import pytest
from tests.support.common import REPO, need_corpora

from extractors import ExtractionError, detect, extract
from extractors.base import ExtractContext, Limits

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
XLTX = "application/vnd.openxmlformats-officedocument.spreadsheetml.template"
DASH = " \u2014 "


def _save(wb, path: Path) -> Path:
    wb.save(str(path))
    return path


def _set_cached_value(path: Path, formula: str, value: str) -> None:
    """Give a formula the cached value Excel would have stored (openpyxl writes none)."""
    tmp = path.with_suffix(".tmp")
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.startswith("xl/worksheets/sheet"):
                data = data.replace(f"<f>{formula}</f><v></v>".encode(),
                                    f"<f>{formula}</f><v>{value}</v>".encode())
            dst.writestr(info, data)
    tmp.replace(path)


def _workbook(tmp_path: Path) -> Path:
    import openpyxl

    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "Budget"
    ws.append(["Quarterly budget 2024"])  # a title above the table
    ws.append([])
    ws.append(["Item", "Cost", "Due", "Paid"])
    ws.append(["Rocket", 900.0, dt.datetime(2024, 3, 31), True])
    ws.append(["Fuel", 0.1 + 0.2, dt.datetime(2024, 4, 1, 14, 30), False])
    ws.append([None, None, None, None])  # empty row: skipped
    ws.append(["Total", "=B4*2"])
    wb.create_sheet("Empty")  # no cells at all: skipped
    ws3 = wb.create_sheet("Staff")
    ws3.append(["Name", "Team"])
    ws3.append(["Ada", "Propulsion"])
    path = _save(wb, tmp_path / "book.xlsx")
    _set_cached_value(path, "B4*2", "1800")
    return path


# ----------------------------------------------------------------------------- shape


def test_sheets_headings_header_rows_and_values(tmp_path):
    result = extract(_workbook(tmp_path))
    assert result.extractor == "xlsx/openpyxl"
    assert re.fullmatch(r"openpyxl-\d+\.\d+\.\d+\+\d+", result.extractor_version)
    assert result.mime == XLSX
    assert result.pages == 3  # the last sheet with content (index 3, "Empty" is 2)
    kinds = [(e.kind, e.page, e.meta.get("sheet")) for e in result.elements]
    assert kinds == [("paragraph", 1, "Budget"), ("table", 1, "Budget"), ("table", 3, "Staff")]
    assert "Empty" not in result.text
    title, table = result.elements[0], result.elements[1]
    assert title.text == "Quarterly budget 2024"
    assert table.meta["header"] == ["Item", "Cost", "Due", "Paid"]
    assert table.meta["rows"] == [4, 7]  # sheet row numbers of the batch
    assert table.text.splitlines() == [
        f"Sheet: Budget{DASH}Item | Cost | Due | Paid",
        "--- | --- | --- | ---",
        "Rocket | 900 | 2024-03-31 | TRUE",  # whole float without ".0", midnight as a date
        "Fuel | 0.3 | 2024-04-01 14:30:00 | FALSE",  # no 0.30000000000000004
        "Total | 1800",  # the formula's cached value, not "=B4*2"
    ]
    assert result.elements[2].text.splitlines()[0] == f"Sheet: Staff{DASH}Name | Team"


def test_template_and_macro_variants_route_here(tmp_path):
    import openpyxl

    wb = openpyxl.Workbook()
    wb.active.append(["Code", "Label"])
    wb.active.append(["A1", "Alpha"])
    wb.template = True
    path = _save(wb, tmp_path / "form.xltx")
    assert detect(path) == XLTX
    result = extract(path)
    assert result.extractor == "xlsx/openpyxl"
    assert "A1 | Alpha" in result.text


def test_empty_workbook_has_no_elements(tmp_path):
    import openpyxl

    wb = openpyxl.Workbook()
    wb.create_sheet("Also empty")
    wb.active["C7"] = "   "  # whitespace only
    result = extract(_save(wb, tmp_path / "empty.xlsx"))
    assert result.elements == []
    assert result.warnings == ["no text"]


def test_batches_are_bounded_and_every_chunk_names_sheet_and_columns(tmp_path, embedder):
    import openpyxl

    from extractors import spreadsheet
    from ingest.pipeline.chunking import Chunker

    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "Ledger"
    ws.append(["Entry", "Account", "Amount"])
    for i in range(1, 2001):
        ws.append([i, f"account {i % 37}", i * 10])
    wb.create_sheet("Other").append(["Key", "Value"])
    wb["Other"].append(["k", "v"])
    result = extract(_save(wb, tmp_path / "ledger.xlsx"))
    tables = [e for e in result.elements if e.kind == "table" and e.meta["sheet"] == "Ledger"]
    assert len(tables) == 10  # 2000 rows / BATCH_ROWS
    for t in tables:
        lines = t.text.splitlines()
        assert lines[0] == f"Sheet: Ledger{DASH}Entry | Account | Amount"
        assert len(lines) - 2 <= spreadsheet.BATCH_ROWS
        assert len(t.text) <= spreadsheet.BATCH_CHARS + 200
    assert tables[-1].meta["rows"] == [1802, 2001]

    from ingest.pipeline.chunking import Chunker  # after the measurement

    chunks = Chunker(embedder.count_tokens, embedder.max_tokens).chunk(result.elements)
    ledger = [c for c in chunks if c.page == 1]
    assert len(ledger) > 20
    for c in ledger:  # each starts with the sheet name and the column names
        assert c.text.startswith(f"Sheet: Ledger{DASH}Entry | Account | Amount\n"), c.text[:80]
        assert c.tokens <= embedder.max_tokens
    assert "2000 | account 2 | 20000" in ledger[-1].text or \
        "2000 | account 2 | 20000" in chunks[-1].text
    assert f"Sheet: Other{DASH}Key | Value" in chunks[-1].text


# ----------------------------------------------------------------------------- limits


def test_sheet_over_cell_limit_is_cut_and_flagged(tmp_path):
    import openpyxl

    from ingest.pipeline.quality import FLAGGED, assess

    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "Big"
    ws.append(["a", "b"])
    for i in range(100):
        ws.append([i, i])
    wb.create_sheet("Small").append(["x", "y"])
    path = _save(wb, tmp_path / "big.xlsx")
    result = extract(path, ctx=ExtractContext(limits=Limits(max_sheet_cells=50)))
    (cut,) = [w for w in result.warnings if w.startswith("truncated:")]
    assert cut.startswith("truncated: sheet 'Big' cut before row 26: more than 50 non-empty cells")
    assert "23 | 23" in result.text and "24 | 24" not in result.text  # row 26 holds 24
    assert f"Sheet: Small{DASH}x | y" in result.text  # the next sheet is still read
    report = assess(result)
    assert report.verdict == FLAGGED
    assert "quality:truncated" in report.flags


def test_document_over_char_limit_stops_reading(tmp_path):
    import openpyxl

    wb = openpyxl.Workbook()
    wb.active.title = "First"
    for i in range(300):
        wb.active.append([f"row {i}", "x" * 20])
    wb.create_sheet("Second").append(["never", "read"])
    result = extract(_save(wb, tmp_path / "chars.xlsx"),
                     ctx=ExtractContext(limits=Limits(max_sheet_chars=2000)))
    (cut,) = [w for w in result.warnings if w.startswith("truncated:")]
    assert "sheet 'First'" in cut and "later sheets not read" in cut
    assert "never" not in result.text
    assert sum(len(e.text) for e in result.elements) < 4000


# ----------------------------------------------------------------------------- errors


def test_corrupt_workbooks_give_specific_errors(tmp_path):
    from extractors import spreadsheet

    good = _workbook(tmp_path)
    data = good.read_bytes()

    garbage = tmp_path / "garbage.xlsx"
    garbage.write_bytes(b"\x00\x01not a workbook at all\xff" * 50)
    with pytest.raises(ExtractionError) as info:
        extract(garbage)
    assert info.value.code == "corrupt"
    assert info.value.message.startswith("xlsx: not a readable ZIP package")

    cut = tmp_path / "cut.xlsx"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ExtractionError) as info:
        extract(cut)
    assert info.value.code == "corrupt"
    assert "xlsx" in info.value.message

    # A package whose workbook part is not XML (the router sees an XLSX by its parts).
    broken = tmp_path / "broken.xlsx"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(broken, "w") as dst:
        for info_ in src.infolist():
            dst.writestr(info_, b"<workbook><unclosed" if info_.filename == "xl/workbook.xml"
                         else src.read(info_))
    with pytest.raises(ExtractionError) as info:
        spreadsheet.extract(broken, XLSX, ExtractContext())
    assert info.value.code == "corrupt"
    assert info.value.message.startswith("xlsx: workbook unreadable")

    # A ZIP without a workbook part, handed to the extractor directly.
    bare = tmp_path / "bare.xlsx"
    with zipfile.ZipFile(bare, "w") as zf:
        zf.writestr("hello.txt", "hi")
    with pytest.raises(ExtractionError) as info:
        spreadsheet.extract(bare, XLSX, ExtractContext())
    assert (info.value.code, info.value.message) == (
        "corrupt", "xlsx: no workbook part (xl/workbook.xml) in the package")


# ----------------------------------------------------------------------------- large sheet

ROWS = 200_000

_MEASURE = r"""
import json, resource, sys, time
from pathlib import Path
import openpyxl  # imported before the baseline: both modes pay it
from extractors import extract, spreadsheet

def peak_mib():  # peak resident set size (VmHWM) since the last reset, MiB
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

path, mode = sys.argv[1], sys.argv[2]
with open("/proc/self/clear_refs", "w") as fh:  # peak RSS := current RSS
    fh.write("5")
before = peak_mib()
t = time.perf_counter()
out = {}
if mode == "stream":
    result = extract(path)
    out["seconds"] = time.perf_counter() - t
    out["growth_mib"] = peak_mib() - before
    tables = [e for e in result.elements if e.kind == "table"]
    out["tables"] = len(tables)
    out["chars"] = len(result.text)
    out["largest_element"] = max(len(e.text) for e in result.elements)
    out["last_rows"] = tables[-1].meta["rows"]
    from ingest.pipeline.chunking import Chunker  # after the measurement

    chunks = Chunker(lambda s: len(s.split()), max_tokens=200).chunk(result.elements)
    out["chunks"] = len(chunks)
    out["last_chunk"] = chunks[-1].text
    out["last_page"] = chunks[-1].page
elif mode == "odf":  # the ODF extractor before issue 3: content.xml as one lxml tree
    from extractors import odf
    from extractors.base import ExtractContext

    result = odf.extract(Path(path), "application/vnd.oasis.opendocument.spreadsheet", ExtractContext())
    out["seconds"] = time.perf_counter() - t
    out["growth_mib"] = peak_mib() - before
    out["chars"] = len(result.text)
else:  # what loading the whole sheet takes (openpyxl's normal mode)
    wb = openpyxl.load_workbook(path, data_only=True)
    out["rows"] = sum(1 for _ in wb.active.iter_rows(values_only=True))
    out["seconds"] = time.perf_counter() - t
    out["growth_mib"] = peak_mib() - before
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def big_sheet(tmp_path_factory) -> Path:
    from openpyxl import Workbook

    path = tmp_path_factory.mktemp("big") / "orders.xlsx"
    wb = Workbook(write_only=True)
    ws = wb.create_sheet("Orders")
    ws.append(["Order", "Customer", "Amount", "Date", "Region"])
    day = dt.date(2024, 1, 1)
    regions = ["North", "South", "East", "West"]
    for i in range(1, ROWS + 1):
        ws.append([i, f"customer {i % 997}", i * 1.25, day + dt.timedelta(days=i % 365),
                   regions[i % 4]])
    wb.save(str(path))
    return path


def _measure(path: Path, mode: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", _MEASURE, str(path), mode], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_200k_row_sheet_is_streamed_with_bounded_memory(big_sheet):
    stream = _measure(big_sheet, "stream")
    full = _measure(big_sheet, "full")
    print(f"\n{ROWS} rows, {big_sheet.stat().st_size} bytes: streamed {stream['seconds']:.1f} s, "
          f"peak RSS +{stream['growth_mib']:.0f} MiB, {stream['tables']} table elements, "
          f"{stream['chunks']} chunks; openpyxl full load {full['seconds']:.1f} s, "
          f"peak RSS +{full['growth_mib']:.0f} MiB")
    assert full["rows"] == ROWS + 1
    # Bounded: the output itself is ~10 MiB of text; parsing adds little on top.
    assert stream["growth_mib"] < 100
    assert stream["growth_mib"] * 3 < full["growth_mib"]
    assert stream["tables"] == ROWS // 200
    assert stream["largest_element"] < 20_000
    assert stream["last_rows"] == [ROWS - 198, ROWS + 1]
    # The last chunk, 200,000 rows down, still says which sheet and which columns.
    assert stream["last_chunk"].startswith(f"Sheet: Orders{DASH}Order | Customer | Amount | Date | Region")
    assert f"{ROWS} | customer {ROWS % 997} | 250000 |" in stream["last_chunk"]
    assert stream["last_page"] == 1


def test_200k_row_sheet_fits_a_small_sandbox(big_sheet):
    """The worker's parse sandbox: a 300 MiB address-space budget is enough."""
    from extractors import sandbox

    result = sandbox.run(extract, str(big_sheet), memory_mb=300, timeout=240, label="xlsx")
    assert result.extractor == "xlsx/openpyxl"
    assert f"{ROWS} | customer {ROWS % 997} | 250000" in result.elements[-1].text


# ----------------------------------------------------------------------------- corpus


def _tokens(text: str) -> Counter:
    return Counter(re.findall(r"\w+", text.lower()))


_CONTEXT = re.compile(r"^Sheet: .*?" + DASH, re.M)


def _content(text: str) -> str:
    """Without the "Sheet: <name> — " labels the extractors add (the old path repeats them
    for every sub-table it finds, the new one for every batch)."""
    return _CONTEXT.sub("", text)


def _normalise_old(text: str) -> str:
    """The old path's renderings that the new one changes on purpose: pandas' "3.0" for
    whole numbers, "00:00:00" on dates, and newlines inside cells as a literal "\\n"."""
    text = _content(text).replace("\\n", " ")
    text = re.sub(r"(\d{4}-\d\d-\d\d) 00:00:00", r"\1", text)
    return re.sub(r"\b(\d+)\.0\b", r"\1", text)


def _recall(reference: str, ours: str) -> float:
    ref, got = _tokens(reference), _tokens(ours)
    total = sum(ref.values())
    return sum(min(n, got[t]) for t, n in ref.items()) / total if total else 1.0


def test_corpus_workbooks_agree_with_the_unstructured_path():
    from extractors.unstructured_family import extract_unstructured

    root = need_corpora()
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in (".xlsx", ".xlsm", ".xltx", ".xltm"))
    assert len(files) >= 10
    compared = 0
    for path in files:
        try:
            new = extract(path)
        except ExtractionError as exc:
            assert exc.code == "encrypted", (path, exc)  # the router refuses before us
            print(f"{path.name}: {exc.code}")
            continue
        assert new.extractor == "xlsx/openpyxl"
        old = extract_unstructured(path, "xlsx", new.mime)
        if not old.text:
            print(f"{path.name}: old path empty, new {len(new.text)} chars")
            continue
        raw = _recall(old.text, new.text)
        norm = _recall(_normalise_old(old.text), _content(new.text))
        print(f"{path.relative_to(root)}: recall {raw:.3f} raw, {norm:.3f} normalised "
              f"(content only, cell renderings aligned; {len(old.text)} -> {len(new.text)} chars)")
        assert norm >= 0.95, path
        compared += 1
    assert compared >= 8


# ----------------------------------------------------------------------------- CSV / TSV

_WORDS = ["Zürich", "Genève", "München", "Malmö", "Señora", "Straße", "café", "Ærø", "Ångström",
          "Façade"]


def test_large_csv_is_streamed_with_the_same_charset_detection(tmp_path, monkeypatch, embedder):
    from extractors import spreadsheet
    from extractors.text import decode_bytes
    from ingest.pipeline.chunking import Chunker

    # Make "large" small, so the streaming path runs on a file a test can afford.
    monkeypatch.setattr(spreadsheet, "SMALL_TEXT_BYTES", 200_000)
    monkeypatch.setattr(spreadsheet, "SAMPLE_BYTES", 50_000)
    rows = ["id;city;note"] + [f"{i};{_WORDS[i % 10]};Grüße aus {_WORDS[(i * 7) % 10]}"
                               for i in range(1, 20_001)]
    data = ("\r\n".join(rows) + "\r\n").encode("cp1252")
    path = tmp_path / "export.csv"
    path.write_bytes(data)
    assert len(data) > 2 * spreadsheet.SMALL_TEXT_BYTES
    whole_encoding = decode_bytes(data)[1]

    result = extract(path)
    assert result.extractor == "csv/csv"
    assert f"encoding: {whole_encoding} (detected)" in result.warnings  # cp1252, as decoded whole
    assert "encoding: decided on the first 49" in " ".join(result.warnings)  # cut at a line end
    assert "delimiter: ';' (detected)" in result.warnings
    tables = result.elements
    assert len(tables) == 100 and all(t.page is None for t in tables)
    assert all(t.text.startswith("id | city | note\n--- | --- | ---\n") for t in tables)
    assert tables[-1].meta["rows"] == [19_802, 20_001]
    assert "20000 | Zürich | Grüße aus Zürich" in tables[-1].text

    chunks = Chunker(embedder.count_tokens, embedder.max_tokens).chunk(tables)
    assert all(c.text.startswith("id | city | note\n") for c in chunks)
    assert "20000 | Zürich | Grüße aus Zürich" in chunks[-1].text


def test_large_utf8_csv_with_a_bad_byte_after_the_sample(tmp_path, monkeypatch):
    from extractors import spreadsheet

    monkeypatch.setattr(spreadsheet, "SMALL_TEXT_BYTES", 10_000)
    monkeypatch.setattr(spreadsheet, "SAMPLE_BYTES", 5_000)
    body = "".join(f"{i},Zürich\n" for i in range(3000)).encode()
    path = tmp_path / "u.csv"
    path.write_bytes(b"n,city\n" + body + b"3000,Z\xfcrich\n")  # one Latin-1 byte at the end
    result = extract(path)
    assert not any("detected" in w for w in result.warnings)  # UTF-8, from the sample
    assert "encoding: 1 undecodable byte(s) replaced after the sample" in result.warnings
    assert "3000 | Z\ufffdrich" in result.text


def test_corpus_delimited_files_agree_with_the_old_paths():
    from extractors import text as text_module
    from extractors.unstructured_family import extract_unstructured

    root = need_corpora()
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in (".csv", ".tsv")
                   and "ir" not in p.relative_to(root).parts[:1] and p.name != "MANIFEST.tsv")
    assert len(files) >= 10
    for path in files:
        new = extract(path)
        assert new.extractor == f"{path.suffix[1:].lower()}/csv"
        old = (extract_unstructured(path, "csv", new.mime) if path.suffix.lower() == ".csv"
               else text_module.extract(path, new.mime, ExtractContext()))
        recall = _recall(old.text, new.text)
        print(f"{path.relative_to(root)}: recall {recall:.3f} vs {old.extractor}")
        assert recall >= 0.95, path


# ----------------------------------------------------------------------------- ODS

ODS = "application/vnd.oasis.opendocument.spreadsheet"
_ODS_HEAD = ('<?xml version="1.0" encoding="UTF-8"?>\n<office:document-content '
             'xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
             'xmlns:table="urn:oasis:names:tc:opendocument:xmlns:table:1.0" '
             'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0" office:version="1.2">'
             "<office:body><office:spreadsheet>")


def _ods_cell(text: str) -> str:
    return f"<table:table-cell><text:p>{text}</text:p></table:table-cell>"


def _write_ods(path: Path, sheets: list[tuple[str, list[str]]]) -> Path:
    """An ODS package; each sheet is (name, row XML strings), written as it goes."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(zipfile.ZipInfo("mimetype"), ODS)
        with zf.open(zipfile.ZipInfo("content.xml", (2024, 1, 1, 0, 0, 0)), "w") as fh:
            fh.write(_ODS_HEAD.encode())
            for name, rows in sheets:
                fh.write(f'<table:table table:name="{name}">'.encode())
                for row in rows:
                    fh.write(row.encode())
                fh.write(b"</table:table>")
            fh.write(b"</office:spreadsheet></office:body></office:document-content>")
        zf.writestr("META-INF/manifest.xml",
                    '<?xml version="1.0" encoding="UTF-8"?><manifest:manifest '
                    'xmlns:manifest="urn:oasis:names:tc:opendocument:xmlns:manifest:1.0">'
                    '<manifest:file-entry manifest:full-path="/" manifest:media-type="'
                    f'{ODS}"/></manifest:manifest>')
    return path


def _ods_rows(n: int):
    yield "<table:table-row>" + "".join(_ods_cell(h) for h in ("Order", "Customer", "Amount")) + \
        "</table:table-row>"
    for i in range(1, n + 1):
        yield ("<table:table-row>" + _ods_cell(str(i)) + _ods_cell(f"customer {i % 997}") +
               f'<table:table-cell office:value-type="float" office:value="{i * 2}"/>'
               '<table:table-cell table:number-columns-repeated="1020"/></table:table-row>')
    yield '<table:table-row table:number-rows-repeated="1048000"><table:table-cell/></table:table-row>'


def test_ods_is_streamed_with_sheet_and_header_in_every_batch(tmp_path):
    rows = 100_000
    path = _write_ods(tmp_path / "orders.ods", [
        ("Empty", ["<table:table-row><table:table-cell/></table:table-row>"]),
        ("Orders", _ods_rows(rows)),
    ])
    stream = _measure(path, "stream")
    old = _measure(path, "odf")
    print(f"\nODS {rows} rows, content.xml streamed: {stream['seconds']:.1f} s, peak RSS "
          f"+{stream['growth_mib']:.0f} MiB; whole-tree ODF path {old['seconds']:.1f} s, "
          f"+{old['growth_mib']:.0f} MiB")
    assert stream["growth_mib"] < 100
    assert stream["growth_mib"] * 3 < old["growth_mib"]
    assert stream["tables"] == rows // 200
    assert stream["last_rows"] == [rows - 198, rows + 1]
    assert stream["last_page"] == 2  # "Empty" is sheet 1
    assert stream["last_chunk"].startswith(f"Sheet: Orders{DASH}Order | Customer | Amount\n")
    assert f"{rows} | customer {rows % 997} | {rows * 2}" in stream["last_chunk"]

    result = extract(path)
    assert result.extractor == "ods/lxml" and result.pages == 2
    assert {e.meta["sheet"] for e in result.elements} == {"Orders"}


def test_corrupt_ods_gives_a_specific_error(tmp_path):
    path = _write_ods(tmp_path / "bad.ods", [("S", ["<table:table-row>" + _ods_cell("a")])])
    with pytest.raises(ExtractionError) as info:
        extract(path)
    assert info.value.code == "corrupt"
    assert info.value.message.startswith("ods: content.xml:")


def test_corpus_password_protected_xlsx_opens_with_a_configured_password(tmp_path):
    path = need_corpora() / "tika-test-documents/microsoft/testEXCEL_protected_passtika.xlsx"
    result = extract(path, ctx=ExtractContext(workdir=tmp_path, passwords=[("*", "tika")]))
    assert result.extractor == "xlsx/openpyxl"
    assert "decrypted with a configured password" in result.warnings
    assert result.elements[0].text == f"Sheet: Sheet1{DASH}This is an Encrypted Excel spreadsheet."
    assert list(tmp_path.iterdir()) == []  # the decrypted copy is gone
