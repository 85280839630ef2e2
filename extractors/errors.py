"""Machine codes: why a document was not indexed (``ExtractionError.code``, ``documents.error_code``).

``StrEnum`` members compare and serialise as their string value, so stored values, JSON and
comparisons with plain strings are unchanged; a code outside this list is refused where an
``ExtractionError`` is made."""
from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    EMPTY_FILE = "empty-file"  # zero bytes
    UNSUPPORTED_TYPE = "unsupported-type"  # no extractor for the detected type
    CORRUPT = "corrupt"  # the parser refused the bytes
    ENCRYPTED = "encrypted"  # password-protected, no configured password opens it
    IRM_PROTECTED = "irm-protected"  # rights-managed (IRM / RMS) content
    TOO_LARGE = "too-large"  # over a size limit (file, member, decoded stream)
    ZIP_BOMB = "zip-bomb"  # an archive whose expansion exceeds its limits
    DECOMPRESSION_BOMB = "decompression-bomb"  # a compressed stream or image that expands past its budget
    TOO_DEEP = "too-deep"  # nesting (archives in archives, attachments) past the limit
    NO_TEXT = "no-text"  # extracted, but nothing to index (pipeline quality gate)
    TIMEOUT = "timeout"  # the sandboxed parser ran out of time
    MEMORY = "memory"  # the sandboxed parser ran out of memory
    EXTRACTOR_CRASH = "extractor-crash"  # the parser process died or raised unexpectedly
    MISSING_TOOL = "missing-tool"  # an external program the format needs is not installed
    UNSAFE_XML = "unsafe-xml"  # entity expansion, external entities or DTDs in XML
    # set by the pipeline (ingest.pipeline.document), never by a parser
    UNREADABLE = "unreadable"  # the file could not be opened or read
    BAD_LABELS = "bad-labels"  # a labels sidecar that is unsafe, too large or unparsable
    PASSWORDS_FILE = "passwords-file"  # the configured passwords file is unusable
    POLICY_SKIP = "policy-skip"  # a label whose policy is skip


# codes that mean "the document is fine, there is just nothing to read" (quality gauges: share empty)
EMPTY_CODES = (ErrorCode.EMPTY_FILE, ErrorCode.NO_TEXT)
