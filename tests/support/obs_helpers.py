"""Seeding for the observability tests: folder sources with known documents, then one degraded."""
from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

DAY = 86400.0

TOPICS = ["quarterly revenue grew in the northern region", "the audit found no material weakness",
          "travel expenses must be filed within thirty days", "the new payroll system goes live in march",
          "holiday schedule for the support team", "onboarding checklist for new engineers"]


def write_docs(folder: Path, n: int, tag: str) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o755)
    out = []
    for i in range(n):
        p = folder / f"{tag}-{i}.md"
        p.write_text(f"# {tag} note {i}\n\n{TOPICS[i % len(TOPICS)]} ({tag} {i}).\n\n"
                     f"Second paragraph of {tag} document number {i} with a few more words.\n")
        os.chmod(p, 0o644)
        out.append(p)
    return out


def image_only_pdf(path: Path) -> None:
    """A scanned page with nothing on it: a PDF whose only content is a blank image (no text layer)."""
    from PIL import Image

    Image.new("RGB", (300, 300), "white").save(path, "PDF")
    os.chmod(path, 0o644)


def degrade(files: list[Path]) -> None:
    """Replace a source's files: the first becomes an image-only PDF, the rest are emptied."""
    for i, p in enumerate(files):
        if i == 0:
            image_only_pdf(p)
        else:
            p.write_bytes(b"")
        os.utime(p, (time.time() + 1, time.time() + 1))  # a new mtime even within the same second


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`ingest serve` (the real Dispatcher and MOUNTS) in a thread on a free loopback port."""

    def __init__(self, store_url, cfg: dict):
        from ingest.serve.app import make_server

        self.port = free_port()
        self.server = make_server(str(store_url), cfg, "127.0.0.1", self.port)
        self.server.prepare()
        self.thread = threading.Thread(target=self.server.serve, daemon=True)
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.stop()
        self.thread.join(10)


def get(url: str, token: str | None = None):
    """(status, headers, body); header names are case-insensitive (an http.client.HTTPMessage)."""
    import urllib.error
    import urllib.request

    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.headers, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode()


def samples(text: str, name: str) -> dict[tuple, float]:
    """Prometheus exposition text -> {(sorted label pairs): value} for one sample name."""
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name:
                out[tuple(sorted(s.labels.items()))] = s.value
    return out
