"""Spreadsheets and delimited text, streamed row by row: XLSX/XLSM/XLTX/XLTM (openpyxl,
read-only), ODS/OTS/SXC (lxml iterparse of content.xml), CSV and TSV (``csv`` module).

XLSX: the workbook is opened with ``load_workbook(read_only=True, data_only=True)`` and
each worksheet is read with ``iter_rows(values_only=True)``: one row at a time, so
memory stays bounded by the shared-strings table and the output, not by the sheet (a
200,000-row sheet: +37 MiB peak RSS, where a full openpyxl load takes +425 MiB and the
old path through ``unstructured``/pandas a minute and +260 MiB). Formulas give their
cached values (``data_only``); a formula the writing program never calculated has no
value and reads as empty. The declared ``<dimension>`` is ignored (``reset_dimensions``):
it is often wrong, and ``A1:XFD1048576`` would pad every row to 16,384 cells.

ODS: content.xml is parsed with ``lxml.etree.iterparse`` (no entity resolution, no DTD,
no network, libxml2's size bounds), filtered to ``table:table``/``table:table-row``;
each row is read with ``odf.row_cells`` (the ODF extractor's rules: paragraphs, else
``office:value``; repeated cells and rows expanded only with content, at most
``odf.MAX_REPEAT`` times) and freed. An encrypted ODS is decrypted (``odf.content_xml``)
into memory first.

CSV/TSV: files up to ``SMALL_TEXT_BYTES`` are decoded whole with ``text.decode_bytes``
(the same charset detection as plain text); larger ones get their encoding from the
same function on the first ``SAMPLE_BYTES`` (cut at a line end) and are decoded as they
are read, bytes that do not fit later on replaced and counted in a warning. The CSV
delimiter is sniffed among ``, ; TAB |`` (a warning names any but ","). The first
non-empty record is the header; records may differ in length.

Output per sheet (``page`` = the sheet's 1-based index in the workbook, as before;
``Extraction.pages`` = the last sheet with content; CSV/TSV have no pages and no sheet
name, so their batches start with the header row alone):

* rows before the header (a title such as "Quarterly revenue" above the table) as a
  ``paragraph``;
* the rows as ``table`` elements of at most ``BATCH_ROWS`` rows / ``BATCH_CHARS``
  characters. Every batch repeats the sheet name and the header row on its first
  line (``Sheet: <name> — <header cells>``, see ``extractors._tables``), so a chunk
  cut from row 90,000 still names its sheet and its columns. ``meta["sheet"]`` is the
  sheet name, ``meta["header"]`` the header cells, ``meta["rows"]`` the first and last
  sheet row number of the batch. (No ``meta["cells"]`` copy of every row, unlike the
  small tables of other formats: it would triple the memory a large sheet needs.)

The header row is the first non-empty row with two or more filled cells among the
first ``HEADER_SCAN`` non-empty rows (else the first non-empty row). Empty rows and
empty sheets are skipped; trailing empty cells are dropped; columns empty in the header
and in every row of a batch are dropped from that batch (a table starting in column C
does not begin every line with " |  | ").

Values: text with whitespace collapsed; whole numbers without ".0"; other floats with
15 significant digits (what Excel shows, no binary noise like 0.30000000000000004);
dates as ``2024-03-31`` (with `` 14:30:00`` when there is a time of day); booleans as
``TRUE``/``FALSE``; error values (``#DIV/0!``) as they are.

Bounds (``ExtractContext.limits``): a sheet with more than ``max_sheet_cells``
non-empty cells is cut there and the next sheet is read; once the output passes
``max_sheet_chars`` characters the workbook is cut. Either cut is a warning starting
with ``truncated:`` that names the sheet and row, and the quality report flags the
document (``quality:truncated``). Rows wider than ``MAX_COLUMNS`` cells are cut to
that width. ``xl/sharedStrings.xml`` (held in memory by openpyxl) over
``max_member_bytes``, or over 10 MiB at a compression ratio above ``max_ratio``,
is a ``zip-bomb``.

Errors: not a ZIP package, a package without a readable workbook part or content.xml,
malformed sheet XML, or a CSV the ``csv`` module rejects is ``corrupt`` with what failed.
"""
from __future__ import annotations

