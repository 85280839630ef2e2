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


# -- the fast tier: ``-m "not slow and not heavy"`` (README) ------------------------------------------
# ``heavy``: a test that needs one of these services, or one of the tests below that takes many seconds
# on its own (big inputs, races run many times, real corpora). CI and the README's full command run
# them all; the fast tier leaves them out and still covers every package, ACL and security included.
HEAVY_SERVICES = {"postgres", "redis", "chroma", "qdrant", "milvus", "browser", "libreoffice", "tesseract"}
HEAVY_TESTS = {
    "test_spreadsheet": {"test_200k_row_sheet_is_streamed_with_bounded_memory", "test_200k_row_sheet_fits_a_small_sandbox",
                         "test_ods_is_streamed_with_sheet_and_header_in_every_batch"},
    "test_metadata": {"test_corpora_spot_checks"},
    "test_perm_safety": {"test_symlink_swapped_in_between_checks_never_indexes_the_target",
                         "test_sidecar_symlink_is_not_followed_nor_quoted"},
    "test_odd_docs": {"test_a_real_flate_bomb_is_still_a_decompression_bomb",
                      "test_corpora_generate_needs_only_the_base_install"},
    "test_corpus": {"test_cli"},
    # the randomised no-leak property (hundreds of scenarios); the fixed scenario stays in the fast tier
    "test_no_leak": {"test_no_search_returns_an_unreadable_chunk", "test_a_filter_without_its_deny_check_is_caught"},
    # every mode against the kernel (the other POSIX tests stay)
    "test_acl_posix": {"test_search_agrees_with_kernel_for_every_mode"},
    # a 200-document model switch and the re-embed CLI in fresh processes (each loads the model)
    "test_reembed": {"test_model_switch_on_200_documents_never_empty_never_mixed",
                     "test_reembed_cli_switches_to_the_same_weights_under_another_id",
                     "test_reembed_cli_vectors_equal_the_pipelines_for_chunks_under_headings"},
    "test_embed_onnx": {"test_backends_agree_with_the_pytorch_reference"},
    "test_sinks": {"test_status_metrics_and_check_cover_every_sink"},
    "test_dms_sync": {"test_cli_poll_persists_cursor_across_processes"},
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        names = {SERVICE_FIXTURES[f] for f in getattr(item, "fixturenames", ()) if f in SERVICE_FIXTURES}
        params = getattr(getattr(item, "callspec", None), "params", {})
        names |= {PARAM_SERVICES[v] for v in params.values() if isinstance(v, str) and v in PARAM_SERVICES}
        module = item.module.__name__.rsplit(".", 1)[-1] if item.module else ""
        names |= set(MODULE_SERVICES.get(module, ()))
        for n in sorted(names):
            item.add_marker(n)
        if names & HEAVY_SERVICES or getattr(item, "originalname", item.name) in HEAVY_TESTS.get(module, ()):
            item.add_marker("heavy")
