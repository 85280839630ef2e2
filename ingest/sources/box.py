"""Box (API 2.0).

Changes: the enterprise/user event stream, ``GET /2.0/events?stream_position=<cursor>``, read until a
page has no entries; ``next_stream_position`` is the cursor. No cursor: ``stream_position=now`` for
the position, then a recursive listing of ``/2.0/folders/{root}/items`` as the initial crawl. A
position Box rejects (400) is an expired cursor: full resync. ``ITEM_TRASH``/``ITEM_DELETE`` are
deletes; collaboration and shared-link events are ACL-only changes; other file events are upserts.
The content version is the file's ``sha1``.

ACL: the owner (``owned_by``), the accepted collaborations on the file and on every folder above it
(``path_collection``): users -> ``user:<source>:<id>``, groups -> ``group:<source>:<id>``; a shared
link with access ``company`` -> ``group:<source>:enterprise``, ``open`` -> ``everyone`` only with
``public_links = true``.

Config: ``type = "box"``, ``token = "env:BOX_TOKEN"``, ``root_folder = "0"``,
``base_url`` (default ``https://api.box.com``).
"""
from __future__ import annotations

from ingest.sources.connector import iso_ns, listed_ids
from ingest.sources.base import ChangeEvent
from ingest.sources.connector import (ACL_CHANGE, DELETE, UPSERT, CursorExpired, HTTPError, Http,
                        RawDocument, credential, tokens_acl)

DELETES = {"ITEM_TRASH", "ITEM_DELETE"}
ACL_EVENTS = {"COLLAB_ADD_COLLABORATOR", "COLLAB_REMOVE_COLLABORATOR", "COLLAB_ROLE_CHANGE",
              "COLLAB_INVITE_COLLABORATOR",
              "ITEM_SHARED_CREATE", "ITEM_SHARED_UNSHARE", "ITEM_SHARED_UPDATE", "ITEM_SHARED"}
FILE_FIELDS = "id,name,sha1,size,modified_at,owned_by,path_collection,shared_link,trashed_at,item_status"


class BoxConnector:
    def __init__(self, name: str, cfg: dict):
        self.name, self.cfg = name, cfg
        self.source = f"box:{name}"
        self.root = str(cfg.get("root_folder", "0"))
        self.http = Http(cfg.get("base_url", "https://api.box.com"), token=credential(cfg, "token", name),
                         what=f"source {name}")
        self.public_links = bool(cfg.get("public_links", False))

    def _walk(self) -> list[dict]:
        files, todo = [], [self.root]
        while todo:
            folder, offset = todo.pop(), 0
            while True:
                page = self.http.json("GET", f"2.0/folders/{folder}/items",
                                      params={"fields": "id,type,name,sha1", "limit": "1000", "offset": str(offset)})
                for e in page.get("entries", []):
                    (todo.append(e["id"]) if e["type"] == "folder" else files.append(e) if e["type"] == "file"
                     else None)
                offset += len(page.get("entries", []))
                if not page.get("entries") or offset >= int(page.get("total_count", 0)):
                    break
        return files

    def changes(self, cursor: str | None) -> tuple[list[ChangeEvent], str]:
        if cursor is None:
            pos = self.http.json("GET", "2.0/events", params={"stream_position": "now"})["next_stream_position"]
            return [ChangeEvent(UPSERT, self.source, f["id"], path=f.get("name"), version=f.get("sha1")) for f in self._walk()], str(pos)
        events, pos = [], cursor
        while True:
            try:
                page = self.http.json("GET", "2.0/events", params={"stream_position": pos, "stream_type": "all",
                                                                   "limit": "500"})
            except HTTPError as e:
                if e.status == 400:
                    raise CursorExpired(f"source {self.name}: stream position rejected (HTTP 400)") from None
                raise
            for ev in page.get("entries", []):
                src = ev.get("source") or {}
                if src.get("type") != "file":
                    continue
                kind = ev.get("event_type")
                events.append(ChangeEvent(DELETE if kind in DELETES else ACL_CHANGE if kind in ACL_EVENTS else UPSERT,
                                          self.source, src["id"], path=src.get("name"), version=src.get("sha1")))
            pos = str(page.get("next_stream_position", pos))
            if not page.get("entries"):
                return events, pos

    def list_ids(self) -> set[str]:
        return listed_ids(self.name, lambda: (f["id"] for f in self._walk()))

    def _file(self, ref: str) -> dict | None:
        f = self.http.json_or_none(f"2.0/files/{ref}", params={"fields": FILE_FIELDS})
        return None if f is None or f.get("trashed_at") or f.get("item_status", "active") != "active" else f

    def fetch(self, ref: str) -> RawDocument | None:
        f = self._file(ref)
        if f is None:
            return None
        mt = f.get("modified_at")
        path = "/".join(e.get("name", "") for e in (f.get("path_collection") or {}).get("entries", [])[1:])
        return RawDocument(id=ref, name=f.get("name", ref), uri=f"https://app.box.com/file/{ref}",
                           version=f.get("sha1"), acl=self._acl(f), size=f.get("size"),
                           mtime_ns=iso_ns(mt), metadata={"path": f"{path}/{f.get('name')}"},
                           opener=lambda: self.http.open("GET", f"2.0/files/{ref}/content", stream=True))

    def _acl(self, f: dict):
        users, groups, everyone = [(f.get("owned_by") or {}).get("id")], [], False
        link = f.get("shared_link") or {}
        if link.get("access") == "company":
            groups.append("enterprise")
        elif link.get("access") == "open" and self.public_links:
            everyone = True
        targets = [("folders", e["id"]) for e in (f.get("path_collection") or {}).get("entries", [])]
        for kind, oid in targets + [("files", f["id"])]:
            for c in self.http.json("GET", f"2.0/{kind}/{oid}/collaborations").get("entries", []):
                if c.get("status", "accepted") != "accepted":
                    continue
                who = c.get("accessible_by") or {}
                (users if who.get("type") == "user" else groups).append(who.get("id"))
        return tokens_acl(self.name, users, groups, everyone)

    def acl(self, ref: str):
        f = self._file(ref)
        return self._acl(f) if f else tokens_acl(self.name)
