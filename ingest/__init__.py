"""ingest: keep documents parsed, chunked, embedded and permission-aware in a search index.

    import ingest
    index = ingest.open_index("~/.ingest/index.db")
    for hit in index.search("quarterly revenue", principal="alice", k=5):
        print(hit.score, hit.uri, hit.page, hit.section, hit.text[:80], hit.labels)
"""
from acl.model import Principal  # noqa: F401

from ingest.search.index import Index, open_index  # noqa: F401

__all__ = ["open_index", "Index", "Principal"]
__version__ = "0.1.0"
