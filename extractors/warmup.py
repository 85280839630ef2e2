"""``warm_up()``: import every parser and load unstructured's spaCy model before the first
document (a worker calls it at start, so the first file a user drops in is not the one
that pays for it)."""
from __future__ import annotations

import importlib

from .registry import EXTRACTORS

# Libraries the extractors import lazily: each parse runs in a forked child, which would
# otherwise import them again for every document (tens of ms each).
_LAZY_LIBRARIES = ("pypdf", "pypdfium2", "docx", "charset_normalizer", "magic", "olefile",
                   "defusedxml", "lxml.etree", "openpyxl", "pptx")


def warm_up() -> None:
    """Import every parsing module and the libraries they use, and load spaCy now."""
    from . import docx, pdf, spacy_shim, unstructured_family  # noqa: F401

    for module in sorted({m for m, _ in EXTRACTORS.values()}):
        try:
            importlib.import_module(f"{__package__}.{module}")
        except ImportError:  # reported per document, with the family, by registry.run
            pass
    for lib in _LAZY_LIBRARIES:
        try:
            importlib.import_module(lib)
        except ImportError:
            pass
    spacy_shim.install()
    for module, _, _ in unstructured_family.PARTITIONERS.values():
        importlib.import_module(module)
    from unstructured.nlp.tokenize import _get_nlp

    _get_nlp()
