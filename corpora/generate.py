"""Synthetic multi-format corpus with KNOWN FACTS, for tests, demos and benchmarks.

Everything here is offline and deterministic: prose is drawn from fixed word lists
with ``random.Random`` seeded from strings (string seeds are hashed with SHA-512 by
``random``, so they do not depend on ``PYTHONHASHSEED``).

Byte-for-byte reproducibility (same seed, same library versions):

* md, html, txt, csv, eml: plain text written by us, always identical.
* docx, pptx, xlsx: the libraries stamp the current time into ``docProps/core.xml``
  and into every zip entry; we re-pack the archive with fixed zip timestamps and
  overwrite ``dcterms:created`` / ``dcterms:modified`` with a fixed date, so the
  bytes are identical.
* pdf: fpdf2 gets a fixed creation date, which also fixes the derived ``/ID``; the
  ``/Producer`` string names the fpdf2 version, so bytes are identical for a given
  fpdf2 version.

Public API::

    generate(out_dir, *, formats=..., n_per_format=1, seed=0, pages=1, paragraphs=6) -> list[Fact]
    generate_long_docx(path, *, sections=10, paragraphs_per_section=4, seed=0) -> list[str]
    edit_paragraph(path, section_index, paragraph_index, new_text) -> str
    generate_bench_corpus(out_dir, n_docs, *, seed=0, formats=..., paragraphs=12) -> list[Path]

CLI::

    python -m corpora.generate OUT_DIR [--n-per-format N] [--seed S] [--facts-json FILE]
"""
from __future__ import annotations

import argparse
import csv
import html
import io
import json
import random
import re
import sys
import zipfile
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Iterable, Sequence

__all__ = [
    "Fact",
    "ALL_FORMATS",
    "generate",
    "generate_long_docx",
    "edit_paragraph",
    "generate_bench_corpus",
    "main",
]

ALL_FORMATS: tuple[str, ...] = ("docx", "pdf", "md", "html", "txt", "pptx", "xlsx", "csv", "eml")

# Every timestamp written into a file derives from this instant.
FIXED_DATE = datetime(2024, 1, 15, 9, 30, 0, tzinfo=timezone.utc)


@dataclass(frozen=True)
class Fact:
    file: str  # path relative to out_dir, "/"-separated
    fmt: str
    phrase: str  # the planted sentence, verbatim in the file
    query: str  # a natural question answered by ``phrase``
    keyword: str  # made-up token (e.g. "zorblax-4711") found in this file only


# --------------------------------------------------------------------------- words

_COMPANIES = [
    "Northwind Logistics", "Bluehill Analytics", "Crestline Foods", "Harborview Energy",
    "Meridian Textiles", "Oakridge Software", "Silverlake Health", "Granite Peak Insurance",
    "Brightwater Retail", "Ironbridge Manufacturing", "Summit Field Services", "Redwood Consulting",
]
_DOC_TYPES = [
    "Quarterly Report", "Operations Review", "Board Briefing", "Project Status Update",
    "Market Assessment", "Annual Planning Memo", "Risk Register Summary", "Sales Review",
]
_HEADINGS = [
    "Executive Summary", "Market Overview", "Operational Highlights", "Financial Summary",
    "Risk Assessment", "Customer Feedback", "Strategic Outlook", "Supply Chain Update",
    "Staffing and Training", "Technology Roadmap", "Regulatory Environment", "Next Steps",
    "Regional Performance", "Budget Allocation", "Vendor Management", "Quality Assurance",
    "Sustainability Goals", "Pricing Strategy", "Product Development", "Lessons Learned",
]
_SUBJECTS = [
    "the regional sales team", "our procurement group", "the finance department",
    "the customer success unit", "the operations committee", "management",
    "the logistics partner network", "the product team", "the compliance office",
    "the European branch", "the analytics group", "the board", "several key accounts",
    "the field service crew", "the marketing department", "the internal audit team",
]
_VERBS = [
    "reviewed", "expanded", "streamlined", "renegotiated", "prioritised", "evaluated",
    "consolidated", "launched", "monitored", "reduced", "improved", "postponed",
    "restructured", "benchmarked", "automated", "documented", "approved", "piloted",
]
_OBJECTS = [
    "the supplier contracts", "the onboarding process", "inventory levels",
    "the pricing model", "quarterly forecasts", "the reporting workflow",
    "delivery schedules", "the training curriculum", "capital expenditure plans",
    "the customer support backlog", "warehouse capacity", "the vendor shortlist",
    "data retention policies", "the maintenance programme", "travel budgets",
    "the product roadmap", "service level agreements", "the hiring plan",
]
_MODIFIERS = [
    "ahead of schedule", "in close cooperation with external advisors",
    "despite persistent cost pressure", "after a detailed review",
    "to support long-term growth", "in line with the updated strategy",
    "across all major regions", "with measurable results", "during the last quarter",
    "while keeping headcount stable", "to reduce operational risk",
    "following customer requests", "within the approved budget",
    "as part of the transformation programme", "for the coming fiscal year",
]
_INTROS = [
    "In addition", "As expected", "Overall", "At the same time", "Nevertheless",
    "According to preliminary figures", "For the coming months", "In practice",
    "Compared with the previous period", "As a result", "Meanwhile", "Going forward",
]
_OBSERVATIONS = [
    "demand remained stable in most segments",
    "margins were slightly below the internal target",
    "customer retention improved compared with last year",
    "lead times increased for imported components",
    "the new tooling reduced manual effort considerably",
    "several risks were identified and assigned to owners",
    "stakeholders requested more frequent status updates",
    "the backlog of open tickets shrank noticeably",
    "costs for energy and transport continued to rise",
    "the team exceeded its utilisation goal",
    "pricing discussions with distributors are still ongoing",
    "feedback from the pilot customers was largely positive",
]
_CITIES = [
    "Rotterdam", "Lyon", "Porto", "Leipzig", "Gdansk", "Turin", "Malmo", "Antwerp",
    "Bilbao", "Graz", "Brno", "Aarhus", "Cork", "Utrecht", "Krakow", "Bologna",
]
_MONTHS = [
    "January", "February", "March", "April", "May", "June", "July", "August",
    "September", "October", "November", "December",
]
_FIRST = ["Anna", "Marco", "Sofia", "Lukas", "Elena", "David", "Clara", "Jonas",
          "Maria", "Tomas", "Julia", "Pieter", "Ines", "Henrik", "Laura", "Oscar"]
