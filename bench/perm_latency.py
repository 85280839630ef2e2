"""Permission removal -> no longer searchable, through ``ingest run`` (the embedded default).

Starts ``ingest run <top>/root --store <db>`` as a child process (run as root, with
real OS users ``h13a_*``), indexes a few one-line files, then N times per kind removes
one user's right to read a file, polls ``Index.search`` as that user every 10 ms until
the file is gone from its hits (latency = change -> gone), checks the kernel agrees
(``open()`` as the user fails), restores the right and waits until the file is back.

Kinds (each on its own file):

* ``chmod``       ``chmod 600`` of the file (inside the root: inotify IN_ATTRIB);
* ``setfacl``     ``setfacl -m u:h13a_bob:---`` on a 0644 file (a named-user entry denies bob);
* ``dir_chmod``   ``chmod 700`` of a directory inside the root;
* ``above_root``  ``chmod 700`` of the directory above the root (no inotify: polled, 0.5 s);
* ``gpasswd``     ``gpasswd -d`` of the user from a group whose membership the file's ACL used
                  at index time (polled: /etc/group, 0.5 s).

Targets: <= 2 s inside the root; <= 0.5 s poll + one rescan above it (README).

    python bench/perm_latency.py [--trials 5]
"""
from __future__ import annotations

import _common  # noqa: F401  (sets HF_HUB_OFFLINE, DO_NOT_TRACK, TOKENIZERS_PARALLELISM first)

import argparse
import grp
import os
import pwd
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from _common import IngestRun, summary, table, verdict, wait_for, work_dir, write_results

TARGET_INSIDE_S = 2.0
USER = "h13a_bob"


def ensure_users():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.support.attackers import ensure_users as make

    make()


def kernel_can_read(user: str, path: Path) -> bool:
    pw = pwd.getpwnam(user)
    code = ("import os,sys\n"
            f"os.setgroups(os.getgrouplist({pw.pw_name!r}, {pw.pw_gid})); os.setgid({pw.pw_gid}); "
            f"os.setuid({pw.pw_uid})\n"
            "try:\n open(sys.argv[1],'rb').close(); print('yes')\nexcept OSError: print('no')\n")
    return subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True,
                          check=True).stdout.strip() == "yes"


def visible(index, word: str) -> bool:
    try:
        return any(word in h.text for h in index.search(word, principal=USER, k=5, mode="bm25", audit=False))
    except sqlite3.OperationalError:  # store busy: ask again
        return None


