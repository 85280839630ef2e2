"""OCR with the Tesseract command-line tool (Debian ``tesseract-ocr`` + ``tesseract-ocr-eng``;
``tesseract-ocr-osd`` for orientation detection).

Two entry points:

* ``ocr_image(image_or_path) -> OcrResult(text, confidence, words)``: one image, used
  by this module for image files and by ``extractors.pdf`` for scanned pages.
* ``extract(path, mime, ctx)``: the router entry for image files (PNG, JPEG, TIFF,
  BMP, GIF, WebP). A multi-page TIFF gives one page per frame (at most
  ``ctx.limits.ocr_pages``); other formats give page 1 (an animated GIF: its first
  frame). Elements are ``kind="paragraph"`` with ``meta={"ocr": True, "confidence":
  c}`` (mean confidence of that paragraph's words); ``Extraction.ocr_pages`` holds
  the mean word confidence (0-100) per page with recognised words.

How: the image is decoded with Pillow (so every format Pillow reads works, whatever
Leptonica was built with), checked against ``MAX_IMAGE_PIXELS`` *before* decoding
(decompression bombs -> ``too-large``), converted to 8-bit greyscale, written to a
private temporary PNG and handed to ``tesseract ... tsv``. The TSV gives every word
with its confidence and its block/paragraph/line, from which paragraphs are rebuilt
(lines joined with newlines; a word hyphenated across a line end is rejoined).
A page read with low confidence (under ``REORIENT_BELOW``) is read again with Tesseract's
orientation and script detection (``--psm 1``), which turns an upside-down or sideways
scan upright; the better of the two readings is kept (a normal page costs one run).

* Tesseract runs with a wall-clock limit per image (``TIMEOUT_S``); on expiry it is
  killed -> ``ExtractionError(ErrorCode.TIMEOUT)``. It stays in the caller's process group,
  so the parse sandbox's group kill reaches it as well.
* ``OMP_THREAD_LIMIT=1`` unless the environment sets it: OpenMP threads make one page
  several times *slower* on a busy machine, and workers already run in parallel.
* No ``tesseract`` binary (``INGEST_TESSERACT`` may name another) ->
  ``ExtractionError(ErrorCode.MISSING_TOOL, "tesseract not installed: apt-get install
  tesseract-ocr ...")``; missing language data -> ``missing-tool`` naming the package.
* Languages: ``INGEST_OCR_LANG`` (Tesseract syntax, e.g. ``eng+deu``), default ``eng``.
* ``ocr_image`` on an image without recognisable words: text "", confidence 0.0, no
  words. ``extract`` leaves such a page out of ``ocr_pages`` (a confidence of
  nothing would only mislead the quality report) and says so in ``warnings``
  ("no text recognised"; "page N: OCR found no text" for multi-page TIFFs).
"""
from __future__ import annotations

import functools
import logging
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import NamedTuple

from ._tools import run_tool
from .base import Element, ExtractContext, Extraction, ExtractionError
from .errors import ErrorCode

log = logging.getLogger(__name__)

EXTRACTOR = "image/tesseract"
OUR_VERSION = 2  # 2: upside-down and sideways pages read upright (OSD)

TIMEOUT_S = 60  # one image / one page
MAX_IMAGE_PIXELS = 60_000_000  # ~ A3 at 600 dpi; 180 MB as RGB
# Images smaller than this (short side, pixels) are enlarged before OCR: Tesseract
# reads text best at a capital height of ~20-40 px, and tiny labels and screenshots
# (e.g. a 66 px high banner) are below that.
_UPSCALE_BELOW = 300
# A page read with a mean word confidence below this (the quality report's default
# "low-ocr-confidence" flag) is read again with orientation detection (Tesseract OSD,
# ``osd.traineddata`` from Debian's ``tesseract-ocr-osd``): an upside-down or sideways scan.
REORIENT_BELOW = 70.0
MISSING_HINT = ("tesseract not installed: apt-get install tesseract-ocr tesseract-ocr-eng "
                "tesseract-ocr-osd")

