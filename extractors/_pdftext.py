"""Choosing a PDF page's text between two engines, and the page's form field values.

pypdf's text layer keeps the page's paragraph breaks (blank lines), so it is the
default. It goes wrong in ways a second engine (pypdfium2, PDFium's C text engine,
about 10x faster) does not, and those failures are visible in the text itself:

* CID fonts without a ToUnicode map (common in Japanese PDFs): glyph ids come out as
  code points of unrelated scripts, e.g. "ͳσʔλͷ" (Greek, IPA and Latin in one word),
  "είΞ ୯ޠ छྨ" (Greek, Oriya, Thaana, Devanagari on one page);
* fonts whose glyphs are named, not mapped: "/g18/g152/g135";
* "fake bold" (each glyph drawn twice, slightly offset): one character per line,
  "B\\nB\\nO\\nO";
* text PDFium can read and pypdf cannot at all (an exception, or much less text);
* words run together where a PDF places them apart without a space character
  ("Thread (M)Range (mm)", "rdogrp1rdo1"): PDFium's text wins where pypdf's has words
  that are PDFium's consecutive words joined, and not the other way round.

:func:`choose` scores both candidates with :func:`junk_share` (the share of visible
characters in tokens that look like one of the failures above, plus replacement,
private-use and control characters) and takes PDFium's text only when pypdf's is
clearly worse (``MARGIN``) or clearly shorter (``SHORT``); otherwise pypdf's. Pages on
which both engines give (nearly) the same words (``AGREE``), most pages, are decided
without scoring.

Ligatures (U+FB00-FB06, "ﬁ") are spelled out in both, so that "ﬁrst" is found by
a search for "first".
"""
from __future__ import annotations

import re
import unicodedata
from collections import Counter

MARGIN = 0.02  # PDFium's text wins if pypdf's junk share is higher by this much and
#                at least twice PDFium's ...
SHORT = 0.6  # ... or if pypdf has under this share of PDFium's visible characters
MIN_VISIBLE = 20  # below this, neither text says much; keep pypdf's
GLUED_MIN = 2  # PDFium's text wins where pypdf ran at least this many words together
AGREE = 0.95  # token overlap above which the two texts are the same text: pypdf's

_LIGATURES = str.maketrans({
    "\ufb00": "ff", "\ufb01": "fi", "\ufb02": "fl", "\ufb03": "ffi", "\ufb04": "ffl",
    "\ufb05": "st", "\ufb06": "st",
})
_GLYPH_NAME = re.compile(r"(?:/?(?:g|glyph|cid|index|gid)\d+|/?uni[0-9a-f]{4,6})+", re.I)
MANY_SCRIPTS = 3  # letters of this many scripts besides Latin on one page: mojibake
# scripts that legitimately share one word: CJK with kana; Latin with anything
# (product names in Japanese text, "IT化"); everything with digits/punctuation
_CJK_GROUP = {"CJK", "HIRAGANA", "KATAKANA", "KATAKANA-HIRAGANA", "HALFWIDTH", "FULLWIDTH",
              "IDEOGRAPHIC"}
_CONTROL_OK = "\n\r\t\f\v"
_CONTROL = re.compile("[\x00-\x08\x0e-\x1f\x7f-\x9f\ufffe]")  # Cc but whitespace, U+FFFE


def clean(text: str) -> str:
    """Ligatures spelled out, CRLF -> LF, control characters other than whitespace
    and U+FFFE made spaces (fonts that map their space glyph to U+0002 exist; PDFium
    writes \\x02 for a hyphen at a line break)."""
    text = text.translate(_LIGATURES).replace("\r\n", "\n").replace("\r", "\n")
    return _CONTROL.sub(" ", text)


def visible(text: str) -> int:
    return sum(1 for ch in text if not ch.isspace())


def _script(ch: str) -> str | None:
    """A coarse script name for a letter (first word of its Unicode name), None for
    anything that is not a letter."""
    if not ch.isalpha():
        return None
    try:
        name = unicodedata.name(ch)
    except ValueError:
        return "UNNAMED"
    first = name.split(" ", 1)[0]
    if first in _CJK_GROUP:
        return "CJK"
    if first in ("MODIFIER", "COMBINING"):
        return None
    return first


