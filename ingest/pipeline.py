"""One document change, start to finish (DESIGN.md: fetch, decide, extract, chunk,
embed, sync). Every step looks at the current state of the file, so a repeated
or stale event is harmless: the task is idempotent.

Decide, cheapest first:
  * same size and mtime, same ACL            -> skip (no read)
  * same size and mtime, other ACL           -> ACL-only update (no parse, no embed)
  * same content hash                        -> stat/ACL update only
  * otherwise                                -> extract, chunk, embed what the cache lacks, apply
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import stat as stat_mod
import tempfile
from dataclasses import dataclass
from pathlib import Path

from acl.posix import acl_for_path

from .sources.base import DELETE, MOVE, RESCAN, UPSERT, ChangeEvent
from .stores.base import ChunkRecord, DocRecord

log = logging.getLogger("ingest.pipeline")

MAX_FILE_BYTES = 200 * 1024 * 1024


def folder_source(root: str | os.PathLike) -> str:
    return "folder:" + os.path.abspath(root)


def file_uri(root: str, rel: str) -> str:
    return Path(os.path.join(root, rel)).as_uri()


def new_doc_id(store, source: str, external_id: str) -> str:
    """Stable id from (source, external id); a rename keeps the id it had."""
    n = 0
    while True:
        seed = f"{source}\0{external_id}" + (f"\0{n}" if n else "")
        doc_id = hashlib.sha256(seed.encode()).hexdigest()[:24]
        if not store.doc_id_taken(doc_id):
            return doc_id
        n += 1


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_passwords() -> list[tuple[str, str]]:
    """Passwords for encrypted documents, by path glob, from the JSON file named by
    ``INGEST_PASSWORDS_FILE``: ``[{"pattern": "/share/legal/*.pdf", "password": "..."}]``.
    They are never logged."""
    f = os.environ.get("INGEST_PASSWORDS_FILE")
    if not f:
        return []
    with open(f) as fh:
        return [(e["pattern"], e["password"]) for e in json.load(fh)]


@dataclass
class Outcome:
    action: str  # indexed | skipped | acl | touched | moved | deleted | error | ignored | missing
    doc_id: str | None = None
    parsed: int = 0
    embedded: int = 0
    chunks: int = 0
    detail: str | None = None


class Pipeline:
    def __init__(self, store, embedder=None, *, sandbox: bool = True, passwords: list | None = None):
        self.store = store
        self._embedder = embedder
        self._chunker = None
        self.sandbox = sandbox  # parse in a child process under time and memory limits
        self.passwords = passwords if passwords is not None else load_passwords()

    @property
    def embedder(self):
        if self._embedder is None:
            from .embed import get_embedder

            self._embedder = get_embedder(self.store.model_id)
        return self._embedder

    @property
    def chunker(self):
        if self._chunker is None:
            from .chunking import Chunker

            e = self.embedder
            self._chunker = Chunker(e.count_tokens, e.max_tokens)
        return self._chunker

    # -- entry point ----------------------------------------------------------------
    def handle(self, ev: ChangeEvent, batch: str | None = None) -> list[Outcome]:
        """Apply one change event; returns what happened (also logged to the store)."""
        if ev.kind == RESCAN:
            from .sources.reconcile import reconcile

            outs = []
            for sub in reconcile(self.store, ev.root, subtree=ev.path):
                outs.extend(self.handle(sub, batch))
            return outs
        if ev.kind == MOVE:
            out = [self.move(ev.root, ev.path, ev.dest_path)]
            out.append(self.upsert(ev.root, ev.dest_path))
        elif ev.kind == DELETE:
            out = [self.delete(ev.root, ev.path)]
        elif ev.kind == UPSERT:
            out = [self.upsert(ev.root, ev.path)]
        else:
            raise ValueError(f"unknown change kind {ev.kind!r}")
        source = folder_source(ev.root)
        rels = [ev.path, ev.dest_path] if ev.kind == MOVE else [ev.path]
        for i, (o, rel) in enumerate(zip(out, rels)):
            # a move logs two outcomes; only the last one counts for batch progress
            self.store.log_outcome(action=o.action, source=source, external_id=rel, doc_id=o.doc_id,
                                   batch=batch if i == len(out) - 1 else None, parsed=o.parsed,
                                   embedded=o.embedded, detail=o.detail)
            log.info("%s %s doc=%s parsed=%d embedded=%d%s", o.action, rel, o.doc_id, o.parsed,
                     o.embedded, f" ({o.detail})" if o.detail and o.action == "error" else "")
        return out

    # -- operations -----------------------------------------------------------------
    def delete(self, root: str, rel: str) -> Outcome:
        source = folder_source(root)
        with self.store.lock(f"{source}\0{rel}"):
            row = self.store.get_doc(source, rel)
            if row is None:
                return Outcome("missing")
            if os.path.lexists(os.path.join(root, rel)):  # came back before we ran
                return Outcome("skipped", row["doc_id"], detail="file exists again")
            self.store.delete(row["doc_id"])
            return Outcome("deleted", row["doc_id"])

    def move(self, root: str, old: str, new: str) -> Outcome:
        source = folder_source(root)
        with self.store.lock(f"{source}\0{old}", f"{source}\0{new}"):
            row = self.store.get_doc(source, old)
            if row is None:
                return Outcome("missing", detail=f"{old} not indexed; treated as new")
            if os.path.lexists(os.path.join(root, old)):
                return Outcome("skipped", row["doc_id"], detail="source path still exists")
            target = self.store.get_doc(source, new)
            if target is not None and target["doc_id"] != row["doc_id"]:
                self.store.delete(target["doc_id"])  # the move replaced another document
            self.store.move(row["doc_id"], new, file_uri(root, new))
            return Outcome("moved", row["doc_id"], detail=f"{old} -> {new}")

    def upsert(self, root: str, rel: str) -> Outcome:
        source = folder_source(root)
        path = os.path.join(root, rel)
        with self.store.lock(f"{source}\0{rel}"):
            row = self.store.get_doc(source, rel)
            try:
                st = os.stat(path, follow_symlinks=False)
            except FileNotFoundError:
                if row is not None:
                    self.store.delete(row["doc_id"])
                    return Outcome("deleted", row["doc_id"])
                return Outcome("missing")
            if not stat_mod.S_ISREG(st.st_mode):
                return Outcome("ignored", row and row["doc_id"], detail="not a regular file")
            acl = acl_for_path(path, file_stat=st)
            if row is not None and row["size"] == st.st_size and row["mtime_ns"] == st.st_mtime_ns:
                if row["acl_version"] == acl.version:
                    return Outcome("skipped", row["doc_id"])
                self.store.set_acl(row["doc_id"], acl)
                return Outcome("acl", row["doc_id"])
            doc_id = row["doc_id"] if row else new_doc_id(self.store, source, rel)
            base = DocRecord(doc_id=doc_id, source=source, external_id=rel, uri=file_uri(root, rel), mime=None,
                             size=st.st_size, mtime_ns=st.st_mtime_ns, content_version=None, acl=acl)
            if st.st_size > MAX_FILE_BYTES:
                return self._fail(base, "too-large", f"{st.st_size} bytes is over the {MAX_FILE_BYTES} byte limit",
                                  status="quarantined")
            try:
                version = sha256_file(path)
            except OSError as e:
                return self._fail(base, "unreadable", f"cannot read file: {e.strerror}")
            base.content_version = version
            if row is not None and row["content_version"] == version:
                if row["acl_version"] != acl.version:
                    self.store.set_acl(doc_id, acl, size=st.st_size, mtime_ns=st.st_mtime_ns)
                    return Outcome("acl", doc_id, detail="content unchanged")
                self.store.touch(doc_id, st.st_size, st.st_mtime_ns)
                return Outcome("touched", doc_id)
            return self._index(base, path)

    # -- the content path -------------------------------------------------------------
    def _fail(self, doc: DocRecord, code: str, message: str, *, parsed: int = 0,
              status: str = "error") -> Outcome:
        doc.status, doc.error_code, doc.error = status, code, message
        self.store.record_failure(doc)
        return Outcome("error", doc.doc_id, parsed=parsed, detail=f"{code}: {message}")

    def _index(self, doc: DocRecord, path: str, depth: int = 0) -> Outcome:
        workdir = tempfile.mkdtemp(prefix="ingest-parse-")  # child documents' bytes, private
        try:
            return self._index_in(doc, path, depth, Path(workdir))
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    def _extract(self, path: str, ctx):
        from extractors import extract, sandbox

        if not self.sandbox:
            return extract(path, max_bytes=MAX_FILE_BYTES, ctx=ctx)
        label = os.path.splitext(path)[1].lstrip(".").lower() or "parser"  # for limit messages only
        return sandbox.run(extract, path, max_bytes=MAX_FILE_BYTES, ctx=ctx, label=label)

    def _index_in(self, doc: DocRecord, path: str, depth: int, workdir: Path) -> Outcome:
        from extractors.base import ExtractContext, ExtractionError

        from .quality import QUARANTINED, assess

        ctx = ExtractContext(workdir=workdir, depth=depth, passwords=self.passwords, source_path=path)
        try:
            ex = self._extract(path, ctx)
        except ExtractionError as e:
            return self._fail(doc, e.code, e.message, parsed=1, status="quarantined")
        doc.mime, doc.extractor, doc.extractor_version = ex.mime, ex.extractor, ex.extractor_version
        # children first: the parent's version is recorded only once they are all done
        kid_parsed, kid_embedded = self._children(doc, ex.children, depth)
        report = assess(ex)
        doc.quality = report.to_dict()
        if report.verdict == QUARANTINED:
            code = {"empty": "no-text"}.get(report.reasons[0].split(":")[0], report.reasons[0].split(":")[0])
            out = self._fail(doc, code, "; ".join(report.reasons), parsed=1, status="quarantined")
            out.parsed += kid_parsed
            out.embedded += kid_embedded
            return out
        doc.flags = [*doc.flags, *report.flags]
        chunks = self.chunker.chunk(ex.elements)
        if not chunks:
            return self._fail(doc, "no-text", "the document has no extractable text", parsed=1 + kid_parsed,
                              status="quarantined")
        from .chunking import chunk_id, text_hash

        # the model embeds the section path with the text (Chunk.embed_text); the cache key
        # is the hash of exactly what was embedded
        inputs = [c.embed_text for c in chunks]
        vectors, computed = self.vectors(inputs, [text_hash(t) for t in inputs])

        model_id = self.embedder.model_id
        settings = self.chunker.settings
        records = [ChunkRecord(chunk_id(doc.doc_id, c.index, c.text_hash), c.index, c.text, c.text_hash, c.tokens,
                               c.page, c.section, vectors[i], settings, model_id)
                   for i, c in enumerate(chunks)]
        self.store.apply(doc, records)
        return Outcome("indexed", doc.doc_id, parsed=1 + kid_parsed, embedded=computed + kid_embedded,
                       chunks=len(chunks))

    def _children(self, parent: DocRecord, children, depth: int) -> tuple[int, int]:
        """Index a container's members as documents ``<parent>!<member>`` that inherit its
        ACL; drop members that are gone. Returns (parsed, embedded) for the counters."""
        existing = self.store.children_of(parent.doc_id)
        seen: set[str] = set()
        parsed = embedded = 0
        for child in children:
            name, n = child.name, 2
            while f"{parent.external_id}!{name}" in seen:  # two attachments with one name
                name, n = f"{child.name}~{n}", n + 1
            ext = f"{parent.external_id}!{name}"
            seen.add(ext)
            version = sha256_file(child.path)
            row = existing.get(ext)
            if row is not None and row["content_version"] == version:
                if row["acl_version"] != parent.acl.version:
                    self.store.set_acl(row["doc_id"], parent.acl)
                continue
            doc_id = row["doc_id"] if row else new_doc_id(self.store, parent.source, ext)
            cdoc = DocRecord(doc_id=doc_id, source=parent.source, external_id=ext, uri=f"{parent.uri}!{name}",
                             mime=None, size=child.size, mtime_ns=None, content_version=version, acl=parent.acl,
                             parent_id=parent.doc_id)
            o = self._index(cdoc, child.path, depth + 1)
            self.store.log_outcome(action=o.action, source=parent.source, external_id=ext, doc_id=o.doc_id,
                                   parsed=o.parsed, embedded=o.embedded, detail=o.detail)
            parsed, embedded = parsed + o.parsed, embedded + o.embedded
        for ext, row in existing.items():
            if ext not in seen:
                self.store.delete(row["doc_id"])
        return parsed, embedded

    def vectors(self, texts: list[str], hashes: list[str]) -> tuple[list[bytes], int]:
        """Vectors for texts, from the cache keyed by (model id, text hash) where possible."""
        model_id = self.embedder.model_id
        have = self.store.cached_vectors(model_id, list(set(hashes)))
        missing = {h: t for t, h in zip(texts, hashes) if h not in have}
        if missing:
            hs = list(missing)
            vecs = self.embedder.encode([missing[h] for h in hs])
            new = [(h, vecs[i].tobytes()) for i, h in enumerate(hs)]
            self.store.cache_vectors(model_id, new)
            have.update(new)
        return [have[h] for h in hashes], len(missing)
