"""WebDAV in the Nextcloud/ownCloud dialect.

Change detection: ``PROPFIND`` (Depth 1, folder by folder) for ``getetag``, ``getlastmodified``,
``getcontentlength``, ``oc:fileid`` (the id, which survives moves), ``oc:permissions`` and
``oc:owner-id``. Nextcloud propagates etags up the tree, so a folder whose etag is unchanged since
the cursor is not descended into. The cursor is a snapshot: folder etags and, per file id, the
path, etag and permissions last seen; a difference is a change (new id or etag: content; new path:
move; new permissions: ACL), an id no longer under a re-read folder is a delete.

ACL: the owner (``oc:owner-id``) plus the read shares from the OCS shares API
(``share_type`` 0 user, 1 group; public links, type 3, grant ``everyone`` only with
``public_links = true``) on the item and every folder above it. A change in the share list (one
OCS call per pass) is an ACL-only change for the items at or under the shared path. Without an
OCS endpoint (404) the configured ``acl`` applies, or the item is visible to no one.

Config::

    [sources.nc]
    type = "webdav"
    url = "https://cloud.example.com/remote.php/dav/files/crawler"
    ocs_url = "https://cloud.example.com/ocs/v2.php/apps/files_sharing/api/v1/shares"  # optional
    user = "crawler"
    password = "env:NC_PASSWORD"          # or file:PATH
    acl = ["group:staff"]                 # optional: used when there is no OCS endpoint
    public_links = false
"""
from __future__ import annotations

import hashlib
import json
import posixpath
import urllib.parse
from email.utils import parsedate_to_datetime

from acl.model import ACL

from ingest.sources.base import ChangeEvent
from ingest.sources.connector import (ACL_CHANGE, DELETE, UPSERT, ConnectorError, CursorExpired, HTTPError,
                                      Http, ListingError, RawDocument, configured_acl, credential, sidecar_labels,
                                      tokens_acl)

DAV, OC = "{DAV:}", "{http://owncloud.org/ns}"
PROPFIND_BODY = (b'<?xml version="1.0" encoding="utf-8"?>'
                 b'<d:propfind xmlns:d="DAV:" xmlns:oc="http://owncloud.org/ns"><d:prop>'
                 b'<d:getetag/><d:getlastmodified/><d:getcontentlength/><d:resourcetype/>'
                 b'<oc:fileid/><oc:permissions/><oc:owner-id/></d:prop></d:propfind>')
READ = 1  # OCS share permission bit


