"""Permission-aware search: the index (hybrid BM25 + vector, ACL filter inside the query), access explanations,
and adapters for LangChain and LlamaIndex."""
