"""Search filters: one validated form, and its translation to SQL (kept apart, so every
store mirrors the same contract).

The filter dict a caller passes to ``Index.search(..., filters=...)``; every key is
optional, all given keys must hold together (AND), and the ACL always applies on top,
so a filter can only narrow what a principal may read, never widen it:

=================  ===========================================  ==========================================
key                value                                        matches a chunk when
=================  ===========================================  ==========================================
``source``         str or list of str                           its document's source is one of them
``uri_prefix``     str or list of str                           its document's URI starts with one of them
``path_prefix``    str or list of str (file system paths)       as ``uri_prefix`` with the path's file URI
``mime``           str or list ("application/pdf", "text/*")    its document's type is one of them
``labels``         str or list of str                           it carries *all* of them
``labels_any``     str or list of str                           it carries at least one of them
``exclude_labels`` str or list of str                           it carries *none* of them
``modified_after`` datetime, ISO-8601 str, or epoch seconds     its document's mtime >= that (inclusive)
``modified_before`` same                                        its document's mtime < that (exclusive)
``doc_ids``        str or list of str                           its document id is one of them
``entities_any``   "TYPE:name" or a list of them                it mentions at least one of them
``entities``       "TYPE:name" or a list of them                it mentions *all* of them
``author``         str or list of str                           an author of its document contains one
                                                                of them (case-insensitive)
``title_contains`` str                                          its document's title contains it
                                                                (case-insensitive)
``created_after``  datetime, ISO-8601 str, or epoch seconds     its document's created date >= that
``created_before`` same                                         its document's created date < that
=================  ===========================================  ==========================================

Entity names match as they are stored (``ingest.pipeline.nlp``: case, whitespace, possessives and a
leading "the" do not matter): ``{"entities_any": ["ORG:Globex", "PERSON:Jane Smith"]}``.
Document metadata (``extractors.metadata``) comes from the file itself (PDF Info/XMP, Office
core properties, ODF meta.xml, EPUB OPF, HTML head, mail headers); a document without a
created date never matches ``created_after``/``created_before``. ``author`` and
``title_contains`` ignore case for ASCII letters in both stores (SQLite's ``lower``).

A chunk's labels are its own labels plus ``flag:<flag>`` for each flag of its document
(as on every ``Hit``), so ``exclude_labels=["flag:acl-unknown"]`` works too. A document
without an mtime (an attachment, an archive member) never matches a time filter. An
unknown key, a wrong type or an empty list is a ``ValueError`` that names the key.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from ingest.stores.entities import parse_entity

_LIST_KEYS = ("source", "uri_prefix", "path_prefix", "mime", "labels", "labels_any", "exclude_labels", "doc_ids")
_TIME_KEYS = ("modified_after", "modified_before")
_META_KEYS = ("entities_any", "entities", "author", "title_contains", "created_after", "created_before")
KEYS = _LIST_KEYS + _TIME_KEYS + _META_KEYS


@dataclass(frozen=True)
class Filters:
    """Normalised filters: tuples of strings and mtimes in ns. Hashable (a cache key)."""

    source: tuple[str, ...] = ()
    uri_prefix: tuple[str, ...] = ()
    mime: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()
    labels_any: tuple[str, ...] = ()
    exclude_labels: tuple[str, ...] = ()
    doc_ids: tuple[str, ...] = ()
    modified_after_ns: int | None = None
    modified_before_ns: int | None = None
    entities_any: tuple[str, ...] = ()  # entity keys ("ORG:globex", ingest.stores.entities.entity_key)
    entities_all: tuple[str, ...] = ()
    author: tuple[str, ...] = ()  # lower case
    title_contains: str | None = None  # lower case
    created_after: str | None = None  # "YYYY-MM-DDTHH:MM:SSZ", as extractors.metadata stores dates
    created_before: str | None = None

    @property
    def empty(self) -> bool:
        return self == Filters()

    @property
    def chunk_level(self) -> bool:
        """True when a filter looks at chunks (labels), not only at their documents."""
        return bool(self.labels or self.labels_any or self.exclude_labels or self.entities_any or self.entities_all)


def _strings(key: str, value) -> tuple[str, ...]:
    vals = [value] if isinstance(value, str) else value
    if not isinstance(vals, (list, tuple, set, frozenset)):
        raise ValueError(f"filter {key!r}: expected a string or a list of strings, got {type(value).__name__}")
    if not vals:
        raise ValueError(f"filter {key!r}: the list is empty; give at least one value or leave the key out")
    for v in vals:
        if not isinstance(v, str) or not v:
            raise ValueError(f"filter {key!r}: every value must be a non-empty string, got {v!r}")
    return tuple(sorted(set(vals)))


def _time_ns(key: str, value) -> int:
    if isinstance(value, bool):
        raise ValueError(f"filter {key!r}: expected a datetime, an ISO-8601 string or epoch seconds, got a bool")
    if isinstance(value, (int, float)):
        return int(value * 1_000_000_000)
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"filter {key!r}: {value!r} is not an ISO-8601 date or time") from None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)  # naive means UTC, never the server's zone
        return int(value.timestamp() * 1_000_000) * 1000
    raise ValueError(f"filter {key!r}: expected a datetime, an ISO-8601 string or epoch seconds, "
                     f"got {type(value).__name__}")


def normalise(filters: "dict | Filters | None") -> Filters:
    """The caller's filter dict -> :class:`Filters`, or a ``ValueError`` naming the bad key."""
    if filters is None:
        return Filters()
    if isinstance(filters, Filters):
        return filters
    if not isinstance(filters, dict):
        raise ValueError(f"filters must be a dict, got {type(filters).__name__}")
    unknown = sorted(set(filters) - set(KEYS))
    if unknown:
        raise ValueError(f"unknown filter key(s) {', '.join(map(repr, unknown))}; valid keys: {', '.join(KEYS)}")
    kw: dict = {}
    for key, value in filters.items():
        if value is None:
            continue
        if key in _TIME_KEYS:
            kw[key + "_ns"] = _time_ns(key, value)
        elif key in ("entities_any", "entities"):
            try:
                keys = tuple(sorted({parse_entity(v) for v in _strings(key, value)}))
            except ValueError as e:
                raise ValueError(f"filter {key!r}: {e}") from None
            kw["entities_all" if key == "entities" else key] = keys
        elif key == "author":
            kw[key] = tuple(sorted({v.lower() for v in _strings(key, value)}))
        elif key == "title_contains":
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"filter 'title_contains': expected a non-empty string, got {value!r}")
            kw[key] = value.strip().lower()
        elif key in ("created_after", "created_before"):
            ns = _time_ns(key, value)
            kw[key] = datetime.fromtimestamp(ns // 1_000_000_000, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        elif key == "path_prefix":
            uris = []
            for p in _strings(key, value):
                if not Path(p).is_absolute():
                    raise ValueError(f"filter 'path_prefix': {p!r} is not an absolute path")
                u = Path(p).as_uri()
                uris.append(u + "/" if p.endswith("/") and not u.endswith("/") else u)
            kw["uri_prefix"] = tuple(sorted(set(kw.get("uri_prefix", ())) | set(uris)))
        elif key == "uri_prefix":
            kw["uri_prefix"] = tuple(sorted(set(kw.get("uri_prefix", ())) | set(_strings(key, value))))
        else:
            kw[key] = _strings(key, value)
    f = Filters(**kw)
    if (f.modified_after_ns is not None and f.modified_before_ns is not None
            and f.modified_after_ns >= f.modified_before_ns):
        raise ValueError("filters: modified_after must be earlier than modified_before")
    if f.created_after is not None and f.created_before is not None and f.created_after >= f.created_before:
        raise ValueError("filters: created_after must be earlier than created_before")
    return f


def to_dict(f: Filters) -> dict:
    """A JSON-able form (for the audit log)."""
    out = {k: list(getattr(f, k)) for k in ("source", "uri_prefix", "mime", "labels", "labels_any",
                                            "exclude_labels", "doc_ids") if getattr(f, k)}
    if f.modified_after_ns is not None:
        out["modified_after_ns"] = f.modified_after_ns
    if f.modified_before_ns is not None:
        out["modified_before_ns"] = f.modified_before_ns
    for k in ("entities_any", "entities_all", "author"):
        if getattr(f, k):
            out[k] = list(getattr(f, k))
    for k in ("title_contains", "created_after", "created_before"):
        if getattr(f, k) is not None:
            out[k] = getattr(f, k)
    return out


# -- SQL --------------------------------------------------------------------------------------------
# One translation (``_where``) over two dialects: what differs between SQLite and PostgreSQL is the
# placeholder, how a list binds, and the JSON/text functions; the contract is the same.
# A chunk's label set as SQL: its own labels (JSON array) and its document's flags as "flag:<f>".
_SQLITE_LABELS = ("(SELECT value FROM json_each(c.labels)"
                  " UNION ALL SELECT 'flag:' || value FROM json_each(d.flags))")
# PostgreSQL runs over ``chunks c`` (which carries the ACL arrays): document conditions go through
# a sub-select of documents, so no column name is ambiguous; labels as in SQLite (own + "flag:").
_PG_LABELS = ("(SELECT jsonb_array_elements_text(c.labels::jsonb) AS value UNION ALL"
              " SELECT 'flag:' || f FROM documents fd, jsonb_array_elements_text(fd.flags::jsonb) f"
              " WHERE fd.doc_id = c.doc_id)")


@dataclass(frozen=True)
class _Dialect:
    p: str  # the placeholder
    true: str  # the condition that holds for every row
    labels: str  # a chunk's label set: a sub-select with one column, ``value``
    label_arg: str  # a placeholder compared with a label
    prefix: str  # "{col} starts with" the next two args: (length, prefix)
    contains: str  # "lower({expr}) contains" the next arg (already lower case)
    authors: str  # a sub-select of the document's authors, one column ``a`` (table alias a)
    author: str  # the expression for one author in ``authors``
    title: str  # the document's title
    created: str  # the document's created date, comparable as a string
    list_binds_once: bool  # True: a list is one argument (``= ANY(%s)``), else one ``?`` per value

    def any_of(self, col: str, values) -> tuple[str, list]:
        if self.list_binds_once:
            return f"{col} = ANY({self.p})", [list(values)]
        return f"{col} IN ({','.join(self.p * len(values))})", list(values)


_SQLITE = _Dialect(p="?", true="1", labels=_SQLITE_LABELS, label_arg="?", prefix="substr({col}, 1, ?) = ?",
                   contains="instr(lower({expr}), ?) > 0", authors="json_each(d.metadata, '$.authors') a",
                   author="a.value", title="json_extract(d.metadata, '$.title')",
                   created="json_extract(d.metadata, '$.created')", list_binds_once=False)
_POSTGRES = _Dialect(p="%s", true="TRUE", labels=_PG_LABELS, label_arg="%s::text",
                     prefix="left({col}, %s) = %s", contains="strpos(lower({expr}), %s) > 0",
                     authors="jsonb_array_elements_text(d.metadata::jsonb -> 'authors') a", author="a",
                     title="d.metadata::jsonb ->> 'title'", created="(d.metadata::jsonb ->> 'created') COLLATE \"C\"",
                     list_binds_once=True)


def _where(f: Filters, sql: _Dialect) -> tuple[list, list, list, list]:
    """``(document conditions, their args, chunk conditions, their args)`` in dialect ``sql``."""
    doc: list[str] = []
    dargs: list = []
    conds: list[str] = []
    args: list = []

    def add(to: list, to_args: list, cond: str, cond_args: list) -> None:
        to.append(cond)
        to_args.extend(cond_args)

    def starts_with(col: str, prefixes) -> list[str]:  # no LIKE: no wildcard to escape, case-sensitive
        for p in prefixes:
            dargs.extend([len(p), p])
        return [sql.prefix.format(col=col) for _ in prefixes]

    for col, values in (("d.source", f.source), ("d.doc_id", f.doc_ids)):
        if values:
            add(doc, dargs, *sql.any_of(col, values))
    if f.uri_prefix:
        doc.append("(" + " OR ".join(starts_with("d.uri", f.uri_prefix)) + ")")
    if f.mime:
        exact = [m for m in f.mime if not m.endswith("/*")]
        parts = []
        if exact:
            part, part_args = sql.any_of("d.mime", exact)
            parts.append(part)
            dargs.extend(part_args)
        parts += starts_with("d.mime", [m[:-1] for m in f.mime if m.endswith("/*")])  # "text/*" -> "text/"
        doc.append("(" + " OR ".join(parts) + ")")
    if f.author:
        doc.append(f"EXISTS (SELECT 1 FROM {sql.authors} WHERE "
                   + " OR ".join(sql.contains.format(expr=sql.author) for _ in f.author) + ")")
        dargs.extend(f.author)
    for value, cond in ((f.modified_after_ns, f"d.mtime_ns >= {sql.p}"),
                        (f.modified_before_ns, f"d.mtime_ns < {sql.p}"),
                        (f.title_contains, sql.contains.format(expr=sql.title)),
                        (f.created_after, f"{sql.created} >= {sql.p}"),
                        (f.created_before, f"{sql.created} < {sql.p}")):
        if value is not None:
            add(doc, dargs, cond, [value])
    for label in f.labels:
        add(conds, args, f"{sql.label_arg} IN {sql.labels}", [label])
    for values, cond in ((f.labels_any, "EXISTS"), (f.exclude_labels, "NOT EXISTS")):
        if values:
            part, part_args = sql.any_of("l.value", values)
            add(conds, args, f"{cond} (SELECT 1 FROM {sql.labels} l WHERE {part})", part_args)
    if f.entities_any:
        if sql.list_binds_once:
            add(conds, args, "jsonb_exists_any(c.entities::jsonb, %s)", [list(f.entities_any)])
        else:
            part, part_args = sql.any_of("key", f.entities_any)
            add(conds, args, f"EXISTS (SELECT 1 FROM json_each(c.entities) WHERE {part})", part_args)
    if f.entities_all:
        if sql.list_binds_once:
            add(conds, args, "jsonb_exists_all(c.entities::jsonb, %s)", [list(f.entities_all)])
        else:
            for key in f.entities_all:
                add(conds, args, "? IN (SELECT key FROM json_each(c.entities))", [key])
    return doc, dargs, conds, args


def sqlite_where(f: Filters) -> tuple[str, list]:
    """``(condition, args)`` over ``chunks c JOIN documents d``; ``("1", [])`` for no filter.

    The one place filters become SQLite SQL. The ACL is not in here: callers AND it in
    (``c.doc_id IN (<readable>)``), inside the same query, before ranking and limiting.
    """
    doc, dargs, conds, args = _where(f, _SQLITE)
    return (" AND ".join(doc + conds) or _SQLITE.true), dargs + args


def postgres_where(f: Filters) -> tuple[str, list]:
    """``(condition, args)`` over ``chunks c`` with ``%s`` placeholders; ``("TRUE", [])`` for no
    filter. The one place filters become PostgreSQL SQL; the ACL is ANDed in by the caller."""
    doc, dargs, conds, args = _where(f, _POSTGRES)
    if doc:
        conds = [f"c.doc_id IN (SELECT d.doc_id FROM documents d WHERE {' AND '.join(doc)})"] + conds
        args = dargs + args
    return (" AND ".join(conds) or _POSTGRES.true), args