def _bad_char(ch: str) -> bool:
    if ch == "\ufffd":
        return True
    cat = unicodedata.category(ch)
    return cat in ("Co", "Cn", "Cs") or (cat == "Cc" and ch not in _CONTROL_OK)


def _mixed_scripts(token: str) -> bool:
    scripts = {s for s in map(_script, token) if s}
    scripts.discard("LATIN")
    return len(scripts) > 1


def _doubled(token: str) -> bool:
    """"BBOOLLDD": every character twice in a row (fake bold read glyph by glyph)."""
    return len(token) >= 4 and len(token) % 2 == 0 and token[::2] == token[1::2]


def junk_share(text: str) -> float:
    """Share (0..1) of the visible characters of ``text`` that sit in junk tokens."""
    tokens = text.split()
    total = sum(len(t) for t in tokens)
    if not total:
        return 0.0
    junk = 0
    run: list[str] = []  # consecutive one-letter (non-CJK) tokens

    def close_run() -> int:
        n = len(run) if len(run) >= 3 else 0
        run.clear()
        return n

    for token in tokens:
        if len(token) == 1 and token.isalpha() and _script(token) != "CJK":
            run.append(token)
            continue
        junk += close_run()
        if (_GLYPH_NAME.fullmatch(token) or _mixed_scripts(token) or _doubled(token)
                or any(_bad_char(ch) for ch in token)):
            junk += len(token)
    junk += close_run()
    # glyph ids read as code points scatter over unrelated scripts even where each
    # token is single-script ("είΞ ୯ޠ छྨ"): on such a page all non-Latin letters count
    scripts: dict[str, int] = {}
    for ch in text:
        script = _script(ch)
        if script and script != "LATIN":
            scripts[script] = scripts.get(script, 0) + 1
    if len(scripts) >= MANY_SCRIPTS:
        junk = max(junk, sum(scripts.values()))
    return min(1.0, junk / total)


def choose(pypdf_text: str | None, pdfium_text: str | None) -> tuple[str, str]:
    """(engine, text): "pypdf" unless PDFium's text is clearly better (module docstring).
    ``None`` stands for an engine that failed on the page."""
    if pdfium_text is None:
        return "pypdf", pypdf_text or ""
    if pypdf_text is None:
        return "pdfium", pdfium_text
    n_a, n_b = visible(pypdf_text), visible(pdfium_text)
    if n_b < MIN_VISIBLE:
        return "pypdf", pypdf_text
    tokens_a, tokens_b = Counter(pypdf_text.split()), Counter(pdfium_text.split())
    common = sum((tokens_a & tokens_b).values())
    if common >= AGREE * max(sum(tokens_a.values()), sum(tokens_b.values())):
        return "pypdf", pypdf_text  # the usual case, decided without scoring
    j_a, j_b = junk_share(pypdf_text), junk_share(pdfium_text)
    if j_a - j_b >= max(MARGIN, j_b):
        return "pdfium", pdfium_text
    if n_a < SHORT * n_b and j_b <= j_a + MARGIN:
        return "pdfium", pdfium_text
    glued_a = glued(pypdf_text.split(), pdfium_text.split())
    if glued_a >= GLUED_MIN and j_b <= j_a + MARGIN:
        if glued_a > 2 * glued(pdfium_text.split(), pypdf_text.split()):
            return "pdfium", pdfium_text
    return "pypdf", pypdf_text


JUNK_DOUBT = 0.2  # a page text with this junk share may be read better by a third engine
NON_ASCII_DOUBT = 0.05  # ... looked at only where this share of its characters is not ASCII


