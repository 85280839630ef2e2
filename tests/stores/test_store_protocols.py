"""Callers outside ingest/stores use a store only through its protocols (ingest.stores.base).

A static scan: every attribute read on an expression named like a store (``store``, ``self.store``,
``primary``, ``sink_store`` ...) in product code must be a protocol member. Benchmarks and tests
may also reach into a store white-box (``WHITE_BOX``: its SQL connection and transactions, private
helpers, a benchmark's tuning constant) to set up or inspect state the contract does not expose.
That both stores implement every protocol is checked by mypy (ingest/stores/_conformance.py)."""
from __future__ import annotations

import ast
from pathlib import Path

from ingest.stores.base import Store

ROOT = Path(__file__).resolve().parents[2]
STORE_NAMES = {"store", "_store", "primary", "sink_store"}
PROTOCOL = {m for c in Store.__mro__ for m in vars(c) if not m.startswith("__")}
WHITE_BOX = {"db", "tx", "path", "kind", "reopen", "EF_SEARCH_MIN"}
NOT_STORES = {"exists", "url_arg"}  # attributes of other objects that tests happen to name ``store``


def store_attributes(folders: list[str], root: Path = ROOT) -> dict[str, list[str]]:
    """attribute -> places, for every attribute read on a store-named expression outside ingest/stores."""
    out: dict[str, list[str]] = {}
    for folder in folders:
        for path in sorted((root / folder).rglob("*.py")):
            rel = path.relative_to(root).as_posix()
            if rel.startswith("ingest/stores/"):
                continue
            for node in ast.walk(ast.parse(path.read_text(), rel)):
                if not isinstance(node, ast.Attribute):
                    continue
                v = node.value
                name = v.id if isinstance(v, ast.Name) else v.attr if isinstance(v, ast.Attribute) else None
                if name in STORE_NAMES:
                    out.setdefault(node.attr, []).append(f"{rel}:{node.lineno}")
    return out


def test_product_code_uses_only_protocol_methods():
    used = store_attributes(["ingest", "workers", "acl", "extractors"])
    assert "get_doc" in used and "bm25" in used  # the scan finds callers
    assert {a: p for a, p in used.items() if a not in PROTOCOL} == {}


def test_benchmarks_and_tests_use_protocol_methods_or_declared_white_box_access():
    used = store_attributes(["bench", "tests"])
    outside = {a: p for a, p in used.items()
               if a not in PROTOCOL | WHITE_BOX | NOT_STORES and not a.startswith("_")}
    assert outside == {}


def test_the_scan_catches_a_method_outside_the_protocols(tmp_path):
    (tmp_path / "mod").mkdir()
    (tmp_path / "mod" / "caller.py").write_text("def f(self, store):\n    store.get_doc('s', 'x')\n"
                                                "    return self.store.secret_method()\n")
    assert store_attributes(["mod"], root=tmp_path) == {"get_doc": ["mod/caller.py:2"],
                                                        "secret_method": ["mod/caller.py:3"]}
