"""Tests for the synthetic known-facts corpus generator (corpora/generate.py)."""
from __future__ import annotations

import csv
import email
import email.policy
import json
import subprocess
import sys
import time
import zipfile
from dataclasses import asdict
from html.parser import HTMLParser
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # also works under bare `pytest` without an install
    sys.path.insert(0, str(REPO))

from corpora.generate import (  # noqa: E402
    ALL_FORMATS,
    Fact,
    edit_paragraph,
    generate,
    generate_bench_corpus,
    generate_long_docx,
)


# ---------------------------------------------------------------- reopen helpers

class _HTMLText(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def _norm(s: str) -> str:
    return " ".join(s.split())


def reopen_text(path: Path, fmt: str) -> str:
    """Open ``path`` with a real parser for its format and return all its text."""
    if fmt == "docx":
        import docx

        d = docx.Document(str(path))
        parts = [p.text for p in d.paragraphs]
        for t in d.tables:
            parts += [c.text for row in t.rows for c in row.cells]
        for s in d.sections:
            parts += [p.text for p in s.header.paragraphs] + [p.text for p in s.footer.paragraphs]
        return "\n".join(parts)
    if fmt == "pdf":
        from pypdf import PdfReader

        return "\n".join(p.extract_text() or "" for p in PdfReader(str(path)).pages)
    if fmt in ("md", "txt"):
        return path.read_text(encoding="utf-8")
    if fmt == "html":
        h = _HTMLText()
        h.feed(path.read_text(encoding="utf-8"))
        h.close()
        return "\n".join(h.parts)
    if fmt == "pptx":
        from pptx import Presentation

        parts = []
        for slide in Presentation(str(path)).slides:
            for shape in slide.shapes:
                if shape.has_text_frame:
                    parts.append(shape.text_frame.text)
        return "\n".join(parts)
    if fmt == "xlsx":
        from openpyxl import load_workbook

        wb = load_workbook(str(path), read_only=True)
        parts = [str(v) for ws in wb.worksheets for row in ws.iter_rows(values_only=True)
                 for v in row if v is not None]
        wb.close()
        return "\n".join(parts)
    if fmt == "csv":
        with path.open(encoding="utf-8", newline="") as f:
            return "\n".join(cell for row in csv.reader(f) for cell in row)
    if fmt == "eml":
        msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        return msg["Subject"] + "\n" + msg.get_body(("plain",)).get_content()
    raise AssertionError(fmt)


def _all_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------- tests

@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus")
    facts = generate(out, n_per_format=2, seed=7, pages=2)
    return out, facts


def test_generate_writes_every_format(corpus):
    out, facts = corpus
    assert len(facts) == 2 * len(ALL_FORMATS)
    assert {f.fmt for f in facts} == set(ALL_FORMATS)
    for f in facts:
        assert isinstance(f, Fact)
        p = out / f.file
        assert p.is_file() and p.stat().st_size > 0, f.file
        assert p.suffix == "." + f.fmt
        assert f.keyword in f.phrase and f.keyword in f.query
    # every fact is distinct
    assert len({f.phrase for f in facts}) == len(facts)
    assert len({f.keyword for f in facts}) == len(facts)
    assert len({f.file for f in facts}) == len(facts)
    # nothing else lands in the corpus directory
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == \
        sorted(f.file for f in facts)


def test_each_file_reopens_with_its_fact_and_unique_keyword(corpus):
    out, facts = corpus
    texts = {f.file: reopen_text(out / f.file, f.fmt) for f in facts}
    for f in facts:
        text = texts[f.file]
        assert len(text.split()) > 100, f"{f.file}: too little prose"
        assert _norm(f.phrase) in _norm(text), f"{f.file}: phrase missing"
        assert text.count(f.keyword) == 1, f"{f.file}: keyword should appear exactly once"
        others = [g for g in facts if g.file != f.file and g.keyword in text]
        assert not others, f"{f.file} also contains keywords of {[g.file for g in others]}"


def test_raw_text_formats_contain_phrase_verbatim(corpus):
    out, facts = corpus
    for f in facts:
        if f.fmt in ("md", "txt", "html", "csv", "eml"):
            assert f.phrase in (out / f.file).read_text(encoding="utf-8"), f.file


def test_format_structure(corpus):
    import docx
    from openpyxl import load_workbook
    from pptx import Presentation
    from pypdf import PdfReader

    out, facts = corpus
    by_fmt = {f.fmt: f for f in facts}

    d = docx.Document(str(out / by_fmt["docx"].file))
    styles = [p.style.name for p in d.paragraphs]
    assert "Title" in styles and styles.count("Heading 1") >= 2
    assert len(d.tables) == 1 and len(d.tables[0].rows) >= 2
    assert d.sections[0].header.paragraphs[0].text.strip()
    assert d.sections[0].footer.paragraphs[0].text.strip()
    assert d.core_properties.author and d.core_properties.title

    reader = PdfReader(str(out / by_fmt["pdf"].file))
    assert len(reader.pages) == 2
    assert _norm(by_fmt["pdf"].phrase) in _norm(reader.pages[-1].extract_text())
    assert by_fmt["pdf"].keyword not in reader.pages[0].extract_text()

    prs = Presentation(str(out / by_fmt["pptx"].file))
    assert len(prs.slides) >= 3
    assert all(s.shapes.title is not None and s.shapes.title.text for s in prs.slides)

    ws = load_workbook(str(out / by_fmt["xlsx"].file)).active
    rows = list(ws.iter_rows(values_only=True))
    assert rows[0][0] == "Region" and len(rows) > 5
    assert any(by_fmt["xlsx"].phrase in row for row in rows[1:])  # whole phrase in one cell

    with (out / by_fmt["csv"].file).open(encoding="utf-8", newline="") as fh:
        crow = list(csv.reader(fh))
    assert crow[0][0] == "Region" and any(by_fmt["csv"].phrase in row for row in crow[1:])

    msg = email.message_from_bytes((out / by_fmt["eml"].file).read_bytes(), policy=email.policy.default)
    assert msg["Subject"] and "@" in msg["From"] and "@" in msg["To"] and msg["Date"]
    assert by_fmt["eml"].phrase in msg.get_content()

    md = (out / by_fmt["md"].file).read_text()
    assert md.startswith("# ") and "\n## " in md
    page = (out / by_fmt["html"].file).read_text()
    assert "<h1>" in page and "<h2>" in page and "<p>" in page


def test_same_seed_is_reproducible_byte_for_byte(tmp_path):
    a = generate(tmp_path / "a", seed=11, n_per_format=2)
    b = generate(tmp_path / "b", seed=11, n_per_format=2)
    assert a == b
    ba, bb = _all_bytes(tmp_path / "a"), _all_bytes(tmp_path / "b")
    assert ba.keys() == bb.keys()
    differing = [k for k in ba if ba[k] != bb[k]]
    assert not differing, f"not byte-identical: {differing}"


def test_other_seed_gives_other_facts(tmp_path):
    a = generate(tmp_path / "a", seed=1, formats=("md", "txt"))
    b = generate(tmp_path / "b", seed=2, formats=("md", "txt"))
    assert {f.keyword for f in a}.isdisjoint({f.keyword for f in b})
    assert [f.phrase for f in a] != [f.phrase for f in b]


def test_formats_subset_and_bad_format(tmp_path):
    facts = generate(tmp_path, formats=("pdf",), n_per_format=3, pages=3, paragraphs=4)
    from pypdf import PdfReader

    for f in facts:
        pages = PdfReader(str(tmp_path / f.file)).pages
        assert len(pages) == 3
        assert _norm(f.phrase) in _norm(pages[-1].extract_text())
    with pytest.raises(ValueError):
        generate(tmp_path / "x", formats=("doc",))


def test_long_docx_and_edit_paragraph(tmp_path):
    import docx

    path = tmp_path / "long.docx"
    paras = generate_long_docx(path, sections=10, paragraphs_per_section=4, seed=3)
    assert len(paras) == 40
    assert all(55 <= len(p.split()) <= 95 for p in paras), [len(p.split()) for p in paras]
    total = sum(len(p.split()) for p in paras)
    assert 2400 <= total <= 3600  # ~20 chunks of ~200 words when chunked per section

    d = docx.Document(str(path))
    assert [p.style.name for p in d.paragraphs].count("Heading 1") == 10
    body = [p.text for p in d.paragraphs if p.style.name == "Normal"]
    assert body == paras

    assert generate_long_docx(tmp_path / "again.docx", seed=3) == paras
    assert (tmp_path / "again.docx").read_bytes() == path.read_bytes()

    before_parts = {n: zipfile.ZipFile(path).read(n) for n in zipfile.ZipFile(path).namelist()}
    before = [p.text for p in docx.Document(str(path)).paragraphs]
    new_text = "This paragraph was rewritten for the incremental re-indexing test."
    old = edit_paragraph(path, 4, 2, new_text)
    assert old == paras[4 * 4 + 2]
    after = [p.text for p in docx.Document(str(path)).paragraphs]
    assert len(after) == len(before)
    changed = [i for i, (x, y) in enumerate(zip(before, after)) if x != y]
    assert len(changed) == 1 and after[changed[0]] == new_text and before[changed[0]] == old

    z = zipfile.ZipFile(path)
    after_parts = {n: z.read(n) for n in z.namelist()}
    assert after_parts.keys() == before_parts.keys()
    assert [n for n in after_parts if after_parts[n] != before_parts[n]] == ["word/document.xml"]

    with pytest.raises(IndexError):
        edit_paragraph(path, 10, 0, "x")


def test_bench_corpus(tmp_path):
    t0 = time.perf_counter()
    paths = generate_bench_corpus(tmp_path, 25, seed=5)
    elapsed = time.perf_counter() - t0
    assert len(paths) == 25 and len(set(paths)) == 25
    assert [p.suffix for p in paths[:5]] == [".docx", ".pdf", ".md", ".txt", ".html"]
    for p in paths:
        assert p.is_file() and p.stat().st_size > 0
        words = len(reopen_text(p, p.suffix[1:]).split())
        assert 400 <= words <= 2500, (p.name, words)
    from pypdf import PdfReader

    assert all(1 <= len(PdfReader(str(p)).pages) <= 4 for p in paths if p.suffix == ".pdf")
    assert generate_bench_corpus(tmp_path / "again", 25, seed=5)[0].read_bytes() == paths[0].read_bytes()
    assert elapsed < 30  # generous; typically well under a second


def test_cli(tmp_path):
    out = tmp_path / "corpus"
    facts_json = tmp_path / "facts.json"
    r = subprocess.run(
        [sys.executable, "-m", "corpora.generate", str(out), "--n-per-format", "2",
         "--seed", "4", "--facts-json", str(facts_json)],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "wrote 18 files" in r.stdout
    data = json.loads(facts_json.read_text())
    assert data == [asdict(f) for f in generate(tmp_path / "py", n_per_format=2, seed=4)]
    assert all((out / d["file"]).is_file() for d in data)
