"""Synthetic PDFs written byte by byte, so that each hostile construct is exactly what a test says."""
from __future__ import annotations

from pathlib import Path


def raw_pdf(path: Path, content: bytes, stream_dict: str = "") -> Path:
    """A one-page PDF whose only content stream is ``content`` with ``stream_dict``
    entries (e.g. a /Filter), xref offsets computed."""
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d %s >>\nstream\n" % (len(content), stream_dict.encode()) + content
        + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    return pdf_of_objects(path, objects)


def pdf_of_objects(path: Path, objects: list[bytes]) -> Path:
    """A PDF of ``objects`` (numbered from 1; 1 is the catalog), xref offsets computed."""
    out = bytearray(b"%PDF-1.7\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    path.write_bytes(bytes(out))
    return path