import datetime as _dt
import zipfile
from pathlib import Path

from . import odf
from ._tables import render_table
from .base import Element, ExtractContext, Extraction, ExtractionError
from .detect import bomless_utf16
from .registry import FAMILY
from .text import BOMS, charset_normalizer_version, decode_bytes
from .errors import ErrorCode

OUR_VERSION = 1
BATCH_ROWS = 200  # rows per table element
BATCH_CHARS = 16_000  # characters per table element (a batch ends at whichever comes first)
HEADER_SCAN = 10  # non-empty rows looked at to find the header row
MAX_COLUMNS = 2000  # widest row kept
MAX_CELL_CHARS = 32_767  # Excel's own limit for one cell


def cell_text(value) -> str:
    """One cell value as text a person reads (see module doc)."""
    if value is None:
        return ""
    if isinstance(value, str):
        text = " ".join(value.split())
        return text[:MAX_CELL_CHARS]
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return str(value)
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return f"{value:.15g}"
    if isinstance(value, _dt.datetime):
        if (value.hour, value.minute, value.second, value.microsecond) == (0, 0, 0, 0):
            return value.date().isoformat()
        return value.isoformat(sep=" ", timespec="seconds")
    if isinstance(value, (_dt.date, _dt.time)):
        return value.isoformat()
    return " ".join(str(value).split())[:MAX_CELL_CHARS]