IMAGE_MIMES = frozenset({
    "image/png", "image/jpeg", "image/tiff", "image/bmp", "image/x-ms-bmp", "image/gif",
    "image/webp",
})


class OcrWord(NamedTuple):
    text: str
    confidence: float  # 0-100
    block: int
    par: int
    line: int
    left: int
    top: int
    width: int
    height: int


class OcrResult(NamedTuple):
    """``text``: paragraphs separated by blank lines, lines by newlines;
    ``confidence``: mean word confidence 0-100 (0.0 when no words); ``words``."""

    text: str
    confidence: float
    words: list[OcrWord]

    def paragraphs(self) -> list[tuple[str, float]]:
        """(text, mean word confidence) per paragraph, in reading order."""
        return _paragraphs(self.words)


# --------------------------------------------------------------------------- tool


def tesseract_path() -> str:
    path = shutil.which(os.environ.get("INGEST_TESSERACT", "tesseract"))
    if not path:
        raise ExtractionError(ErrorCode.MISSING_TOOL, MISSING_HINT)
    return path


@functools.lru_cache(maxsize=1)
def _version_of(binary: str) -> str:
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    match = re.search(r"tesseract\s+v?([\w.\-]+)", out.stdout + out.stderr, re.IGNORECASE)
    return match.group(1) if match else "unknown"


def tesseract_version() -> str:
    """e.g. "5.3.0"; raises ``missing-tool`` when Tesseract is not installed."""
    return _version_of(tesseract_path())


def available() -> bool:
    try:
        tesseract_path()
    except ExtractionError:
        return False
    return True


def languages() -> str:
    return os.environ.get("INGEST_OCR_LANG", "eng")


# --------------------------------------------------------------------------- images


def check_pixels(width: int, height: int, what: str = "image") -> None:
    if width * height > MAX_IMAGE_PIXELS:
        raise ExtractionError(
            ErrorCode.TOO_LARGE,
            f"{what}: {width}x{height} = {width * height} pixels is over the limit of "
            f"{MAX_IMAGE_PIXELS} pixels (possible decompression bomb)",
        )


