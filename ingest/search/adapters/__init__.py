"""Thin adapters from ``Index.search`` to retrieval frameworks (optional extras).

* ``ingest.search.adapters.langchain.IngestRetriever``   - a LangChain ``BaseRetriever``
  (``pip install "ingest-pipeline[langchain]"``)
* ``ingest.search.adapters.llamaindex.IngestRetriever``  - a LlamaIndex ``BaseRetriever``
  (``pip install "ingest-pipeline[llamaindex]"``)

Each is bound to one principal when it is made: the framework passes only the query, so
a chain can never ask on behalf of someone else. Results are ``Index.search`` hits,
unchanged and in the same order; only their shape differs.
"""
from __future__ import annotations

from dataclasses import asdict

from ingest.search.index import Index, open_index


def hit_metadata(hit) -> dict:
    """Everything a hit carries except its text, JSON-able (framework metadata)."""
    meta = asdict(hit)
    meta.pop("text")
    return meta


def open_for(index_or_path):
    """An ``Index`` from an ``Index`` or a store path/URL."""
    return index_or_path if isinstance(index_or_path, Index) else open_index(index_or_path)