def doubtful(pypdf_text: str | None, pdfium_text: str | None, chosen: str) -> bool:
    """Whether the text ``chosen`` for a page (from :func:`choose`) looks garbled or
    incomplete: its junk share is ``JUNK_DOUBT`` or more, or the other engine saw
    clearly more characters (``SHORT``) that were junk (glyphs it could not map,
    which the chosen engine left out). Pages whose texts are (nearly) all ASCII,
    under ``NON_ASCII_DOUBT``, are not doubted, without scoring: the glyph-id garbage
    of unmapped composite fonts, which a third engine can map, is not ASCII, and
    scoring every page of a long document would cost more than reading it."""
    texts = [t for t in (pypdf_text, pdfium_text) if t]
    if all(len(t) - len(t.encode("ascii", "ignore")) < NON_ASCII_DOUBT * len(t) for t in texts):
        return False
    n = visible(chosen)
    if n >= MIN_VISIBLE and junk_share(chosen) >= JUNK_DOUBT:
        return True
    for other in texts:
        if other is chosen:
            continue
        n_other = visible(other)
        if n_other >= MIN_VISIBLE and n < SHORT * n_other and junk_share(other) >= JUNK_DOUBT:
            return True
    return False


def glued(tokens: list[str], other: list[str]) -> int:
    """How many of ``tokens`` are 2-4 consecutive tokens of ``other`` run together
    ("(M)Range" against "(M) Range"), each part at least 2 characters long (so that a
    word another engine split into letters, "P epsi", does not count)."""
    runs: set[str] = set()
    for i in range(len(other)):
        joined = other[i]
        if len(joined) < 2:
            continue
        for k in range(1, 4):
            if i + k >= len(other) or len(other[i + k]) < 2:
                break
            joined += other[i + k]
            runs.add(joined)
    have = set(other)
    return sum(1 for t in tokens if t in runs and t not in have)


# --------------------------------------------------------------------------- PDFium

GAP = 0.2  # a gap wider than this share of the glyph height between two glyphs of
#            one line is a space PDFium did not write ("OverviewoftheTechnology...")


def pdfium_text(textpage, respace: bool = False) -> str:
    """PDFium's text of a page. With ``respace``, rebuilt glyph by glyph from the loose
    glyph boxes, with a space wherever two glyphs of one line are ``GAP`` apart
    (PDFium's own text runs together words that a PDF places by offsets, not spaces)."""
    import pypdfium2.raw as pdfium_c

    if not respace:
        return textpage.get_text_range()
    out: list[str] = []
    prev = None
    for i in range(textpage.count_chars()):
        ch = chr(pdfium_c.FPDFText_GetUnicode(textpage.raw, i))
        box = textpage.get_charbox(i, loose=True)
        if prev is not None and out and not ch.isspace() and not out[-1].isspace():
            left, bottom, _, top = box
            _, p_bottom, p_right, p_top = prev
            height = max(top - bottom, p_top - p_bottom, 1.0)
            if abs(bottom - p_bottom) < height / 2 and left - p_right > GAP * height:
                out.append(" ")
        out.append(ch)
        prev = box
    return "".join(out)


# --------------------------------------------------------------------------- forms

_SKIP_VALUES = {"", "/Off", "Off"}


def form_values(page) -> list[str]:
    """Values filled into the text and choice fields whose widgets sit on this pypdf
    ``page`` (AcroForm: /V on the widget or inherited from its parent field), in the
    page's annotation order, duplicates (one field shown twice) once. Buttons
    (check boxes, radio buttons) are left out: their value is a state name."""
    out: list[str] = []
    seen: set[str] = set()
    try:
        annots = page.get("/Annots")
        annots = annots.get_object() if annots is not None else []
    except Exception:  # noqa: BLE001 - a broken /Annots array: no form values
        return out
    for ref in annots or []:
        try:
            widget = ref.get_object()
            if widget.get("/Subtype") != "/Widget":
                continue
            field, value, kind = widget, None, None
            for _ in range(16):  # walk up /Parent for inherited /V and /FT
                if value is None and "/V" in field:
                    value = field["/V"]
                if kind is None and "/FT" in field:
                    kind = field["/FT"]
                parent = field.get("/Parent")
                if parent is None:
                    break
                field = parent.get_object()
        except Exception:  # noqa: BLE001 - one broken widget does not hide the others
            continue
        if kind not in ("/Tx", "/Ch") or value is None:
            continue
        values = value if isinstance(value, list) else [value]
        for v in values:
            text = str(v.get_object() if hasattr(v, "get_object") else v).strip()
            if text in _SKIP_VALUES or text in seen:
                continue
            seen.add(text)
            out.append(text)
    return out
