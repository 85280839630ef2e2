"""PDF text extraction with pypdf, and OCR of scanned pages with Tesseract.

One ``Element(kind="paragraph", page=N)`` per block of a page's text, blocks being
separated by blank lines (pypdf's layout of the text layer; a page without blank
lines is one block). Pages are 1-based.

Each page is read by pypdf and pypdfium2, and PDFium's text replaces pypdf's where
pypdf's is clearly worse (``extractors._pdftext``; such elements carry
``meta={"engine": "pdfium"}``). Where the text so chosen still looks garbled or
incomplete and the page uses a composite font without a Unicode map that pdfminer.six
can map (``extractors._pdfminer``: Adobe-Japan1/GB1/CNS1/Korea1 CID fonts, embedded
TrueType CID fonts), pdfminer.six reads the page too (at most 50 pages / 10 s per
document; pages past that are named in a warning), and its text is taken where it
is clearly better (``meta={"engine": "pdfminer"}``, ``+pdfminer-V`` in the version).

Scanned pages: a page whose text layer has fewer than ``OCR_MIN_CHARS`` visible
(non-space) characters and whose images cover at least ``OCR_MIN_IMAGE_AREA`` of the
page is rendered with pypdfium2 at ``OCR_DPI`` (scaled down so the bitmap stays under
``OCR_MAX_PIXELS``) and OCR'd with Tesseract (``extractors.ocr``) when ``ctx.ocr`` is
true, for at most ``ctx.limits.ocr_pages`` pages. OCR'd paragraphs replace that
page's (near-empty) text layer and carry ``meta={"ocr": True, "confidence": c}``;
``Extraction.ocr_pages`` maps page -> mean word confidence (0-100) for every OCR'd
page on which Tesseract recognised words (a page where it found none, e.g. a photo,
gets the warning "page N: OCR found no text" instead of a meaningless 0). When OCR
ran, the extractor is ``pdf/pypdf+tesseract`` with version
``pypdf-X+pypdfium2-Y+tesseract-Z+N``.
Pages that needed OCR but did not get it (OCR off, page limit, Tesseract missing,
oversized image, timeout) are named in ``warnings``. A document with no text at all
that needed OCR and cannot get it because Tesseract is missing is ``missing-tool``.

Passwords:

* Encrypted with an empty user password (common: "no copying" PDFs): opened.
* Otherwise the passwords configured for the path (``ctx.passwords_for``) are tried
  in order; none configured -> ``ExtractionError(ErrorCode.ENCRYPTED, "password required")``;
  configured but none opens it -> ``ExtractionError(ErrorCode.ENCRYPTED, "configured password
  did not open it")``.
* Microsoft IRM-protected PDFs (an unencrypted wrapper around an encrypted payload,
  PDF 2.0 "unencrypted wrapper document") -> ``irm-protected``.

Other failures:

* No text on any page and nothing to OCR: an ``Extraction`` with no elements and the
  warning "no text layer"; quarantine is the pipeline's decision.
* A page whose text cannot be extracted is recorded in ``warnings`` (with the page
  number and the error) and the others are kept; if every page fails, the document
  is ``corrupt``.
* Decompression bombs: streams that declare more decoded output than
  ``Limits.max_stream_bytes`` / ``max_decoded_bytes`` (JBIG2 page bitmaps, read from
  the stream header before anything is decoded: ``extractors._pdfbudget``), or that
  pass pypdf's own decoding caps, -> ``decompression-bomb`` with the page and size.
"""
from __future__ import annotations

import re
from pathlib import Path

from . import _pdfbudget, _pdfminer, _pdftext, ocr
from .base import ExtractContext, Element, Extraction, ExtractionError
from .sandbox import stage
from .errors import ErrorCode

EXTRACTOR = "pdf/pypdf"
EXTRACTOR_OCR = "pdf/pypdf+tesseract"
OUR_VERSION = 3
MIME = "application/pdf"