class WebDAVConnector:
    def __init__(self, name: str, cfg: dict):
        self.name, self.cfg = name, cfg
        self.source = f"webdav:{name}"
        url = cfg.get("url")
        if not url:
            raise ValueError(f"source {name}: webdav needs url")
        user = cfg.get("user")
        pw = credential(cfg, "password", name)
        self.http = Http(url, basic=(user, pw or "") if user else None, what=f"source {name}")
        self.ocs = Http(cfg["ocs_url"], basic=(user, pw or "") if user else None,
                        what=f"source {name} (OCS)") if cfg.get("ocs_url") else None
        self.base_path = urllib.parse.urlsplit(url).path.rstrip("/")
        self.public_links = bool(cfg.get("public_links", False))
        self.fallback_acl = cfg.get("acl")
        self._items: dict[str, dict] = {}  # fileid -> {path, etag, perms, owner, size, mtime}
        self._shares: dict[str, list[dict]] | None = None
        self._by_path: dict[str, str] = {}  # path -> fileid, of the listing _paths_of
        self._paths_of: dict | None = None

    # -- PROPFIND ----------------------------------------------------------------------------
    def _propfind(self, path: str, depth: str) -> list[dict]:
        from defusedxml import ElementTree as ET

        _, _, raw = self.http.open("PROPFIND", self._href(path), body=PROPFIND_BODY,
                                   headers={"Depth": depth, "Content-Type": "application/xml"})
        try:
            root = ET.fromstring(raw)
        except Exception:
            raise ConnectorError(f"source {self.name}: PROPFIND {path or '/'} returned malformed XML") from None
        out = []
        for resp in root.iter(DAV + "response"):
            href = urllib.parse.unquote(urllib.parse.urlsplit(resp.findtext(DAV + "href", "")).path)
            rel = href.rstrip("/")[len(self.base_path):] if href.startswith(self.base_path) else None
            if rel is None:
                raise ConnectorError(f"source {self.name}: PROPFIND returned {href!r}, outside {self.base_path}")
            props = {}
            for ps in resp.iter(DAV + "propstat"):
                if " 200 " not in (ps.findtext(DAV + "status") or "") + " ":
                    continue
                for p in ps.iter(DAV + "prop"):
                    for el in p:
                        props[el.tag] = el
            is_dir = (rt := props.get(DAV + "resourcetype")) is not None and rt.find(DAV + "collection") is not None

            def text(tag):
                el = props.get(tag)
                return el.text.strip() if el is not None and el.text else None

            mtime = text(DAV + "getlastmodified")
            out.append({"path": rel.lstrip("/"), "dir": is_dir, "etag": (text(DAV + "getetag") or "").strip('"'),
                        "id": text(OC + "fileid"), "perms": text(OC + "permissions") or "",
                        "owner": text(OC + "owner-id"), "size": int(text(DAV + "getcontentlength") or 0),
                        "mtime_ns": int(parsedate_to_datetime(mtime).timestamp() * 1e9) if mtime else None})
        return out

    def _href(self, path: str) -> str:
        return self.http.base + "/" + urllib.parse.quote(path.strip("/")) + ("/" if path.endswith("/") else "")

    def _walk(self, old_folders: dict, old_items: dict) -> tuple[dict, dict]:
        """(folders, items) now; folders whose etag matches ``old_folders`` are taken from the old snapshot."""
        folders: dict[str, str] = {}
        items: dict[str, dict] = {}
        by_folder: dict[str, list] = {}
        for fid, it in old_items.items():
            by_folder.setdefault(posixpath.dirname(it["path"]), []).append((fid, it))
        todo = [""]
        while todo:
            folder = todo.pop()
            for e in self._propfind(folder + "/" if folder else "", "1"):
                if e["path"] == folder:
                    folders[folder] = e["etag"]
                    continue
                if e["dir"]:
                    if e["etag"] and old_folders.get(e["path"]) == e["etag"]:
                        self._carry(e["path"], old_folders, by_folder, folders, items)
                    else:
                        todo.append(e["path"])
                elif e["id"] is None:
                    raise ConnectorError(f"source {self.name}: {e['path']} has no oc:fileid; is this Nextcloud/"
                                         f"ownCloud WebDAV (remote.php/dav/files/<user>)?")
                else:
                    items[e["id"]] = {k: e[k] for k in ("path", "etag", "perms", "owner", "size", "mtime_ns")}
        return folders, items

    @staticmethod
    def _carry(folder, old_folders, by_folder, folders, items):
        pre = folder + "/"
        for f, etag in old_folders.items():
            if f == folder or f.startswith(pre):
                folders[f] = etag
        for f, lst in by_folder.items():
            if f == folder or f.startswith(pre):
                items.update((fid, it) for fid, it in lst)

    # -- OCS shares ----------------------------------------------------------------------------
    def _load_shares(self) -> dict[str, list[dict]] | None:
        """path -> read shares on it; None when the server has no OCS shares API."""
        if self.ocs is None:
            return None
        try:
            doc = self.ocs.json("GET", "", params={"format": "json", "reshares": "true"},
                                headers={"OCS-APIRequest": "true"})
        except HTTPError as e:
            if e.status == 404:
                return None
            raise
        data = (doc.get("ocs") or {}).get("data")
        if not isinstance(data, list):
            raise ConnectorError(f"source {self.name}: OCS shares response has no ocs.data list")
        out: dict[str, list[dict]] = {}
        for s in data:
            if int(s.get("permissions", 0)) & READ:
                out.setdefault(str(s.get("path", "")).strip("/"), []).append(
                    {"type": int(s.get("share_type", -1)), "with": s.get("share_with")})
        for v in out.values():
            v.sort(key=lambda s: (s["type"], str(s["with"])))
        return out

    def _acl_for(self, it: dict, shares: dict | None) -> ACL:
        if shares is None:
            return configured_acl(self.fallback_acl, self.name)
        users, groups, everyone = [it.get("owner")], [], False
        parts = it["path"].split("/")
        for i in range(len(parts) + 1):
            for s in shares.get("/".join(parts[:i]), ()):
                if s["type"] == 0:
                    users.append(s["with"])
                elif s["type"] == 1:
                    groups.append(s["with"])
                elif s["type"] == 3 and self.public_links:
                    everyone = True
        acl = tokens_acl(self.name, users, groups, everyone)
        if self.fallback_acl:
            acl = ACL(acl.allow | configured_acl(self.fallback_acl, self.name).allow)
        return acl

    # -- the contract ----------------------------------------------------------------------------
    def changes(self, cursor: str | None) -> tuple[list[ChangeEvent], str]:
        try:
            old = json.loads(cursor) if cursor else {"folders": {}, "items": {}, "shares": {}}
            old_folders, old_items, old_shares = old["folders"], old["items"], old["shares"]
        except (ValueError, KeyError, TypeError):
            raise CursorExpired(f"source {self.name}: unreadable cursor") from None
        folders, items = self._walk(old_folders, old_items)
        shares = self._load_shares()
        self._items, self._shares = items, shares
        digests = {p: hashlib.sha256(json.dumps(v).encode()).hexdigest()[:16] for p, v in (shares or {}).items()}
        changed_share_paths = {p for p in set(digests) | set(old_shares) if digests.get(p) != old_shares.get(p)}
        events = []
        for fid, it in items.items():
            was = old_items.get(fid)
            if was is None or was["etag"] != it["etag"] or was["path"] != it["path"]:
                events.append(ChangeEvent(UPSERT, self.source, fid, path=it["path"], version=it["etag"]))
            elif was["perms"] != it["perms"] or any(_under(it["path"], p) for p in changed_share_paths):
                events.append(ChangeEvent(ACL_CHANGE, self.source, fid, path=it["path"]))
        events += [ChangeEvent(DELETE, self.source, fid, path=it["path"]) for fid, it in old_items.items() if fid not in items]
        return events, json.dumps({"folders": folders, "items": items, "shares": digests}, sort_keys=True)

    def list_ids(self) -> set[str]:
        try:
            _, items = self._walk({}, {})
        except ConnectorError as e:
            raise ListingError(f"source {self.name}: listing failed, nothing pruned: {e}") from None
        return set(items)

    def _item(self, ref: str) -> dict | None:
        it = self._items.get(ref)
        if it is None:
            _, self._items = self._walk({}, {})
            it = self._items.get(ref)
        if it is None:
            return None
        try:
            cur = self._propfind(it["path"], "0")
        except HTTPError as e:
            if e.status == 404:  # moved or deleted since the listing: look again
                _, self._items = self._walk({}, {})
                return self._items.get(ref)
            raise
        if not cur or cur[0]["id"] != ref:
            _, self._items = self._walk({}, {})
            return self._items.get(ref)
        c = cur[0]
        it = {k: c[k] for k in ("path", "etag", "perms", "owner", "size", "mtime_ns")}
        self._items[ref] = it
        return it

    def _shares_now(self):
        if self._shares is None:
            self._shares = self._load_shares()
        return self._shares

    def fetch(self, ref: str) -> RawDocument | None:
        it = self._item(ref)
        if it is None:
            return None
        path = it["path"]
        labels, label_error = sidecar_labels(self._read_sidecar, path)
        return RawDocument(id=ref, name=posixpath.basename(path), uri=self._href(path), version=it["etag"],
                           labels=labels, label_error=label_error,
                           acl=self._acl_for(it, self._shares_now()), size=it["size"], mtime_ns=it["mtime_ns"],
                           metadata={"path": path, "permissions": it["perms"]},
                           opener=lambda: self.http.open("GET", self._href(path), stream=True))

    def ref_at(self, path: str) -> str | None:
        """The id of the item at ``path`` in the last listing, or None."""
        if self._paths_of is not self._items:
            self._by_path = {it["path"]: fid for fid, it in self._items.items()}
            self._paths_of = self._items
        return self._by_path.get(path)

    def _read_sidecar(self, path: str, limit: int) -> bytes | None:
        if self.ref_at(path) is None:
            return None
        resp = self.http.open("GET", self._href(path), headers={"Range": f"bytes=0-{limit}"}, stream=True)
        with resp:
            return resp.read(limit + 1)

    def acl(self, ref: str) -> ACL:
        it = self._items.get(ref) or self._item(ref)
        if it is None:
            return ACL(frozenset())
        return self._acl_for(it, self._shares_now())


def _under(path: str, prefix: str) -> bool:
    return prefix == "" or path == prefix or path.startswith(prefix + "/")
