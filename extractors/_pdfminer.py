"""pdfminer.six as a third PDF text engine, for the pages pypdf and PDFium both read badly.

Composite (Type0) fonts without a ``/ToUnicode`` map leave a text engine only the
glyph ids. Two kinds of them are mappable all the same, and pdfminer.six maps both
where pypdf and PDFium (often) do not:

* CID fonts of a registered character collection (Adobe-Japan1, -GB1, -CNS1,
  -Korea1): pdfminer ships the collections' CID -> Unicode tables. pypdf writes the
  CIDs as code points ("ɹɹং Θͨ͘͠ͱ͍" for Japanese), PDFium maps only some of them.
* Identity-encoded TrueType CID fonts with the font file embedded: pdfminer inverts
  the font's own ``cmap`` table (glyph id -> Unicode).

:func:`can_map` looks for such a font on a page (its own resources and those of the
form XObjects it draws); ``extractors.pdf`` asks :class:`Reader` for a page's text
only where the page has one AND the text chosen from the other two engines looks
garbled or incomplete (``extractors._pdftext.doubtful``), and keeps pdfminer's text
only where it is clearly better (``extractors._pdftext.better``). pdfminer is pure
Python and slow (about 10-50x PDFium), so a document gets at most ``MAX_PAGES``
pages and ``BUDGET_S`` seconds of it; the pages past either keep their text and are
named in a warning.

pdfminer writes "(cid:N)" for a glyph it cannot map either; those placeholders are
dropped (made spaces): they are not text.
"""
from __future__ import annotations

import re
import time

MAX_PAGES = 50  # pages of one document read with pdfminer at most
BUDGET_S = 10.0  # seconds of pdfminer per document; checked between pages

_CID = re.compile(r"\(cid:\d+\)")
_SPACES = re.compile(r"[ \t\u3000]+")
_UNMAPPED_ORDERINGS = ("Identity", "UCS")  # pdfminer has no table for these


def version() -> str | None:
    import importlib.metadata

    try:
        return importlib.metadata.version("pdfminer.six")
    except importlib.metadata.PackageNotFoundError:
        return None


# --------------------------------------------------------------------------- fonts

def _font_mappable(font) -> bool:
    """A Type0 font without /ToUnicode that pdfminer can map (module docstring)."""
    if font.get("/Subtype") != "/Type0" or "/ToUnicode" in font:
        return False
    descendants = font.get("/DescendantFonts")
    descendants = descendants.get_object() if descendants is not None else []
    if not descendants:
        return False
    cid_font = descendants[0].get_object()
    info = cid_font.get("/CIDSystemInfo")
    info = info.get_object() if info is not None else {}
    ordering = str(info.get("/Ordering", ""))
    if ordering and not any(u in ordering for u in _UNMAPPED_ORDERINGS):
        return True  # a registered collection: pdfminer's CMap tables
    descriptor = cid_font.get("/FontDescriptor")
    descriptor = descriptor.get_object() if descriptor is not None else {}
    return cid_font.get("/Subtype") == "/CIDFontType2" and "/FontFile2" in descriptor


def can_map(page, max_depth: int = 3) -> bool:
    """Whether the pypdf ``page`` (or a form XObject it draws, ``max_depth`` levels
    down) uses a font that pdfminer maps to Unicode and the other engines may not."""
    seen: set[int] = set()

    def walk(resources, depth: int) -> bool:
        if resources is None or depth > max_depth:
            return False
        resources = resources.get_object()
        if id(resources) in seen:
            return False
        seen.add(id(resources))
        fonts = resources.get("/Font")
        for ref in (fonts.get_object().values() if fonts is not None else ()):
            if _font_mappable(ref.get_object()):
                return True
        xobjects = resources.get("/XObject")
        for ref in (xobjects.get_object().values() if xobjects is not None else ()):
            xobject = ref.get_object()
            if xobject.get("/Subtype") == "/Form" and walk(xobject.get("/Resources"), depth + 1):
                return True
        return False

    try:
        return walk(page.get("/Resources"), 0)
    except Exception:  # noqa: BLE001 - a damaged resource dictionary: no third engine
        return False


# --------------------------------------------------------------------------- text

