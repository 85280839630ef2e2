"""Document metadata from the file itself: title, authors, dates, subject, keywords, language,
page count; mail headers; archive member paths. Called by ``extractors.registry.run`` after a format
module extracted the text, inside the same sandboxed child, and never fails a document: a
part that cannot be read is left out (and named in a warning).

Where it comes from, per family:

==============  ===============================================================================
PDF             the Info dictionary and XMP (pypdf): dc:title/creator/subject/language,
                xmp:CreateDate/ModifyDate, pdf:Keywords; Info wins where both say something
OOXML           ``docProps/core.xml`` (dc:title, dc:creator, dcterms:created/modified,
                dc:subject, cp:keywords, dc:language, cp:lastModifiedBy), ``docProps/app.xml``
                (Pages / Slides)
ODF / SXW       ``meta.xml`` (dc:title, meta:initial-creator or dc:creator, meta:creation-date,
                dc:date, dc:subject, meta:keyword, dc:language, meta:document-statistic)
EPUB            the OPF package document named by ``META-INF/container.xml``
Legacy Office   the OLE ``\\x05SummaryInformation`` stream (olefile)
HTML            ``<title>``, ``<meta name=author|description|keywords|date...>``, ``<html lang>``
Mail (EML)      From (as authors), To, Cc, Date (created), Subject (title), Message-ID
Archives        member paths (``members``, at most 1,000); mail attachments as ``attachments``
==============  ===============================================================================

Normalised: dates as UTC ISO-8601 (``2024-03-01T12:00:00Z``; a date without a zone is taken as
UTC), people as display names (``"Smith, Jane"`` -> ``"Jane Smith"``, ``"Jane <j@x>"`` ->
``"Jane"``), keywords as a list, every string trimmed and bounded. Every read is bounded (a
container member at most 1 MiB, an HTML or mail head at most 512 KiB).
"""
from __future__ import annotations

import re
from datetime import date, datetime, timezone
from pathlib import Path

MAX_PART = 1 << 20  # bytes of one metadata part (core.xml, meta.xml, OPF)
MAX_HEAD = 512 * 1024  # bytes of HTML / mail read for their head
MAX_STR = 1000  # characters of one value
MAX_LIST = 100  # values of one list (authors, keywords, recipients)
MAX_MEMBERS = 1000


def iso_utc(value) -> str | None:
    """A date (datetime, date, ISO-8601 / W3CDTF string, PDF ``D:`` string) -> UTC ISO-8601."""
    if value is None:
        return None
    dt = None
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, date):
        dt = datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        s = value.strip()
        if not s:
            return None
        if s.startswith("D:"):
            m = re.match(r"D:(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(Z|[+-]\d{2}'?\d{2}'?)?", s)
            if not m:
                return None
            y, mo, d, h, mi, se, tz = m.groups()
            s = f"{y}-{mo or '01'}-{d or '01'}T{h or '00'}:{mi or '00'}:{se or '00'}"
            if tz and tz != "Z":
                tz = tz.replace("'", "")
                s += f"{tz[:3]}:{tz[3:5] or '00'}"
            elif tz == "Z":
                s += "+00:00"
        elif re.fullmatch(r"\d{4}", s):
            s += "-01-01"
        elif re.fullmatch(r"\d{4}-\d{2}", s):
            s += "-01"
        try:
            dt = datetime.fromisoformat(s.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            from email.utils import parsedate_to_datetime

            try:
                dt = parsedate_to_datetime(s)
            except (TypeError, ValueError, IndexError):
                return None
    if dt is None:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    try:
        return dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, ValueError):
        return None


def _clean(value) -> str | None:
    if value is None:
        return None
    s = " ".join(str(value).split())[:MAX_STR]
    return s or None


_ADDR = re.compile(r"\s*<[^>]*>\s*")