_LAST = ["Keller", "Rossi", "Novak", "Jansen", "Moreau", "Lindqvist", "Schmidt",
         "Costa", "Horvat", "Dubois", "Berg", "Walsh", "Nowak", "Ferreira", "Vogel", "Brandt"]
_PRODUCTS = ["Sensor Kit", "Cloud Suite", "Field Tablet", "Cargo Tracker", "Smart Meter",
             "Service Plan", "Analytics Pack", "Starter Bundle"]
_REGIONS = ["North", "South", "East", "West", "Central", "Nordics", "Iberia", "Benelux"]

# Syllables for the made-up keywords. None of them occurs as a word in the prose, and
# the keyword always carries a 4-digit suffix, so it cannot collide with normal text.
_SYL_A = ["zor", "quel", "vrim", "thal", "plon", "skiv", "drex", "fyn", "grax", "yub",
          "kesh", "mirv", "snod", "trel", "wuz", "jop", "blim", "crod", "hask", "lunt"]
_SYL_B = ["blax", "tor", "quim", "varn", "dex", "zil", "morp", "gant", "rix", "folk",
          "pesh", "ulm", "krat", "noz", "bry", "sheg", "vott", "lurn", "pax", "wemb"]

# (phrase template, query template). Phrases are ASCII (latin-1 safe for PDF core
# fonts) and contain the keyword verbatim, lower case.
_FACT_TEMPLATES: list[tuple[str, str]] = [
    ("The quarterly revenue of the {kw} division reached {money} million euros.",
     "What quarterly revenue did the {kw} division report?"),
    ("The {kw} warehouse in {city} shipped {count} pallets during {month}.",
     "How many pallets did the {kw} warehouse ship in {month}?"),
    ("Project {kw} was approved by {person} with a budget of {money} million euros.",
     "Who approved project {kw} and how large is its budget?"),
    ("Customer satisfaction for the {kw} product line rose to {pct} percent last quarter.",
     "What customer satisfaction score did the {kw} product line reach?"),
    ("The {kw} server cluster recorded an uptime of 99.{small} percent in {month}.",
     "What uptime did the {kw} server cluster have in {month}?"),
    ("Contract {kw} with the {city} office expires on {day} {month} {year}.",
     "When does contract {kw} with the {city} office expire?"),
    ("The {kw} pilot reduced energy consumption at the {city} plant by {pct} percent.",
     "By how much did the {kw} pilot cut energy use at the {city} plant?"),
    ("Headcount in the {kw} team grew to {count} employees after the {month} hiring round.",
     "How many employees does the {kw} team have after the hiring round?"),
    ("The {kw} compliance audit found {small} minor issues and no critical findings.",
     "How many issues did the {kw} compliance audit find?"),
    ("Shipping costs on the {kw} route from {city} to {city2} fell by {pct} percent.",
     "How much did shipping costs on the {kw} route fall?"),
    ("The {kw} marketing campaign generated {count} qualified leads in {month}.",
     "How many qualified leads did the {kw} marketing campaign generate?"),
    ("Research lab {kw} in {city} filed {small} patent applications for battery recycling.",
     "How many patent applications did research lab {kw} file?"),
]


