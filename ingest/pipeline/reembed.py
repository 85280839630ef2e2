"""``ingest reembed --model ID``: build vectors for another embedding model beside the
active ones, then switch the store to it in one transaction.

Search keeps using the active model until the new one covers every chunk (documents
indexed meanwhile are caught up in further rounds); the switch copies the new vectors
into place, sets the active model and bumps the generation atomically, so no search
ever sees an empty index or a mix of models. Workers notice the new active model on
their next document (a chunk embedded with the old one is refused and embedded again).
"""
from __future__ import annotations

import logging
import time

from ingest.pipeline.embed import get_embedder

log = logging.getLogger("ingest.pipeline.reembed")


def reembed(store, model_id: str, *, batch: int = 64, max_rounds: int = 1000, progress=None) -> dict:
    """Embed every chunk with ``model_id`` (through the embedding cache) and switch. What is
    embedded, and the key it is cached under, is what the pipeline embeds: the chunk's section
    context and text (``store.model_missing`` gives (embed hash, embed text) pairs), so workers
    that index with the new model afterwards find these vectors in the cache.

    ``progress(done, total)`` is called after each batch. Returns a summary dict."""
    if batch < 1:
        raise ValueError(f"reembed: batch must be at least 1, got {batch}")
    old = store.model_id
    if model_id == old:
        return {"model": model_id, "previous": old, "switched": False, "embedded": 0, "chunks": None,
                "detail": f"{model_id} is already the active model"}
    embedder = get_embedder(model_id)  # unknown model -> ValueError naming it
    t0 = time.monotonic()
    embedded = 0
    store.set_reembed_target(model_id)
    try:
        for _ in range(max_rounds):
            todo = store.model_missing(model_id, batch)
            if not todo:
                n = store.switch_model(model_id)
                if n is not None:
                    log.info("switched %s -> %s: %d chunks, %d embedded", old, model_id, n, embedded)
                    return {"model": model_id, "previous": old, "switched": True, "embedded": embedded,
                            "chunks": n, "seconds": round(time.monotonic() - t0, 3)}
                continue  # a document arrived between the check and the switch: catch it up
            vecs = embedder.encode([t for _, t in todo])
            store.cache_vectors(model_id, [(h, vecs[i].tobytes()) for i, (h, _) in enumerate(todo)])
            embedded += len(todo)
            if progress is not None:
                progress(*store.model_coverage(model_id))
    except BaseException:
        store.set_reembed_target(None)
        raise
    store.set_reembed_target(None)
    raise RuntimeError(f"reembed: {model_id} did not catch up with indexing after {max_rounds} rounds; "
                       "run it again when the index is quieter")
