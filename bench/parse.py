"""Parse speed and text agreement: our extractors against ``unstructured``, same files, one run.

For every file, in the same process and one after the other:

  ours          ``extractors.extract(path, ctx=ExtractContext(ocr=False, workdir=...))``
                (in process, no sandbox; OCR off so that both sides read text layers only)
  unstructured  ``unstructured.partition.auto.partition(filename=path, strategy="fast")``
                (``DO_NOT_TRACK=1`` and ``extractors.spacy_shim.install()`` first, so it never
                downloads its spaCy model nor phones home)

Both sides are warmed up on two files of each format (the smallest and the median-sized)
before anything is timed (the first calls import the parsers, load spaCy, compile numba
kernels; both sides share this process, so a one-time cost left over would be paid by
whichever side meets it first). Each call has a
``--timeout`` (30 s, ``signal.setitimer``); a file on which either side times out, fails,
or returns no text is left out of the speed and recall figures and listed with the
reason.

Figures per format, over the files both sides parsed with text:

  files/s   files / sum of per-file wall times (best of ``--repeats``)
  pages/s   PDF: pages counted with pypdf (outside the timing); other formats: 1 per file
  recall    token recall of our text against unstructured's: |multiset intersection| /
            |unstructured tokens| (mean, and the min with its file); "precision" is the
            same intersection over our tokens (low = we emit text unstructured does not:
            headers, table markup, ...). Tokens (decided 2026-11-27, issue 3): both texts
            NFKC-normalised (a ligature "\ufb01" is "fi") and lowercased; CJK ideographs
            and kana one token each (``\\w+`` makes a whole Japanese line one "word" whose
            boundaries depend only on where a parser put spaces); other ``\\w+`` runs as
            they are. On unstructured's side pdfminer's "(cid:N)" placeholders are dropped:
            they stand for glyphs it could not map to any character, not for text. And an
            unstructured token that is up to ``GLUE_MAX`` (8) of our consecutive tokens run
            together ("stripthecable" against our "strip the cable": pdfminer's layout
            drops the spaces between text runs) counts as found, using up those tokens
            (never the other way round: words we run together still count as missed).
  recall_raw  the figure before that decision: plain lowercase ``\\w+`` tokens of both
            texts as they are, no glue credit; reported beside it (and recall_noglue,
            without the glue credit), so the effect of each rule is visible.

Diagnostics (not part of the target): per-file median speed-up and the speed-up without
the file unstructured is slowest on (the sums are dominated by the largest files); and
for PDFs a third side, plain pypdfium2 ``get_text_range`` per page (not our extractor),
timed and scored the same way. The files with recall < ``--low-recall`` (0.99) keep
their most-missed tokens in the JSON (and < 0.9 precision their most-extra ones). A file
where unstructured's text is nothing but "(cid:N)" placeholders is left out.

Target (PDF and DOCX): ours >= 3x unstructured files/s, mean recall >= 0.95.

Files (``../shared/corpora``):

  PDF    up to ``--max-pdfs`` (60) with a text layer (>= 100 visible characters on the
         first 3 pages, counted with pypdfium2, a third parser, so the selection favours
         neither side), <= 5 MB, not needing a password (an empty user password is fine),
         byte-identical duplicates dropped; all of unstructured-example-docs,
         pypdf-sample-files and pdfminer-samples first, then pypdf-resources,
         tika-test-documents and pdfjs-test-pdfs in turn to fill up
  DOCX   every .docx of python-docx, unstructured-example-docs and tika-test-documents
         (<= 5 MB, not encrypted, duplicates dropped)
  other  md, html, pptx, xlsx, csv, eml, txt of unstructured-example-docs, reported as
         measured (our md/html/pptx/xlsx/csv extractors call unstructured's per-format
         partitioners themselves, so ~1x is expected there)

unstructured's PDF partitioner needs its ``[pdf]`` extra, which the project does not
install (``pyproject.toml`` asks for ``unstructured[md,pptx,xlsx,docx]``), and the full
extra drags in CUDA torch and a pypdf downgrade. ``--setup-venv`` builds a side venv
(``--venv``, default /tmp/unstructured-pdf-venv, ``--system-site-packages``) with just
what ``partition_pdf(strategy="fast")`` imports; when the running interpreter lacks those
modules and that venv exists, the script re-runs itself under it (the project's own
packages are the same ones, through the system site-packages). ``--no-pdf-baseline``
runs without it (PDF then has no unstructured figures).

    python bench/parse.py [--setup-venv] [--max-pdfs 60] [--timeout 30] [--repeats 1]
"""
from __future__ import annotations