class SheetWriter:
    """Turns the rows of one sheet, as they stream in, into bounded elements.

    Shared by every streamed table format: call :meth:`row` for each row (already
    text), then :meth:`close`. ``budget`` is shared by the sheets of one document.
    """

    def __init__(self, name: str, page: int | None, out: list[Element], budget: "Budget",
                 header_scan: int = HEADER_SCAN):
        self.header_scan = header_scan
        self.name = name
        self.page = page
        self.out = out
        self.budget = budget
        self.context = f"Sheet: {name}" if name else None
        self.scan: list[tuple[int, list[str]]] = []  # rows seen before the header is known
        self.header: list[str] | None = None
        self.lead = 0  # leading empty columns dropped
        self.batch: list[list[str]] = []
        self.batch_rows: list[int] = []
        self.batch_chars = 0
        self.cells = 0
        self.started = False  # the sheet has content
        self.emitted_table = False
        self.stopped = False  # this sheet's budget is spent

    # -- input ---------------------------------------------------------------------
    def row(self, number: int, cells: list[str]) -> bool:
        """Add sheet row ``number``; False once this sheet (or the document) is cut."""
        if self.stopped:
            return False
        while cells and not cells[-1]:
            cells.pop()
        if not cells:
            return True
        if len(cells) > MAX_COLUMNS:
            cells = cells[:MAX_COLUMNS]
            self.budget.wide_rows += 1
        filled = sum(1 for c in cells if c)
        if self.cells + filled > self.budget.max_sheet_cells:
            self._cut(number, f"more than {self.budget.max_sheet_cells} non-empty cells "
                              "(limit max_sheet_cells)")
            return False
        chars = sum(len(c) for c in cells) + 3 * len(cells)
        if self.budget.chars + chars > self.budget.max_chars:
            self.budget.spent = True
            self._cut(number, f"output passed {self.budget.max_chars} characters "
                              "(limit max_sheet_chars); later sheets not read")
            return False
        self.cells += filled
        self.budget.chars += chars
        if self.header is None:
            self.scan.append((number, cells))
            if filled >= 2 or len(self.scan) >= self.header_scan:
                self._choose_header()
            return True
        self._add(number, cells, chars)
        return True

    def close(self) -> None:
        if self.header is None and self.scan:
            self._choose_header()
        self._flush()
        if self.header is not None and not self.batch_rows and not self.emitted_table:
            # a sheet that is only a header row: the header line alone
            self._start()
            self.out.append(Element("table", render_table([self.header], context=self.context),
                                    page=self.page, meta=self._meta([])))

    # -- internals -----------------------------------------------------------------
    def _start(self) -> None:
        # No "heading" element per sheet: the chunker would make the heading a chunk of
        # its own whenever the first table part fills a chunk (always, on large sheets);
        # the sheet name travels on every table line 1 and in meta["sheet"] instead.
        self.started = True

    def _choose_header(self) -> None:
        index = next((i for i, (_, cells) in enumerate(self.scan)
                      if sum(1 for c in cells if c) >= 2), 0)
        before, (_, header), after = self.scan[:index], self.scan[index], self.scan[index + 1:]
        self.scan = []
        self._start()
        if before:
            text = "\n".join(" | ".join(c for c in cells if c) for _, cells in before)
            self.out.append(Element("paragraph", text, page=self.page,
                                    meta={"sheet": self.name} if self.name else {}))
        self.header = header
        for number, cells in after:
            self._add(number, cells, sum(len(c) for c in cells) + 3 * len(cells))

    def _add(self, number: int, cells: list[str], chars: int) -> None:
        if self.batch and (len(self.batch) >= BATCH_ROWS or self.batch_chars + chars > BATCH_CHARS):
            self._flush()
        self.batch.append(cells)
        self.batch_rows.append(number)
        self.batch_chars += chars

    def _meta(self, rows: list[int], header: list[str] | None = None) -> dict:
        meta: dict = {"header": self.header if header is None else header}
        if self.name:
            meta["sheet"] = self.name
        if rows:
            meta["rows"] = [rows[0], rows[-1]]
        return meta

    def _flush(self) -> None:
        if not self.batch:
            return
        cells = [self.header, *self.batch]
        width = max(len(row) for row in cells)
        keep = [c for c in range(width) if any(c < len(row) and row[c] for row in cells)]
        if len(keep) < width:  # columns empty in the header and every row of this batch
            cells = [[row[c] if c < len(row) else "" for c in keep] for row in cells]
            cells = [_trim(row) for row in cells]
        self.out.append(Element("table", render_table(cells, context=self.context),
                                page=self.page, meta=self._meta(self.batch_rows, cells[0])))
        self.emitted_table = True
        self.batch, self.batch_rows, self.batch_chars = [], [], 0

    def _cut(self, number: int, why: str) -> None:
        self.stopped = True
        where = f"sheet '{self.name}'" if self.name else "table"
        self.budget.warnings.append(f"truncated: {where} cut before row {number}: {why}")


def _trim(row: list[str]) -> list[str]:
    end = len(row)
    while end and not row[end - 1]:
        end -= 1
    return row[:end]


class Budget:
    """What the sheets of one document may produce together."""

    def __init__(self, ctx: ExtractContext):
        limits = ctx.limits
        self.max_sheet_cells = limits.max_sheet_cells
        self.max_chars = limits.max_sheet_chars
        self.chars = 0
        self.spent = False
        self.wide_rows = 0
        self.warnings: list[str] = []

    def notes(self) -> list[str]:
        notes = list(self.warnings)
        if self.wide_rows:
            notes.append(f"{self.wide_rows} row(s) wider than {MAX_COLUMNS} cells cut to "
                         f"{MAX_COLUMNS}")
        return notes


# ----------------------------------------------------------------------------- XLSX


def _check_package(path: Path, fmt: str, ctx: ExtractContext) -> None:
    try:
        with zipfile.ZipFile(path) as zf:
            infos = {i.filename: i for i in zf.infolist()}
    except zipfile.BadZipFile as exc:
        raise ExtractionError(ErrorCode.CORRUPT, f"{fmt}: not a readable ZIP package: {exc}") from exc
    if "xl/workbook.xml" not in infos:
        raise ExtractionError(ErrorCode.CORRUPT, f"{fmt}: no workbook part (xl/workbook.xml) in the package")
    limits = ctx.limits
    info = infos.get("xl/sharedStrings.xml")
    if info is not None:
        ratio = info.file_size / max(info.compress_size, 1)
        if info.file_size > limits.max_member_bytes or (
                info.file_size > 10 * 1024 * 1024 and ratio > limits.max_ratio):
            raise ExtractionError(
                ErrorCode.ZIP_BOMB, f"{fmt}: xl/sharedStrings.xml expands to {info.file_size} bytes "
                f"(ratio 1:{ratio:.0f}; limits {limits.max_member_bytes} bytes, 1:{limits.max_ratio:.0f})")


