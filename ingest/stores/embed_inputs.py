"""What the model embedded, kept per chunk: SQLite schema 8 and PostgreSQL schema 9.

The pipeline embeds ``ingest.embedding.embed_text(text, context)`` (the section path, then the
chunk text) and keys the embedding cache by its hash (``Chunk.embed_hash``). Up to schema 7 a
chunk row kept only ``text`` and ``text_hash`` (the bare text), so ``ingest reembed`` embedded
the bare text and cached it under the bare hash: after the switch the new model's vectors lacked
the section context, and the cache keys were not those workers look up. Schema 8 adds
``chunks.context`` and ``chunks.embed_hash`` (the hash of exactly what the model embeds); every
writer sets them (``ChunkRecord.context``, ``ChunkRecord.embed_hash``), the model switch reads
them, and the vectors in ``emb_cache`` stay keyed by ``embed_hash`` (its key column keeps its old
name, ``text_hash``).

Backfill of the rows a schema-7 store holds, without re-parsing anything. The context came with
the chunker ``heading-aware/2`` (commit a987e97 "Chunker: section path (title > section) as
context in every chunk's embedding input ...": it bumped ``CHUNKER_VERSION`` from
``heading-aware/1`` and switched the pipeline from embedding ``c.text`` under ``c.text_hash`` to
embedding ``c.embed_text`` under its hash, in one commit). That commit reached the main line
(merge 396ff94) *after* schema 7 (a726cb8), so a schema-7 store can hold rows of both kinds, and
the schema version alone cannot tell them apart; the ``chunker`` column of each row (the
chunker's settings, which start with its version) can:

* ``heading-aware/1`` rows (and rows of any other or no chunker: test or bench data) were
  embedded as their bare text: context ``''`` and ``embed_hash = text_hash``, which is exactly
  what was embedded and what their cache entries are keyed by;
* ``heading-aware/2`` rows were embedded with their section path: that chunker stores the full
  path in ``section`` and embeds it cut after ``CONTEXT_MAX_TOKENS`` word pieces of the
  tokenizer of the model that embedded the row (``chunks.model_id``). The backfill recomputes
  that cut with ``ingest.embedding.section_context`` (a path of at most that many ASCII
  characters is never cut, so the tokenizer is only loaded for longer ones; it is a tokenizer
  file, no model), and ``embed_hash = sha256(embed_text(text, context))``: again exactly what
  was embedded, and the key its cache entry has. If the tokenizer cannot be loaded (a model
  directory that is gone), the uncut path is kept and a warning says so: the row stays
  self-consistent (its hash is that of its text and context), only a re-ingest would embed it
  with the cut path (a cache miss, never a wrong vector).
"""
from __future__ import annotations

import logging

from ingest.embedding import CONTEXT_MAX_TOKENS, DEFAULT_MODEL, EmbedderBase, embed_text, section_context, text_hash

log = logging.getLogger("ingest.stores")

_V2 = "heading-aware/2 %"  # the settings string of the chunker that introduced the context
_BATCH = 2000


def backfill(db, ph: str) -> None:
    """Set ``context`` and ``embed_hash`` of the ``heading-aware/2`` rows (see the module text);
    run inside the migration's transaction. ``ph``: the driver's placeholder."""
    tokenizers: dict[str | None, EmbedderBase | None] = {}

    def context(section: str, model_id: str | None) -> str:
        if len(section) <= CONTEXT_MAX_TOKENS and section.isascii():  # each word piece spans >= 1 character
            return section
        if model_id not in tokenizers:
            try:
                e = EmbedderBase(model_id or DEFAULT_MODEL)
                e.count_tokens("")
                tokenizers[model_id] = e
            except Exception as err:  # no model directory, no tokenizer file: logged, see above
                log.warning("embed-inputs backfill: no tokenizer for model %s (%s); long section paths are kept "
                            "uncut as the embedding context of its chunks", model_id, err)
                tokenizers[model_id] = None
        e = tokenizers[model_id]
        return section if e is None else section_context(section, e.count_tokens, e.token_offsets)[0]

    last = -1
    while True:
        rows = db.execute(f"SELECT rowid, text, section, model_id FROM chunks WHERE chunker LIKE {ph}"
                          f" AND section<>'' AND rowid>{ph} ORDER BY rowid LIMIT {_BATCH}", (_V2, last)).fetchall()
        if not rows:
            return
        updates = []
        for r in rows:
            ctx = context(r["section"], r["model_id"])
            updates.append((ctx, text_hash(embed_text(r["text"], ctx)), r["rowid"]))
        db.cursor().executemany(f"UPDATE chunks SET context={ph}, embed_hash={ph} WHERE rowid={ph}", updates)
        last = rows[-1]["rowid"]


def sqlite_backfill(db) -> None:
    backfill(db, "?")


def postgres_backfill(db) -> None:
    backfill(db, "%s")


SQLITE_EMBED_INPUTS: list = [
    "ALTER TABLE chunks ADD COLUMN context TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE chunks ADD COLUMN embed_hash TEXT",
    "UPDATE chunks SET embed_hash=text_hash",  # heading-aware/1 and older: the bare text was embedded
    sqlite_backfill,  # heading-aware/2: the section path was embedded in front of it
]

POSTGRES_EMBED_INPUTS: list = [
    "ALTER TABLE chunks ADD COLUMN IF NOT EXISTS context text NOT NULL DEFAULT ''",
    "ALTER TABLE chunks ADD COLUMN IF NOT EXISTS embed_hash text",
    "UPDATE chunks SET embed_hash=text_hash",
    postgres_backfill,
    "ALTER TABLE chunks ALTER COLUMN embed_hash SET NOT NULL",
]


def run_migration(db, steps) -> None:
    """A migration's steps: SQL text, or a callable that takes the connection (data backfills)."""
    for step in steps:
        if callable(step):
            step(db)
        else:
            db.execute(step)