OCR_MIN_CHARS = 20  # a page with fewer visible characters in its text layer is "empty"
OCR_MIN_IMAGE_AREA = 0.02  # ... and is OCR'd if its images cover >= 2% of the page
OCR_DPI = 300
OCR_MAX_PIXELS = 40_000_000  # rendered bitmap bound (A4 at 300 dpi is 8.7 M)

_BLANK_LINES = re.compile(r"\n[ \t\r\f\v]*\n")


def split_blocks(text: str) -> list[str]:
    """Split page text on blank lines; strip blocks, drop empty ones."""
    return [b.strip() for b in _BLANK_LINES.split(text) if b.strip()]


def _visible_chars(text: str) -> int:
    return sum(1 for ch in text if not ch.isspace())


def extract_pdf(path: Path, ctx: ExtractContext | None = None) -> Extraction:
    import pypdf
    from pypdf.errors import FileNotDecryptedError, PdfReadError

    ctx = ctx or ExtractContext()
    warnings: list[str] = []

    try:
        reader = pypdf.PdfReader(path, strict=False)
    except PdfReadError as exc:
        raise ExtractionError(ErrorCode.CORRUPT, f"pdf: cannot parse file structure: {exc}") from exc

    password = _open(reader, path, ctx, warnings)
    _refuse_irm(reader)

    try:
        pages = reader.pages
        page_count = len(pages)
    except (FileNotDecryptedError, PdfReadError) as exc:
        raise ExtractionError(ErrorCode.CORRUPT, f"pdf: cannot read page tree: {exc}") from exc

    _pdfbudget.check(pages, ctx.limits)  # before any engine decodes a stream
    stage("pdf/text")
    document = _open_pdfium(path, password, warnings)

    third = _pdfminer.Reader(path, password)
    by_page: dict[int, list[Element]] = {}
    sparse: list[int] = []  # pages whose text layer is (near) empty
    failed: list[int] = []
    engines: set[str] = set()
    try:
        for index in range(page_count):
            number = index + 1
            text, engine = _page_text(pages, document, index, warnings, third)
            if text is None:
                failed.append(number)
                sparse.append(number)
                continue
            engines.add(engine)
            meta = {"engine": engine} if engine != "pypdf" else {}
            blocks = split_blocks(text)
            by_page[number] = [Element(kind="paragraph", text=b, page=number, meta=dict(meta))
                               for b in blocks]
            fields = _form_values(pages[index], text)
            by_page[number] += [Element(kind="paragraph", text=v, page=number,
                                        meta={"form_field": True}) for v in fields]
            if _visible_chars(text) < OCR_MIN_CHARS and not fields:
                sparse.append(number)

        ocr_pages: dict[int, float] = {}
        ocr_version = None
        if sparse and document is not None:
            stage("pdf/ocr")
            has_text = any(by_page.values())
            ocr_version = _ocr_sparse_pages(document, sparse, by_page, ocr_pages, ctx,
                                            warnings, has_text)
    finally:
        third.close()
        if document is not None:
            document.close()

    elements = [e for number in sorted(by_page) for e in by_page[number]]
    if page_count and len(failed) == page_count and not elements:
        raise ExtractionError(
            ErrorCode.CORRUPT, f"pdf: text extraction failed on all {page_count} pages ({warnings[-1]})"
        )
    if page_count == 0:
        warnings.append("no pages")
    if not elements:
        warnings.append("no text layer")
    if third.not_read:
        warnings.append(f"page(s) {_ranges(third.not_read)} may be garbled and were not "
                        f"re-read with pdfminer: {third.why_not}")
    if sparse and document is None:
        warnings.append(f"page(s) {_ranges(sparse)} not checked for scanned images: "
                        "pypdfium2 could not open the file")
    extractor = EXTRACTOR
    engines_part = f"pypdf-{pypdf.__version__}+pypdfium2-{_pdfium_version()}"
    if "pdfminer" in engines:
        engines_part += f"+pdfminer-{_pdfminer.version()}"
    version = f"{engines_part}+{OUR_VERSION}"
    if ocr_version:  # OCR ran on at least one page
        extractor = EXTRACTOR_OCR
        version = f"{engines_part}+{ocr_version}+{OUR_VERSION}"
    return Extraction(
        elements=elements,
        extractor=extractor,
        extractor_version=version,
        mime=MIME,
        pages=page_count,
        warnings=warnings,
        ocr_pages=ocr_pages,
    )


