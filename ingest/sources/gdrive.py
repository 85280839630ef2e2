"""Google Drive (API v3).

Changes: ``GET /drive/v3/changes?pageToken=...`` following ``nextPageToken`` until
``newStartPageToken``, which is the cursor. ``removed: true`` or a trashed file is a delete. No cursor:
``changes/startPageToken`` first, then ``files.list`` (every file) as the initial crawl. A page token
the API rejects (400/404/410) is an expired cursor: full resync. The content version is
``md5Checksum`` (or ``headRevisionId``); Drive's ``version`` also counts permission changes, so a
permission change arrives as a change whose content version is the same: an ACL-only update.
Google-native documents (Docs, Sheets) have no bytes to download and are skipped in this version.

ACL from ``GET /drive/v3/files/{id}/permissions`` (every role reads): ``user`` ->
``user:<source>:<email>``, ``group`` -> ``group:<source>:<email>``, ``domain`` ->
``group:<source>:domain:<domain>``, ``anyone`` -> ``everyone`` only with ``public_links = true``.

Config: ``type = "gdrive"``, ``token = "env:GDRIVE_TOKEN"`` (OAuth access token, drive.readonly),
``base_url`` (default ``https://www.googleapis.com``).
"""
from __future__ import annotations

from ingest.sources.connector import iso_ns, listed_ids
from ingest.sources.base import ChangeEvent
from ingest.sources.connector import (DELETE, UPSERT, CursorExpired, HTTPError, Http, ListingError, RawDocument,
                        credential, tokens_acl)

FILE_FIELDS = "id,name,md5Checksum,headRevisionId,mimeType,trashed,webViewLink,size,modifiedTime"


class DriveConnector:
    def __init__(self, name: str, cfg: dict):
        self.name, self.cfg = name, cfg
        self.source = f"gdrive:{name}"
        self.http = Http(cfg.get("base_url", "https://www.googleapis.com"), token=credential(cfg, "token", name),
                         what=f"source {name}")
        self.public_links = bool(cfg.get("public_links", False))

    @staticmethod
    def _version(f: dict) -> str | None:
        return f.get("md5Checksum") or f.get("headRevisionId")

    def _files(self) -> list[dict]:
        out, token = [], None
        while True:
            params = {"q": "trashed = false", "fields": f"nextPageToken,files({FILE_FIELDS})", "pageSize": "1000"}
            if token:
                params["pageToken"] = token
            page = self.http.json("GET", "drive/v3/files", params=params)
            out += [f for f in page.get("files", []) if self._version(f)]
            token = page.get("nextPageToken")
            if not token:
                return out

    def changes(self, cursor: str | None) -> tuple[list[ChangeEvent], str]:
        if cursor is None:
            start = self.http.json("GET", "drive/v3/changes/startPageToken")["startPageToken"]
            return [ChangeEvent(UPSERT, self.source, f["id"], path=f.get("name"), version=self._version(f)) for f in self._files()], start
        events, token = [], cursor
        while True:
            try:
                page = self.http.json("GET", "drive/v3/changes", params={
                    "pageToken": token, "fields": f"nextPageToken,newStartPageToken,changes(removed,fileId,"
                                                  f"changeType,file({FILE_FIELDS}))"})
            except HTTPError as e:
                if e.status in (400, 404, 410):
                    raise CursorExpired(f"source {self.name}: page token rejected (HTTP {e.status})") from None
                raise
            for ch in page.get("changes", []):
                if ch.get("changeType", "file") != "file":
                    continue
                f = ch.get("file") or {}
                if ch.get("removed") or f.get("trashed"):
                    events.append(ChangeEvent(DELETE, self.source, ch["fileId"]))
                elif self._version(f):
                    events.append(ChangeEvent(UPSERT, self.source, ch["fileId"], path=f.get("name"),
                                              version=self._version(f)))
            if page.get("nextPageToken"):
                token = page["nextPageToken"]
            elif page.get("newStartPageToken"):
                return events, page["newStartPageToken"]
            else:
                raise ListingError(f"source {self.name}: changes page has neither nextPageToken nor "
                                   "newStartPageToken")

    def list_ids(self) -> set[str]:
        return listed_ids(self.name, lambda: (f["id"] for f in self._files()))

    def fetch(self, ref: str) -> RawDocument | None:
        f = self.http.json_or_none(f"drive/v3/files/{ref}", params={"fields": FILE_FIELDS})
        if f is None or f.get("trashed") or not self._version(f):
            return None
        mt = f.get("modifiedTime")
        return RawDocument(id=ref, name=f.get("name", ref), uri=f.get("webViewLink") or f"gdrive:{ref}",
                           version=self._version(f), acl=self.acl(ref), size=int(f["size"]) if f.get("size") else None,
                           mtime_ns=iso_ns(mt),
                           opener=lambda: self.http.open("GET", f"drive/v3/files/{ref}", params={"alt": "media"},
                                                         stream=True))

    def acl(self, ref: str):
        users, groups, everyone, token = [], [], False, None
        while True:
            params = {"fields": "nextPageToken,permissions(id,type,role,emailAddress,domain)"}
            if token:
                params["pageToken"] = token
            page = self.http.json("GET", f"drive/v3/files/{ref}/permissions", params=params)
            for p in page.get("permissions", []):
                t = p.get("type")
                if t == "user":
                    users.append(p.get("emailAddress"))
                elif t == "group":
                    groups.append(p.get("emailAddress"))
                elif t == "domain":
                    groups.append(f"domain:{p.get('domain')}")
                elif t == "anyone" and self.public_links:
                    everyone = True
            token = page.get("nextPageToken")
            if not token:
                return tokens_acl(self.name, users, groups, everyone)
