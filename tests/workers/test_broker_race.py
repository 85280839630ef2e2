"""Processes that open one new embedded-broker file at the same moment (two `ingest add` on
one new store) must not fail on each other: kombu creates its tables and queue rows by
"look, then create" under a thread lock only, so the loser of the race used to die on
"table kombu_queue already exists" or a unique-key error (CI: one `ingest add` of two
exited 1)."""
from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
import time

from tests.support.common import REPO

_PUT = textwrap.dedent("""
    import sys, time
    from kombu import Connection
    from workers.broker import register
    register()
    start = float(sys.argv[2])
    while time.time() < start:
        time.sleep(0.001)
    with Connection(sys.argv[1]) as c:
        q = c.SimpleQueue("bulk")
        q.put({"n": sys.argv[3]})
        q.close()
""")


def test_processes_opening_one_new_broker_file_at_once_all_publish(tmp_path):
    n, rounds = 4, 3
    for r in range(rounds):
        db = tmp_path / f"r{r}.broker.sqlite"
        start = time.time() + 3  # all imported and waiting before the start line
        procs = [subprocess.Popen([sys.executable, "-c", _PUT, f"sqla+sqlite:///{db}", str(start), str(i)],
                                  cwd=str(REPO), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for i in range(n)]
        outs = [p.communicate(timeout=120)[0] for p in procs]
        assert [p.returncode for p in procs] == [0] * n, [o[-600:] for o in outs]
        with sqlite3.connect(db) as c:
            assert c.execute("SELECT name FROM kombu_queue").fetchall() == [("bulk",)]
            got = sorted(c.execute("SELECT payload FROM kombu_message").fetchall())
        assert len(got) == n  # every publish stored, none lost
