"""Idle cost and wake-up: ``ingest run`` with nothing to do, then files arriving.

Starts ``ingest run <inbox> --store <db>`` (embedded default), warms its worker with
one document per worker process, lets it settle, then for ``--seconds`` (60) adds up
the CPU time (user + system, from ``/proc/<pid>/stat``) of ``ingest run`` and every
process under it: idle CPU as a share of one core (target < 1 %), with a breakdown per
process. Then, beside it, freshness after idling: N times a one-page document is
dropped atomically into the inbox after ``--spacing`` seconds of quiet and the store is
polled until it is searchable (target p50 <= 0.5 s for ``md``).

    python bench/idle.py [--seconds 60] [--iterations 10] [--spacing 3] [--format md]

Writes bench/results/idle.json.
"""
from __future__ import annotations

import _common  # noqa: F401  (sets HF_HUB_OFFLINE, DO_NOT_TRACK, TOKENIZERS_PARALLELISM first)

import argparse
import os
import time
from pathlib import Path

from _common import IngestRun, cores, summary, table, verdict, wait_for, work_dir, write_results
from freshness import drop_atomically, found, make_docs

TARGET_IDLE_CORE_PCT = 1.0
TARGET_FRESH_P50_S = 0.5
_TICK = os.sysconf("SC_CLK_TCK")


def _tree(pid: int) -> list[int]:
    """pid and all its descendants (from /proc/*/stat's ppid)."""
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, ()))
    return out


def _cpu_s(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime


def _role(pid: int, root: int) -> str:
    if pid == root:
        return "ingest run"
    try:
        with open(f"/proc/{pid}/stat") as f:
            ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().split(b"\0")
    except (OSError, ValueError, IndexError):
        return "?"
    if b"worker" in cmd:
        return "worker (main)" if ppid == root else "worker pool processes"
    return os.path.basename(cmd[0].decode(errors="replace"))


def idle_cpu(root_pid: int, seconds: float) -> dict:
    pids = _tree(root_pid)
    before = {p: _cpu_s(p) for p in pids}
    t0 = time.monotonic()
    time.sleep(seconds)
    wall = time.monotonic() - t0
    per: dict[str, float] = {}
    total = 0.0
    for p in _tree(root_pid):
        now, was = _cpu_s(p), before.get(p)
        if now is None:
            continue
        used = now - (was or 0.0)  # a process born meanwhile: all its time counts
        total += used
        role = _role(p, root_pid)
        per[role] = per.get(role, 0.0) + used
    return {"wall_s": wall, "cpu_s": total, "core_pct": 100.0 * total / wall, "processes": len(pids),
            "per_role_core_pct": {k: 100.0 * v / wall for k, v in sorted(per.items())}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0, help="idle measurement window")
    ap.add_argument("--settle", type=float, default=10.0, help="quiet seconds after warm-up before measuring")
    ap.add_argument("--iterations", type=int, default=10, help="freshness drops after the idle window")
    ap.add_argument("--spacing", type=float, default=3.0, help="quiet seconds before each drop")
    ap.add_argument("--format", choices=("pdf", "md"), default="md")
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--seed", type=int, default=515)
    a = ap.parse_args(argv)

    with work_dir() as work:
        staging, inbox, db = work / "staging", work / "inbox", work / "index.db"
        inbox.mkdir()
        os.chmod(inbox, 0o755)
        n_warm = cores()
        facts = make_docs(staging, a.format, a.iterations + n_warm, a.seed, 3)
        warm, trials = facts[:n_warm], facts[n_warm:]
        run = IngestRun([inbox], db).start()
        from ingest.search.index import Index
        from ingest.stores.sqlite import SQLiteStore

        store = SQLiteStore(db)
        index = Index(store)
        lat, errors = [], []
        try:
            for w in warm:
                drop_atomically(staging / w.file, inbox, "warmup-" + Path(w.file).name)
            wait_for(lambda: all(found(index, w.keyword) for w in warm) or not run.alive(), timeout=300,
                     what="the warm-up documents")
            if not run.alive():
                raise RuntimeError("ingest run died:\n" + run.tail())
            time.sleep(a.settle)
            print(f"idle: measuring `ingest run` with nothing to do for {a.seconds:.0f} s ...", flush=True)
            idle = idle_cpu(run.proc.pid, a.seconds)
            for i, f in enumerate(trials):
                time.sleep(a.spacing)
                name = f"doc-{i:03d}-{Path(f.file).name}"
                t0, _ = drop_atomically(staging / f.file, inbox, name)
                while not found(index, f.keyword):
                    if time.monotonic() - t0 > a.timeout:
                        errors.append(f"{name}: not searchable after {a.timeout:.0f} s")
                        break
                    time.sleep(0.01)
                else:
                    lat.append(time.monotonic() - t0)
                    print(f"  {i + 1:2d}/{len(trials)} {name}: {lat[-1] * 1000:7.1f} ms", flush=True)
        finally:
            store.close()
            run.stop()

    fresh = summary(lat)
    ok_idle = idle["core_pct"] < TARGET_IDLE_CORE_PCT
    ok_fresh = bool(lat) and not errors and fresh["p50"] <= TARGET_FRESH_P50_S
    print()
    rows = [("idle CPU, all processes", f"{idle['core_pct']:.2f} % of a core",
             f"< {TARGET_IDLE_CORE_PCT} %", verdict(ok_idle))]
    rows += [(f"  {k}", f"{v:.2f} %", "", "") for k, v in idle["per_role_core_pct"].items()]
    rows.append((f"freshness after {a.spacing:.0f} s idle, p50", f"{fresh['p50']:.3f} s",
                 f"<= {TARGET_FRESH_P50_S} s", verdict(ok_fresh)))
    rows.append(("  p95 / max", f"{fresh['p95']:.3f} / {fresh['max']:.3f} s", "", ""))
    print(table(rows, ("", "measured", "target", "")))
    for e in errors:
        print("  error:", e)
    out = write_results("idle", {
        "params": vars(a), "idle": idle, "freshness_after_idle": fresh, "errors": errors,
        "targets": {"idle_core_pct": TARGET_IDLE_CORE_PCT, "freshness_p50_s": TARGET_FRESH_P50_S},
        "pass": {"idle": ok_idle, "freshness": ok_fresh}})
    print(f"results: {out}")
    return 0 if ok_idle and ok_fresh else 1


if __name__ == "__main__":
    raise SystemExit(main())