import _common  # noqa: F401  (sets HF_HUB_OFFLINE, DO_NOT_TRACK, TOKENIZERS_PARALLELISM first)

import argparse
import gc
import hashlib
import importlib.util
import logging
import os
import re
import signal
import statistics
import subprocess
import sys
import time
import unicodedata
import warnings
from collections import Counter
from pathlib import Path

from _common import REPO, table, verdict, work_dir, write_results

CORPORA = REPO.parent / "shared" / "corpora"
TARGET_SPEEDUP = 3.0
TARGET_RECALL = 0.95
DEFAULT_VENV = Path("/tmp/unstructured-pdf-venv")
MAX_BYTES = 5 * 1024 * 1024

# What unstructured 0.27's partition_pdf(strategy="fast") imports (module -> pip name).
PDF_BASELINE_MODULES = {
    "pdfminer": "pdfminer.six>=20251230,<20270000",
    "pdf2image": "pdf2image>=1.17,<2",
    "pi_heif": "pi_heif>=1.2,<2",
    "pikepdf": "pikepdf",  # without it unstructured logs "PDF text extraction failed" and returns []
    "cv2": "opencv-python-headless",
    "onnxruntime": "onnxruntime",
    "onnx": "onnx",
    "matplotlib": "matplotlib",
}
# unstructured-inference pins CUDA torch (and more); installed without dependencies,
# with the two of its dependencies that the import chain needs and the project lacks.
PDF_BASELINE_NODEPS = ["unstructured_inference>=1.6.12,<2", "timm", "accelerate"]

PDF_SOURCES_FIRST = ["unstructured-example-docs", "pypdf-sample-files", "pdfminer-samples"]
PDF_SOURCES_FILL = ["pypdf-resources", "tika-test-documents", "pdfjs-test-pdfs"]
DOCX_SOURCES = ["python-docx", "unstructured-example-docs", "tika-test-documents"]
OTHER_FORMATS = {  # format -> extensions, from unstructured-example-docs
    "md": (".md",), "html": (".html", ".htm"), "pptx": (".pptx",), "xlsx": (".xlsx",),
    "csv": (".csv",), "eml": (".eml",), "txt": (".txt",),
}
FORMAT_ORDER = ["pdf", "docx", *OTHER_FORMATS]

_TOKEN = re.compile(r"\w+")
_CID = re.compile(r"\(cid:\d+\)")
# Normalised tokens (diagnostic): every CJK ideograph / kana is a token of its own, because
# \w+ turns a Japanese or Chinese line into one "word" whose boundaries depend only on
# where a parser happened to put spaces.
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_TOKEN_NORM = re.compile(f"[{_CJK}]|[^\\W{_CJK}]+")


def pdfium_text(path: str) -> str:
    """Diagnostic third side for PDFs (not our extractor): pypdfium2's plain text layer."""
    import pypdfium2 as pdfium

    doc = pdfium.PdfDocument(path)
    try:
        return "\n\n".join(doc[i].get_textpage().get_text_range() for i in range(len(doc)))
    finally:
        doc.close()


# ---------------------------------------------------------------------------- baseline env

def missing_pdf_modules() -> list[str]:
    missing = [m for m in PDF_BASELINE_MODULES if importlib.util.find_spec(m) is None]
    if importlib.util.find_spec("unstructured_inference") is None:
        missing.append("unstructured_inference")
    return missing


