"""JSON, NDJSON and XML as "key.path: value" lines, grouped by record.

JSON: a top-level array is a list of records: one ``paragraph`` element per item, its
lines keyed relative to the item (``meta["record"]`` = index). A top-level object
gives one element for its scalar members and one per member holding an object or
array (an array of objects under a key is again one element per item, keyed
``key[i]...``). Keys nest with "." and list items with "[i]"; a list of scalars is
one line ("tags: a, b, c"). NDJSON (JSON Lines): one element per line
(``meta["line"]``); unparsable lines are skipped and counted in a warning (all of
them unparsable -> ``corrupt``).

XML: parsed with ``defusedxml`` (expat), streamed with ``iterparse``: each child of
the root element is a record, emitted and freed when it ends, so memory stays bounded
by the largest record. Lines are keyed by the element path below the root with
namespaces dropped ("country.name: Norway"); an element with mixed content
(``<p>text <b>bold</b> more</p>``) is one line with all its text; attributes appear
("item@id: 7") on elements without text. Entity declarations are refused: a
billion-laughs or external-entity (XXE) file fails with code ``unsafe-xml`` and a
message naming the entity, instead of expanding it.

Bounds: a JSON document over ``MAX_JSON_BYTES`` is ``too-large`` (``json.loads`` needs
several times the file size in memory; NDJSON and XML are streamed and not limited);
nesting deeper than Python's recursion limit is ``corrupt``; output stops after
``MAX_TEXT_CHARS`` characters with a warning. Groups longer than ``MAX_GROUP_LINES``
lines are split into several elements.
"""
from __future__ import annotations

import json
from pathlib import Path

from .base import Element, ExtractContext, Extraction, ExtractionError
from .registry import FAMILY
from .text import decode_bytes
from .errors import ErrorCode

OUR_VERSION = 1
MAX_JSON_BYTES = 64 * 1024 * 1024
MAX_TEXT_CHARS = 50_000_000
MAX_GROUP_LINES = 200
MAX_VALUE_CHARS = 100_000  # one value (a long string) is cut there
_KEY_DEPTH = 6  # XML paths keep their last N element names


class _Out:
    """Collects groups of lines into elements, within the text budget."""

    def __init__(self):
        self.elements: list[Element] = []
        self.chars = 0
        self.truncated = False

    def group(self, lines: list[str], meta: dict | None = None) -> bool:
        """Add a group; False once the budget is spent (callers stop then)."""
        lines = [ln for ln in lines if ln.strip()]
        for start in range(0, len(lines), MAX_GROUP_LINES):
            if self.chars >= MAX_TEXT_CHARS:
                self.truncated = True
                return False
            text = "\n".join(lines[start:start + MAX_GROUP_LINES])
            self.chars += len(text)
            self.elements.append(Element("paragraph", text, meta=dict(meta or {})))
        return True


# ----------------------------------------------------------------------------- JSON


def _scalar(value) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    text = str(value)
    if len(text) > MAX_VALUE_CHARS:
        text = text[:MAX_VALUE_CHARS] + "..."
    return text


def _is_scalar(value) -> bool:
    return not isinstance(value, (dict, list))