def _open_workbook(path: Path, fmt: str):
    import warnings as _warnings

    from openpyxl import load_workbook

    try:
        with _warnings.catch_warnings():
            # "Data Validation extension is not supported", "invalid specification": noise
            _warnings.simplefilter("ignore")
            return load_workbook(str(path), read_only=True, data_only=True, keep_links=False)
    except zipfile.BadZipFile as exc:
        raise ExtractionError(ErrorCode.CORRUPT, f"{fmt}: not a readable ZIP package: {exc}") from exc
    except KeyError as exc:
        raise ExtractionError(ErrorCode.CORRUPT, f"{fmt}: package part missing: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - openpyxl raises many kinds on bad XML
        _raise_if_unsafe_xml(exc, fmt)
        raise ExtractionError(
            ErrorCode.CORRUPT, f"{fmt}: workbook unreadable ({type(exc).__name__}: {str(exc)[:200]})"
        ) from exc


def _raise_if_unsafe_xml(exc: BaseException, fmt: str) -> None:
    """openpyxl parses with defusedxml and wraps its refusal in a ValueError: an entity
    declaration (billion laughs) or an external reference is ``unsafe-xml``, not ``corrupt``."""
    seen = 0
    e: BaseException | None = exc
    while e is not None and seen < 10:
        if type(e).__module__.startswith("defusedxml"):
            raise ExtractionError(ErrorCode.UNSAFE_XML, f"{fmt}: {type(e).__name__}: {e} (entity expansion and "
                                  "external references are disabled)") from exc
        e, seen = e.__cause__ or e.__context__, seen + 1


def _xlsx(path: Path, fmt: str, ctx: ExtractContext) -> tuple[list[Element], int, list[str]]:
    _check_package(path, fmt, ctx)
    wb = _open_workbook(path, fmt)
    out: list[Element] = []
    budget = Budget(ctx)
    last_page = 0
    try:
        for page, ws in enumerate(wb.worksheets, start=1):
            if budget.spent:
                break
            if not hasattr(ws, "iter_rows"):
                continue
            # Trust the rows in the file, not the declared <dimension> (often wrong, and a
            # declared A1:XFD1048576 would pad every row to 16,384 cells).
            ws.reset_dimensions()
            writer = SheetWriter(ws.title, page, out, budget)
            try:
                for number, row in enumerate(ws.iter_rows(values_only=True), start=1):
                    if row and not writer.row(number, [cell_text(v) for v in row[:MAX_COLUMNS + 1]]):
                        break
            except ExtractionError:
                raise
            except Exception as exc:  # noqa: BLE001 - one damaged sheet fails the file, named
                _raise_if_unsafe_xml(exc, fmt)
                raise ExtractionError(
                    ErrorCode.CORRUPT, f"{fmt}: sheet '{ws.title}' unreadable "
                    f"({type(exc).__name__}: {str(exc)[:200]})") from exc
            writer.close()
            if writer.started:
                last_page = page
    finally:
        wb.close()
    return out, last_page, budget.notes()


# ----------------------------------------------------------------------------- ODS

_ODS_TABLE_NS = ("urn:oasis:names:tc:opendocument:xmlns:table:1.0",
                 "http://openoffice.org/2000/table")  # ODF, and OpenOffice.org 1.x (SXC)


def _ods_source(path: Path, fmt: str, ctx: ExtractContext):
    """content.xml as a stream (decrypted into memory when the file is encrypted)."""
    import io

    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise ExtractionError(ErrorCode.CORRUPT, f"{fmt}: not a readable ZIP package: {exc}") from exc
    if "content.xml" not in zf.namelist():
        zf.close()
        raise ExtractionError(ErrorCode.CORRUPT, f"{fmt}: no content.xml in the package")
    if odf.encryption(zf, ctx) is not None:
        with zf:
            data, _ = odf.content_xml(zf, path, ctx, fmt)
        return None, io.BytesIO(data), True
    info = zf.getinfo("content.xml")
    ratio = info.file_size / max(info.compress_size, 1)
    if info.file_size > 10 * 1024 * 1024 and ratio > ctx.limits.max_ratio:
        zf.close()
        raise ExtractionError(ErrorCode.ZIP_BOMB, f"{fmt}: content.xml ratio 1:{ratio:.0f} "
                              f"(limit 1:{ctx.limits.max_ratio:.0f})")
    return zf, zf.open(info), False


def _ods(path: Path, fmt: str, ctx: ExtractContext) -> tuple[list[Element], int, list[str]]:
    """ODS/OTS/SXC sheets, streamed from content.xml with lxml's iterparse: each row is
    turned into cells when it ends and then freed (``odf.row_cells`` reads it, so cell
    text is what the ODF extractor reads: a cell's paragraphs, else its value)."""
    from lxml import etree

    zf, source, decrypted = _ods_source(path, fmt, ctx)
    tags = [f"{{{ns}}}{local}" for ns in _ODS_TABLE_NS for local in ("table", "table-row")]
    out: list[Element] = []
    budget = Budget(ctx)
    warnings: list[str] = ["decrypted with a configured password"] if decrypted else []
    depth = number = last_page = row_number = 0
    writer: SheetWriter | None = None
    stopped = False
    try:
        events = etree.iterparse(source, events=("start", "end"), tag=tags,
                                 resolve_entities=False, no_network=True, load_dtd=False,
                                 huge_tree=False, remove_comments=True, remove_pis=True)
        for event, el in events:
            table = el.tag.endswith("}table")
            if event == "start":
                if table:
                    depth += 1
                    if depth == 1:  # a sheet (tables nested in cells belong to their cell)
                        number += 1
                        name = odf.attr(el, "table", "name") or f"Sheet{number}"
                        writer = SheetWriter(name, number, out, budget)
                        row_number, stopped = 0, budget.spent
                continue
            if table:
                depth -= 1
                if depth == 0 and writer is not None:
                    writer.close()
                    last_page = number if writer.started else last_page
                    writer = None
                    _free(el)
                continue
            if depth != 1 or writer is None:
                continue
            repeat = odf.int_attr(el, "table", "number-rows-repeated", 1) or 1
            if not stopped:
                cells = odf.row_cells(el, odf.Walker(number))
                if any(cells):
                    for copy in range(min(repeat, odf.MAX_REPEAT)):
                        if not writer.row(row_number + copy + 1, list(cells)):
                            stopped = True
                            break
                    if repeat > odf.MAX_REPEAT and not stopped:  # the cap is a cut: say so (quality flag)
                        budget.warnings.append(
                            f"truncated: sheet '{writer.name}' row {row_number + 1} repeated {repeat} times, "
                            f"kept {odf.MAX_REPEAT}")
            row_number += repeat
            _free(el)
    except etree.XMLSyntaxError as exc:
        raise ExtractionError(ErrorCode.CORRUPT, f"{fmt}: content.xml: {exc}") from exc
    finally:
        source.close()
        if zf is not None:
            zf.close()
    return out, last_page, warnings + budget.notes()


def _free(el) -> None:
    """Drop a finished element and the siblings before it (iterparse keeps the tree)."""
    el.clear(keep_tail=True)
    parent = el.getparent()
    if parent is not None:
        while el.getprevious() is not None:
            del parent[0]


# ----------------------------------------------------------------------------- CSV / TSV

SMALL_TEXT_BYTES = 16 * 1024 * 1024  # up to this size a delimited file is decoded whole
SAMPLE_BYTES = 1024 * 1024  # larger ones: the encoding is decided on this much


def _sample_encoding(path: Path) -> tuple[str, list[str]]:
    """Encoding of a large text file, decided on its first ``SAMPLE_BYTES`` with the
    same rules as ``text.decode_bytes`` (BOM, UTF-16 without BOM, UTF-8, code pages)."""
    with open(path, "rb") as fh:
        sample = fh.read(SAMPLE_BYTES)
    if any(sample.startswith(bom) for bom, _ in BOMS) or bomless_utf16(sample[:8192]):
        sample = sample[: len(sample) // 4 * 4]  # whole code units
    elif b"\n" in sample:
        sample = sample[: sample.rindex(b"\n") + 1]  # no character cut in two
    _, encoding, notes = decode_bytes(sample)
    if encoding not in ("utf-8", "utf-8-sig"):
        notes = [*notes, f"encoding: decided on the first {len(sample)} bytes"]
    return encoding, notes


def _sniff_delimiter(head: str, default: str) -> str:
    import csv

    lines = [ln for ln in head.splitlines()[:50] if ln.strip()]
    if not lines:
        return default
    try:
        return csv.Sniffer().sniff("\n".join(lines), delimiters=",;\t|").delimiter
    except csv.Error:
        return default


def _delimited(path: Path, fmt: str, ctx: ExtractContext) -> tuple[list[Element], list[str]]:
    """CSV/TSV rows, streamed through the same writer as sheets (no sheet name)."""
    import csv
    import io

    size = path.stat().st_size
    if size <= SMALL_TEXT_BYTES:
        text, encoding, notes = decode_bytes(path.read_bytes())
        stream = io.StringIO(text.replace("\r\n", "\n").replace("\r", "\n"))  # CR-only (old Mac) too
        head = text[:65536]
    else:
        encoding, notes = _sample_encoding(path)
        stream = open(path, encoding=encoding, errors="replace", newline="")
        head = stream.read(65536)
        stream.seek(0)
    delimiter = "\t" if fmt == "tsv" else _sniff_delimiter(head, ",")
    if fmt == "csv" and delimiter != ",":
        notes.append(f"delimiter: {delimiter!r} (detected)")
    out: list[Element] = []
    budget = Budget(ctx)
    writer = SheetWriter("", None, out, budget, header_scan=1)
    replaced = 0
    number = 0
    try:
        with stream:
            for number, row in enumerate(csv.reader(stream, delimiter=delimiter), start=1):
                cells = [" ".join(c.split())[:MAX_CELL_CHARS] for c in row[:MAX_COLUMNS + 1]]
                if size > SMALL_TEXT_BYTES:
                    replaced += sum(c.count("\ufffd") for c in cells)
                if not writer.row(number, cells):
                    break
    except csv.Error as exc:
        raise ExtractionError(ErrorCode.CORRUPT, f"{fmt}: record {number + 1}: {exc}") from exc
    writer.close()
    if replaced:
        notes.append(f"encoding: {replaced} undecodable byte(s) replaced after the sample")
    return out, notes + budget.notes()


# ----------------------------------------------------------------------------- entry


def extract(path: Path, mime: str, ctx: ExtractContext) -> Extraction:
    """Router entry point (see ``extractors.registry.EXTRACTORS``): XLSX and its variants, ODS, CSV, TSV."""
    fmt = FAMILY[mime]
    pages = None
    if fmt in ("csv", "tsv"):
        elements, warnings = _delimited(path, fmt, ctx)
        extractor = f"{fmt}/csv"
        version = f"charset-normalizer-{charset_normalizer_version()}+{OUR_VERSION}"
    elif fmt == "ods":
        from lxml import etree

        elements, pages, warnings = _ods(path, fmt, ctx)
        extractor = f"{fmt}/lxml"
        version = f"lxml-{etree.__version__}+{OUR_VERSION}"
    else:
        import openpyxl

        elements, pages, warnings = _xlsx(path, fmt, ctx)
        extractor = f"{fmt}/openpyxl"
        version = f"openpyxl-{openpyxl.__version__}+{OUR_VERSION}"
    return Extraction.of(elements, extractor, version, mime, warnings, pages)