# --------------------------------------------------------------------------- page text


def _pdfium_version() -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version("pypdfium2")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _open_pdfium(path: Path, password: str | None, warnings: list[str]):
    """The file opened with pypdfium2 (second text engine, renderer for OCR), or None
    with a warning: pypdf's text then stands alone."""
    import pypdfium2 as pdfium

    try:
        return pdfium.PdfDocument(str(path), password=password or None)
    except Exception as exc:  # noqa: BLE001 - the second engine is an extra
        warnings.append(f"pypdfium2 cannot open the file ({type(exc).__name__}: {exc}); "
                        "pypdf's text only, no OCR")
        return None


# LimitReachedError messages that mean "decoded output past a cap" (not loops or counts)
_OUTPUT_CAP = re.compile(r"^(Limit reached while decompressing|Declared size .* exceeds allowed limit|"
                         r"Stream decoding exceeded|.*maximum output length)", re.I)


def _page_text(pages, document, index: int, warnings: list[str],
               third=None) -> tuple[str | None, str]:
    """(text, engine) of one page: pypdf's text layer unless PDFium's is clearly better
    (``extractors._pdftext.choose``); (None, "") if neither engine can read the page.
    Where that text looks garbled or incomplete and the page has a font pdfminer can
    map (``extractors._pdfminer``), ``third`` (a ``_pdfminer.Reader``) reads it too,
    and its text is taken if clearly better, by the same rules."""
    number = index + 1
    errors: list[str] = []
    from pypdf.errors import LimitReachedError

    capped = None  # pypdf stopped at one of its output caps (a possible bomb; PDFium decides)
    try:
        ours = _pdftext.clean(pages[index].extract_text() or "")
    except LimitReachedError as exc:  # one of pypdf's limits: output caps, but also loops, counts
        ours = None
        errors.append(f"pypdf: {type(exc).__name__}: {exc}")
        if _OUTPUT_CAP.search(str(exc)):
            capped = exc
    except Exception as exc:  # noqa: BLE001 - recorded per page, see module docstring
        ours = None
        errors.append(f"pypdf: {type(exc).__name__}: {exc}")
    theirs = None
    if document is not None:
        try:
            theirs = _pdftext.clean(_pdfium_page_text(document, index))
        except Exception as exc:  # noqa: BLE001
            errors.append(f"pypdfium2: {type(exc).__name__}: {exc}")
    if capped is not None and not (theirs or "").strip():
        # past pypdf's output cap and nothing PDFium (under the sandbox's memory limit) can
        # read either: the stream is all output and no text, a decompression bomb
        raise ExtractionError(ErrorCode.DECOMPRESSION_BOMB,
                              f"pdf page {number}: {capped} (pypdf decoding limit)") from capped
    if ours is None and theirs is None:
        warnings.append(f"page {number}: text extraction failed: {'; '.join(errors)}")
        return None, ""
    if ours is None:
        warnings.append(f"page {number}: pypdf failed ({errors[0]}); text read with pypdfium2")
    engine, text = _pdftext.choose(ours, theirs)
    if engine == "pdfium":  # re-read with the spaces PDFium leaves out
        try:
            text = _pdftext.clean(_pdfium_page_text(document, index, respace=True))
        except Exception:  # noqa: BLE001 - the plain PDFium text stands
            pass
    if third is not None and _pdftext.doubtful(ours, theirs, text):
        if _pdfminer.can_map(pages[index]):
            stage("pdf/text/pdfminer")
            candidate = third.page_text(index)
            stage("pdf/text")
            if candidate is not None and _pdftext.choose(text, candidate)[0] == "pdfium":
                return candidate, "pdfminer"  # choose's second candidate won
    return text, engine