class Reader:
    """pdfminer.six over one document, opened on first use; pages are asked for in
    increasing order (the page tree is walked once). ``page_text`` returns None once
    the budget is spent or when pdfminer cannot be used (``unavailable`` says why)."""

    def __init__(self, path, password: str | None = None,
                 max_pages: int | None = None, budget_s: float | None = None):
        self.path, self.password = path, password or ""
        self.max_pages = MAX_PAGES if max_pages is None else max_pages
        self.budget_s = BUDGET_S if budget_s is None else budget_s
        self.unavailable: str | None = None
        self.pages_read = 0
        self.spent_s = 0.0
        self.not_read: list[int] = []  # 1-based pages asked for and not read ...
        self.why_not: str | None = None  # ... and why (the last reason)
        self._file = None
        self._pages = None  # generator over pdfminer's pages
        self._next = 0  # index of the page the generator yields next
        self._interpreter = self._device = None

    def _open(self) -> None:
        try:
            from pdfminer.converter import PDFPageAggregator
            from pdfminer.layout import LAParams
            from pdfminer.pdfdocument import PDFDocument
            from pdfminer.pdfinterp import PDFPageInterpreter, PDFResourceManager
            from pdfminer.pdfpage import PDFPage
            from pdfminer.pdfparser import PDFParser
        except ImportError:
            self.unavailable = "pdfminer.six is not installed"
            return
        try:
            self._file = open(self.path, "rb")
            document = PDFDocument(PDFParser(self._file), password=self.password)
            self._pages = PDFPage.create_pages(document)
            manager = PDFResourceManager(caching=True)
            self._device = PDFPageAggregator(manager, laparams=LAParams(detect_vertical=True))
            self._interpreter = PDFPageInterpreter(manager, self._device)
        except Exception as exc:  # noqa: BLE001 - the third engine is an extra
            self.unavailable = f"pdfminer cannot open the file ({type(exc).__name__}: {exc})"
            self.close()

    def page_text(self, index: int) -> str | None:
        """The text of page ``index`` (0-based), "(cid:N)" placeholders dropped, text
        boxes separated by blank lines; None if not read (then the page is in
        ``not_read`` and ``why_not`` says why)."""
        if self._pages is None and not self.unavailable:
            self._open()
        if self.pages_read >= self.max_pages or self.spent_s >= self.budget_s:
            self.unavailable = (f"limit of {self.max_pages} pages / {self.budget_s:g} s "
                                "of pdfminer per document reached")
        if self.unavailable:
            self.not_read.append(index + 1)
            self.why_not = self.unavailable
            return None
        if index < self._next:  # the page tree is walked once, forwards
            raise ValueError(f"page {index + 1} asked for after page {self._next}")
        t0 = time.perf_counter()
        try:
            while self._next <= index:
                page = next(self._pages)
                self._next += 1
            self._interpreter.process_page(page)
            return layout_text(self._device.get_result())
        except StopIteration:
            self.unavailable = self.why_not = "pdfminer sees fewer pages than pypdf"
        except Exception as exc:  # noqa: BLE001 - this page keeps the other engines' text
            self.why_not = f"pdfminer failed: {type(exc).__name__}: {str(exc)[:200]}"
        finally:
            self.pages_read += 1
            self.spent_s += time.perf_counter() - t0
        self.not_read.append(index + 1)
        return None

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def layout_text(layout) -> str:
    """Text of a pdfminer page layout: one block per text box (figures' loose
    characters one block per figure), blocks separated by blank lines."""
    from pdfminer.layout import LTChar, LTContainer, LTTextBox

    blocks: list[str] = []

    def walk(item) -> None:
        if isinstance(item, LTTextBox):
            blocks.append(item.get_text())
            return
        if isinstance(item, LTContainer):
            loose = "".join(c.get_text() for c in item if isinstance(c, LTChar))
            if loose:
                blocks.append(loose)
            for child in item:
                if not isinstance(child, LTChar):
                    walk(child)

    walk(layout)
    out: list[str] = []
    for block in blocks:
        lines = (_SPACES.sub(" ", line).strip() for line in _CID.sub(" ", block).splitlines())
        text = "\n".join(line for line in lines if line)
        if text:
            out.append(text)
    return "\n\n".join(out)
