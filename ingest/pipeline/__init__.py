"""One document's trip: decide, extract (``extractors``), quality, classify, chunk, embed, apply to the store."""