def _pdfium_page_text(document, index: int, respace: bool = False) -> str:
    page = document[index]
    try:
        textpage = page.get_textpage()
        try:
            return _pdftext.pdfium_text(textpage, respace)
        finally:
            textpage.close()
    finally:
        page.close()


def _form_values(page, text: str) -> list[str]:
    """AcroForm values of the page's text/choice fields not already in its text."""
    flat = " ".join(text.split())
    return [v for v in _pdftext.form_values(page) if " ".join(v.split()) not in flat]


# --------------------------------------------------------------------------- passwords


def _open(reader, path: Path, ctx: ExtractContext, warnings: list[str]) -> str | None:
    """Decrypt ``reader`` if needed; return the password that opened it ("" or None)."""
    from pypdf.errors import DependencyError, PdfReadError

    if not reader.is_encrypted:
        return None

    def attempt(password: str) -> bool:
        try:
            return bool(reader.decrypt(password))  # PasswordType.NOT_DECRYPTED == 0
        except DependencyError as exc:
            raise ExtractionError(
                ErrorCode.EXTRACTOR_CRASH, f"pdf: decryption needs a missing library: {exc}"
            ) from exc
        except (NotImplementedError, PdfReadError) as exc:
            raise ExtractionError(
                ErrorCode.ENCRYPTED, f"unsupported encryption, cannot open: {exc}"
            ) from exc

    if attempt(""):
        warnings.append("encrypted with an empty user password; opened without one")
        return ""
    configured = ctx.passwords_for(path)
    for password in configured:
        if attempt(password):
            warnings.append("encrypted; opened with a configured password")
            return password
    if configured:
        tried = f" (tried {len(configured)})" if len(configured) > 1 else ""
        raise ExtractionError(ErrorCode.ENCRYPTED, f"configured password did not open it{tried}")
    raise ExtractionError(ErrorCode.ENCRYPTED, "password required")


def _refuse_irm(reader) -> None:
    """PDF 2.0 unencrypted wrapper (e.g. Microsoft IRM): the visible page only says the
    content is protected; the real document is an encrypted embedded payload."""
    try:
        root = reader.trailer["/Root"].get_object()
        if "/Collection" not in root:
            return
        specs = list(root.get("/AF") or [])
        names = root.get("/Names")
        if names is not None:
            embedded = names.get_object().get("/EmbeddedFiles")
            if embedded is not None:
                specs.extend((embedded.get_object().get("/Names") or [])[1::2])
        for spec in specs:
            spec = spec.get_object()
            if not hasattr(spec, "get"):
                continue
            ep = spec.get("/EP")
            if spec.get("/AFRelationship") == "/EncryptedPayload" or ep is not None:
                subtype = ""
                if ep is not None:
                    subtype = str(ep.get_object().get("/Subtype", "")).lstrip("/")
                raise ExtractionError(
                    ErrorCode.IRM_PROTECTED,
                    f"rights-management protected PDF ({subtype or 'encrypted payload'}); "
                    "the content is an encrypted payload only its DRM client can open",
                )
    except ExtractionError:
        raise
    except Exception:  # noqa: BLE001 - a damaged catalog is not an IRM verdict
        return


# --------------------------------------------------------------------------- OCR


