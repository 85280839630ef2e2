"""Fixtures every test may take (temporary world-readable folders, the embedder, a store and a
pipeline, the OS test users) and the real servers (tests/support/servers.py). Helpers that
tests call are in the tests.support package, never imported from here."""
import grp
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.support.ci import missing

pytest_plugins = ["tests.support.servers"]  # real servers: postgres_server, postgres_url, pg_store_url, redis_server

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# the suite's stores embed with the reference backend (sentence-transformers / PyTorch), whatever
# the default for new stores is; tests/pipeline/test_embed_onnx.py covers the ONNX backends
os.environ.setdefault("INGEST_EMBED_BACKEND", "torch")


@pytest.fixture
def world_dir():
    """A temporary folder whose ancestors are all world-searchable (pytest's tmp_path
    lives under a 0700 directory, which would make every file private to root)."""
    d = Path(tempfile.mkdtemp(prefix="ingest-test-", dir="/tmp"))
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def embedder():
    from ingest.pipeline.embed import get_embedder

    return get_embedder()


@pytest.fixture
def store(world_dir):
    from ingest.stores.sqlite import SQLiteStore

    s = SQLiteStore(world_dir / "index.db")
    yield s
    s.close()


@pytest.fixture
def pipeline(store, embedder):
    from ingest.pipeline.document import Pipeline

    return Pipeline(store, embedder)


# -- OS users for the permission tests (the kernel is the reference) -------------------
TEST_USERS = ("ingt_alice", "ingt_bob", "ingt_carol")
TEST_GROUPS = ("ingt_team", "ingt_other")


@pytest.fixture(scope="session")
def os_users():
    """Real OS users and groups: alice and bob in ingt_team, carol in ingt_other."""
    if os.geteuid() != 0:
        missing("permission tests need root to create OS test users")
    created = []
    for g in TEST_GROUPS:
        try:
            grp.getgrnam(g)
        except KeyError:
            subprocess.run(["groupadd", g], check=True)
    members = {"ingt_alice": "ingt_team", "ingt_bob": "ingt_team", "ingt_carol": "ingt_other"}
    for u, g in members.items():
        try:
            pwd.getpwnam(u)
        except KeyError:
            subprocess.run(["useradd", "-M", "-N", "-g", g, "-s", "/usr/sbin/nologin", u], check=True)
            created.append(u)
    from acl.posix import clear_caches

    clear_caches()
    yield {u: pwd.getpwnam(u) for u in members}
    for u in created:
        subprocess.run(["userdel", u], check=False)


# -- markers per external service (registered in pyproject.toml), from what a test uses ---------
# ``-m "not postgres"`` leaves out every test that needs the PostgreSQL server, and so on.
SERVICE_FIXTURES = {"postgres_server": "postgres", "postgres_url": "postgres", "pg_store_url": "postgres",
                    "pg_store": "postgres", "redis_server": "redis"}
PARAM_SERVICES = {"postgres": "postgres", "pg_store": "postgres", "chroma": "chroma", "qdrant": "qdrant",
                  "milvus": "milvus"}
MODULE_SERVICES = {"test_dms_sync": ("webdav", "s3"), "test_webhooks": ("webdav", "s3"), "test_odd_docs": ("s3",),
                   "test_entities": ("s3",), "test_status_page": ("browser",),
                   "test_ocr_legacy": ("libreoffice", "tesseract"), "test_pdf_quality": ("tesseract",),
                   "test_time_bounds": ("tesseract",), "test_queue_redis": ("redis",)}


def pytest_collection_modifyitems(config, items):
    for item in items:
        names = {SERVICE_FIXTURES[f] for f in getattr(item, "fixturenames", ()) if f in SERVICE_FIXTURES}
        params = getattr(getattr(item, "callspec", None), "params", {})
        names |= {PARAM_SERVICES[v] for v in params.values() if isinstance(v, str) and v in PARAM_SERVICES}
        names |= set(MODULE_SERVICES.get(item.module.__name__.rsplit(".", 1)[-1], ()) if item.module else ())
        for n in sorted(names):
            item.add_marker(n)