def setup_venv(venv: Path) -> None:
    py = venv / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    pip = [str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run(pip + list(PDF_BASELINE_MODULES.values()), check=True)
    subprocess.run(pip + ["--no-deps"] + PDF_BASELINE_NODEPS, check=True)
    print(f"baseline venv ready: {venv}")


# ---------------------------------------------------------------------------- timeouts

class CallTimeout(BaseException):
    """A BaseException, so that parsers' ``except Exception`` fallbacks cannot swallow it
    (unstructured's partition_pdf catches Exception around its text extraction)."""


def _on_alarm(signum, frame):
    raise CallTimeout()


def call_with_timeout(fn, timeout: float):
    """(result, seconds, error) with a wall-clock limit (SIGALRM; both parsers are pure
    Python in the hot path, so the signal is taken promptly)."""
    old = signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    t0 = time.perf_counter()
    try:
        res = fn()
        dt = time.perf_counter() - t0
        if dt >= timeout:  # the alarm fired inside a C call or was swallowed anyway
            return None, dt, f"timeout (> {timeout:g} s)"
        return res, dt, None
    except CallTimeout:
        return None, time.perf_counter() - t0, f"timeout (> {timeout:g} s)"
    except Exception as e:  # noqa: BLE001 - reported per file
        return None, time.perf_counter() - t0, f"{type(e).__name__}: {str(e)[:200]}"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


# ---------------------------------------------------------------------------- file selection

def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _pdf_probe(p: Path) -> tuple[str | None, int, int]:
    """(reason to skip or None, pypdf page count, visible chars on first 3 pages by pdfium)."""
    import pypdf
    import pypdfium2 as pdfium

    try:
        r = pypdf.PdfReader(p, strict=False)
        if r.is_encrypted:
            try:
                if not r.decrypt(""):
                    return "encrypted (password required)", 0, 0
            except Exception:  # noqa: BLE001
                return "encrypted (password required)", 0, 0
        pages = len(r.pages)
    except Exception as e:  # noqa: BLE001
        return f"pypdf cannot open: {type(e).__name__}", 0, 0
    try:
        doc = pdfium.PdfDocument(str(p))
        chars = 0
        for i in range(min(3, len(doc))):
            t = doc[i].get_textpage().get_text_range()
            chars += sum(1 for c in t if not c.isspace())
        doc.close()
    except Exception as e:  # noqa: BLE001
        return f"pdfium cannot open: {type(e).__name__}", pages, 0
    if chars < 100:
        return f"no text layer ({chars} chars on pages 1-3)", pages, chars
    return None, pages, chars


def select_files(max_pdfs: int) -> tuple[dict[str, list[dict]], list[dict]]:
    """format -> [{"path", "rel", "pages", "bytes"}], plus the files left out (with why)."""
    import extractors

    selected: dict[str, list[dict]] = {f: [] for f in FORMAT_ORDER}
    skipped: list[dict] = []
    seen: set[str] = set()

    def rel(p: Path) -> str:
        return str(p.relative_to(CORPORA))

    def too_big_or_dup(p: Path, fmt: str) -> bool:
        size = p.stat().st_size
        if size > MAX_BYTES:
            skipped.append({"format": fmt, "file": rel(p), "reason": f"over 5 MB ({size} bytes)"})
            return True
        h = _sha(p)
        if h in seen:
            return True  # byte-identical copy of a file already selected: not reported
        seen.add(h)
        return False

    # PDF: first sources whole, then the fill sources round-robin up to max_pdfs.
    def pdf_candidates(src: str) -> list[Path]:
        return sorted((CORPORA / src).rglob("*.pdf"))

    def take_pdf(p: Path) -> bool:
        if too_big_or_dup(p, "pdf"):
            return False
        why, pages, chars = _pdf_probe(p)
        if why:
            skipped.append({"format": "pdf", "file": rel(p), "reason": why})
            return False
        selected["pdf"].append({"path": str(p), "rel": rel(p), "pages": pages, "bytes": p.stat().st_size,
                                "pdfium_chars_p1_3": chars})
        return True

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.getLogger("pypdf").setLevel(logging.ERROR)
        for src in PDF_SOURCES_FIRST:
            for p in pdf_candidates(src):
                if len(selected["pdf"]) >= max_pdfs:
                    break
                take_pdf(p)
        queues = [pdf_candidates(s) for s in PDF_SOURCES_FILL]
        while len(selected["pdf"]) < max_pdfs and any(queues):
            for q in queues:
                while q and len(selected["pdf"]) < max_pdfs:
                    if take_pdf(q.pop(0)):
                        break

    for src in DOCX_SOURCES:
        for p in sorted((CORPORA / src).rglob("*.docx")):
            if too_big_or_dup(p, "docx"):
                continue
            mime = extractors.detect(p)
            if mime != extractors.mimes.DOCX:
                skipped.append({"format": "docx", "file": rel(p), "reason": f"detected as {mime}"})
                continue
            selected["docx"].append({"path": str(p), "rel": rel(p), "pages": 1, "bytes": p.stat().st_size})

    base = CORPORA / "unstructured-example-docs"
    for fmt, exts in OTHER_FORMATS.items():
        for p in sorted(base.rglob("*")):
            if p.is_file() and p.suffix.lower() in exts and not too_big_or_dup(p, fmt):
                selected[fmt].append({"path": str(p), "rel": rel(p), "pages": 1, "bytes": p.stat().st_size})
    return selected, skipped


# ---------------------------------------------------------------------------- the two sides

class LogTap(logging.Handler):
    """Collects unstructured's INFO+ messages during one call (fallbacks are logged, not raised)."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record):
        msg = record.getMessage()
        if "No languages specified" not in msg:
            self.messages.append(msg[:200])


# unstructured memoises spaCy work per text string (nlp/tokenize.py: lru_caches keyed on the
# text). Both sides share this process and our md/html/pptx/xlsx/csv extractors call
# unstructured too, so whichever side ran second on a file would find the other's results
# cached (seen: example-with-scripts.html 0.27 s first, 0.02 s second). Cleared before
# every timed call; the spaCy model itself (_get_nlp) stays loaded.
_TEXT_CACHES = ("_process_cached", "_tokenize_for_cache", "word_tokenize", "pos_tag")


def clear_text_caches() -> None:
    mod = sys.modules.get("unstructured.nlp.tokenize")
    for name in _TEXT_CACHES:
        fn = getattr(mod, name, None)
        if hasattr(fn, "cache_clear"):
            fn.cache_clear()


def tokens(text: str) -> Counter:
    """The raw tokens (``recall_raw``): lowercase ``\\w+`` words, nothing else."""
    return Counter(_TOKEN.findall(text.lower()))


def token_seq(text: str, reference: bool = False) -> list[str]:
    """The tokens the target recall counts, in text order: NFKC (so a ligature "ﬁ" is
    "fi" on both sides), lowercase, CJK ideographs/kana one by one, and on the reference
    side pdfminer's "(cid:N)" placeholders (glyphs it could not map to text) dropped."""
    if reference:
        text = _CID.sub(" ", text)
    return _TOKEN_NORM.findall(unicodedata.normalize("NFKC", text).lower())


def tokens_norm(text: str, reference: bool = False) -> Counter:
    return Counter(token_seq(text, reference))


GLUE_MAX = 8  # a reference token may be up to this many of our consecutive tokens


def glued_credit(ours_seq: list[str], missing: Counter, spare: Counter) -> int:
    """How many of the reference tokens we ``missing`` are words the reference glued
    together that we have apart ("stripthecable" vs "strip the cable": pdfminer's layout
    drops spaces between text runs). A glued token is credited only if all its parts are
    still ``spare`` (ours and not matched yet), and uses them up."""
    parts: dict[str, tuple[str, ...]] = {}
    for i in range(len(ours_seq)):
        for k in range(2, GLUE_MAX + 1):
            run = tuple(ours_seq[i:i + k])
            if len(run) < k:
                break
            parts.setdefault("".join(run), run)
    credit = 0
    for token, count in missing.most_common():
        run = parts.get(token)
        if not run:
            continue
        need = Counter(run)
        while count and all(spare[t] >= n for t, n in need.items()):
            spare.subtract(need)
            credit += 1
            count -= 1
    return credit


def agreement(ours: Counter, theirs: Counter, ours_seq: list[str] | None = None,
              ) -> tuple[float, float, list[tuple[str, int]], list[tuple[str, int]]]:
    """(recall, precision, most missed, most extra). With ``ours_seq`` (our tokens in
    order), reference tokens glued from our consecutive tokens count as found."""
    inter = sum((ours & theirs).values())
    missing, extra = theirs - ours, ours - theirs
    if ours_seq is not None and missing:
        credit = glued_credit(ours_seq, missing, Counter(extra))
        inter += credit
    n_t, n_o = sum(theirs.values()), sum(ours.values())
    recall = inter / n_t if n_t else float("nan")
    precision = inter / n_o if n_o else float("nan")
    return recall, min(precision, 1.0), missing.most_common(12), extra.most_common(12)


def score(ours_text: str, theirs_text: str) -> dict:
    """recall (the target figure), precision, recall_raw, recall_noglue; see the module
    docstring ("Agreement")."""
    seq_o, seq_t = token_seq(ours_text), token_seq(theirs_text, reference=True)
    c_o, c_t = Counter(seq_o), Counter(seq_t)
    out = {"recall_raw": agreement(tokens(ours_text), tokens(theirs_text))[0]}
    if not c_t:
        return out
    out["recall_noglue"] = agreement(c_o, c_t)[0]
    out["recall"], out["precision"], out["missing"], out["extra"] = agreement(c_o, c_t, seq_o)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--max-pdfs", type=int, default=60)
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds per call, either side")
    ap.add_argument("--repeats", type=int, default=1, help="timed calls per file and side (best kept)")
    ap.add_argument("--formats", default=",".join(FORMAT_ORDER), help="comma-separated subset")
    ap.add_argument("--venv", type=Path, default=DEFAULT_VENV)
    ap.add_argument("--setup-venv", action="store_true", help="build the PDF-baseline venv, then run in it")
    ap.add_argument("--no-pdf-baseline", action="store_true", help="do not look for / re-exec into the venv")
    ap.add_argument("--low-recall", type=float, default=0.99,
                    help="record the most-missed tokens of files below this recall")
    ap.add_argument("--no-pdfium", dest="pdfium", action="store_false",
                    help="skip the diagnostic pypdfium2 side on PDFs")
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args(argv)
    formats = [f for f in a.formats.split(",") if f]

    # -- make sure unstructured can partition PDFs, re-running under the side venv if needed
    missing = missing_pdf_modules() if "pdf" in formats else []
    if missing and not a.no_pdf_baseline:
        venv_py = a.venv / "bin" / "python"
        if a.setup_venv:
            setup_venv(a.venv)
        if venv_py.exists() and Path(sys.prefix).resolve() != a.venv.resolve():
            print(f"unstructured's PDF dependencies missing here ({', '.join(missing)}); "
                  f"re-running under {venv_py}", flush=True)
            args = [x for x in (argv if argv is not None else sys.argv[1:]) if x != "--setup-venv"]
            os.execv(str(venv_py), [str(venv_py), str(Path(__file__).resolve()), *args])
        if not venv_py.exists():
            print(f"unstructured cannot partition PDFs here (missing: {', '.join(missing)}).\n"
                  f"Run `python bench/parse.py --setup-venv` once (builds {a.venv}), or pass "
                  f"--no-pdf-baseline to measure PDF without the unstructured side.", file=sys.stderr)
            return 2
    pdf_baseline = not missing_pdf_modules() if "pdf" in formats else False

    from extractors import spacy_shim

    spacy_shim.install()
    import extractors
    from unstructured.__version__ import __version__ as unstructured_version
    from extractors.base import ExtractContext
    from unstructured.partition.auto import partition

    warnings.simplefilter("ignore")
    for name in ("pypdf", "pdfminer", "numba", "matplotlib", "PIL"):
        logging.getLogger(name).setLevel(logging.ERROR)
    ulog = logging.getLogger("unstructured")
    ulog.setLevel(logging.INFO)
    ulog.propagate = False
    tap = LogTap()
    ulog.addHandler(tap)

    t_sel = time.perf_counter()
    selected, skipped = select_files(a.max_pdfs)
    selected = {f: selected[f] for f in formats}
    skipped = [s for s in skipped if s["format"] in formats]
    print(f"selected in {time.perf_counter() - t_sel:.1f} s: "
          + ", ".join(f"{f} {len(v)}" for f, v in selected.items())
          + f"; skipped at selection: {len(skipped)}", flush=True)

    with work_dir(keep=a.keep, prefix="ingest-bench-parse-") as work:
        def ours(path: str):
            wd = work / "children"
            wd.mkdir(exist_ok=True)
            ex = extractors.extract(path, ctx=ExtractContext(ocr=False, workdir=wd))
            return ex.text, ex.extractor

        def theirs(path: str):
            els = partition(filename=path, strategy="fast")
            return "\n\n".join(e.text for e in els if getattr(e, "text", None)), "unstructured.partition.auto"

        rows_out: dict[str, list[dict]] = {}
        t_run = time.perf_counter()
        for fmt, files in selected.items():
            if not files:
                continue
            # -- warm-up, untimed: the smallest and the median-sized file of the format on
            # both sides (a tiny file alone can leave lazy one-time costs, e.g. loading spaCy
            # on the first narrative text, to whichever side meets a longer text first)
            by_size = sorted(files, key=lambda f: f["bytes"])
            for w in dict.fromkeys((by_size[0]["path"], by_size[len(by_size) // 2]["path"])):
                for side in (ours, theirs):
                    if fmt == "pdf" and side is theirs and not pdf_baseline:
                        continue
                    call_with_timeout(lambda: side(w), max(a.timeout, 60))
                if fmt == "pdf" and a.pdfium:
                    call_with_timeout(lambda: pdfium_text(w), a.timeout)
            results = []
            for i, f in enumerate(files):
                path = f["path"]
                Path(path).read_bytes()  # page cache warm for both sides alike
                rec = {"file": f["rel"], "pages": f["pages"], "bytes": f["bytes"]}
                sides = [("ours", ours), ("unstructured", theirs)]
                if i % 2:
                    sides.reverse()  # alternate who goes first
                texts: dict[str, str] = {}
                for name, fn in sides:
                    if fmt == "pdf" and name == "unstructured" and not pdf_baseline:
                        rec["unstructured_error"] = "PDF baseline unavailable"
                        continue
                    best, err, out = None, None, None
                    for _ in range(max(1, a.repeats)):
                        tap.messages.clear()
                        clear_text_caches()
                        gc.collect()
                        out, dt, err = call_with_timeout(lambda: fn(path), a.timeout)
                        if err:
                            break
                        best = dt if best is None else min(best, dt)
                    if name == "unstructured" and tap.messages:
                        rec["unstructured_log"] = sorted(set(tap.messages))[:5]
                    if err:
                        rec[f"{name}_error"] = err
                        continue
                    rec[f"{name}_s"] = best
                    texts[name] = out[0]
                    if name == "ours":
                        rec["our_extractor"] = out[1]
                if len(texts) == 2:
                    to, tt = tokens(texts["ours"]), tokens(texts["unstructured"])
                    rec["our_tokens"], rec["unstructured_tokens"] = sum(to.values()), sum(tt.values())
                    if not rec["unstructured_tokens"] and not rec["our_tokens"]:
                        rec["note"] = "neither side returned text"
                    elif not rec["unstructured_tokens"]:
                        rec["note"] = "unstructured returned no text"
                    elif not rec["our_tokens"]:
                        rec["note"] = "we returned no text"
                    elif not tokens_norm(texts["unstructured"], reference=True):
                        rec["note"] = "unstructured returned only (cid:N) placeholders"
                    else:
                        sc = score(texts["ours"], texts["unstructured"])
                        rec["recall"], rec["precision"] = sc["recall"], sc["precision"]
                        rec["recall_noglue"], rec["recall_raw"] = sc["recall_noglue"], sc["recall_raw"]
                        if sc["recall"] < a.low_recall:
                            rec["top_missing"] = sc["missing"]
                        if sc["precision"] < 0.9:
                            rec["top_extra"] = sc["extra"]
                        if fmt == "pdf" and a.pdfium:
                            gc.collect()
                            out, dt, err = call_with_timeout(lambda: pdfium_text(path), a.timeout)
                            if err:
                                rec["pdfium_error"] = err
                            else:
                                rec["pdfium_s"] = dt
                                sc = score(out, texts["unstructured"])
                                rec["pdfium_recall"] = sc["recall"]
                                rec["pdfium_recall_raw"] = sc["recall_raw"]
                results.append(rec)
                flag = ""
                for k in ("ours_error", "unstructured_error", "note"):
                    if k in rec:
                        flag += f" [{k}: {rec[k]}]"
                print(f"  {fmt:5s} {i + 1:3d}/{len(files)} {f['rel'][:70]:70s} "
                      f"ours {rec.get('ours_s', float('nan')):7.3f}s unst {rec.get('unstructured_s', float('nan')):7.3f}s "
                      f"recall {rec.get('recall', float('nan')):.3f}{flag}", flush=True)
            rows_out[fmt] = results
        run_s = time.perf_counter() - t_run

    # -- aggregate
    summary: dict[str, dict] = {}
    table_rows = []
    verdicts: dict[str, str] = {}
    for fmt, results in rows_out.items():
        both = [r for r in results if "recall" in r]
        s_o = sum(r["ours_s"] for r in both)
        s_u = sum(r["unstructured_s"] for r in both)
        pages = sum(r["pages"] for r in both)
        rec = [r["recall"] for r in both]
        prec = [r["precision"] for r in both]
        worst = min(both, key=lambda r: r["recall"]) if both else None
        agg = {
            "files_selected": len(results),
            "files_compared": len(both),
            "pages_compared": pages,
            "pages_note": "pypdf page count" if fmt == "pdf" else "1 per file",
            "ours_seconds": s_o,
            "unstructured_seconds": s_u,
            "ours_files_per_s": len(both) / s_o if s_o else None,
            "unstructured_files_per_s": len(both) / s_u if s_u else None,
            "speedup": (s_u / s_o) if s_o and s_u else None,
            # per-file view: the sum above is dominated by the largest files
            "speedup_per_file_median": statistics.median(r["unstructured_s"] / max(r["ours_s"], 1e-6) for r in both)
            if both else None,
            "speedup_excl_largest_file": ((s_u - max(both, key=lambda r: r["unstructured_s"])["unstructured_s"])
                                          / (s_o - max(both, key=lambda r: r["unstructured_s"])["ours_s"]))
            if len(both) > 1 else None,
            "ours_pages_per_s": pages / s_o if s_o else None,
            "unstructured_pages_per_s": pages / s_u if s_u else None,
            "recall_mean": statistics.fmean(rec) if rec else None,
            "recall_median": statistics.median(rec) if rec else None,
            "recall_min": worst["recall"] if worst else None,
            "recall_min_file": worst["file"] if worst else None,
            "precision_mean": statistics.fmean(prec) if prec else None,
            "recall_raw_mean": statistics.fmean(r["recall_raw"] for r in both) if both else None,
            "recall_noglue_mean": statistics.fmean(r["recall_noglue"] for r in both) if both else None,
            "files_below_0.95_raw": sum(1 for r in both if r["recall_raw"] < 0.95),
            "files_below_0.95": sum(1 for x in rec if x < 0.95),
            "left_out": [{"file": r["file"], "why": r.get("ours_error") and f"ours: {r['ours_error']}"
                          or r.get("unstructured_error") and f"unstructured: {r['unstructured_error']}"
                          or r.get("note"),
                          **({"unstructured_log": r["unstructured_log"]} if "unstructured_log" in r else {})}
                         for r in results if "recall" not in r],
        }
        # all-files view: time on every file each side parsed (not the same set)
        agg["ours_files_per_s_all_parsed"] = (
            sum(1 for r in results if "ours_s" in r) / (sum(r["ours_s"] for r in results if "ours_s" in r) or float("nan")))
        pdfium = [r for r in both if "pdfium_recall" in r]
        if pdfium:
            s_p = sum(r["pdfium_s"] for r in pdfium)
            agg["pdfium_diagnostic"] = {
                "what": "pypdfium2 get_text_range per page (NOT our extractor): a candidate engine, same files",
                "files": len(pdfium),
                "files_per_s": len(pdfium) / s_p if s_p else None,
                "pages_per_s": sum(r["pages"] for r in pdfium) / s_p if s_p else None,
                "speedup_vs_unstructured": sum(r["unstructured_s"] for r in pdfium) / s_p if s_p else None,
                "recall_mean": statistics.fmean(r["pdfium_recall"] for r in pdfium),
                "recall_raw_mean": statistics.fmean(r["pdfium_recall_raw"] for r in pdfium),
                "files_below_0.95": sum(1 for r in pdfium if r["pdfium_recall"] < 0.95),
            }
        if fmt in ("pdf", "docx"):
            ok = bool(both) and (agg["speedup"] or 0) >= TARGET_SPEEDUP and agg["recall_mean"] >= TARGET_RECALL
            verdicts[fmt] = verdict(ok)
            agg["verdict"] = verdicts[fmt]
        summary[fmt] = agg

        def f2(x, d=1):
            return "-" if x is None else f"{x:.{d}f}"

        table_rows.append((fmt, f"{len(both)}/{len(results)}", f2(agg["ours_files_per_s"]),
                           f2(agg["unstructured_files_per_s"]), f2(agg["speedup"]) + "x" if agg["speedup"] else "-",
                           f2(agg["ours_pages_per_s"]), f2(agg["unstructured_pages_per_s"]),
                           f2(agg["recall_mean"], 3), f2(agg["recall_min"], 3),
                           (worst["file"].split("/", 1)[-1][:48] if worst else "-"), verdicts.get(fmt, "as measured")))

    headers = ("format", "files", "ours f/s", "unst f/s", "speed-up", "ours p/s", "unst p/s",
               "recall mean", "recall min", "min file", "target")
    print()
    print(table(table_rows, headers))
    print("\nfiles = compared/selected (compared: both sides parsed, both returned text); "
          "pages: PDF = pypdf page count, other formats = 1 per file.")
    print(f"target (PDF, DOCX): >= {TARGET_SPEEDUP:g}x unstructured files/s and mean recall >= {TARGET_RECALL}")
    diag = []
    for fmt, agg in summary.items():
        if agg["files_compared"]:
            diag.append((fmt, f"{agg['speedup_per_file_median']:.1f}x",
                         "-" if agg["speedup_excl_largest_file"] is None else f"{agg['speedup_excl_largest_file']:.1f}x",
                         f"{agg['recall_median']:.3f}", agg["files_below_0.95"],
                         f"{agg['recall_noglue_mean']:.3f}", f"{agg['recall_raw_mean']:.3f}",
                         agg["files_below_0.95_raw"], f"{agg['precision_mean']:.3f}", len(agg["left_out"])))
    print()
    print(table(diag, ("format", "speed-up per-file median", "speed-up w/o slowest file", "recall median",
                       "files < 0.95", "recall mean, no glue credit", "recall mean, raw \\w+",
                       "files < 0.95 raw", "precision mean", "left out")))
    pd = summary.get("pdf", {}).get("pdfium_diagnostic")
    if pd:
        print(f"\ndiagnostic, PDF: plain pypdfium2 text on the same {pd['files']} files: "
              f"{pd['files_per_s']:.1f} files/s, {pd['pages_per_s']:.1f} pages/s "
              f"({pd['speedup_vs_unstructured']:.1f}x unstructured), recall mean {pd['recall_mean']:.3f} "
              f"(raw {pd['recall_raw_mean']:.3f}), {pd['files_below_0.95']} files < 0.95")
    print("recall: NFKC, lowercase, CJK ideographs/kana one by one, pdfminer's '(cid:N)' placeholders dropped "
          "from unstructured's text, words unstructured glued together credited when we have them apart; "
          "'raw' = plain lowercase \\w+ tokens of both texts as they are")
    print()
    for fmt, v in verdicts.items():
        print(f"{fmt.upper()}: {v}")
    print(f"run (selection excluded): {run_s:.0f} s")

    out = write_results("parse", {
        "parameters": {
            "max_pdfs": a.max_pdfs, "timeout_s": a.timeout, "repeats": a.repeats, "formats": formats,
            "max_bytes": MAX_BYTES,
            "ours": "extractors.extract(path, ctx=ExtractContext(ocr=False, workdir=tmp)) in process, no sandbox",
            "ocr": "off on our side (ExtractContext(ocr=False)); unstructured strategy='fast' does no OCR: "
                   "both sides compare text layers only",
            "unstructured": "unstructured.partition.auto.partition(filename=path, strategy='fast'), "
                            "DO_NOT_TRACK=1, extractors.spacy_shim.install() first",
            "unstructured_version": unstructured_version,
            "pdf_baseline_interpreter": sys.executable,
            "tokens": "NFKC, lowercase, CJK ideographs/kana one by one, other \\w+ runs; pdfminer's '(cid:N)' "
                      "placeholders dropped from unstructured's text; recall = (|multiset intersection| + "
                      "unstructured tokens that are up to 8 of our consecutive tokens glued together, each "
                      "using up those tokens) / |unstructured tokens|; precision = the same / |our tokens|",
            "recall_noglue": "as recall without the glued-token credit",
            "recall_raw": "plain lowercase \\w+ tokens of both texts as they are (the figure before 2026-11-27)",
            "timing": "per file, per side, wall time of one call after a per-format warm-up (best of repeats); "
                      "sides alternate who goes first; files/s = compared files / sum of times",
            "corpora": str(CORPORA),
        },
        "targets": {"speedup_min": TARGET_SPEEDUP, "recall_mean_min": TARGET_RECALL, "formats": ["pdf", "docx"]},
        "verdicts": verdicts,
        "summary": summary,
        "skipped_at_selection": skipped,
        "files": rows_out,
        "run_seconds": run_s,
    })
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
