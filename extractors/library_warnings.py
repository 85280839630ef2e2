"""Parsing libraries' warnings, kept out of the default log and counted per document.

pypdf, pdfminer, unstructured, openpyxl ... warn through ``logging`` and the ``warnings``
module about what they meet in a file (a bad ``startxref`` pointer, a font they cannot
decode, a style they ignore), sometimes with the whole offending object in the message.
Such a warning is about one document, not about the service; on a few hundred files it
was thousands of WARNING lines. While :func:`capture` is active (``registry.run`` wraps
every parse in it), on the thread that opened it:

* a ``logging`` record of WARNING or above from a logger outside this project (not
  ``extractors``/``ingest``/``workers``/``acl``/``corpora``, nor the queue's own
  ``celery``/``kombu``/``billiard``) is counted and kept from every other handler,
  including Python's last-resort stderr handler;
* a ``warnings.warn`` of a category that speaks about the document (``UserWarning``,
  ``RuntimeWarning`` ... and their subclasses, such as pypdf's ``PdfReadWarning``) is
  counted instead of printed (deprecation, import and resource warnings are about the
  code, not the document: they are shown as the filters in force say);

each is logged again at DEBUG on ``extractors.library_warnings`` (logger, category and
the first ``MESSAGE_CHARS`` characters of the message), so a DEBUG log shows
them. The count ends up in ``Extraction.third_party_warnings``, and from there in the
document's quality report and its trace (``third_party_warnings``).

Logging records are told apart by thread; the ``warnings`` module's state is
process-wide, so a ``warnings.warn`` from another thread during a parse (only possible
where parses run in threads, not in the sandbox process) is counted for this one.
"""
from __future__ import annotations

import logging
import threading
import warnings
from contextlib import contextmanager
from typing import Iterator

log = logging.getLogger(__name__)

MESSAGE_CHARS = 200
OURS = frozenset({"extractors", "ingest", "workers", "acl", "corpora", "celery", "kombu",
                  "billiard", "amqp", "redis"})
# What a parser says about the document (pypdf's PdfReadWarning, openpyxl's and
# unstructured's UserWarnings, numpy's RuntimeWarnings); deprecation, import and resource
# warnings are about the code and left to the filters in force.
_COUNTED = (UserWarning, RuntimeWarning, SyntaxWarning, UnicodeWarning, BytesWarning)

_active = threading.local()


class Seen:
    """How many library warnings a parse raised (``count``)."""

    __slots__ = ("count", "thread")

    def __init__(self, thread: int | None = None):
        self.count = 0
        self.thread = thread

    def claims(self, record: logging.LogRecord) -> bool:
        return (record.thread == self.thread and record.levelno >= logging.WARNING
                and record.name.split(".", 1)[0] not in OURS)


class _Counter(logging.Handler):
    def __init__(self, seen: Seen):
        super().__init__(logging.WARNING)
        self.seen = seen

    def emit(self, record: logging.LogRecord) -> None:
        if self.seen.claims(record):
            self.seen.count += 1
            log.debug("library warning from %s: %s", record.name, _short(record.getMessage()))


class _Withhold(logging.Filter):
    """On every other handler: drop what ``seen`` claims."""

    def __init__(self, seen: Seen):
        super().__init__()
        self.seen = seen

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.seen.claims(record)


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MESSAGE_CHARS else text[:MESSAGE_CHARS] + "..."


@contextmanager
def capture() -> Iterator[Seen]:
    """Count (and withhold from the log) the library warnings raised in the block on this
    thread. Nested: the inner block yields a ``Seen`` that stays at 0 (the outer counts)."""
    if getattr(_active, "seen", None) is not None:
        yield Seen()
        return
    seen = Seen(threading.get_ident())
    root = logging.getLogger()
    counter, withhold = _Counter(seen), _Withhold(seen)
    others = [h for h in (*root.handlers, logging.lastResort) if h is not None]
    for handler in others:
        handler.addFilter(withhold)
    root.addHandler(counter)
    _active.seen = seen
    try:
        with warnings.catch_warnings(record=True) as caught:
            for category in _COUNTED:  # each one, not once per place (the default)
                warnings.simplefilter("always", category)
            yield seen
    finally:
        _active.seen = None
        root.removeHandler(counter)
        for handler in others:
            handler.removeFilter(withhold)
    for w in caught:
        if issubclass(w.category, _COUNTED):
            seen.count += 1
            log.debug("library warning %s: %s", w.category.__name__, _short(str(w.message)))
        else:  # about the code, not the document: shown as the filters in force say
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