def _ocr_sparse_pages(document, sparse: list[int],
                      by_page: dict[int, list[Element]], ocr_pages: dict[int, float],
                      ctx: ExtractContext, warnings: list[str], has_text: bool) -> str | None:
    """OCR the (near) text-less pages that hold images; returns the OCR part of the
    version string when any page was OCR'd. ``document`` is the open pypdfium2
    document (closed by the caller)."""
    opened: list = []
    try:
        candidates: list[tuple[int, object]] = []
        for number in sparse:
            try:
                page = document[number - 1]
                opened.append(page)
                reason = _image_page(page)
            except Exception as exc:  # noqa: BLE001
                warnings.append(f"page {number}: cannot load for OCR: {exc}")
                continue
            if reason is None:
                continue
            if reason != "ok":
                warnings.append(f"page {number}: not OCR'd: {reason}")
                continue
            candidates.append((number, page))
        if not candidates:
            return None
        numbers = [n for n, _ in candidates]
        if not ctx.ocr:
            warnings.append(f"OCR disabled: scanned page(s) {_ranges(numbers)} not read")
            return None
        if not ocr.available():
            if not has_text:
                raise ExtractionError(ErrorCode.MISSING_TOOL, ocr.MISSING_HINT)
            warnings.append(f"scanned page(s) {_ranges(numbers)} not read: {ocr.MISSING_HINT}")
            return None
        limit = max(0, ctx.limits.ocr_pages)
        if len(candidates) > limit:
            skipped = numbers[limit:]
            warnings.append(f"OCR limited to {limit} pages; scanned page(s) "
                            f"{_ranges(skipped)} not read")
            candidates = candidates[:limit]
        ran = False
        for number, page in candidates:
            try:
                image = _render(page)
                result = ocr.ocr_image(image, workdir=ctx.workdir)
            except ExtractionError as exc:
                if exc.code == ErrorCode.MISSING_TOOL:
                    raise
                warnings.append(f"page {number}: OCR failed: {exc}")
                continue
            except Exception as exc:  # noqa: BLE001 - one bad page does not sink the rest
                warnings.append(f"page {number}: rendering for OCR failed: "
                                f"{type(exc).__name__}: {exc}")
                continue
            ran = True
            if not result.words:  # a photo, a blank scan: no confidence to speak of
                warnings.append(f"page {number}: OCR found no text")
                continue
            ocr_pages[number] = result.confidence
            # replace the near-empty text layer of this page
            by_page[number] = ocr.elements_from(result, number)
        if not ran:
            return None
        return f"tesseract-{ocr.tesseract_version()}"
    finally:
        for page in opened:
            try:
                page.close()
            except Exception:  # noqa: BLE001
                pass


def _image_page(page) -> str | None:
    """"ok" if the page's images cover enough of it to be worth OCR; None if it has
    no (significant) images; otherwise why it is refused."""
    import pypdfium2.raw as pdfium_c

    width, height = page.get_size()
    area = max(width * height, 1.0)
    covered = 0.0
    for obj in page.get_objects(filter=[pdfium_c.FPDF_PAGEOBJ_IMAGE], max_depth=4):
        try:
            px_w, px_h = obj.get_px_size()
        except Exception:  # noqa: BLE001
            px_w = px_h = 0
        if px_w * px_h > ocr.MAX_IMAGE_PIXELS:
            return f"embedded image of {px_w}x{px_h} pixels is over the limit"
        try:
            left, bottom, right, top = obj.get_bounds()
        except Exception:  # noqa: BLE001
            continue
        w = max(0.0, min(right, width) - max(left, 0.0))
        h = max(0.0, min(top, height) - max(bottom, 0.0))
        covered += w * h
    if covered / area < OCR_MIN_IMAGE_AREA:
        return None
    return "ok"


def _render(page):
    width, height = page.get_size()  # points
    scale = OCR_DPI / 72
    pixels = width * scale * height * scale
    if pixels > OCR_MAX_PIXELS:
        scale *= (OCR_MAX_PIXELS / pixels) ** 0.5
    return page.render(scale=scale, grayscale=True).to_pil()


def _ranges(numbers: list[int]) -> str:
    parts: list[str] = []
    start = prev = None
    for n in numbers:
        if start is None:
            start = prev = n
        elif n == prev + 1:
            prev = n
        else:
            parts.append(f"{start}" if start == prev else f"{start}-{prev}")
            start = prev = n
    if start is not None:
        parts.append(f"{start}" if start == prev else f"{start}-{prev}")
    return ", ".join(parts)


def extract(path: Path, mime: str, ctx: ExtractContext) -> Extraction:
    """Router entry point (see ``extractors.registry.EXTRACTORS``)."""
    # The one-argument form for the default context keeps ``extract_pdf(path)`` the
    # call that callers (and tests) patch or wrap.
    if ctx is None or ctx == ExtractContext():
        return extract_pdf(path)
    return extract_pdf(path, ctx)