def person(value: str) -> str | None:
    """A display name: address dropped (``Jane Smith <j@x>`` -> ``Jane Smith``; a bare address
    stays), quotes trimmed, ``Last, First`` turned round."""
    s = _clean(value)
    if not s:
        return None
    bare = _ADDR.sub(" ", s).strip().strip('"\'').strip()
    s = bare or s.strip("<>")
    parts = [p.strip() for p in s.split(",")]
    if len(parts) == 2 and all(re.fullmatch(r"[^\W\d_][\w.'-]*", p) for p in parts):
        s = f"{parts[1]} {parts[0]}"
    return s or None


def _split_unique(values, sep: str, clean) -> list[str]:
    out: list[str] = []
    for v in values:
        for one in re.split(sep, v or ""):
            c = clean(one)
            if c and c not in out:
                out.append(c)
    return out[:MAX_LIST]


def people(values) -> list[str]:
    return _split_unique(values, r"\s*;\s*", person)


def keywords(values) -> list[str]:
    return _split_unique(values, r"\s*[;,]\s*", _clean)


def _open(p: Path):
    """The file, opened once without following a link (and without blocking on a FIFO), checked
    to be a regular file on that descriptor."""
    import os
    import stat

    fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{p.name}: not a regular file")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _local(tag) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def _xml_fields(data: bytes) -> dict[str, list]:
    """Local element name -> texts (and attributes, as ``@name``) of every element (defusedxml)."""
    from defusedxml import ElementTree

    root = ElementTree.fromstring(data)
    out: dict[str, list] = {}
    for el in root.iter():
        name = _local(el.tag)
        text = "".join(el.itertext()).strip() if len(el) == 0 else (el.text or "").strip()
        if text:
            out.setdefault(name, []).append(text)
        for k, v in el.attrib.items():
            out.setdefault(f"{name}@{_local(k)}", []).append(v)
    return out


def _member(zf, name: str) -> bytes | None:
    try:
        info = zf.getinfo(name)
    except KeyError:
        return None
    if info.file_size > MAX_PART:
        return None
    with zf.open(info) as f:
        data = f.read(MAX_PART + 1)
    return data if len(data) <= MAX_PART else None


def _first(fields: dict, *names):
    for n in names:
        if fields.get(n):
            return fields[n][0]
    return None


def _zip_members(p: Path, *names: str) -> list:
    import zipfile

    with _open(p) as fh, zipfile.ZipFile(fh) as zf:
        return [_member(zf, n) for n in names]


def _office_props(f: dict, creators: list, created: str, modified: str, kw: list) -> dict:
    """The fields OOXML core.xml and ODF meta.xml share (Dublin Core and their own date names)."""
    return dict(title=_first(f, "title"), authors=people(creators), created=iso_utc(_first(f, created)),
                modified=iso_utc(_first(f, modified)), subject=_first(f, "subject"), keywords=keywords(kw),
                language=_first(f, "language"))


def _page_count(md: dict, f: dict, *names: str) -> dict:
    n = _first(f, *names)
    if n and n.isdigit():
        md["pages"] = int(n)
    return md


def _ooxml(p: Path) -> dict:
    core, app = _zip_members(p, "docProps/core.xml", "docProps/app.xml")
    md: dict = {}
    if core:
        f = _xml_fields(core)
        md.update(_office_props(f, f.get("creator", []), "created", "modified", f.get("keywords", [])),
                  last_modified_by=person(_first(f, "lastModifiedBy") or ""))
    return _page_count(md, _xml_fields(app), "Pages", "Slides") if app else md


def _odf(p: Path) -> dict:
    (meta,) = _zip_members(p, "meta.xml")
    if not meta:
        return {}
    f = _xml_fields(meta)
    md = _office_props(f, f.get("initial-creator") or f.get("creator", []), "creation-date", "date",
                       f.get("keyword", []) + f.get("keywords", []))
    return _page_count(md, f, "document-statistic@page-count", "document-statistic@pageCount")