def wait_visible(index, word: str, want: bool, t0: float, timeout: float) -> float | None:
    while time.monotonic() - t0 < timeout:
        v = visible(index, word)
        if v is want:
            return time.monotonic() - t0
        time.sleep(0.01)
    return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--timeout", type=float, default=30.0)
    a = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("perm_latency needs root (real OS users, chmod/chown/setfacl/gpasswd)")
        return 2
    ensure_users()
    from ingest.search.index import Index
    from ingest.stores.sqlite import SQLiteStore

    team, xg = grp.getgrnam("h13a_team").gr_gid, grp.getgrnam("h13a_x").gr_gid
    subprocess.run(["gpasswd", "-a", USER, "h13a_x"], check=True, capture_output=True)
    results: dict[str, list[float]] = {}
    errors: list[str] = []
    with work_dir() as work:
        top = work / "top"
        root = top / "root"
        (root / "sub").mkdir(parents=True)
        (root / "grp").mkdir()
        for d in (work, top, root, root / "sub"):
            os.chmod(d, 0o755)
        os.chown(root / "grp", 0, team)
        os.chmod(root / "grp", 0o710)  # search: team
        files = {
            "chmod": root / "chmod.txt", "setfacl": root / "setfacl.txt", "dir_chmod": root / "sub" / "d.txt",
            "above_root": root / "above.txt", "gpasswd": root / "grp" / "g.txt",
        }
        words = {k: f"zq{k.replace('_', '')}word" for k in files}
        for k, p in files.items():
            p.write_text(f"the {words[k]} marker line\n")
            os.chmod(p, 0o644)
        os.chown(files["gpasswd"], 0, xg)
        os.chmod(files["gpasswd"], 0o640)  # readers: members of team and x (bob, via the index-time ACL)
        remove = {
            "chmod": lambda: os.chmod(files["chmod"], 0o600),
            "setfacl": lambda: subprocess.run(["setfacl", "-m", f"u:{USER}:---", str(files["setfacl"])], check=True),
            "dir_chmod": lambda: os.chmod(root / "sub", 0o700),
            "above_root": lambda: os.chmod(top, 0o700),
            "gpasswd": lambda: subprocess.run(["gpasswd", "-d", USER, "h13a_x"], check=True, capture_output=True),
        }
        restore = {
            "chmod": lambda: os.chmod(files["chmod"], 0o644),
            "setfacl": lambda: subprocess.run(["setfacl", "-b", str(files["setfacl"])], check=True),
            "dir_chmod": lambda: os.chmod(root / "sub", 0o755),
            "above_root": lambda: os.chmod(top, 0o755),
            "gpasswd": lambda: subprocess.run(["gpasswd", "-a", USER, "h13a_x"], check=True, capture_output=True),
        }
        db = work / "index.db"
        run = IngestRun([root], db)
        run.start()
        try:
            store = SQLiteStore(db)
            index = Index(store)
            wait_for(lambda: all(visible(index, w) for w in words.values()) or not run.alive(), timeout=300,
                     what="the files to become searchable")
            if not run.alive():
                raise RuntimeError("ingest run died:\n" + run.tail())
            for trial in range(a.trials):
                for kind in files:
                    t0 = time.monotonic()
                    remove[kind]()
                    dt = wait_visible(index, words[kind], False, t0, a.timeout)
                    if kernel_can_read(USER, files[kind]):
                        errors.append(f"{kind}: the kernel still lets {USER} read it (bench setup)")
                    if dt is None:
                        errors.append(f"{kind} trial {trial}: still visible after {a.timeout:.0f} s")
                    else:
                        results.setdefault(kind, []).append(dt)
                    print(f"  {trial + 1}/{a.trials} {kind:10s} removed -> gone: "
                          + (f"{dt * 1000:7.1f} ms" if dt is not None else "TIMEOUT"), flush=True)
                    t1 = time.monotonic()
                    restore[kind]()
                    if wait_visible(index, words[kind], True, t1, a.timeout) is None:
                        errors.append(f"{kind} trial {trial}: not visible again after restore")
                    time.sleep(0.6)  # let the poller settle before the next change
            store.close()
        finally:
            run.stop()
            subprocess.run(["gpasswd", "-d", USER, "h13a_x"], capture_output=True)
    inside = [x for k in ("chmod", "setfacl", "dir_chmod") for x in results.get(k, [])]
    outside = [x for k in ("above_root", "gpasswd") for x in results.get(k, [])]
    stats = {k: summary(v) for k, v in results.items()}
    ok = bool(inside) and not errors and max(inside) <= TARGET_INSIDE_S
    rows = [(k, *(f"{stats[k][m]:.3f}s" for m in ("p50", "p95", "max"))) for k in stats]
    print()
    print(table(rows, ("removal", "p50", "p95", "max")))
    print(f"inside the root: max {max(inside) if inside else float('nan'):.3f} s (target <= {TARGET_INSIDE_S} s) "
          f"{verdict(ok)}; above it / group db: max {max(outside) if outside else float('nan'):.3f} s")
    for e in errors:
        print("  error:", e)
    write_results("perm_latency", {"trials": a.trials, "user": USER, "latency_s": stats,
                                   "inside_max_s": max(inside) if inside else None,
                                   "outside_max_s": max(outside) if outside else None,
                                   "target_inside_s": TARGET_INSIDE_S, "errors": errors, "passed": ok})
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
