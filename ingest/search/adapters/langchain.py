"""LangChain retriever over ``Index.search`` (extra ``langchain``: langchain-core).

    from ingest.search.adapters.langchain import IngestRetriever
    retriever = IngestRetriever.for_index("~/.ingest/index.db", principal="alice", k=5)
    docs = retriever.invoke("quarterly revenue")      # list[langchain_core.documents.Document]

``Document.page_content`` is the chunk text; ``metadata`` holds the rest of the hit
(chunk_id, doc_id, score, uri, page, section, labels, acl, versions, highlights, ...).
"""
from __future__ import annotations

from typing import Any

try:
    from langchain_core.callbacks import CallbackManagerForRetrieverRun
    from langchain_core.documents import Document
    from langchain_core.retrievers import BaseRetriever
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("ingest.search.adapters.langchain needs langchain-core: "
                      "pip install 'ingest-pipeline[langchain]'") from e
from pydantic import ConfigDict

from ingest.search.adapters import hit_metadata, open_for


class IngestRetriever(BaseRetriever):
    """Bound to one principal; every call is ``index.search(query, principal, k, filters, ...)``."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    index: Any
    principal: Any = None
    k: int = 4
    filters: dict | None = None
    mode: str = "hybrid"
    group_by_doc: bool = False
    context: int = 0

    @classmethod
    def for_index(cls, index_or_path, **kw) -> "IngestRetriever":
        return cls(index=open_for(index_or_path), **kw)

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        hits = self.index.search(query, principal=self.principal, k=self.k, filters=self.filters, mode=self.mode,
                                 group_by_doc=self.group_by_doc, context=self.context)
        return [Document(page_content=h.text, metadata=hit_metadata(h), id=h.chunk_id) for h in hits]
