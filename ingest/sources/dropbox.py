"""Dropbox (API v2).

Changes: ``POST /2/files/list_folder`` (recursive; no cursor: every entry) then
``/2/files/list_folder/continue`` while ``has_more``; the returned ``cursor`` is ours, together with
the path -> id map Dropbox needs us to keep (a ``deleted`` entry carries a path, not an id). A 409
``reset`` error is an expired cursor: full resync. The content version is the file's ``rev``.
Sharing changes do not appear in list_folder: they are found by the permission-only pass
(``ingest poll --acl``), which reads ``/2/sharing/list_file_members`` per document and changes
nothing but ACLs.

ACL: ``list_file_members`` (inherited included): users -> ``user:<source>:<account_id>``, groups ->
``group:<source>:<group_id>``.

Config: ``type = "dropbox"``, ``token = "env:DROPBOX_TOKEN"``, ``base_url``
(default ``https://api.dropboxapi.com``), ``content_url`` (default ``https://content.dropboxapi.com``).
"""
from __future__ import annotations

import json
from ingest.sources.connector import iso_ns, listed_ids
from ingest.sources.base import ChangeEvent
from ingest.sources.connector import (DELETE, UPSERT, CursorExpired, HTTPError, Http, RawDocument,
                        credential, tokens_acl)


class DropboxConnector:
    def __init__(self, name: str, cfg: dict):
        self.name, self.cfg = name, cfg
        self.source = f"dropbox:{name}"
        tok = credential(cfg, "token", name)
        self.http = Http(cfg.get("base_url", "https://api.dropboxapi.com"), token=tok, what=f"source {name}")
        self.content = Http(cfg.get("content_url", "https://content.dropboxapi.com"), token=tok,
                            what=f"source {name}")

    def _pages(self, cursor: str | None):
        try:
            if cursor is None:
                page = self.http.json("POST", "2/files/list_folder", body={"path": "", "recursive": True})
            else:
                page = self.http.json("POST", "2/files/list_folder/continue", body={"cursor": cursor})
            yield page
            while page.get("has_more"):
                page = self.http.json("POST", "2/files/list_folder/continue", body={"cursor": page["cursor"]})
                yield page
        except HTTPError as e:
            tag = _error_tag(e.body)
            if e.status == 409 and tag == "reset" and cursor is not None:
                raise CursorExpired(f"source {self.name}: list_folder cursor reset") from None
            raise

    def changes(self, cursor: str | None) -> tuple[list[ChangeEvent], str]:
        try:
            state = json.loads(cursor) if cursor else {"cursor": None, "paths": {}}
            dbx, paths = state["cursor"], dict(state["paths"])
        except (ValueError, KeyError, TypeError):
            raise CursorExpired(f"source {self.name}: unreadable cursor") from None
        events, last = [], dbx
        if dbx is None:
            paths = {}
        for page in self._pages(dbx):
            for e in page.get("entries", []):
                tag, low = e.get(".tag"), e.get("path_lower", "")
                if tag == "file":
                    old = paths.get(low)
                    if old and old != e["id"]:
                        events.append(ChangeEvent(DELETE, self.source, old))
                    for p, i in list(paths.items()):  # a move: the id had another path
                        if i == e["id"] and p != low:
                            del paths[p]
                    paths[low] = e["id"]
                    events.append(ChangeEvent(UPSERT, self.source, e["id"], path=e.get("path_display"), version=e.get("rev")))
                elif tag == "deleted":
                    for p, i in list(paths.items()):
                        if p == low or p.startswith(low + "/"):
                            events.append(ChangeEvent(DELETE, self.source, i))
                            del paths[p]
            last = page.get("cursor", last)
        return events, json.dumps({"cursor": last, "paths": paths}, sort_keys=True)

    def list_ids(self) -> set[str]:
        return listed_ids(self.name, lambda: (e["id"] for page in self._pages(None) for e in page.get("entries", [])
                                              if e.get(".tag") == "file"))

    def fetch(self, ref: str) -> RawDocument | None:
        try:
            m = self.http.json("POST", "2/files/get_metadata", body={"path": ref})
        except HTTPError as e:
            if e.status == 409 and _error_tag(e.body) == "path":
                return None
            raise
        if m.get(".tag") != "file":
            return None
        mt = m.get("server_modified")
        arg = json.dumps({"path": ref})
        return RawDocument(id=ref, name=m.get("name", ref),
                           uri="https://www.dropbox.com/home" + m.get("path_display", ""), version=m.get("rev"),
                           acl=self.acl(ref), size=m.get("size"),
                           mtime_ns=iso_ns(mt),
                           opener=lambda: self.content.open("POST", "2/files/download", stream=True,
                                                            headers={"Dropbox-API-Arg": arg}))

    def acl(self, ref: str):
        m = self.http.json("POST", "2/sharing/list_file_members", body={"file": ref, "include_inherited": True})
        users = [(u.get("user") or {}).get("account_id") for u in m.get("users", [])]
        groups = [(g.get("group") or {}).get("group_id") for g in m.get("groups", [])]
        return tokens_acl(self.name, users, groups)


def _error_tag(body: bytes) -> str | None:
    try:
        return json.loads(body).get("error", {}).get(".tag")
    except (ValueError, AttributeError):
        return None