def _epub(p: Path) -> dict:
    import posixpath
    import zipfile

    with _open(p) as fh, zipfile.ZipFile(fh) as zf:
        container = _member(zf, "META-INF/container.xml")
        opf_path = None
        if container:
            opf_path = _first(_xml_fields(container), "rootfile@full-path")
        if not opf_path:
            opf_path = next((n for n in zf.namelist() if n.lower().endswith(".opf")), None)
        opf = _member(zf, posixpath.normpath(opf_path)) if opf_path else None
    if not opf:
        return {}
    f = _xml_fields(opf)
    dates = f.get("date", [])
    modified = None
    from defusedxml import ElementTree

    for el in ElementTree.fromstring(opf).iter():
        if _local(el.tag) == "meta" and el.get("property") == "dcterms:modified":
            modified = (el.text or "").strip()
    return dict(title=_first(f, "title"), authors=people(f.get("creator", [])),
                created=iso_utc(dates[0]) if dates else None, modified=iso_utc(modified),
                subject=", ".join(f.get("subject", [])) or None, keywords=keywords(f.get("subject", [])),
                language=_first(f, "language"))


def _ole(p: Path) -> dict:
    import olefile

    with _open(p) as fh, olefile.OleFileIO(fh) as ole:
        m = ole.get_metadata()

    def txt(v):
        if isinstance(v, bytes):
            v = v.decode("cp1252", "replace")
        return _clean(v)

    md = dict(title=txt(m.title), authors=people([txt(m.author) or ""]), created=iso_utc(m.create_time),
              modified=iso_utc(m.last_saved_time), subject=txt(m.subject), keywords=keywords([txt(m.keywords) or ""]),
              last_modified_by=person(txt(m.last_saved_by) or ""))
    if isinstance(m.num_pages, int) and m.num_pages > 0:
        md["pages"] = m.num_pages
    return md


def _pdf(p: Path) -> dict:
    from pypdf import PdfReader

    with _open(p) as fh:
        return _pdf_reader(PdfReader(fh))


def _pdf_reader(r) -> dict:
    if r.is_encrypted:
        try:
            r.decrypt("")
        except Exception:  # noqa: BLE001 - a password-protected PDF: no metadata, its text says why
            return {}
    md: dict = {"pages": len(r.pages)}
    info = r.metadata or {}
    xmp = None
    try:
        xmp = r.xmp_metadata
    except Exception:  # noqa: BLE001 - broken XMP packet: the Info dictionary is enough
        xmp = None

    def xget(attr):
        if xmp is None:
            return None
        try:
            return getattr(xmp, attr)
        except Exception:  # noqa: BLE001
            return None

    x_title = xget("dc_title") or {}
    x_subject = xget("dc_description") or {}
    md["title"] = _clean(info.get("/Title")) or _clean(next(iter(x_title.values()), None) if isinstance(x_title, dict) else None)
    md["authors"] = people([_clean(info.get("/Author")) or ""]) or people(xget("dc_creator") or [])
    md["subject"] = _clean(info.get("/Subject")) or _clean(next(iter(x_subject.values()), None) if isinstance(x_subject, dict) else None)
    md["keywords"] = keywords([_clean(info.get("/Keywords")) or _clean(xget("pdf_keywords")) or ""])
    md["created"] = iso_utc(_clean(info.get("/CreationDate"))) or iso_utc(xget("xmp_create_date"))
    md["modified"] = iso_utc(_clean(info.get("/ModDate"))) or iso_utc(xget("xmp_modify_date"))
    langs = xget("dc_language") or []
    lang = r.trailer.get("/Root", {}).get("/Lang") if hasattr(r.trailer.get("/Root", {}), "get") else None
    md["language"] = _clean(lang) or (_clean(langs[0]) if langs else None)
    return md


