"""Imports inside functions are for heavy modules only (issue 14, "layers you can see").

A first-party module (``ingest``, ``workers``, ``acl``, ``extractors``) imported inside a function
hides a dependency from the module's top and from ``lint-imports``' reading of it; it is kept only
where importing at the top would cost: the target pulls in a heavy third-party library (torch,
celery, numpy, watchdog, the parsers), or the importer is on the path of ``ingest --help``, which
stays light. Anything else goes to the module's top; this test fails on a new one.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIRST_PARTY = ("ingest", "workers", "acl", "extractors")

# first-party modules whose import loads a heavy third-party library: they may be imported late
HEAVY = (
    "workers",  # celery, kombu (every module of the package: workers/__init__ is the Celery app)
    "ingest.cli.runner",  # workers
    "ingest.stores.sinks",  # numpy (and each sink's client library)
    "ingest.search.sink_index",  # ingest.stores.sinks
    "ingest.sources.folder",  # watchdog
    "ingest.sources.reconcile",  # watchdog (through ingest.sources.folder)
    "extractors.docx", "extractors.pdf", "extractors.spacy_shim",  # python-docx, pypdf, spaCy:
    "extractors.unstructured_family",  # loaded early on purpose by extractors.warmup
    "extractors.errors",  # the extractors package's facade (detection, registry, libmagic) loads first
)
# importers on the path of `ingest --help` (a package's lazy attributes, the command's
# dispatch): what they import inside functions is what `--help` must not load
LIGHT_PATH = {"ingest", "ingest.cli.main"}
# the package imports its backends when a store is opened: they import the package (a cycle)
CYCLES = {("ingest.stores", "ingest.stores.postgres"), ("ingest.stores", "ingest.stores.sqlite")}
# left late on purpose or still to move: ``workers.tasks`` loads the pipeline inside its tasks, so a
# producer that imports the task module (``ingest add``, the webhook receivers) does not load the
# pipeline and its parsers; the rest are still to be moved to their module's top (issue 14)
PENDING = {
    ("ingest.cli.runner", "ingest"), ("ingest.cli.runner", "ingest.obs"),
    ("ingest.cli.runner", "ingest.sources.permwatch"), ("ingest.cli.runner", "ingest.sources.safefs"),
    ("ingest.cli.runner", "ingest.stores"), ("ingest.cli.runner", "ingest.stores.outbox"),
    ("ingest.sources.connector", "ingest.config"), ("ingest.sources.connector", "ingest.sources.labels"),
    ("ingest.sources.connector", "ingest.sources.safefs"),
    ("ingest.sources.webhooks", "ingest.config"), ("ingest.sources.webhooks", "ingest.sources.graph"),
    ("workers.app", "ingest.stores"), ("workers.lanes", "ingest.obs.lanes"), ("workers.lanes", "ingest.sources.base"),
    ("workers.lanes", "ingest.stores"), ("workers.tasks", "extractors"), ("workers.tasks", "ingest"),
    ("workers.tasks", "ingest.obs.lanes"), ("workers.tasks", "ingest.pipeline.budget"),
    ("workers.tasks", "ingest.pipeline.connector_sync"), ("workers.tasks", "ingest.pipeline.document"),
    ("workers.tasks", "ingest.pipeline.faults"), ("workers.tasks", "ingest.sources.base"),
    ("workers.tasks", "ingest.pipeline.changes"), ("workers.tasks", "ingest.stores"),
}


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def function_imports() -> list[tuple[str, int, str, str]]:
    """(file, line, importing module, imported first-party module) of every import inside a function."""
    out = []
    for top in FIRST_PARTY:
        for path in sorted((ROOT / top).rglob("*.py")):
            mod = _module(path)
            package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
            tree = ast.parse(path.read_text(), str(path))
            for fn in ast.walk(tree):
                if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    continue
                for node in ast.walk(fn):
                    if isinstance(node, ast.ImportFrom):
                        if node.level:
                            base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                            names = [f"{base}.{node.module}" if node.module else f"{base}.{a.name}" for a in node.names]
                        else:
                            names = [node.module or ""]
                    elif isinstance(node, ast.Import):
                        names = [a.name for a in node.names]
                    else:
                        continue
                    for name in dict.fromkeys(names):
                        if name.split(".")[0] in FIRST_PARTY:
                            out.append((str(path.relative_to(ROOT)), node.lineno, mod, name))
    return out


def _allowed(importer: str, target: str) -> bool:
    return (any(target == h or target.startswith(h + ".") for h in HEAVY) or importer in LIGHT_PATH
            or (importer, target) in CYCLES or (importer, target) in PENDING)


def test_imports_inside_functions_are_heavy_ones():
    found = function_imports()
    assert found, "the scan found no function-level import at all: is it reading the packages?"
    bad = [f"{f}:{line}: {target} (in {importer})" for f, line, importer, target in found
           if not _allowed(importer, target)]
    assert not bad, ("first-party imports inside functions whose module is not heavy; move them to the "
                     "module's top (or add the module to HEAVY if importing it loads a heavy library):\n  "
                     + "\n  ".join(bad))


def test_help_loads_no_heavy_library():
    """`ingest --help` stays light: none of the heavy libraries the late imports keep away."""
    probe = ("import runpy, sys\nsys.argv = ['ingest', '--help']\n"
             "try:\n    runpy.run_module('ingest.cli', run_name='__main__')\nexcept SystemExit:\n    pass\n"
             "heavy = ('torch', 'sentence_transformers', 'onnxruntime', 'celery', 'kombu', 'numpy', 'watchdog',\n"
             "         'unstructured', 'spacy', 'pypdf', 'docx', 'transformers', 'prometheus_client')\n"
             "print('HEAVY', sorted(m for m in heavy if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "HEAVY []", r.stdout[-2000:]
