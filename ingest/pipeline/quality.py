"""Data quality of one extraction: measured, judged, never silently degraded.

Each extraction gets a report (characters, characters per page, share of
replacement/control characters, OCR confidence, language, empty). A policy turns it
into a verdict: ``ok``; ``flagged`` (indexed, and every hit says why); or
``quarantined`` (not indexed; ``ingest status`` says why). Thresholds come from the
policy's defaults or ``INGEST_QUALITY_<NAME>`` environment variables.
"""
from __future__ import annotations

import os
import unicodedata
from dataclasses import asdict, dataclass, field, fields

from ingest.config import parse_value

OK, FLAGGED, QUARANTINED = "ok", "flagged", "quarantined"


@dataclass
class QualityPolicy:
    min_chars: int = 1  # fewer: quarantined (empty)
    flag_chars_per_page: float = 40.0  # paged documents with less text per page: flagged
    flag_bad_ratio: float = 0.01  # replacement/control characters: flagged above
    quarantine_bad_ratio: float = 0.20  # ... quarantined above (garbled)
    flag_ocr_confidence: float = 70.0  # mean OCR confidence (0-100) below: flagged
    quarantine_ocr_confidence: float = 30.0  # ... below: quarantined

    @classmethod
    def from_env(cls) -> "QualityPolicy":
        p = cls()
        for f in fields(cls):
            name = f"INGEST_QUALITY_{f.name.upper()}"
            if os.environ.get(name):
                kind = "int" if isinstance(getattr(p, f.name), int) else "seconds"
                setattr(p, f.name, type(getattr(p, f.name))(parse_value(name, os.environ[name], kind, minimum=0)))
        return p


@dataclass
class QualityReport:
    chars: int
    pages: int | None
    chars_per_page: float | None
    bad_char_ratio: float
    ocr_pages: int
    ocr_confidence: float | None
    language: str | None
    verdict: str = OK
    reasons: list[str] = field(default_factory=list)
    third_party_warnings: int = 0  # the parsing libraries' warnings (extractors.library_warnings)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def flags(self) -> list[str]:
        return [f"quality:{r.split(':')[0]}" for r in self.reasons] if self.verdict == FLAGGED else []


def _bad(ch: str) -> bool:
    if ch == "\ufffd":
        return True
    if ch in "\n\r\t\f\v":
        return False
    cat = unicodedata.category(ch)
    return cat in ("Cc", "Cs", "Co", "Cn")


def detect_language(text: str) -> str | None:
    sample = " ".join(text[:2000].split())
    if len(sample) < 40:
        return None
    try:
        from langdetect import DetectorFactory, detect

        DetectorFactory.seed = 0  # deterministic
        return detect(sample)
    except Exception:  # noqa: BLE001 - language is informative only ("no features" etc.)
        return None


def assess(extraction, policy: QualityPolicy | None = None) -> QualityReport:
    policy = policy or QualityPolicy.from_env()
    text = "".join(e.text for e in extraction.elements if e.text)
    visible = [c for c in text if not c.isspace()]
    n = len(visible)
    bad = sum(1 for c in visible if _bad(c))
    pages = extraction.pages
    ocr = extraction.ocr_pages or {}
    report = QualityReport(
        chars=n,
        pages=pages,
        chars_per_page=(n / pages) if pages else None,
        bad_char_ratio=(bad / n) if n else 0.0,
        ocr_pages=len(ocr),
        ocr_confidence=(sum(ocr.values()) / len(ocr)) if ocr else None,
        language=detect_language(text) if n else None,
        third_party_warnings=getattr(extraction, "third_party_warnings", 0),
    )
    q, f = [], []
    if n < policy.min_chars:
        q.append("empty: no text could be extracted" + (f" ({'; '.join(extraction.warnings)})"
                                                        if extraction.warnings else ""))
    if report.bad_char_ratio > policy.quarantine_bad_ratio:
        q.append(f"garbled: {report.bad_char_ratio:.0%} replacement/control characters")
    elif report.bad_char_ratio > policy.flag_bad_ratio:
        f.append(f"garbage-chars: {report.bad_char_ratio:.1%} replacement/control characters")
    if n >= policy.min_chars and report.ocr_confidence is not None and report.ocr_confidence < 1 \
            and len(ocr) >= (pages or 1):
        # OCR of every page and not one word recognised with any confidence (a tiny icon):
        # no text, like the icons whose OCR returns nothing at all
        q.append("empty: no text recognised (OCR confidence 0)")
    elif report.ocr_confidence is not None:
        if report.ocr_confidence < policy.quarantine_ocr_confidence:
            q.append(f"ocr-confidence: mean {report.ocr_confidence:.0f} below {policy.quarantine_ocr_confidence:.0f}")
        elif report.ocr_confidence < policy.flag_ocr_confidence:
            f.append(f"low-ocr-confidence: mean {report.ocr_confidence:.0f} over {len(ocr)} page(s)")
    cut = [w for w in getattr(extraction, "warnings", []) if w.startswith("truncated:")]
    if cut:  # an extractor stopped at a limit (e.g. extractors.spreadsheet): never silent
        f.append(cut[0] + (f" (and {len(cut) - 1} more cut)" if len(cut) > 1 else ""))
    if n >= policy.min_chars and report.chars_per_page is not None and report.chars_per_page < policy.flag_chars_per_page:
        f.append(f"sparse-text: {report.chars_per_page:.0f} characters per page")
    if q:
        report.verdict, report.reasons = QUARANTINED, q
    elif f:
        report.verdict, report.reasons = FLAGGED, f
    return report
