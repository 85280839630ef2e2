"""ingest: keep documents parsed, chunked, embedded and permission-aware in a search index.

    import ingest
    index = ingest.open_index("~/.ingest/index.db")
    for hit in index.search("quarterly revenue", principal="alice", k=5):
        print(hit.score, hit.uri, hit.page, hit.section, hit.text[:80], hit.labels)
"""
__all__ = ["open_index", "Index", "Principal"]
__version__ = "0.1.0"


def __getattr__(name: str):
    """The public names, imported on first use: ``python -m ingest.cli`` (``ingest --help``)
    imports this package and must not pay for the search stack."""
    if name == "Principal":
        from acl.model import Principal

        return Principal
    if name in ("Index", "open_index"):
        from ingest.search import index

        return getattr(index, name)
    raise AttributeError(f"module 'ingest' has no attribute {name!r}")
