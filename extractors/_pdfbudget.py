"""Decompression budget for a PDF, checked before any stream is decoded.

Text extraction decodes every page's content streams and the form XObjects they
draw. A stream's filter can promise far more output than its input: JBIG2 declares
its page bitmap (width x height, 1 bit per pixel) in a page-information segment at
the start of the data, so a 40 kB stream can announce 100000 x 100000 pixels
(1.16 GiB); pdf.js's ``bomb_giant.pdf`` has three of them as content streams.
:func:`check` reads those declarations (no decoding) and raises
``ExtractionError(ErrorCode.DECOMPRESSION_BOMB, ...)`` when one stream declares more than
``Limits.max_stream_bytes`` or all of them together more than
``Limits.max_decoded_bytes``. Flate/LZW/RunLength output is capped while decoding by
pypdf itself (``pypdf.filters`` limits, ``LimitReachedError``), which the extractor
reports with the same code. Images are not decoded for text; OCR refuses oversized
ones page by page (``extractors.pdf._image_page``).
"""
from __future__ import annotations

import struct

from .base import ExtractionError, Limits
from .errors import ErrorCode

MAX_XOBJECT_DEPTH = 8  # forms within forms followed this deep
_JBIG2_PAGE_INFO = 48
_UNKNOWN_HEIGHT = 0xFFFFFFFF  # striped page: height given by end-of-stripe segments


def jbig2_declared_bytes(data: bytes) -> int | None:
    """Bytes of the largest page bitmap that the page-information segments of an
    embedded JBIG2 stream (PDF's form: no file header) declare, or None when the data
    holds none that can be read. Segment header layout: ITU T.88 section 7.2."""
    pos, largest = 0, None
    for _ in range(64):  # page info comes first; a few segments are enough
        if pos + 6 > len(data):
            break
        number = struct.unpack(">I", data[pos:pos + 4])[0]
        flags = data[pos + 4]
        seg_type = flags & 0x3F
        pos += 5
        count = data[pos] >> 5
        if count == 7:  # long form: 4-byte count, then a retain bit field
            if pos + 4 > len(data):
                break
            count = struct.unpack(">I", data[pos:pos + 4])[0] & 0x1FFFFFFF
            pos += 4 + (count + 8) // 8
        else:
            pos += 1
        ref_size = 1 if number <= 256 else 2 if number <= 65536 else 4
        pos += count * ref_size
        pos += 4 if flags & 0x40 else 1  # page association
        if pos + 4 > len(data):
            break
        length = struct.unpack(">I", data[pos:pos + 4])[0]
        pos += 4
        if seg_type == _JBIG2_PAGE_INFO and pos + 8 <= len(data):
            width, height = struct.unpack(">II", data[pos:pos + 8])
            if height != _UNKNOWN_HEIGHT:
                size = ((width + 7) // 8) * height
                largest = size if largest is None else max(largest, size)
        if length == 0xFFFFFFFF or pos + length > len(data):
            break
        pos += length
    return largest


def _filters(stream) -> list[str]:
    f = stream.get("/Filter")
    if f is None:
        return []
    f = f.get_object()
    return [str(x) for x in f] if isinstance(f, list) else [str(f)]


def _declared(stream) -> int | None:
    filters = _filters(stream)
    if filters and filters[0] == "/JBIG2Decode":
        return jbig2_declared_bytes(bytes(stream._data[:4096]))
    return None


def _streams(page):
    """The page's content streams and the form XObjects reachable from its resources."""
    seen: set[int] = set()

    def contents(obj):
        obj = obj.get_object() if obj is not None else None
        if obj is None:
            return
        if isinstance(obj, list):
            for part in obj:
                yield from contents(part)
        else:
            yield obj

    def forms(resources, depth):
        if resources is None or depth > MAX_XOBJECT_DEPTH:
            return
        xobjects = resources.get_object().get("/XObject")
        if xobjects is None:
            return
        for ref in xobjects.get_object().values():
            key = getattr(ref, "idnum", None)
            if key is not None:
                if key in seen:
                    continue
                seen.add(key)
            xobj = ref.get_object()
            if xobj.get("/Subtype") == "/Form":
                yield xobj
                yield from forms(xobj.get("/Resources"), depth + 1)

    yield from contents(page.get("/Contents"))
    yield from forms(page.get("/Resources"), 0)


def check(pages, limits: Limits) -> None:
    """Raise ``decompression-bomb`` if the streams text extraction would decode declare
    more output than ``limits`` allow (module docstring); a stream whose header cannot
    be read declares nothing and is left to the decoders' own caps."""
    total = 0
    for number, page in enumerate(pages, start=1):
        try:
            streams = list(_streams(page))
        except Exception:  # noqa: BLE001 - a broken resource tree is the extractor's to report
            continue
        for stream in streams:
            try:
                size = _declared(stream)
            except Exception:  # noqa: BLE001 - unreadable header: nothing declared
                size = None
            if not size:
                continue
            if size > limits.max_stream_bytes:
                raise ExtractionError(
                    ErrorCode.DECOMPRESSION_BOMB,
                    f"pdf page {number}: a JBIG2 stream declares a {_mib(size)} bitmap "
                    f"(limit {_mib(limits.max_stream_bytes)} per stream); not decoded")
            total += size
            if total > limits.max_decoded_bytes:
                raise ExtractionError(
                    ErrorCode.DECOMPRESSION_BOMB,
                    f"pdf: streams declare {_mib(total)} of decoded data by page {number} "
                    f"(limit {_mib(limits.max_decoded_bytes)}); not decoded")


def _mib(n: int) -> str:
    return f"{n / (1024 * 1024):,.0f} MiB"