# ------------------------------------------------------------------ text helpers

def _rng(*parts: object) -> random.Random:
    return random.Random(":".join(str(p) for p in parts))


def _sentence(rng: random.Random) -> str:
    kind = rng.randrange(4)
    if kind == 0:
        s = f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)} {rng.choice(_MODIFIERS)}"
    elif kind == 1:
        s = f"{rng.choice(_INTROS)}, {rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)}"
    elif kind == 2:
        s = f"{rng.choice(_INTROS)}, {rng.choice(_OBSERVATIONS)}"
    else:
        s = (f"{rng.choice(_SUBJECTS)} reported that {rng.choice(_OBSERVATIONS)} "
             f"in {rng.choice(_CITIES)}")
    return s[0].upper() + s[1:] + "."


def _paragraph(rng: random.Random, min_words: int = 40, max_words: int = 90) -> str:
    """Sentences until at least a random target in [min_words, ...] is reached,
    never more than ``max_words`` unless a single sentence is longer."""
    target = rng.randint(min_words, max(min_words, (min_words + max_words) // 2))
    sentences: list[str] = []
    words = 0
    while words < target:
        s = _sentence(rng)
        n = len(s.split())
        if sentences and words + n > max_words:
            continue
        sentences.append(s)
        words += n
    return " ".join(sentences)


def _plant(rng: random.Random, paragraph: str, fact: str) -> str:
    """Insert ``fact`` as its own sentence between two sentences of ``paragraph``."""
    sentences = paragraph.split(". ")
    sentences = [s if s.endswith(".") else s + "." for s in sentences]
    pos = rng.randint(1, len(sentences)) if len(sentences) > 1 else 1
    sentences.insert(pos, fact)
    return " ".join(sentences)


def _title(rng: random.Random) -> tuple[str, str]:
    company = rng.choice(_COMPANIES)
    return company, f"{company} {rng.choice(_DOC_TYPES)} Q{rng.randint(1, 4)} {rng.randint(2021, 2024)}"


def _person(rng: random.Random) -> str:
    return f"{rng.choice(_FIRST)} {rng.choice(_LAST)}"


def _keyword(rng: random.Random, used: set[str]) -> str:
    while True:
        kw = f"{rng.choice(_SYL_A)}{rng.choice(_SYL_B)}-{rng.randint(1000, 9999)}"
        if kw not in used:
            used.add(kw)
            return kw


def _make_fact_text(rng: random.Random, template: tuple[str, str], kw: str) -> tuple[str, str]:
    city, city2 = rng.sample(_CITIES, 2)
    values = dict(
        kw=kw,
        money=f"{rng.randint(2, 95)}.{rng.randint(1, 9)}",
        city=city,
        city2=city2,
        month=rng.choice(_MONTHS),
        count=f"{rng.randint(120, 9800)}",
        person=_person(rng),
        pct=f"{rng.randint(6, 48)}",
        small=f"{rng.randint(2, 19)}",
        day=f"{rng.randint(1, 28)}",
        year=f"{rng.randint(2025, 2029)}",
    )
    return template[0].format(**values), template[1].format(**values)


@dataclass
class _Doc:
    """Format-neutral content: a title and a list of (heading, [paragraphs]) sections."""

    company: str
    title: str
    sections: list[tuple[str, list[str]]]
    fact: str | None
    date: datetime
    seed_key: str

    @property
    def paragraphs(self) -> list[str]:
        return [p for _, ps in self.sections for p in ps]


def _build_doc(rng: random.Random, n_paragraphs: int, fact: str | None, date: datetime,
               seed_key: str, per_section: int = 3) -> _Doc:
    company, title = _title(rng)
    n_paragraphs = max(1, n_paragraphs)
    headings = rng.sample(_HEADINGS, k=min(len(_HEADINGS), (n_paragraphs + per_section - 1) // per_section))
    sections: list[tuple[str, list[str]]] = []
    left = n_paragraphs
    for h in headings:
        k = min(per_section, left)
        sections.append((h, [_paragraph(rng) for _ in range(k)]))
        left -= k
    if left > 0:  # more paragraphs than distinct headings: pile them on the last section
        sections[-1][1].extend(_paragraph(rng) for _ in range(left))
    if fact is not None:
        paras = sections[rng.randrange(len(sections))][1]
        pi = rng.randrange(len(paras))
        paras[pi] = _plant(rng, paras[pi], fact)
    return _Doc(company, title, sections, fact, date, seed_key)


# -------------------------------------------------------------- deterministic zip

_CORE_DATE_RE = re.compile(rb"(<dcterms:(created|modified)\b[^>]*>)[^<]*(</dcterms:\2>)")


def _normalize_ooxml(blob: bytes, date: datetime) -> bytes:
    """Re-pack an OOXML zip with fixed timestamps/attributes and fixed core dates."""
    stamp = date.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ").encode()
    src = zipfile.ZipFile(io.BytesIO(blob))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename == "docProps/core.xml":
                data = _CORE_DATE_RE.sub(lambda m: m.group(1) + stamp + m.group(3), data)
            zi = zipfile.ZipInfo(info.filename, date_time=(1980, 1, 1, 0, 0, 0))
            zi.compress_type = zipfile.ZIP_DEFLATED
            zi.create_system = 3
            zi.external_attr = 0o644 << 16
            dst.writestr(zi, data, compresslevel=6)
    return out.getvalue()


def _save_ooxml(obj, path: Path, date: datetime) -> None:
    buf = io.BytesIO()
    obj.save(buf)
    path.write_bytes(_normalize_ooxml(buf.getvalue(), date))


def _set_core(props, *, title: str, author: str, date: datetime) -> None:
    naive = date.astimezone(timezone.utc).replace(tzinfo=None)
    props.title = title
    props.author = author
    props.created = naive
    props.modified = naive
    if hasattr(props, "last_modified_by"):
        props.last_modified_by = author
    if hasattr(props, "revision"):
        props.revision = 1
    if hasattr(props, "last_printed"):
        props.last_printed = naive


# ------------------------------------------------------------------ format writers

def _write_docx(doc: _Doc, path: Path, rng: random.Random, pages: int = 1) -> None:
    import docx
    from docx.enum.text import WD_BREAK

    d = docx.Document()
    _set_core(d.core_properties, title=doc.title, author=doc.company, date=doc.date)
    section = d.sections[0]
    section.header.paragraphs[0].text = f"{doc.company} - Internal - {doc.title}"
    section.footer.paragraphs[0].text = f"Prepared by {doc.company} reporting office. Confidential."
    d.add_heading(doc.title, level=0)
    n = len(doc.sections)
    table_after = rng.randrange(n)
    break_every = max(1, -(-n // max(1, pages)))  # ceil: sections per page
    for i, (heading, paras) in enumerate(doc.sections):
        if i and pages > 1 and i % break_every == 0:
            d.add_paragraph().add_run().add_break(WD_BREAK.PAGE)
        d.add_heading(heading, level=1)
        for p in paras:
            d.add_paragraph(p)
        if i == table_after:
            rows = _table_rows(rng, 4)
            t = d.add_table(rows=len(rows), cols=len(rows[0]))
            t.style = "Table Grid"
            for trow, row in zip(t.rows, rows):
                for cell, val in zip(trow.cells, row):
                    cell.text = str(val)
    _save_ooxml(d, path, doc.date)


def _table_rows(rng: random.Random, n: int, notes: bool = False) -> list[list]:
    header = ["Region", "Quarter", "Product", "Units", "Revenue (EUR)"]
    if notes:
        header.append("Notes")
    rows: list[list] = [header]
    for _ in range(n):
        units = rng.randint(50, 5000)
        row = [rng.choice(_REGIONS), f"Q{rng.randint(1, 4)} {rng.randint(2022, 2024)}",
               rng.choice(_PRODUCTS), units, round(units * rng.uniform(12, 240), 2)]
        if notes:
            row.append(_sentence(rng))
        rows.append(row)
    return rows


def _pdf_class():
    from fpdf import FPDF

    class _PDF(FPDF):
        footer_text = ""

        def footer(self) -> None:  # noqa: D401 - fpdf hook
            self.set_y(-15)
            self.set_font("Helvetica", "I", 8)
            self.cell(0, 10, f"{self.footer_text} - page {self.page_no()}", align="C")

    return _PDF


def _latin1(s: str) -> str:
    return s.encode("latin-1", "replace").decode("latin-1")


def _write_pdf(doc: _Doc, path: Path, pages_of_sections: list[list[tuple[str, list[str]]]],
               *, flow: bool) -> None:
    """One PDF page per entry of ``pages_of_sections``. Blocks that do not fit on the
    page start a new page when ``flow`` is true, otherwise they are dropped (callers
    in strict mode put the fact early on its page, so it always fits)."""
    from fpdf.enums import XPos, YPos

    pdf = _pdf_class()(format="A4")
    pdf.footer_text = _latin1(doc.company)
    pdf.set_auto_page_break(False, margin=20)
    pdf.set_creation_date(doc.date)
    pdf.set_title(_latin1(doc.title))
    pdf.set_author(_latin1(doc.company))
    pdf.set_subject("Synthetic test document")
    pdf.set_creator("corpora.generate")
    pdf.set_margins(18, 18, 18)
    bottom = pdf.h - 22
    w = pdf.w - pdf.l_margin - pdf.r_margin

    widths: dict[tuple[str, float, str], float] = {}

    def wrap(text: str, style: str, size: float) -> list[str]:
        # Greedy word wrap with cached word widths: fpdf2's multi_cell line breaker
        # is ~20x slower, and we only need plain left-aligned lines.
        space = pdf.get_string_width(" ")
        lines: list[str] = []
        cur: list[str] = []
        cur_w = 0.0
        for word in text.split():
            key = (style, size, word)
            ww = widths.get(key)
            if ww is None:
                ww = widths[key] = pdf.get_string_width(word)
            add = ww if not cur else cur_w + space + ww
            if cur and add > w:
                lines.append(" ".join(cur))
                cur, cur_w = [word], ww
            else:
                cur.append(word)
                cur_w = add
        if cur:
            lines.append(" ".join(cur))
        return lines

    def block(text: str, style: str, size: float, lh: float, gap: float) -> bool:
        pdf.set_font("Helvetica", style, size)
        lines = wrap(_latin1(text), style, size)
        if pdf.get_y() + lh * len(lines) > bottom:
            if not flow:
                return False
            if style:  # keep headings with what follows; body text may split
                pdf.add_page()
        for line in lines:
            if pdf.get_y() + lh > bottom:
                pdf.add_page()
                pdf.set_font("Helvetica", style, size)
            pdf.cell(w, lh, line, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        pdf.ln(gap)
        return True

    for pi, sections in enumerate(pages_of_sections):
        pdf.add_page()
        if pi == 0:
            block(doc.title, "B", 16, 8, 4)
        full = False
        for heading, paras in sections:
            if full:
                break
            if not block(heading, "B", 13, 7, 2):
                break
            for p in paras:
                if not block(p, "", 11, 5.5, 3):
                    full = True
                    break
    pdf.output(str(path))


def _write_md(doc: _Doc, path: Path) -> None:
    out = [f"# {doc.title}", "", f"*{doc.company} - {doc.date:%d %B %Y}*", ""]
    for heading, paras in doc.sections:
        out += [f"## {heading}", ""]
        for p in paras:
            out += [p, ""]
    path.write_text("\n".join(out), encoding="utf-8", newline="\n")


def _write_html(doc: _Doc, path: Path) -> None:
    e = html.escape
    out = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f"<title>{e(doc.title)}</title>",
        f'<meta name="author" content="{e(doc.company)}">',
        "</head>",
        "<body>",
        f"<header><p>{e(doc.company)} - internal</p></header>",
        "<main>",
        f"<h1>{e(doc.title)}</h1>",
    ]
    for heading, paras in doc.sections:
        out.append("<section>")
        out.append(f"<h2>{e(heading)}</h2>")
        out.extend(f"<p>{e(p)}</p>" for p in paras)
        out.append("</section>")
    out += ["</main>", f"<footer><p>Generated {doc.date:%Y-%m-%d}</p></footer>", "</body>", "</html>", ""]
    path.write_text("\n".join(out), encoding="utf-8", newline="\n")


def _write_txt(doc: _Doc, path: Path) -> None:
    out = [doc.title, "=" * len(doc.title), ""]
    for heading, paras in doc.sections:
        out += [heading, "-" * len(heading), ""]
        for p in paras:
            out += [p, ""]
    path.write_text("\n".join(out), encoding="utf-8", newline="\n")


def _write_pptx(doc: _Doc, path: Path) -> None:
    from pptx import Presentation

    prs = Presentation()
    _set_core(prs.core_properties, title=doc.title, author=doc.company, date=doc.date)
    s = prs.slides.add_slide(prs.slide_layouts[0])
    s.shapes.title.text = doc.title
    s.placeholders[1].text = f"{doc.company} - {doc.date:%B %Y}"
    for heading, paras in doc.sections:
        for k, p in enumerate(paras):
            slide = prs.slides.add_slide(prs.slide_layouts[1])
            slide.shapes.title.text = heading if k == 0 else f"{heading} (continued)"
            tf = slide.placeholders[1].text_frame
            sentences = _split_sentences(p)
            tf.text = sentences[0]
            for sent in sentences[1:]:
                tf.add_paragraph().text = sent
    _save_ooxml(prs, path, doc.date)


def _split_sentences(p: str) -> list[str]:
    parts = p.split(". ")
    return [s if s.endswith(".") else s + "." for s in parts]


def _sheet_rows(doc: _Doc, rng: random.Random) -> list[list]:
    n = max(4, 2 * len(doc.paragraphs))
    rows = _table_rows(rng, n, notes=True)
    if doc.fact is not None:
        rows[rng.randint(1, n)][-1] = doc.fact
    return rows


def _write_xlsx(doc: _Doc, path: Path, rng: random.Random) -> None:
    from openpyxl import Workbook
    from openpyxl.styles import Font

    wb = Workbook()
    _set_core(wb.properties, title=doc.title, author=doc.company, date=doc.date)
    ws = wb.active
    ws.title = "Data"
    for row in _sheet_rows(doc, rng):
        ws.append(row)
    for cell in ws[1]:
        cell.font = Font(bold=True)
    for col, width in zip("ABCDEF", (12, 10, 16, 8, 14, 90)):
        ws.column_dimensions[col].width = width
    ws.freeze_panes = "A2"
    _save_ooxml(wb, path, doc.date)


def _write_csv(doc: _Doc, path: Path, rng: random.Random) -> None:
    with path.open("w", encoding="utf-8", newline="") as f:
        csv.writer(f, lineterminator="\r\n").writerows(_sheet_rows(doc, rng))


def _write_eml(doc: _Doc, path: Path, rng: random.Random) -> None:
    sender, rcpt = _person(rng), _person(rng)
    domain = doc.company.lower().replace(" ", "") + ".example"
    msg = EmailMessage()
    msg["From"] = f"{sender} <{sender.lower().replace(' ', '.')}@{domain}>"
    msg["To"] = f"{rcpt} <{rcpt.lower().replace(' ', '.')}@{domain}>"
    msg["Subject"] = doc.title
    msg["Date"] = format_datetime(doc.date)
    msg["Message-ID"] = f"<{_rng(doc.seed_key, 'msgid').getrandbits(64):016x}@{domain}>"
    body = [f"Hi {rcpt.split()[0]},", ""]
    for heading, paras in doc.sections:
        body += [f"{heading}:", ""]
        for p in paras:
            body += [p, ""]
    body += ["Best regards,", sender, doc.company, ""]
    # Paragraphs stay on one line (< 998 chars, RFC 5322) so the planted sentence is
    # never folded; 7bit keeps the body readable as raw text.
    msg.set_content("\n".join(body), cte="7bit")
    path.write_bytes(msg.as_bytes())


_EXT = {f: f for f in ALL_FORMATS}


def _write(fmt: str, doc: _Doc, path: Path, rng: random.Random, *, pages: int,
           flow_pdf: bool) -> None:
    if fmt == "docx":
        _write_docx(doc, path, rng, pages=pages)
    elif fmt == "pdf":
        if flow_pdf:
            _write_pdf(doc, path, [doc.sections], flow=True)
        else:
            _write_pdf(doc, path, _split_pages(doc, pages), flow=False)
    elif fmt == "md":
        _write_md(doc, path)
    elif fmt == "html":
        _write_html(doc, path)
    elif fmt == "txt":
        _write_txt(doc, path)
    elif fmt == "pptx":
        _write_pptx(doc, path)
    elif fmt == "xlsx":
        _write_xlsx(doc, path, rng)
    elif fmt == "csv":
        _write_csv(doc, path, rng)
    elif fmt == "eml":
        _write_eml(doc, path, rng)
    else:  # pragma: no cover - validated earlier
        raise ValueError(fmt)


def _split_pages(doc: _Doc, pages: int) -> list[list[tuple[str, list[str]]]]:
    """Distribute sections over ``pages`` pages in order (the last section opens the
    last page). Deterministic: the same doc always splits the same way."""
    secs = doc.sections
    if pages <= 1:
        return [secs]
    body, last = secs[:-1], secs[-1]
    out: list[list] = [[] for _ in range(pages)]
    out[-1].append(last)
    for i, s in enumerate(body):
        out[min(pages - 2, i * (pages - 1) // max(1, len(body)))].append(s)
    for i, page in enumerate(out[:-1]):  # never leave a page blank
        if not page:
            out[i] = [(_HEADINGS[i % len(_HEADINGS)], [_paragraph(_rng(doc.seed_key, "pad", i))])]
    return out


def _check_formats(formats: Iterable[str]) -> tuple[str, ...]:
    formats = tuple(formats)
    bad = [f for f in formats if f not in _EXT]
    if bad:
        raise ValueError(f"unknown format(s) {bad}; known: {', '.join(ALL_FORMATS)}")
    return formats


# ------------------------------------------------------------------------ public API

def generate(
    out_dir: str | Path,
    *,
    formats: Sequence[str] = ALL_FORMATS,
    n_per_format: int = 1,
    seed: int = 0,
    pages: int = 1,
    paragraphs: int = 6,
) -> list[Fact]:
    """Write ``n_per_format`` files per format under ``out_dir/<fmt>/`` and return one
    :class:`Fact` per file. Each file holds exactly one planted fact sentence with a
    keyword that appears in no other file.

    ``paragraphs`` is the number of prose paragraphs per page; ``pages`` is the exact
    PDF page count (the fact is on the last page). Other formats get
    ``paragraphs * pages`` paragraphs (docx with page breaks between page groups,
    pptx one slide per paragraph, xlsx/csv two table rows per paragraph). In the
    PDF, prose that would overflow a page is dropped rather than adding a page
    (the fact is placed at the top of the last page, so it is never dropped).

    Files are ``<fmt>/<fmt>-NNN.<fmt>``; ``Fact.file`` is that relative path.
    """
    formats = _check_formats(formats)
    pages = max(1, int(pages))
    paragraphs = max(1, int(paragraphs))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    corpus_rng = _rng("corpus", seed)
    used: set[str] = set()
    templates = list(_FACT_TEMPLATES)
    corpus_rng.shuffle(templates)
    facts: list[Fact] = []
    k = 0
    for fmt in formats:
        (out / fmt).mkdir(exist_ok=True)
        for i in range(n_per_format):
            kw = _keyword(corpus_rng, used)
            key = f"{seed}:{fmt}:{i}"
            rng = _rng("doc", key)
            phrase, query = _make_fact_text(rng, templates[k % len(templates)], kw)
            k += 1
            date = FIXED_DATE + timedelta(days=k, minutes=seed % 1440)
            n_par = paragraphs * pages
            if fmt == "pdf":
                # Strict pages: the fact goes into one of the first two paragraphs of
                # the first section on the last page, so it always fits there.
                doc = _build_doc(rng, n_par, None, date, key)
                first_on_last = _split_pages(doc, pages)[-1][0][1]
                j = rng.randrange(min(2, len(first_on_last)))
                first_on_last[j] = _plant(rng, first_on_last[j], phrase)
                doc.fact = phrase
            else:
                doc = _build_doc(rng, n_par, phrase, date, key)
            rel = f"{fmt}/{fmt}-{i:03d}.{_EXT[fmt]}"
            _write(fmt, doc, out / rel, rng, pages=pages, flow_pdf=False)
            facts.append(Fact(file=rel, fmt=fmt, phrase=phrase, query=query, keyword=kw))
    return facts


def generate_long_docx(
    path: str | Path,
    *,
    sections: int = 10,
    paragraphs_per_section: int = 4,
    seed: int = 0,
) -> list[str]:
    """Write a docx with a title, ``sections`` Heading-1 sections, each followed by
    ``paragraphs_per_section`` body paragraphs of 60-90 words. Returns the body
    paragraph texts in document order (index ``s * paragraphs_per_section + p``;
    headings and the title are not included)."""
    import docx

    path = Path(path)
    rng = _rng("long", seed, sections, paragraphs_per_section)
    company, title = _title(rng)
    date = FIXED_DATE
    d = docx.Document()
    _set_core(d.core_properties, title=title, author=company, date=date)
    d.sections[0].header.paragraphs[0].text = f"{company} - {title}"
    d.sections[0].footer.paragraphs[0].text = "Internal use only."
    d.add_heading(title, level=0)
    written: list[str] = []
    for s in range(sections):
        d.add_heading(f"{s + 1}. {_HEADINGS[(s + rng.randrange(len(_HEADINGS))) % len(_HEADINGS)]}", level=1)
        for _ in range(paragraphs_per_section):
            p = _paragraph(rng, 60, 90)
            d.add_paragraph(p)
            written.append(p)
    _save_ooxml(d, path, date)
    return written


def _section_body_paragraphs(document) -> list[list]:
    """Body paragraphs grouped by Heading 1 (paragraphs before the first are ignored)."""
    groups: list[list] = []
    for p in document.paragraphs:
        style = p.style.name if p.style is not None else ""
        if style == "Heading 1":
            groups.append([])
        elif style.startswith("Heading") or style == "Title":
            continue
        elif groups:
            groups[-1].append(p)
    return groups


def edit_paragraph(path: str | Path, section_index: int, paragraph_index: int, new_text: str) -> str:
    """Replace the text of body paragraph ``paragraph_index`` of section
    ``section_index`` (0-based, as laid out by :func:`generate_long_docx`) and
    rewrite the file in place; every other part and paragraph stays identical
    (same fixed metadata and zip timestamps). Returns the old text."""
    import docx

    path = Path(path)
    d = docx.Document(str(path))
    groups = _section_body_paragraphs(d)
    try:
        para = groups[section_index][paragraph_index]
    except IndexError:
        raise IndexError(
            f"no paragraph {paragraph_index} in section {section_index} "
            f"({len(groups)} sections)") from None
    old = para.text
    runs = para.runs
    if runs:
        runs[0].text = new_text
        for r in runs[1:]:
            r._element.getparent().remove(r._element)
    else:
        para.add_run(new_text)
    # Keep the stored core dates: read them back out of the original archive.
    with zipfile.ZipFile(path) as z:
        core = z.read("docProps/core.xml") if "docProps/core.xml" in z.namelist() else b""
    m = re.search(rb"<dcterms:modified[^>]*>([^<]+)</dcterms:modified>", core)
    date = (datetime.strptime(m.group(1).decode(), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
            if m else FIXED_DATE)
    _save_ooxml(d, path, date)
    return old


def generate_bench_corpus(
    out_dir: str | Path,
    n_docs: int,
    *,
    seed: int = 0,
    formats: Sequence[str] = ("docx", "pdf", "md", "txt", "html"),
    paragraphs: int = 12,
) -> list[Path]:
    """Write ``n_docs`` fact-free documents (``bench-00000.<fmt>``, ...) cycling
    through ``formats``; each has between ~2/3 and ~3/2 of ``paragraphs`` paragraphs
    (about 1-3 pages). Returns the paths in order."""
    formats = _check_formats(formats)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    lo, hi = max(1, paragraphs * 2 // 3), max(1, paragraphs * 3 // 2)
    for i in range(n_docs):
        fmt = formats[i % len(formats)]
        key = f"bench:{seed}:{i}"
        rng = _rng(key)
        doc = _build_doc(rng, rng.randint(lo, hi), None, FIXED_DATE + timedelta(days=i % 3650), key,
                         per_section=rng.randint(2, 4))
        p = out / f"bench-{i:05d}.{_EXT[fmt]}"
        _write(fmt, doc, p, rng, pages=1, flow_pdf=True)
        paths.append(p)
    return paths


# ------------------------------------------------------------------------------- CLI

def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m corpora.generate",
        description="Write a synthetic multi-format corpus with known facts.")
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--n-per-format", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pages", type=int, default=1)
    ap.add_argument("--paragraphs", type=int, default=6)
    ap.add_argument("--formats", default=",".join(ALL_FORMATS),
                    help="comma-separated subset of: " + ",".join(ALL_FORMATS))
    ap.add_argument("--facts-json", type=Path, default=None,
                    help="where to write the facts (default: OUT_DIR.facts.json next to "
                         "OUT_DIR, kept outside the corpus so its keywords stay unique); "
                         "'-' for stdout")
    a = ap.parse_args(argv)
    formats = [f.strip() for f in a.formats.split(",") if f.strip()]
    try:
        facts = generate(a.out_dir, formats=formats, n_per_format=a.n_per_format, seed=a.seed,
                         pages=a.pages, paragraphs=a.paragraphs)
    except ValueError as exc:
        ap.error(str(exc))
    payload = json.dumps([asdict(f) for f in facts], indent=2) + "\n"
    if a.facts_json is not None and str(a.facts_json) == "-":
        sys.stdout.write(payload)
        print(f"wrote {len(facts)} files to {a.out_dir}", file=sys.stderr)
        return 0
    facts_path = a.facts_json or a.out_dir.resolve().with_name(a.out_dir.resolve().name + ".facts.json")
    facts_path.parent.mkdir(parents=True, exist_ok=True)
    facts_path.write_text(payload, encoding="utf-8")
    print(f"wrote {len(facts)} files to {a.out_dir} (facts: {facts_path})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