def _html(p: Path) -> dict:
    from html.parser import HTMLParser

    with _open(p) as fh:
        head = fh.read(MAX_HEAD)
    text = head.decode("utf-8", "replace")

    class Head(HTMLParser):
        def __init__(self):
            super().__init__(convert_charrefs=True)
            self.title, self.in_title, self.meta, self.lang, self.done = [], False, {}, None, False

        def handle_starttag(self, tag, attrs):
            a = {k.lower(): (v or "") for k, v in attrs}
            if tag == "html" and a.get("lang"):
                self.lang = a["lang"]
            elif tag == "title":
                self.in_title = True
            elif tag == "meta":
                name = (a.get("name") or a.get("property") or a.get("itemprop") or "").lower()
                if name and a.get("content"):
                    self.meta.setdefault(name, []).append(a["content"])
            elif tag == "body":
                self.done = True

        def handle_endtag(self, tag):
            if tag == "title":
                self.in_title = False

        def handle_data(self, data):
            if self.in_title and not self.done:
                self.title.append(data)

    h = Head()
    h.feed(text)
    m = h.meta

    def one(*names):
        for n in names:
            if m.get(n):
                return m[n][0]
        return None

    return dict(title=_clean("".join(h.title)) or _clean(one("og:title", "dc.title", "dcterms.title")),
                authors=people(m.get("author", []) + m.get("dc.creator", []) + m.get("dcterms.creator", [])
                               + m.get("article:author", [])),
                created=iso_utc(one("dcterms.created", "dc.date", "date", "article:published_time",
                                    "datepublished", "citation_date")),
                modified=iso_utc(one("dcterms.modified", "last-modified", "article:modified_time", "datemodified")),
                subject=_clean(one("description", "dc.description", "og:description")),
                keywords=keywords(m.get("keywords", [])), language=_clean(h.lang) or _clean(one("language", "dc.language")))


def _mail(p: Path) -> dict:
    from email import policy
    from email.parser import BytesHeaderParser
    from email.utils import getaddresses

    with _open(p) as fh:
        head = fh.read(MAX_HEAD)
    end = head.find(b"\r\n\r\n")
    end = head.find(b"\n\n") if end < 0 else end
    msg = BytesHeaderParser(policy=policy.compat32).parsebytes(head[:end] if end >= 0 else head)

    def addrs(name):
        values = [str(v) for v in msg.get_all(name, [])]
        return [person(n or a) for n, a in getaddresses(values) if (n or a)][:MAX_LIST]

    def hdr(name):
        v = msg.get(name)
        if v is None:
            return None
        from email.header import decode_header, make_header

        try:
            return _clean(str(make_header(decode_header(str(v)))))
        except Exception:  # noqa: BLE001 - a malformed encoded word: the raw header
            return _clean(v)

    sender = addrs("From")
    return {"title": hdr("Subject"), "subject": hdr("Subject"), "authors": sender, "from": sender,
            "to": addrs("To"), "cc": addrs("Cc"), "created": iso_utc(hdr("Date")),
            "message_id": hdr("Message-ID")}


_BY_FAMILY = {"pdf": _pdf, "docx": _ooxml, "pptx": _ooxml, "xlsx": _ooxml, "odt": _odf, "ods": _odf, "odp": _odf,
              "epub": _epub, "doc": _ole, "xls": _ole, "ppt": _ole, "html": _html, "eml": _mail}
_ARCHIVES = {"zip", "tar", "tar.gz", "tar.bz2", "tar.xz", "gz", "bz2", "xz", "7z"}


def read(p: Path, family: str, extraction) -> tuple[dict, str | None]:
    """(metadata, warning or None) of one file of a format family; empty values dropped."""
    md: dict = {}
    warning = None
    fn = _BY_FAMILY.get(family)
    if fn is not None:
        try:
            md = fn(p)
        except Exception as e:  # noqa: BLE001 - metadata never fails a document
            warning = f"metadata: {family}: {type(e).__name__}"
    names = [c.name for c in getattr(extraction, "children", [])][:MAX_MEMBERS]
    if names:
        md["members" if family in _ARCHIVES else "attachments"] = names
    if not md.get("pages") and getattr(extraction, "pages", None):
        md["pages"] = extraction.pages
    return {k: v for k, v in md.items() if v not in (None, "", [], {})}, warning