def flatten(value, prefix: str = "") -> list[str]:
    """``value`` as "key.path: value" lines (iterative: no recursion limit to hit)."""
    lines: list[str] = []
    stack: list[tuple[str, object]] = [(prefix, value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, dict):
            children = [(f"{path}.{k}" if path else str(k), v) for k, v in item.items()]
            if not children and path:
                lines.append(f"{path}: {{}}")
            stack.extend(reversed(children))
        elif isinstance(item, list):
            if all(_is_scalar(v) for v in item):
                if item or path:
                    joined = ", ".join(_scalar(v) for v in item)
                    lines.append(f"{path}: {joined}" if path else joined)
            else:
                stack.extend(reversed([(f"{path}[{i}]", v) for i, v in enumerate(item)]))
        else:
            lines.append(f"{path}: {_scalar(item)}" if path else _scalar(item))
    return lines


def _json_groups(doc, out: _Out) -> None:
    if isinstance(doc, list) and not all(_is_scalar(v) for v in doc):
        for i, item in enumerate(doc):
            if not out.group(flatten(item), {"record": i}):
                return
        return
    if isinstance(doc, dict):
        scalars = {k: v for k, v in doc.items() if _is_scalar(v) or
                   (isinstance(v, list) and all(_is_scalar(x) for x in v))}
        if scalars and not out.group(flatten(scalars), {"key": None}):
            return
        for key, value in doc.items():
            if key in scalars:
                continue
            if isinstance(value, list):
                for i, item in enumerate(value):
                    if not out.group(flatten(item, f"{key}[{i}]"), {"key": key, "record": i}):
                        return
            elif not out.group(flatten(value, str(key)), {"key": key}):
                return
        return
    out.group(flatten(doc))


def _extract_json(path: Path, out: _Out, warnings: list[str]) -> None:
    size = path.stat().st_size
    if size > MAX_JSON_BYTES:
        raise ExtractionError(
            ErrorCode.TOO_LARGE,
            f"json: {size} bytes is over the {MAX_JSON_BYTES} byte limit for one JSON "
            "document (save it as NDJSON, one record per line, to have it streamed)",
        )
    text, encoding, notes = decode_bytes(path.read_bytes())
    warnings.extend(notes)
    try:
        doc = json.loads(text)
    except RecursionError as exc:
        raise ExtractionError(ErrorCode.CORRUPT, "json: nested too deeply to parse") from exc
    except json.JSONDecodeError as exc:
        raise ExtractionError(
            ErrorCode.CORRUPT, f"json: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from exc
    _json_groups(doc, out)


def _extract_ndjson(path: Path, out: _Out, warnings: list[str]) -> None:
    text, encoding, notes = decode_bytes(path.read_bytes())
    warnings.extend(notes)
    bad = good = 0
    first_error = ""
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as exc:
            bad += 1
            first_error = first_error or f"line {number}: {exc}"
            continue
        good += 1
        if not out.group(flatten(record), {"line": number}):
            break
    if bad and not good:
        raise ExtractionError(ErrorCode.CORRUPT, f"ndjson: no line is valid JSON ({first_error})")
    if bad:
        warnings.append(f"{bad} line(s) not valid JSON, skipped (first: {first_error})")


# ----------------------------------------------------------------------------- XML


def _local(tag) -> str:
    if not isinstance(tag, str):  # comments, processing instructions
        return ""
    return tag.rsplit("}", 1)[-1]


def _attr_name(name: str) -> str:
    return name.rsplit("}", 1)[-1]


def _xml_lines(elem, path: list[str], lines: list[str]) -> None:
    """Lines for one record (iterative walk)."""
    stack = [(elem, path)]
    while stack:
        node, node_path = stack.pop()
        name = _local(node.tag)
        if not name:
            continue
        here = node_path + [name]
        key = ".".join(here[-_KEY_DEPTH:])
        children = [c for c in node if isinstance(c.tag, str)]
        own = (node.text or "").strip()
        tails = any((c.tail or "").strip() for c in node)
        if children and (own or tails):  # mixed content: one line with all its text
            text = " ".join("".join(node.itertext()).split())
            if text:
                lines.append(f"{key}: {_scalar(text)}")
            continue
        if own:
            lines.append(f"{key}: {_scalar(' '.join(own.split()))}")
        elif not children:
            for attr, value in node.attrib.items():
                if value.strip():
                    lines.append(f"{key}@{_attr_name(attr)}: {_scalar(value.strip())}")
        stack.extend(reversed([(c, here) for c in children]))


def _extract_xml(path: Path, out: _Out, warnings: list[str]) -> None:
    from xml.etree.ElementTree import ParseError

    try:
        _parse_xml(str(path), out)
    except ParseError as exc:
        if "encoding" not in str(exc):
            line, column = getattr(exc, "position", (0, 0))
            raise ExtractionError(
                ErrorCode.CORRUPT, f"xml: not well-formed at line {line} column {column}: {exc}"
            ) from exc
        # The declaration names another encoding than the bytes have (e.g. a UTF-16
        # file declaring UTF-8): decode it ourselves and parse the text.
        import io
        import re

        text, encoding, _ = decode_bytes(path.read_bytes())
        text = re.sub(r"""^(\s*<\?xml[^>]*?)\s+encoding\s*=\s*["'][^"']*["']""", r"\1",
                      text.lstrip("\ufeff"))
        warnings.append(f"xml: declared encoding is wrong; read as {encoding}")
        out.elements.clear()
        out.chars = 0
        try:
            _parse_xml(io.BytesIO(text.encode("utf-8")), out)
        except ParseError as exc2:
            line, column = getattr(exc2, "position", (0, 0))
            raise ExtractionError(
                ErrorCode.CORRUPT, f"xml: not well-formed at line {line} column {column}: {exc2}"
            ) from exc2


def _parse_xml(source, out: _Out) -> None:
    import defusedxml
    from defusedxml.ElementTree import iterparse

    depth = 0
    root = None
    root_name = ""
    try:
        for event, elem in iterparse(source, events=("start", "end"),
                                     forbid_dtd=False, forbid_entities=True,
                                     forbid_external=True):
            if event == "start":
                if depth == 0:
                    root = elem
                    root_name = _local(elem.tag)
                depth += 1
                continue
            depth -= 1
            if depth == 1:  # a record (child of the root) is complete
                lines: list[str] = []
                _xml_lines(elem, [root_name], lines)
                tail = (elem.tail or "").strip()
                if tail:
                    lines.append(f"{root_name}: {_scalar(' '.join(tail.split()))}")
                keep_going = out.group(lines, {"record": _local(elem.tag)})
                if root is not None:
                    root.remove(elem)
                if not keep_going:
                    break
            elif depth == 0 and elem is root:
                text = (elem.text or "").strip()
                lines = [f"{root_name}: {_scalar(' '.join(text.split()))}"] if text else []
                if not len(elem):
                    for attr, value in elem.attrib.items():
                        lines.append(f"{root_name}@{_attr_name(attr)}: {_scalar(value)}")
                out.group(lines, {"record": root_name})
    except defusedxml.EntitiesForbidden as exc:
        raise ExtractionError(
            ErrorCode.UNSAFE_XML,
            f"xml: entity declaration '{exc.name}' refused: entity expansion is disabled "
            "(a billion-laughs / entity-expansion bomb or an external entity)",
        ) from exc
    except (defusedxml.ExternalReferenceForbidden, defusedxml.DTDForbidden) as exc:
        raise ExtractionError(
            ErrorCode.UNSAFE_XML, f"xml: external reference refused ({exc})"
        ) from exc


# ----------------------------------------------------------------------------- entry


def extract(path: Path, mime: str, ctx: ExtractContext) -> Extraction:
    """Router entry point (see ``extractors.registry.EXTRACTORS``): JSON, NDJSON, XML."""
    fmt = FAMILY[mime]
    out = _Out()
    warnings: list[str] = []
    if fmt == "json":
        _extract_json(path, out, warnings)
        library = "json"
    elif fmt == "ndjson":
        _extract_ndjson(path, out, warnings)
        library = "json"
    else:
        _extract_xml(path, out, warnings)
        import defusedxml

        library = f"defusedxml-{defusedxml.__version__}"
    if out.truncated:
        warnings.append(f"output truncated at {MAX_TEXT_CHARS} characters")
    return Extraction.of(out.elements, f"{fmt}/{library.split('-')[0]}",
                         f"{library}+{OUR_VERSION}" if "-" in library else f"python-json+{OUR_VERSION}",
                         mime, warnings)
