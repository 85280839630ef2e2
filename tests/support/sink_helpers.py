"""The real vector databases behind the sink tests, and how each is made unavailable.

* Chroma: its own server (``chroma run --path DIR --host 127.0.0.1 --port P``) on a free loopback
  port; down = the server process stopped (SIGTERM), up = started again on the same port and data.
* Qdrant local mode / Milvus Lite: embedded files that one process may open at a time; down =
  another process (:class:`Holder`) opens them and holds them (Qdrant's ``.lock``, Milvus Lite's
  file lock), up = that process exits. The pump lets the files go when idle (``release_idle``), so
  the holder gets them; while it holds them every attempt of the pump fails and is retried.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import uuid
from pathlib import Path

from tests.support.ci import missing
from tests.support.servers import wait_port, free_port

KINDS = ("qdrant", "chroma", "milvus")
_HOLD = r"""
import sys, time
kind, path = sys.argv[1], sys.argv[2]
t0 = time.monotonic()
while True:
    try:
        if kind == "qdrant":
            from qdrant_client import QdrantClient
            c = QdrantClient(path=path)
        else:
            from pymilvus import MilvusClient
            c = MilvusClient(path)
        break
    except Exception as e:
        if time.monotonic() - t0 > 120:
            raise
        time.sleep(0.2)
print("held", flush=True)
sys.stdin.read()
c.close()
"""


class ChromaServer:
    def __init__(self, folder: Path):
        exe = shutil.which("chroma")
        if exe is None:
            missing("the `chroma` command (pip package chromadb) is not installed")
        self.exe, self.folder, self.port, self.proc = exe, folder, free_port(), None

    def start(self) -> "ChromaServer":
        self.proc = subprocess.Popen([self.exe, "run", "--path", str(self.folder), "--host", "127.0.0.1",
                                      "--port", str(self.port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port, 60, self.proc)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(30)
            self.proc = None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class Holder:
    """Another process that opens an embedded sink's files and holds them until released."""

    def __init__(self, kind: str, path: str):
        self.proc = subprocess.Popen([sys.executable, "-c", _HOLD, kind, path], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if line.strip() != "held":
            raise RuntimeError(f"could not take {path}: {line!r}")

    def release(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(60)


class SinkSetup:
    """One sink of a kind in a fresh collection (or file): ``url``, ``down()``, ``up()``."""

    def __init__(self, kind: str, folder: Path, chroma: ChromaServer | None):
        self.kind, self.chroma, self.holder = kind, chroma, None
        name = "t" + uuid.uuid4().hex[:10]
        if kind == "qdrant":
            self.path = str(folder / "qdrant")
            self.url = f"qdrant+local://{self.path}?collection={name}"
        elif kind == "milvus":
            self.path = str(folder / "milvus.db")
            self.url = f"milvus+lite://{self.path}?collection={name}"
        else:
            self.url = f"chroma://127.0.0.1:{chroma.port}?collection={name}"

    def down(self) -> None:
        if self.kind == "chroma":
            self.chroma.stop()
        else:
            self.holder = Holder(self.kind, self.path)

    def up(self) -> None:
        if self.kind == "chroma":
            if not self.chroma.running():
                self.chroma.start()
        elif self.holder is not None:
            self.holder.release()
            self.holder = None


def vectors_in(x, dim: int) -> int:
    """How many vectors of ``dim`` floats an argument of a client call carries (arrays, lists,
    pydantic models such as Qdrant's PointStruct, dicts such as Milvus rows)."""
    import numpy as np

    if isinstance(x, np.ndarray):
        return x.size // dim if x.dtype.kind == "f" and x.ndim and x.shape[-1] == dim else 0
    if hasattr(x, "model_dump"):
        x = x.model_dump()
    if isinstance(x, dict):
        return sum(vectors_in(v, dim) for v in x.values())
    if isinstance(x, (list, tuple)):
        if len(x) == dim and all(isinstance(v, float) for v in x):
            return 1
        return sum(vectors_in(v, dim) for v in x)
    return 0


class _Proxy:
    def __init__(self, obj, wire: "Wire"):
        self._obj, self._wire = obj, wire

    def __getattr__(self, name):
        attr = getattr(self._obj, name)
        if not callable(attr) or name.startswith("_"):
            return attr

        def call(*args, **kwargs):
            self._wire.calls.append((name, vectors_in([args, kwargs], self._wire.dim)))
            out = attr(*args, **kwargs)
            return _Proxy(out, self._wire) if type(out).__name__ == "Collection" else out  # Chroma's collections
        return call


class Wire:
    """Every call a sink makes into its database's client library (the wire boundary, below our
    own code), with the vectors each carries: what an ACL-only change really sends."""

    def __init__(self, target, dim: int):
        self.dim, self.calls = dim, []
        target.client = _Proxy(target.client, self)
        if hasattr(target, "_cols"):  # Chroma: collection handles are fetched again through the proxy
            target._cols = {}

    def mark(self) -> int:
        return len(self.calls)

    def since(self, mark: int) -> tuple[int, list[str]]:
        """(vectors sent, method names called) since ``mark``."""
        part = self.calls[mark:]
        return sum(n for _, n in part), [m for m, _ in part]


def synthetic_docs(store, ids, n_chunks=2, acl=None, dim=24, version="v1"):
    """Documents ``ids`` in ``store``, each with ``n_chunks`` chunks of random unit vectors (seeded by id)."""
    import numpy as np

    from acl.model import ACL, EVERYONE
    from ingest.stores.base import ChunkRecord, DocRecord

    for d in ids:
        chunks = []
        for j in range(n_chunks):
            v = np.random.default_rng(abs(hash((d, j, version))) % 2**32).standard_normal(dim).astype(np.float32)
            v /= np.linalg.norm(v)
            chunks.append(ChunkRecord(f"{d}-{version}-{j}", j, f"chunk {j} of {d} {version}", f"h{d}{j}{version}", 4,
                                      j + 1, "Intro", v.tobytes(), "c", "m"))
        store.apply(DocRecord(d, "folder:/r", f"{d}.txt", f"file:///r/{d}.txt", "text/plain", 1, 1, version,
                              acl or ACL(frozenset({EVERYONE})), labels=["pii:email"]), chunks)
