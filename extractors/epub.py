"""EPUB 2/3: the spine's XHTML documents in reading order, each through the HTML path.

``META-INF/container.xml`` names the package document (OPF); its spine lists the
content documents in reading order (non-linear items included, at their place). Each
XHTML/HTML document is partitioned by unstructured's ``partition_html`` (the same
partitioner and element mapping as ``.html`` files: headings with levels, paragraphs,
lists, tables, with navigation and page furniture dropped). Elements carry
``meta["chapter"]`` (1-based position among the spine's documents) and
``meta["href"]``. A chapter that does not begin with a heading (and has no heading
with the same words anywhere) gets one from the table of contents (EPUB 3 ``nav`` document or EPUB 2 NCX), level 1, so every chapter
starts a section. Images, fonts and stylesheets are ignored.

DRM: a content document listed in ``META-INF/encryption.xml`` with an algorithm other
than font obfuscation -> ``irm-protected`` (DRM-protected e-book).

Bounds: every member is read with the ODF reader's ZIP bomb checks
(``ctx.limits.max_member_bytes``, ratio), the whole book at most
``ctx.limits.max_expanded_bytes``. XML (container, OPF, NCX) is parsed without entity
resolution or network access.
"""
from __future__ import annotations

import posixpath
import zipfile
from pathlib import Path
from urllib.parse import unquote

from . import spacy_shim
from .base import Element, ExtractContext, Extraction, ExtractionError
from .odf import read_member
from .text import decode_bytes
from .unstructured_family import to_element
from .errors import ErrorCode

OUR_VERSION = 1
_HTML_TYPES = {"application/xhtml+xml", "text/html", "application/x-dtbook+xml"}
_FONT_OBFUSCATION = {"http://www.idpf.org/2008/embedding", "http://ns.adobe.com/pdf/enc#RC"}


def _local(tag) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def _parse(data: bytes):
    from lxml import etree

    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                             huge_tree=False, recover=True)
    root = etree.fromstring(data, parser=parser)
    if root is None:
        raise ValueError("empty XML document")
    return root


class _Book:
    def __init__(self, zf: zipfile.ZipFile, ctx: ExtractContext):
        self.zf = zf
        self.ctx = ctx
        self.names = set(zf.namelist())
        self.expanded = 0

    def read(self, name: str) -> bytes:
        data = read_member(self.zf, name, self.ctx)
        self.expanded += len(data)
        if self.expanded > self.ctx.limits.max_expanded_bytes:
            raise ExtractionError(
                ErrorCode.ZIP_BOMB, f"epub: expands to more than {self.ctx.limits.max_expanded_bytes} bytes")
        return data


def _rootfile(book: _Book) -> str:
    if "META-INF/container.xml" in book.names:
        container = _parse(book.read("META-INF/container.xml"))
        for el in container.iter():
            if _local(el.tag) == "rootfile" and el.get("full-path"):
                path = el.get("full-path")
                if path in book.names:
                    return path
    opfs = sorted(n for n in book.names if n.lower().endswith(".opf"))
    if not opfs:
        raise ExtractionError(ErrorCode.CORRUPT, "epub: no package document (OPF)")
    return opfs[0]


def _encrypted_members(book: _Book) -> set[str]:
    if "META-INF/encryption.xml" not in book.names:
        return set()
    root = _parse(book.read("META-INF/encryption.xml"))
    out = set()
    for data in root.iter():
        if _local(data.tag) != "EncryptedData":
            continue
        algorithm = ""
        uri = None
        for el in data.iter():
            name = _local(el.tag)
            if name == "EncryptionMethod":
                algorithm = el.get("Algorithm") or ""
            elif name == "CipherReference":
                uri = el.get("URI")
        if uri and algorithm not in _FONT_OBFUSCATION:
            out.add(posixpath.normpath(unquote(uri)))
    return out