def _open_image(path: Path, mime: str | None = None):
    """Open lazily (header only) and check the size before anything is decoded."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ExtractionError(ErrorCode.TOO_LARGE, f"image: {exc}") from exc
    except UnidentifiedImageError as exc:
        if mime and mime not in IMAGE_MIMES:  # e.g. HEIC, JPEG 2000 without a decoder
            raise ExtractionError(
                ErrorCode.UNSUPPORTED_TYPE, f"image: no decoder for {mime} (supported: PNG, JPEG, "
                "TIFF, BMP, GIF, WebP)") from exc
        raise ExtractionError(ErrorCode.CORRUPT, f"image: format not recognised: {exc}") from exc
    except OSError as exc:
        raise ExtractionError(ErrorCode.CORRUPT, f"image: cannot read: {exc}") from exc
    check_pixels(*image.size)
    return image


def _to_8bit(image):
    """A 16-bit (or 32-bit integer, or float) greyscale image scaled to 8 bits."""
    import numpy as np
    from PIL import Image

    arr = np.asarray(image)
    if arr.dtype.kind == "f":
        top = float(arr.max()) if arr.size else 1.0
        scale = 255.0 / top if top > 1.0 else 255.0
    else:
        top = int(arr.max()) if arr.size else 0
        scale = 1.0 if top <= 255 else 255.0 / (65535 if top <= 65535 else top)
    return Image.fromarray(np.clip(arr.astype(np.float64) * scale, 0, 255).astype(np.uint8), "L")


def prepare_image(image):
    """8-bit greyscale (transparency flattened onto white), small images enlarged."""
    from PIL import Image

    check_pixels(*image.size)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        image = _to_8bit(image)  # convert("L") would clip 16-bit values at 255: all white
    if image.mode != "L":
        image = image.convert("L")
    short = min(image.size)
    if 0 < short < _UPSCALE_BELOW:
        factor = min(4, -(-_UPSCALE_BELOW // short))
        image = image.resize((image.width * factor, image.height * factor), Image.LANCZOS)
    return image


# --------------------------------------------------------------------------- OCR


def ocr_image(image, *, lang: str | None = None, timeout: float = TIMEOUT_S,
              workdir: Path | None = None, psm: int = 3) -> OcrResult:
    """OCR one image: a PIL image, or a path to an image file (first frame).

    Raises ``ExtractionError``: ``missing-tool``, ``timeout``, ``too-large``,
    ``corrupt`` (unreadable image or Tesseract failure).
    """
    binary = tesseract_path()
    opened = _open_image(Path(image)) if not hasattr(image, "size") else None
    try:
        if opened is not None:
            try:
                opened.load()
            except OSError as exc:
                raise ExtractionError(ErrorCode.CORRUPT, f"image: cannot decode: {exc}") from exc
        prepared = prepare_image(opened if opened is not None else image)
        with tempfile.TemporaryDirectory(prefix="ocr-", dir=workdir) as tmp:
            png = Path(tmp) / "page.png"
            prepared.save(png, format="PNG", compress_level=1)
            words = _parse_tsv(_run_tesseract(binary, png, lang or languages(), timeout, psm))
            confidence = _mean([w.confidence for w in words])
            if psm == 3 and words and confidence < REORIENT_BELOW:
                # Upside-down or sideways scans read as gibberish: read again with
                # orientation detection (--psm 1: OSD, then the same segmentation on the
                # page turned upright) and keep the better reading.
                turned = _parse_tsv(_run_tesseract(binary, png, lang or languages(), timeout, 1))
                turned_confidence = _mean([w.confidence for w in turned])
                if turned_confidence > confidence:
                    log.debug("OCR: page read upright by orientation detection (mean "
                              "confidence %.0f -> %.0f)", confidence, turned_confidence)
                    words, confidence = turned, turned_confidence
    finally:
        if opened is not None:
            opened.close()
    text = "\n\n".join(t for t, _ in _paragraphs(words))
    return OcrResult(text, confidence, words)


def _run_tesseract(binary: str, png: Path, lang: str, timeout: float, psm: int) -> str:
    env = dict(os.environ)
    env.setdefault("OMP_THREAD_LIMIT", "1")
    cmd = [binary, str(png), "stdout", "-l", lang, "--psm", str(psm), "tsv"]
    # In the caller's process group: the parse sandbox's group kill reaches it.
    out, err, returncode = run_tool(cmd, env=env, timeout=timeout, missing_hint=MISSING_HINT, label="tesseract",
                                    kill=_kill)
    if returncode != 0:
        message = err.decode("utf-8", "replace").strip().splitlines()
        tail = " / ".join(message[-3:]) or f"exit status {returncode}"
        if "Failed loading language" in tail or "Could not initialize tesseract" in tail:
            raise ExtractionError(
                ErrorCode.MISSING_TOOL,
                f"tesseract language data {lang!r} missing: apt-get install "
                f"tesseract-ocr-{lang.split('+')[0]} ({tail})",
            )
        raise ExtractionError(ErrorCode.CORRUPT, f"tesseract failed: {tail}")
    return out.decode("utf-8", "replace")


def _kill(proc: subprocess.Popen) -> None:
    proc.kill()  # tesseract starts no processes of its own (OpenMP uses threads)
    proc.wait()


def _parse_tsv(tsv: str) -> list[OcrWord]:
    words: list[OcrWord] = []
    lines = tsv.splitlines()
    for line in lines[1:]:  # header first
        cols = line.split("\t")
        if len(cols) < 12 or cols[0] != "5":
            continue
        text = "\t".join(cols[11:]).strip()
        if not text:
            continue
        try:
            conf = float(cols[10])
            block, par, ln = int(cols[2]), int(cols[3]), int(cols[4])
            left, top, width, height = (int(c) for c in cols[6:10])
        except ValueError:
            continue
        if conf < 0:
            continue
        words.append(OcrWord(text, max(0.0, min(100.0, conf)), block, par, ln,
                             left, top, width, height))
    return words


def _mean(values: list[float]) -> float:
    return round(sum(values) / len(values), 2) if values else 0.0


_HYPHENATED = re.compile(r"[^\W\d_]-$")


def _paragraphs(words: list[OcrWord]) -> list[tuple[str, float]]:
    paragraphs: list[tuple[str, float]] = []
    current_key = None
    lines: list[list[str]] = []
    confs: list[float] = []
    last_line = None

    def flush():
        if lines:
            paragraphs.append((_join_lines([" ".join(ws) for ws in lines]), _mean(confs)))

    for w in words:
        key = (w.block, w.par)
        if key != current_key:
            flush()
            current_key, lines, confs, last_line = key, [], [], None
        if w.line != last_line:
            lines.append([])
            last_line = w.line
        lines[-1].append(w.text)
        confs.append(w.confidence)
    flush()
    return paragraphs


def _join_lines(lines: list[str]) -> str:
    out: list[str] = []
    for line in lines:
        if out and _HYPHENATED.search(out[-1]) and line[:1].islower():
            out[-1] = out[-1][:-1] + line  # "consec-" + "tetur adipiscing" -> one word
        else:
            out.append(line)
    return "\n".join(out)


def elements_from(result: OcrResult, page: int | None) -> list[Element]:
    return [
        Element(kind="paragraph", text=text, page=page, meta={"ocr": True, "confidence": conf})
        for text, conf in result.paragraphs()
    ]


# --------------------------------------------------------------------------- router


def extract(path: Path, mime: str, ctx: ExtractContext) -> Extraction:
    """Router entry point for image files (see ``extractors.registry.EXTRACTORS``)."""
    from PIL import ImageSequence

    image = _open_image(path, mime)
    try:
        multi_page = (image.format or "").upper() == "TIFF"
        frames = getattr(image, "n_frames", 1) if multi_page else 1
        warnings: list[str] = []
        if not ctx.ocr:
            return Extraction(elements=[], extractor=EXTRACTOR,
                              extractor_version=f"tesseract-none+{OUR_VERSION}", mime=mime,
                              pages=frames, warnings=["OCR disabled: image text not read"])
        version = f"tesseract-{tesseract_version()}+{OUR_VERSION}"
        limit = max(0, ctx.limits.ocr_pages)
        if frames > limit:
            warnings.append(f"OCR limited to {limit} of {frames} pages")
        elements: list[Element] = []
        ocr_pages: dict[int, float] = {}
        for index, frame in enumerate(ImageSequence.Iterator(image)):
            if index >= min(frames, limit):
                break
            number = index + 1
            check_pixels(*frame.size, what=f"page {number}")
            try:
                frame.load()
            except OSError as exc:
                if index == 0:
                    raise ExtractionError(ErrorCode.CORRUPT, f"image: cannot decode: {exc}") from exc
                warnings.append(f"page {number}: cannot decode: {exc}")
                continue
            result = ocr_image(frame.copy(), workdir=ctx.workdir)
            if not result.words:
                if frames > 1:
                    warnings.append(f"page {number}: OCR found no text")
                continue
            ocr_pages[number] = result.confidence
            elements.extend(elements_from(result, number))
        if not elements:
            warnings.append("no text recognised")
        return Extraction(elements=elements, extractor=EXTRACTOR, extractor_version=version,
                          mime=mime, pages=frames, warnings=warnings, ocr_pages=ocr_pages)
    finally:
        image.close()
