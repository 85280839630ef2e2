"""Walk every real document in ../shared/corpora (minus ir/) through the real extraction
path: sandboxed extract (time and memory limits) -> quality verdict, child documents
(attachments, archive members) recursively. Every file must end ok, flagged or
quarantined with a specific reason.

    python bench/corpus_walk.py [--jobs 2] [--timeout 60] [--memory-mb 2048]

Writes bench/results/corpus_walk.json and bench/results/corpus_walk.md (the table by
format). tests/corpora/test_corpus_walk.py runs it and checks the outcome.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
CORPORA = REPO.parent / "shared" / "corpora"
RESULTS = REPO / "bench" / "results"
SKIP_TOP = {"ir"}


def corpus_files(root: Path = CORPORA) -> list[Path]:
    out = []
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if rel.parts[0] in SKIP_TOP or not p.is_file() or p.is_symlink():
            continue
        if len(rel.parts) == 1 and p.name in ("MANIFEST.tsv", "README.md"):
            continue
        out.append(p)
    return out


def _judge(path: str, depth: int, workdir: Path, timeout: float, memory_mb: int, rows: list, name: str) -> None:
    from extractors import FAMILY, detect, extract, sandbox
    from extractors.base import ExtractContext, ExtractionError
    from ingest.pipeline.quality import assess

    try:
        fmt = FAMILY.get(detect(path), Path(name).suffix.lower().lstrip(".") or "none")
    except ExtractionError:
        fmt = Path(name).suffix.lower().lstrip(".") or "none"
    sub = Path(tempfile.mkdtemp(dir=workdir))
    ctx = ExtractContext(workdir=sub, depth=depth, source_path=path)
    t0 = time.monotonic()
    row = {"file": name, "format": fmt, "depth": depth}
    try:
        ex = sandbox.run(extract, path, ctx=ctx, timeout=timeout, memory_mb=memory_mb, label=fmt)
    except ExtractionError as e:
        row.update(verdict="quarantined", code=e.code, reason=e.message)
        ex = None
    row["seconds"] = round(time.monotonic() - t0, 3)
    if ex is not None:
        q = assess(ex)
        row.update(verdict=q.verdict, code=(q.reasons[0].split(":")[0] if q.reasons else None),
                   reason="; ".join(q.reasons) or None, chars=q.chars, pages=q.pages,
                   ocr_confidence=q.ocr_confidence, language=q.language, extractor=ex.extractor,
                   children=len(ex.children))
    rows.append(row)
    if ex is not None:
        for ch in ex.children:
            _judge(ch.path, depth + 1, workdir, timeout, memory_mb, rows, f"{name}!{ch.name}")
    shutil.rmtree(sub, ignore_errors=True)


def walk_one(args) -> list[dict]:
    path, root, timeout, memory_mb = args
    workdir = Path(tempfile.mkdtemp(prefix="ingest-walk-"))
    rows: list[dict] = []
    try:
        _judge(str(path), 0, workdir, timeout, memory_mb, rows, str(Path(path).relative_to(root)))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    for r in rows:
        r["peak_child_rss_mib"] = round(peak_kib / 1024, 1)
    return rows


def _init():
    from extractors import warm_up

    warm_up()


def walk(root: Path = CORPORA, jobs: int = 2, timeout: float = 60.0, memory_mb: int = 2048,
         progress: bool = True) -> dict:
    files = corpus_files(root)
    t0 = time.monotonic()
    rows: list[dict] = []
    with ProcessPoolExecutor(max_workers=jobs, initializer=_init) as pool:
        it = pool.map(walk_one, [(f, root, timeout, memory_mb) for f in files], chunksize=4)
        if progress:
            from tqdm import tqdm

            it = tqdm(it, total=len(files), desc="corpus walk", unit="file", file=sys.stderr)
        for r in it:
            rows.extend(r)
    elapsed = time.monotonic() - t0
    top = [r for r in rows if r["depth"] == 0]
    table: dict[str, Counter] = defaultdict(Counter)
    reasons: dict[str, Counter] = defaultdict(Counter)
    for r in top:
        table[r["format"]][r["verdict"]] += 1
        if r["verdict"] != "ok":
            reasons[r["format"]][r["code"]] += 1
    return {
        "files": len(files), "documents_including_children": len(rows), "seconds": round(elapsed, 1),
        "timeout_s": timeout, "memory_budget_mib": memory_mb,
        "peak_child_rss_mib": max((r["peak_child_rss_mib"] for r in rows), default=0),
        "slowest": sorted(rows, key=lambda r: -r["seconds"])[:10],
        "by_format": {k: dict(v) for k, v in sorted(table.items())},
        "reasons_by_format": {k: dict(v) for k, v in sorted(reasons.items())},
        "verdicts": dict(Counter(r["verdict"] for r in rows)), "rows": rows,
    }


def markdown(res: dict) -> str:
    lines = ["| format | files | ok | flagged | quarantined | reasons (not ok) |", "|---|---:|---:|---:|---:|---|"]
    for fmt, v in res["by_format"].items():
        rs = ", ".join(f"{k} {n}" for k, n in sorted(res["reasons_by_format"].get(fmt, {}).items(),
                                                       key=lambda kv: -kv[1]))
        lines.append(f"| {fmt} | {sum(v.values())} | {v.get('ok', 0)} | {v.get('flagged', 0)} | "
                     f"{v.get('quarantined', 0)} | {rs} |")
    head = (f"Corpus walk: {res['files']} files ({res['documents_including_children']} documents with children) "
            f"in {res['seconds']} s; parse limits {res['timeout_s']:.0f} s and {res['memory_budget_mib']} MiB "
            f"address space over the worker; peak parser RSS {res['peak_child_rss_mib']} MiB.\n\n")
    return head + "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--memory-mb", type=int, default=2048)
    a = ap.parse_args(argv)
    res = walk(jobs=a.jobs, timeout=a.timeout, memory_mb=a.memory_mb)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "corpus_walk.json").write_text(json.dumps(res, indent=1, default=str))
    md = markdown(res)
    (RESULTS / "corpus_walk.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