def _toc_titles(book: _Book, opf_dir: str, manifest: dict, toc_id: str | None) -> dict[str, str]:
    """content document path -> its first title in the table of contents."""
    titles: dict[str, str] = {}

    def add(base: str, href: str | None, title: str) -> None:
        if not href or not title.strip():
            return
        target = posixpath.normpath(posixpath.join(base, unquote(href.split("#", 1)[0])))
        titles.setdefault(target, " ".join(title.split()))

    for item in manifest.values():
        path, media, props = item
        try:
            if "nav" in props.split() and path in book.names:
                nav = _parse(book.read(path))
                base = posixpath.dirname(path)
                for a in nav.iter():
                    if _local(a.tag) == "a":
                        add(base, a.get("href"), "".join(a.itertext()))
            elif (media == "application/x-dtbncx+xml" or item is manifest.get(toc_id)) \
                    and path in book.names:
                ncx = _parse(book.read(path))
                base = posixpath.dirname(path)
                for point in ncx.iter():
                    if _local(point.tag) != "navPoint":
                        continue
                    label = src = None
                    for el in point:
                        if _local(el.tag) == "navLabel":
                            label = "".join(el.itertext())
                        elif _local(el.tag) == "content":
                            src = el.get("src")
                    add(base, src, label or "")
        except ExtractionError:
            raise
        except Exception:  # noqa: BLE001 - a broken TOC costs only the inserted titles
            continue
    return titles


def _html_elements(data: bytes) -> list:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = decode_bytes(data)[0]
    from unstructured.partition.html import partition_html

    raw = partition_html(text=text, languages=["eng"])
    return [e for e in (to_element(r, "html") for r in raw) if e is not None]


def extract(path: Path, mime: str, ctx: ExtractContext) -> Extraction:
    """Router entry point (see ``extractors.registry.EXTRACTORS``)."""
    try:
        spacy_shim.install()
    except RuntimeError as exc:
        raise ExtractionError(ErrorCode.EXTRACTOR_CRASH, f"epub/unstructured: {exc}") from exc
    from unstructured.__version__ import __version__ as unstructured_version

    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise ExtractionError(ErrorCode.CORRUPT, f"epub: not a readable ZIP package: {exc}") from exc
    warnings: list[str] = []
    elements: list[Element] = []
    with zf:
        book = _Book(zf, ctx)
        opf_path = _rootfile(book)
        opf_dir = posixpath.dirname(opf_path)
        opf = _parse(book.read(opf_path))
        manifest: dict[str, tuple[str, str, str]] = {}
        spine: list[str] = []
        toc_id = None
        for el in opf.iter():
            name = _local(el.tag)
            if name == "item" and el.get("id") and el.get("href"):
                target = posixpath.normpath(posixpath.join(opf_dir, unquote(el.get("href"))))
                manifest[el.get("id")] = (target, el.get("media-type") or "",
                                          el.get("properties") or "")
            elif name == "spine":
                toc_id = el.get("toc")
            elif name == "itemref" and el.get("idref"):
                spine.append(el.get("idref"))
        encrypted = _encrypted_members(book)
        titles = _toc_titles(book, opf_dir, manifest, toc_id)
        chapter = 0
        for idref in spine:
            item = manifest.get(idref)
            if item is None:
                warnings.append(f"spine item {idref!r} not in the manifest")
                continue
            target, media, _props = item
            if media not in _HTML_TYPES and not target.lower().endswith((".html", ".htm", ".xhtml")):
                continue
            if target in encrypted:
                raise ExtractionError(
                    ErrorCode.IRM_PROTECTED, f"epub: DRM-protected e-book ({target} is encrypted)")
            if target not in book.names:
                warnings.append(f"spine document missing: {target}")
                continue
            chapter += 1
            try:
                parts = _html_elements(book.read(target))
            except ExtractionError:
                raise
            except Exception as exc:  # noqa: BLE001 - one bad chapter, not the book
                warnings.append(f"chapter {chapter} ({target}) unreadable: {type(exc).__name__}")
                continue
            title = titles.get(target)
            own = {" ".join(e.text.lower().split()) for e in parts if e.kind in ("heading", "title")}
            if title and parts and parts[0].kind not in ("heading", "title") \
                    and " ".join(title.lower().split()) not in own:
                parts.insert(0, Element("heading", title, level=1))
            for element in parts:
                element.meta["chapter"] = chapter
                element.meta["href"] = target
            elements.extend(parts)
    return Extraction.of(elements, "epub/unstructured", f"unstructured-{unstructured_version}+{OUR_VERSION}",
                         mime, warnings)
