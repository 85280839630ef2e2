"""Source labels: what a document's source says about it, read before classification
(``ingest.pipeline.classify`` adds the detected ones and applies the policies). A sidecar file
beside a local file (``report.pdf.labels``: one label a line, or a JSON list;
``report.pdf.labels.json``: a JSON list or ``{"labels": [...]}``), the ``user.ingest.labels``
extended attribute (comma or newline separated), or a DMS item's metadata
(:func:`labels_from_metadata`, for connectors)."""
from __future__ import annotations

import json
import os
import re
import stat

from acl.posix import fd_path

from ingest.sources.safefs import O_PATH, read_sidecar

XATTR = "user.ingest.labels"
SIDECAR_SUFFIXES = (".labels", ".labels.json")
_LABEL_OK = re.compile(r"^[\w][\w.:/ -]{0,99}$", re.UNICODE)


def normalise_labels(values, origin: str, *, quote: bool = True) -> list[str]:
    """Strip, drop empties and duplicates; a label with odd characters is an error naming its origin.
    ``quote=False`` (labels from files and xattrs): the error names the label by its position,
    never by its text (a sidecar may be a secret someone linked there)."""
    out = []
    for i, v in enumerate(values, 1):
        what = repr(v) if quote else f"#{i}"
        if not isinstance(v, str):
            raise ValueError(f"{origin}: label {what} is not a string")
        v = v.strip()
        if not v:
            continue
        if not _LABEL_OK.match(v):
            raise ValueError(f"{origin}: label {what} has characters other than letters, digits, ' ', '_', '.', "
                             "':', '/', '-' (or is over 100 characters)")
        out.append(v)
    return list(dict.fromkeys(out))


def _parse_label_text(text: str, origin: str) -> list[str]:
    s = text.strip()
    if s.startswith("[") or s.startswith("{"):
        try:
            data = json.loads(s)
        except json.JSONDecodeError as e:
            raise ValueError(f"{origin}: not valid JSON (line {e.lineno} column {e.colno})") from None
        if isinstance(data, dict):
            data = data.get("labels", [])
        if not isinstance(data, list):
            raise ValueError(f"{origin}: expected a JSON list of labels or {{\"labels\": [...]}}")
        return normalise_labels(data, origin, quote=False)
    return normalise_labels(re.split(r"[,\n]", s), origin, quote=False)


def parse_sidecar(data: bytes, origin: str) -> list[str]:
    """The labels in a sidecar's bytes (UTF-8: a JSON list, ``{"labels": [...]}`` or one a line);
    errors name ``origin``, never the content."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{origin}: not UTF-8 text") from None
    return _parse_label_text(text, origin)


def is_sidecar(name: str) -> bool:
    return name.lower().endswith(SIDECAR_SUFFIXES)


def source_labels_for_path(path: str | os.PathLike) -> list[str]:
    """Labels a local file carries: its sidecar file(s) and its ``user.ingest.labels`` xattr.
    Neither the file nor its sidecars are followed if they are symlinks (see
    :func:`source_labels_at`, what the indexer uses on the descriptors it holds)."""
    path = os.fspath(path)
    parent, name = os.path.split(os.path.abspath(path))
    dfd = os.open(parent, O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        try:
            ffd = os.open(name, O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
        except FileNotFoundError:
            ffd = None
        try:
            return source_labels_at(dfd, name, ffd, origin=path)
        finally:
            if ffd is not None:
                os.close(ffd)
    finally:
        os.close(dfd)


def source_labels_at(dir_fd: int, name: str, file_fd: int | None, origin: str | None = None) -> list[str]:
    """Labels of the file ``name`` in the directory ``dir_fd``: its sidecars (opened beside it
    without following links, bounded: :func:`ingest.sources.safefs.read_sidecar`) and the
    ``user.ingest.labels`` xattr of the inode ``file_fd``. Errors name the file, never its content."""
    origin = origin or name
    labels: list[str] = []
    for suffix in SIDECAR_SUFFIXES:
        data = read_sidecar(dir_fd, name + suffix)
        if data is not None:
            labels += parse_sidecar(data, origin + suffix)
    raw = None
    if file_fd is not None and stat.S_ISREG(os.fstat(file_fd).st_mode):
        try:
            raw = os.getxattr(fd_path(file_fd), XATTR)
        except OSError:  # no such attribute, or a file system without user xattrs
            raw = None
    if raw:
        labels += _parse_label_text(raw.decode("utf-8", "replace"), f"{origin} [{XATTR}]")
    return list(dict.fromkeys(labels))


_META_KEYS = {"sensitivity": "sensitivity", "sensitivity_label": "sensitivity", "sensitivityLabel": "sensitivity",
              "classification": "classification", "security_classification": "classification"}


def labels_from_metadata(meta: dict | None) -> list[str]:
    """Labels a DMS item's metadata carries, for connectors to put on ``DocRecord.labels``:

    * ``labels`` / ``tags``: a list (or comma-separated string) taken as-is;
    * ``sensitivity`` / ``sensitivity_label`` / ``sensitivityLabel`` (a string, or a dict with a
      ``name``/``displayName``) -> ``sensitivity:<name lowercased>``;
    * ``classification`` / ``security_classification`` -> ``classification:<value lowercased>``.
    """
    if not meta:
        return []
    out: list[str] = []
    for key in ("labels", "tags"):
        v = meta.get(key)
        if isinstance(v, str):
            v = v.split(",")
        if v:
            out += normalise_labels(v, f"metadata {key}")
    for key, prefix in _META_KEYS.items():
        v = meta.get(key)
        if isinstance(v, dict):
            v = v.get("name") or v.get("displayName") or v.get("label")
        if isinstance(v, str) and v.strip():
            out += normalise_labels([f"{prefix}:{v.strip().lower()}"], f"metadata {key}")
    return list(dict.fromkeys(out))
