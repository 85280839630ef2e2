"""Microsoft Graph: SharePoint document libraries and OneDrive (``/drives/{drive-id}``).

Changes: ``GET /drives/{id}/root/delta`` (no token: every item), following ``@odata.nextLink`` to the
``@odata.deltaLink``, which is the cursor. ``410 Gone`` (resyncRequired) means the cursor expired: a
full resync. Items with a ``deleted`` facet are deletes. The content version is the ``cTag`` (it
changes with the content only; the ``eTag`` also changes with metadata). With the header
``Prefer: deltashowsharingchanges`` a permission change shows up as the item in the delta; the sync
then sees the same cTag and a different ACL: an ACL-only update.

ACL from ``GET /drives/{d}/items/{id}/permissions``: every permission whose roles include read,
write or owner: ``grantedToV2`` / ``grantedToIdentitiesV2`` users -> ``user:<source>:<aad id>``,
groups -> ``group:<source>:<id>``; sharing links by scope: ``organization`` ->
``group:<source>:organization``, ``users`` -> the identities they grant, ``anonymous`` ->
``everyone`` only with ``public_links = true``.

Config::

    [sources.sp]
    type = "graph"
    drive_id = "b!..."
    token = "env:GRAPH_TOKEN"           # an OAuth access token (client-credentials flow, Files.Read.All)
    base_url = "https://graph.microsoft.com/v1.0"
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from ingest.sources.connector import iso_ns, listed_ids, required
from ingest.sources.base import ChangeEvent
from ingest.sources.connector import (DELETE, UPSERT, CursorExpired, HTTPError, Http, ListingError, RawDocument,
                        credential, tokens_acl)

GRAPH = "https://graph.microsoft.com/v1.0"
READ_ROLES = {"read", "write", "owner", "sp.full control"}


def _ident_tokens(ident: dict, users: list, groups: list) -> None:
    for kind in ("user", "siteUser"):
        if ident.get(kind):
            users.append(ident[kind].get("id") or ident[kind].get("loginName"))
    for kind in ("group", "siteGroup"):
        if ident.get(kind):
            groups.append(ident[kind].get("id") or ident[kind].get("loginName"))


class GraphConnector:
    def __init__(self, name: str, cfg: dict):
        self.name, self.cfg = name, cfg
        self.drive = required(cfg, "drive_id", name, "graph")
        self.source = f"graph:{name}"
        self.http = Http(cfg.get("base_url", GRAPH), token=credential(cfg, "token", name), what=f"source {name}")
        self.public_links = bool(cfg.get("public_links", False))

    def changes(self, cursor: str | None) -> tuple[list[ChangeEvent], str]:
        url = cursor or f"drives/{self.drive}/root/delta"
        events: list[ChangeEvent] = []
        while True:
            try:
                page = self.http.json("GET", url, headers={"Prefer": "deltashowsharingchanges"})
            except HTTPError as e:
                if e.status == 410 and cursor is not None:
                    raise CursorExpired(f"source {self.name}: delta token expired (410 resyncRequired)") from None
                raise
            for it in page.get("value", []):
                if it.get("deleted") is not None:
                    events.append(ChangeEvent(DELETE, self.source, it["id"]))
                elif it.get("file") is not None:
                    events.append(ChangeEvent(UPSERT, self.source, it["id"], path=it.get("name"), version=it.get("cTag")))
            if "@odata.nextLink" in page:
                url = page["@odata.nextLink"]
            elif "@odata.deltaLink" in page:
                return events, page["@odata.deltaLink"]
            else:
                raise ListingError(f"source {self.name}: delta page has neither nextLink nor deltaLink")

    def list_ids(self) -> set[str]:
        return listed_ids(self.name, lambda: (e.id for e in self.changes(None)[0] if e.kind != DELETE))

    def fetch(self, ref: str) -> RawDocument | None:
        it = self.http.json_or_none(f"drives/{self.drive}/items/{ref}")
        if it is None or it.get("deleted") is not None or it.get("file") is None:
            return None
        mtime = it.get("lastModifiedDateTime")
        return RawDocument(id=ref, name=it.get("name", ref), uri=it.get("webUrl") or f"graph:{self.drive}/{ref}",
                           version=it.get("cTag") or it.get("eTag"), acl=self.acl(ref), size=it.get("size"),
                           mtime_ns=iso_ns(mtime),
                           opener=lambda: self.http.open("GET", f"drives/{self.drive}/items/{ref}/content",
                                                         stream=True))

    def acl(self, ref: str):
        perms = self.http.json("GET", f"drives/{self.drive}/items/{ref}/permissions").get("value", [])
        users: list = []
        groups: list = []
        everyone = False
        for p in perms:
            if not READ_ROLES & {r.lower() for r in p.get("roles", [])}:
                continue
            link = p.get("link")
            if link:
                scope = link.get("scope")
                if scope == "organization":
                    groups.append("organization")
                elif scope == "anonymous" and self.public_links:
                    everyone = True
            if p.get("grantedToV2"):
                _ident_tokens(p["grantedToV2"], users, groups)
            for ident in p.get("grantedToIdentitiesV2") or []:
                _ident_tokens(ident, users, groups)
        return tokens_acl(self.name, users, groups, everyone)


def renew_subscription(cfg: dict, name: str, subscription_id: str, minutes: int = 60 * 24 * 2) -> dict:
    """Extend a change-notification subscription (``PATCH /subscriptions/{id}``)."""
    http = Http(cfg.get("base_url", GRAPH), token=credential(cfg, "token", name), what=f"source {name}")
    until = (datetime.now(timezone.utc) + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%S.0000000Z")
    return http.json("PATCH", f"subscriptions/{subscription_id}", body={"expirationDateTime": until})
