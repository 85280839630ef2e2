"""LlamaIndex retriever over ``Index.search`` (extra ``llamaindex``: llama-index-core).

    from ingest.search.adapters.llamaindex import IngestRetriever
    retriever = IngestRetriever.for_index("~/.ingest/index.db", principal="alice", k=5)
    nodes = retriever.retrieve("quarterly revenue")   # list[NodeWithScore]

Each ``NodeWithScore`` holds a ``TextNode`` (id = chunk id, text = chunk text, metadata =
the rest of the hit) and the fused score.
"""
from __future__ import annotations

try:
    from llama_index.core.retrievers import BaseRetriever
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("ingest.search.adapters.llamaindex needs llama-index-core: "
                      "pip install 'ingest-pipeline[llamaindex]'") from e

from ingest.search.adapters import hit_metadata, open_for

# metadata the LLM and the embedder should not see (ids, ACLs, versions)
_HIDDEN = ["chunk_id", "doc_id", "acl", "doc_version", "extractor", "model_id", "bm25_rank", "vector_rank",
           "highlights", "score", "context_before", "context_after"]


class IngestRetriever(BaseRetriever):
    """Bound to one principal; every call is ``index.search(query, principal, k, filters, ...)``."""

    def __init__(self, index, principal=None, k: int = 4, filters: dict | None = None, mode: str = "hybrid",
                 group_by_doc: bool = False, context: int = 0, **kw):
        super().__init__(**kw)
        self.index, self.principal, self.k, self.filters = index, principal, k, filters
        self.mode, self.group_by_doc, self.context = mode, group_by_doc, context

    @classmethod
    def for_index(cls, index_or_path, **kw) -> "IngestRetriever":
        return cls(open_for(index_or_path), **kw)

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        hits = self.index.search(query_bundle.query_str, principal=self.principal, k=self.k, filters=self.filters,
                                 mode=self.mode, group_by_doc=self.group_by_doc, context=self.context)
        return [NodeWithScore(node=TextNode(id_=h.chunk_id, text=h.text, metadata=hit_metadata(h),
                                            excluded_llm_metadata_keys=_HIDDEN,
                                            excluded_embed_metadata_keys=_HIDDEN), score=h.score)
                for h in hits]
