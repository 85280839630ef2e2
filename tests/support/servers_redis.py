"""A real Redis server for tests: ``redis-server`` on a free loopback port in a temp
folder, with AOF persistence (``appendonly yes``), so a restart keeps the queues.

``redis_server`` (function scope) yields a :class:`RedisServer` with ``.url``,
``.stop()`` (graceful SHUTDOWN: the AOF is flushed) and ``.start()`` (same port,
same data). Without the binary the test is skipped with the reason, and fails when
``CI=true``.
"""
from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    def __init__(self, binary: str, folder: Path, port: int | None = None):
        self.binary, self.folder, self.port = binary, folder, port or free_port()
        self.proc: subprocess.Popen | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def _ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def start(self, timeout: float = 20) -> "RedisServer":
        log = open(self.folder / "redis.log", "ab")
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder),
             "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--protected-mode", "yes",
             "--daemonize", "no"], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        t0 = time.monotonic()
        while not self._ping():
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}: "
                                   + (self.folder / "redis.log").read_text()[-2000:])
            if time.monotonic() - t0 > timeout:
                raise RuntimeError(f"redis-server did not answer on port {self.port} in {timeout} s")
            time.sleep(0.05)
        return self

    def stop(self, timeout: float = 20) -> None:
        """Graceful: SIGTERM makes redis-server flush the AOF and exit."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def client(self):
        import redis

        return redis.Redis.from_url(self.url)


def redis_binary() -> str:
    b = shutil.which("redis-server")
    if b is None:
        from tests.support.ci import missing

        missing("redis-server is not installed (apt-get install redis-server)")
    return b


@pytest.fixture
def redis_server():
    folder = Path(tempfile.mkdtemp(prefix="ingest-redis-"))
    srv = RedisServer(redis_binary(), folder).start()
    try:
        yield srv
    finally:
        srv.stop()
        shutil.rmtree(folder, ignore_errors=True)
