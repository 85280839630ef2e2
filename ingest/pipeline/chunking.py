"""Heading-aware chunking bounded by the embedding model's tokenizer.

* A heading starts a section; a chunk never spans two sections, so an edit in one
  section cannot move the chunks of another.
* Inside a section, paragraphs (then sentences, then token windows for a run-on
  text) are packed up to ``target`` word pieces; no chunk ever exceeds the model's
  maximum, so nothing is silently truncated at embedding time.
* A content-defined boundary (a paragraph whose hash is 0 mod ``anchor_every``)
  lets chunk boundaries re-synchronise after an edit in a long flat section.
* When a section is split, each later part starts with the last sentence of the
  part before (small overlap, only then).
* Tables longer than a chunk are split by rows, each part repeating the header row.
* Every chunk carries its context, the section path (document title > section >
  subsection), and ``embed_text`` puts that context in front of the chunk text, so a
  chunk deep in a section is embedded (and indexed, through the FTS ``section``
  column) with the title it sits under. Room for the context is reserved in the
  token budget: ``embed_text`` never exceeds the model's maximum either.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from extractors.base import Element
from ingest.embedding import embed_text, section_context, text_hash  # text_hash: also the chunk ids' (re-exported)

CHUNKER_VERSION = "heading-aware/2"
_SENT = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[])")


@dataclass
class Chunk:
    index: int
    text: str
    page: int | None
    section: str
    tokens: int
    context: str = ""  # the section path as embedded (trimmed to CONTEXT_MAX_TOKENS)

    @property
    def text_hash(self) -> str:
        return text_hash(self.text)

    @property
    def embed_text(self) -> str:
        return embed_text(self.text, self.context)

    @property
    def embed_hash(self) -> str:
        """The embedding cache key: the hash of exactly what the model embeds."""
        return text_hash(self.embed_text)


def chunk_id(doc_id: str, index: int, thash: str) -> str:
    return hashlib.sha256(f"{doc_id}\0{index}\0{thash}".encode()).hexdigest()[:32]


@dataclass
class _Unit:
    text: str
    page: int | None
    tokens: int
    anchor: bool = False
    table: bool = False  # a table part (repeats its header row; takes no overlap)


class Chunker:
    def __init__(self, counter, max_tokens: int, target: int | None = None, overlap: int = 40,
                 anchor_every: int = 5, min_anchor_tokens: int = 96):
        self.count = counter  # text -> number of word pieces
        self.max = max_tokens
        self.target = min(target or int(max_tokens * 0.8), max_tokens)
        self.overlap = overlap
        self.anchor_every = anchor_every
        self.min_anchor = min_anchor_tokens

    @property
    def settings(self) -> str:
        return f"{CHUNKER_VERSION} target={self.target} max={self.max} overlap={self.overlap}"

    # -- splitting oversized pieces -------------------------------------------------
    def _split_long(self, text: str, page: int | None, limit: int) -> list[_Unit]:
        out: list[_Unit] = []
        for sent in _SENT.split(text):
            n = self.count(sent)
            if n <= limit:
                out.append(_Unit(sent, page, n))
                continue
            out.extend(self._token_windows(sent, page, limit))
        return out

    def _token_windows(self, text: str, page, limit: int) -> list[_Unit]:
        offsets = self._offsets(text)
        out, start = [], 0
        while start < len(offsets):
            end = min(start + limit, len(offsets))
            a, b = offsets[start][0], offsets[end - 1][1]
            piece = text[a:b]
            out.append(_Unit(piece, page, self.count(piece)))
            start = end
        return out

    def _offsets(self, text: str):
        owner = getattr(self.count, "__self__", None)
        if owner is not None and hasattr(owner, "token_offsets"):
            return owner.token_offsets(text)
        # fallback: whitespace words as tokens
        return [(m.start(), m.end()) for m in re.finditer(r"\S+", text)]

    def _tail(self, text: str) -> tuple[str, int] | None:
        """The overlap carried into the next part: the last sentence, or its last words."""
        if self.overlap <= 0:
            return None
        last = _SENT.split(text)[-1]
        n = self.count(last)
        if n <= self.overlap:
            return last, n
        offs = self._offsets(last)
        start = offs[len(offs) - self.overlap][0]
        while start > 0 and not last[start - 1].isspace():  # back to a word start
            start -= 1
        tail = last[start:]
        n = self.count(tail)
        return (tail, n) if n <= self.overlap * 2 else None

    def _table_units(self, el: Element, limit: int) -> list[_Unit]:
        lines = [ln for ln in el.text.splitlines() if ln.strip()]
        if not lines:
            return []
        header, rows = lines[0], lines[1:]
        hn = self.count(header)
        out: list[_Unit] = []
        cur, cur_n = [header], hn
        for row in rows:
            rn = self.count(row)
            if rn + hn > limit:  # one enormous row
                if len(cur) > 1:
                    out.append(_Unit("\n".join(cur), el.page, cur_n, table=True))
                    cur, cur_n = [header], hn
                out.extend(self._split_long(row, el.page, limit))
                continue
            if cur_n + rn > limit:
                out.append(_Unit("\n".join(cur), el.page, cur_n, table=True))
                cur, cur_n = [header], hn
            cur.append(row)
            cur_n += rn
        if len(cur) > 1 or not rows:
            out.append(_Unit("\n".join(cur), el.page, cur_n, table=True))
        return out

    # -- main ------------------------------------------------------------------------
    def chunk(self, elements: list[Element]) -> list[Chunk]:
        sections: list[tuple[str, list[_Unit]]] = []
        stack: list[tuple[int, str]] = []
        units: list[_Unit] = []
        path = ""
        limit = self.max - self.overlap  # room for an overlap sentence

        def close():
            if units:
                sections.append((path, list(units)))
                units.clear()

        pending: list[_Unit] = []  # headings wait for the body they introduce
        contexts: dict[str, tuple[str, int]] = {"": ("", 0)}

        def context(p: str) -> tuple[str, int]:
            """(context text, tokens reserved for it) for a path, once per path."""
            c = contexts.get(p)
            if c is None:
                c = contexts[p] = section_context(p, self.count, self._offsets)
            return c

        for el in elements:
            text = (el.text or "").strip()
            if not text:
                continue
            if el.kind in ("title", "heading"):
                close()
                level = el.level or 1
                while stack and stack[-1][0] >= level:
                    stack.pop()
                stack.append((level, " ".join(text.split())[:200]))
                path = " > ".join(t for _, t in stack)
                limit = self.max - self.overlap - context(path)[1]
                pending.extend(self._split_long(text, el.page, limit) if self.count(text) > limit
                               else [_Unit(text, el.page, self.count(text))])
                continue
            if pending:
                units.extend(pending)
                pending.clear()
            if el.kind == "table":
                units.extend(self._table_units(el, limit))
                continue
            n = self.count(text)
            if n > limit:
                units.extend(self._split_long(text, el.page, limit))
            else:
                h = int(hashlib.sha1(text.encode()).hexdigest()[:8], 16)
                units.append(_Unit(text, el.page, n, anchor=(h % self.anchor_every == 0)))
        units.extend(pending)  # trailing headings with no body still count as text
        close()

        chunks: list[Chunk] = []
        for spath, sunits in sections:
            ctext, ctx_n = context(spath)
            cmax, ctarget = self.max - ctx_n, self.target - ctx_n
            parts: list[list[_Unit]] = []
            cur: list[_Unit] = []
            cur_n = 0
            for u in sunits:
                if cur and cur_n + u.tokens + 1 > ctarget - (self.overlap if parts else 0):
                    parts.append(cur)
                    cur, cur_n = [], 0
                cur.append(u)
                cur_n += u.tokens + 1
                if u.anchor and cur_n >= self.min_anchor:
                    parts.append(cur)
                    cur, cur_n = [], 0
            if cur:
                parts.append(cur)
            prev_tail: tuple[str, int] | None = None
            for part in parts:
                # WordPiece pre-splits on whitespace, so the count of texts joined by
                # blank lines is the sum of their counts (tests check it against the tokenizer)
                body = "\n\n".join(u.text for u in part)
                text, n = body, sum(u.tokens for u in part)
                if prev_tail and not part[0].table and prev_tail[1] + n <= cmax:
                    text, n = prev_tail[0] + "\n\n" + body, prev_tail[1] + n
                page = next((u.page for u in part if u.page is not None), None)
                pieces = [(text, n)] if n <= cmax else [
                    (w.text, w.tokens) for w in self._token_windows(body, page, cmax)]
                for ptext, pn in pieces:
                    chunks.append(Chunk(len(chunks), ptext, page, spath, pn, ctext))
                prev_tail = self._tail(part[-1].text)
        return chunks
