"""Turn one file into an ``Extraction`` (see ``extractors.base`` for the contract).

Public API::

    extract(path, *, max_bytes=200 MiB, ctx=None) -> Extraction   # the router
    detect(path) -> str                                            # MIME type from content
    SUPPORTED_EXTENSIONS, SUPPORTED_MIMES                          # what the router parses
    warm_up()                                                      # import parsers now

The package, in the order a file goes through it:

* ``mimes``: the MIME types we name and the extensions that stand for them;
* ``detect``: the format from the content (the extension only breaks ties), and the
  refusal for encrypted or rights-managed files;
* ``router``: ``extract`` - file checks, detection, decryption, parsing;
* ``decrypt``: password-protected Office files opened with the configured passwords;
* ``registry``: MIME type -> format family -> parsing module (imported on first use), and
  ``run``, which maps parser failures to error codes;
* one module per format family (``pdf``, ``docx``, ``spreadsheet``, ``email_family``,
  ``archive``, ``ocr``, ...), ``metadata`` (the document's own title, authors, dates),
  ``sandbox`` (the forked child a parse runs in), ``warmup``.

Every failure leaves as ``ExtractionError`` with a code from ``extractors.base``.
"""
from __future__ import annotations

from .base import Element, ExtractContext, Extraction, ExtractionError
from .detect import detect
from .registry import EXTRACTORS, FAMILY, SUPPORTED_EXTENSIONS, SUPPORTED_MIMES
from .router import DEFAULT_MAX_BYTES, extract
from .warmup import warm_up

__all__ = [
    "DEFAULT_MAX_BYTES",
    "EXTRACTORS",
    "FAMILY",
    "SUPPORTED_EXTENSIONS",
    "SUPPORTED_MIMES",
    "Element",
    "ExtractContext",
    "Extraction",
    "ExtractionError",
    "detect",
    "extract",
    "warm_up",
]
