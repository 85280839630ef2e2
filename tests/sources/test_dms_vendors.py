"""Graph, Google Drive, Box and Dropbox connectors against a local HTTP server (cheroot) that serves each
vendor's documented response shapes from one in-memory model of a drive, two items per page (so every
listing is multi-page). Each: initial crawl, an edit, a deletion, a permission-only change (no download,
no embedding), an expired cursor (full resync that downloads nothing unchanged and prunes what vanished)."""
from __future__ import annotations

import hashlib
import json

import pytest

from tests.support.dms_servers import VendorServer
from acl.model import Principal  # noqa: E402

PAGE = 2


class Model:
    """Files with content, readers and a change log; cursors below ``min_seq`` are expired."""

    def __init__(self):
        self.files: dict[str, dict] = {}
        self.log: list[tuple[int, str, str]] = []  # (seq, id, kind: content|acl|delete)
        self.min_seq = 0
        self.downloads = 0

    @property
    def seq(self):
        return len(self.log)

    def put(self, fid, name, text, readers):
        f = self.files.setdefault(fid, {"id": fid, "name": name, "rev": 0})
        f.update(text=text.encode(), readers=list(readers), rev=f["rev"] + 1)
        f["hash"] = hashlib.sha1(f["text"]).hexdigest()
        self.log.append((self.seq + 1, fid, "content"))

    def share(self, fid, readers):
        self.files[fid]["readers"] = list(readers)
        self.log.append((self.seq + 1, fid, "acl"))

    def delete(self, fid, logged=True):
        del self.files[fid]
        if logged:
            self.log.append((self.seq + 1, fid, "delete"))

    def since(self, seq):
        """(id, kind) changed after seq, one per id, in order of its last change."""
        last = {}
        for s, fid, kind in self.log:
            if s > seq:
                last.pop(fid, None)
                last[fid] = kind
        return list(last.items())


def page_of(items, skip):
    return items[skip:skip + PAGE], skip + PAGE < len(items)


# -- the vendors' shapes --------------------------------------------------------------------------------------
def graph_server(m: Model) -> VendorServer:
    s = VendorServer()
    base = "/v1.0/drives/D"

    def item(f):
        return {"id": f["id"], "name": f["name"], "eTag": f'"{f["id"]},{f["rev"]}"', "cTag": f'"c:{f["hash"]}"',
                "size": len(f["text"]), "lastModifiedDateTime": "2026-11-01T10:00:00Z",
                "webUrl": f"https://contoso.sharepoint.com/Shared%20Documents/{f['name']}",
                "parentReference": {"driveId": "D", "id": "root", "path": "/drive/root:"}, "file": {"mimeType":
                                                                                                  "text/plain"}}

    @s.route("GET", base + "/root/delta")
    def delta(env, q, body):
        token, skip = int(q.get("token", -1)), int(q.get("skip", 0))
        if token >= 0 and token < m.min_seq:
            return "410 Gone", {"error": {"code": "resyncRequired", "message": "Resync required."}}
        if token < 0:
            vals = [item(f) for f in m.files.values()]
        else:
            vals = [item(m.files[i]) if i in m.files else {"id": i, "deleted": {"state": "deleted"}}
                    for i, _ in m.since(token)]
        chunk, more = page_of(vals, skip)
        page = {"@odata.context": "https://graph.microsoft.com/v1.0/$metadata#Collection(driveItem)", "value": chunk}
        link = f"{s.url}{base}/root/delta?token="
        if more:
            page["@odata.nextLink"] = f"{link}{token}&skip={skip + PAGE}"
        else:
            page["@odata.deltaLink"] = f"{link}{m.seq}"
        return "200 OK", page

    @s.route("GET", base + "/items/*")
    def items(env, q, body):
        fid, _, rest = env["PATH_INFO"][len(base + "/items/"):].partition("/")
        f = m.files.get(fid)
        if f is None:
            return "404 Not Found", {"error": {"code": "itemNotFound", "message": "Item not found"}}
        if rest == "content":
            m.downloads += 1
            return "200 OK", f["text"]
        if rest == "permissions":
            perms = [{"id": "p-owner", "roles": ["owner"], "grantedToV2": {"user": {"id": "owner-1",
                                                                                   "displayName": "Owner"}}}]
            perms += [{"id": f"p-{u}", "roles": ["read"], "grantedToV2": {"user": {"id": u, "displayName": u}}}
                      for u in f["readers"] if not u.startswith("g:")]
            groups = [u[2:] for u in f["readers"] if u.startswith("g:")]
            if groups:
                perms.append({"id": "p-link", "roles": ["read"], "link": {"scope": "users", "type": "view"},
                              "grantedToIdentitiesV2": [{"group": {"id": g, "displayName": g}} for g in groups]})
            perms.append({"id": "p-anon", "roles": ["read"], "link": {"scope": "anonymous", "type": "view"}})
            return "200 OK", {"value": perms}
        return "200 OK", item(f)

    return s


def drive_server(m: Model) -> VendorServer:
    s = VendorServer()

    def meta(f):
        return {"kind": "drive#file", "id": f["id"], "name": f["name"], "mimeType": "text/plain",
                "md5Checksum": hashlib.md5(f["text"]).hexdigest(), "headRevisionId": f"r{f['rev']}",
                "trashed": False, "webViewLink": f"https://drive.google.com/file/d/{f['id']}/view",
                "size": str(len(f["text"])), "modifiedTime": "2026-11-01T10:00:00.000Z"}

    @s.route("GET", "/drive/v3/changes/startPageToken")
    def start(env, q, body):
        return "200 OK", {"kind": "drive#startPageToken", "startPageToken": f"{m.seq}:0"}

    @s.route("GET", "/drive/v3/files")
    def files(env, q, body):
        assert q["q"] == "trashed = false"
        skip = int(q.get("pageToken", 0))
        chunk, more = page_of([meta(f) for f in m.files.values()], skip)
        return "200 OK", {"kind": "drive#fileList", "files": chunk, **({"nextPageToken": str(skip + PAGE)}
                                                                        if more else {})}

    @s.route("GET", "/drive/v3/changes")
    def changes(env, q, body):
        seq, skip = map(int, q["pageToken"].split(":"))
        if seq < m.min_seq:
            return "400 Bad Request", {"error": {"code": 400, "message": "Invalid Value",
                                                 "errors": [{"reason": "invalid", "location": "pageToken"}]}}
        ch = [{"kind": "drive#change", "changeType": "file", "fileId": i, "removed": i not in m.files,
               **({"file": meta(m.files[i])} if i in m.files else {})} for i, _ in m.since(seq)]
        chunk, more = page_of(ch, skip)
        tail = {"nextPageToken": f"{seq}:{skip + PAGE}"} if more else {"newStartPageToken": f"{m.seq}:0"}
        return "200 OK", {"kind": "drive#changeList", "changes": chunk, **tail}

    @s.route("GET", "/drive/v3/files/*")
    def file(env, q, body):
        fid, _, rest = env["PATH_INFO"][len("/drive/v3/files/"):].partition("/")
        f = m.files.get(fid)
        if f is None:
            return "404 Not Found", {"error": {"code": 404, "message": f"File not found: {fid}."}}
        if rest == "permissions":
            perms = [{"kind": "drive#permission", "id": "o", "type": "user", "role": "owner",
                      "emailAddress": "owner@example.com"},
                     {"kind": "drive#permission", "id": "a", "type": "anyone", "role": "reader"}]
            perms += [{"kind": "drive#permission", "id": u, "type": "group" if u.startswith("g:") else "user",
                       "role": "reader", "emailAddress": u[2:] if u.startswith("g:") else u} for u in f["readers"]]
            return "200 OK", {"kind": "drive#permissionList", "permissions": perms}
        if q.get("alt") == "media":
            m.downloads += 1
            return "200 OK", f["text"]
        return "200 OK", meta(f)

    return s


def box_server(m: Model) -> VendorServer:
    s = VendorServer()

    @s.route("GET", "/2.0/events")
    def events(env, q, body):
        pos = q["stream_position"]
        if pos == "now":
            return "200 OK", {"chunk_size": 0, "next_stream_position": m.seq, "entries": []}
        pos = int(pos)
        if pos < m.min_seq:
            return "400 Bad Request", {"type": "error", "status": 400, "code": "bad_request",
                                       "message": "Invalid stream position"}
        evs = [e for e in m.log if e[0] > pos][:PAGE]
        kinds = {"content": "ITEM_UPLOAD", "acl": "COLLAB_ADD_COLLABORATOR", "delete": "ITEM_TRASH"}
        entries = [{"type": "event", "event_id": f"ev-{sq}", "event_type": kinds[k], "created_at":
                    "2026-11-01T10:00:00-08:00", "source": {"type": "file", "id": fid,
                                                           "name": m.files.get(fid, {}).get("name", "x")}}
                   for sq, fid, k in evs]
        return "200 OK", {"chunk_size": len(entries), "next_stream_position": evs[-1][0] if evs else pos,
                          "entries": entries}

    @s.route("GET", "/2.0/folders/0/items")
    def items(env, q, body):
        skip = int(q.get("offset", 0))
        vals = [{"type": "file", "id": f["id"], "name": f["name"], "sha1": f["hash"]} for f in m.files.values()]
        chunk, _ = page_of(vals, skip)
        return "200 OK", {"total_count": len(vals), "entries": chunk, "offset": skip, "limit": PAGE}

    @s.route("GET", "/2.0/folders/0/collaborations")
    def root_collabs(env, q, body):
        return "200 OK", {"total_count": 0, "entries": []}

    @s.route("GET", "/2.0/files/*")
    def file(env, q, body):
        fid, _, rest = env["PATH_INFO"][len("/2.0/files/"):].partition("/")
        f = m.files.get(fid)
        if f is None:
            return "404 Not Found", {"type": "error", "status": 404, "code": "not_found", "message": "Not Found"}
        if rest == "content":
            m.downloads += 1
            return "200 OK", f["text"]
        if rest == "collaborations":
            return "200 OK", {"total_count": len(f["readers"]), "entries": [
                {"type": "collaboration", "id": f"c-{u}", "role": "viewer", "status": "accepted",
                 "accessible_by": {"type": "group", "id": u[2:]} if u.startswith("g:") else
                 {"type": "user", "id": u, "login": f"{u}@example.com"}} for u in f["readers"]]}
        return "200 OK", {"type": "file", "id": fid, "name": f["name"], "sha1": f["hash"], "size": len(f["text"]),
                          "modified_at": "2026-11-01T10:00:00-08:00", "owned_by": {"type": "user", "id": "owner-1"},
                          "path_collection": {"total_count": 1, "entries": [{"type": "folder", "id": "0",
                                                                             "name": "All Files"}]},
                          "shared_link": None, "item_status": "active", "trashed_at": None}

    return s


def dropbox_server(m: Model) -> VendorServer:
    s = VendorServer()

    def entry(f):
        return {".tag": "file", "id": f["id"], "name": f["name"], "path_lower": "/docs/" + f["name"].lower(),
                "path_display": "/Docs/" + f["name"], "rev": f"{f['rev']:09x}", "size": len(f["text"]),
                "server_modified": "2026-11-01T10:00:00Z", "content_hash": f["hash"]}

    names = {}  # id -> last name (a deleted entry carries the path only)

    def listing(kind, seq, skip):
        if kind == "full":
            vals = [entry(f) for f in m.files.values()]
        else:
            vals = [entry(m.files[i]) if i in m.files else {".tag": "deleted", "name": names[i],
                                                             "path_lower": "/docs/" + names[i].lower()}
                    for i, k in m.since(seq) if k != "acl"]  # sharing changes are not in list_folder
        for f in m.files.values():
            names[f["id"]] = f["name"]
        chunk, more = page_of(vals, skip)
        cur = f"{kind}:{seq}:{skip + PAGE}" if more else f"since:{m.seq}:0"
        return "200 OK", {"entries": chunk, "cursor": cur, "has_more": more}

    @s.route("POST", "/2/files/list_folder")
    def lf(env, q, body):
        assert json.loads(body) == {"path": "", "recursive": True}
        return listing("full", m.seq, 0)

    @s.route("POST", "/2/files/list_folder/continue")
    def cont(env, q, body):
        kind, seq, skip = json.loads(body)["cursor"].split(":")
        if int(seq) < m.min_seq:
            return "409 Conflict", {"error_summary": "reset/..", "error": {".tag": "reset"}}
        return listing(kind, int(seq), int(skip))

    @s.route("POST", "/2/files/get_metadata")
    def gm(env, q, body):
        f = m.files.get(json.loads(body)["path"])
        if f is None:
            return "409 Conflict", {"error_summary": "path/not_found/..", "error": {".tag": "path", "path": {
                ".tag": "not_found"}}}
        return "200 OK", entry(f)

    @s.route("POST", "/2/files/download")
    def dl(env, q, body):
        f = m.files[json.loads(env["HTTP_DROPBOX_API_ARG"])["path"]]
        m.downloads += 1
        return "200 OK", f["text"], [("Dropbox-API-Result", json.dumps(entry(f)))]

    @s.route("POST", "/2/sharing/list_file_members")
    def members(env, q, body):
        f = m.files[json.loads(body)["file"]]
        return "200 OK", {"users": [{"access_type": {".tag": "owner"}, "user": {"account_id": "owner-1"}}] + [
            {"access_type": {".tag": "viewer"}, "user": {"account_id": u, "email": f"{u}@example.com"}}
            for u in f["readers"] if not u.startswith("g:")],
            "groups": [{"access_type": {".tag": "viewer"}, "group": {"group_id": u[2:], "group_name": u[2:]}}
                       for u in f["readers"] if u.startswith("g:")], "invitees": []}

    return s


VENDORS = {
    "graph": (graph_server, lambda url: {"type": "graph", "drive_id": "D", "base_url": url + "/v1.0",
                                         "token": "env:VENDOR_TOKEN"}),
    "gdrive": (drive_server, lambda url: {"type": "gdrive", "base_url": url, "token": "env:VENDOR_TOKEN"}),
    "box": (box_server, lambda url: {"type": "box", "base_url": url, "token": "env:VENDOR_TOKEN"}),
    "dropbox": (dropbox_server, lambda url: {"type": "dropbox", "base_url": url, "content_url": url,
                                             "token": "env:VENDOR_TOKEN"}),
}


def find(store, query, user, ns, *groups):
    from ingest.search.index import Index

    return {h.doc_id for h in Index(store).search(query, principal=Principal(user, groups, namespace=ns), k=20,
                                                  mode="bm25", audit=False)}


@pytest.mark.parametrize("vendor", list(VENDORS))
def test_vendor_connector_lifecycle(vendor, pipeline, store, monkeypatch):
    from ingest.pipeline.connector_sync import ConnectorSync
    from ingest.sources.connector import make_connector

    monkeypatch.setenv("VENDOR_TOKEN", "tok-123")
    m = Model()
    make_server, make_cfg = VENDORS[vendor]
    server = make_server(m).start()
    try:
        for i in range(5):
            m.put(f"f{i}", f"doc{i}.txt", f"document {i} about the okapi survey number{i}",
                  ["bob"] if i % 2 == 0 else ["g:eng"])
        sync = ConnectorSync(pipeline, make_connector("v", make_cfg(server.url)))
        src = sync.source

        def doc(fid):
            return store.get_doc(src, fid)["doc_id"]

        rep = sync.poll()
        assert rep.resync and rep.outcomes == {"indexed": 5} and m.downloads == 5
        pages = sum(n for (meth, path), n in server.requests.items() if "content" not in path
                    and "permissions" not in path and "collaborations" not in path and "members" not in path
                    and "download" not in path and not path.startswith(("/drive/v3/files/", "/2.0/files/",
                                                                          "/v1.0/drives/D/items/")))
        assert pages >= 3  # five items, two per page
        assert all(h["authorization"] == "Bearer tok-123" for _, _, _, h in server.bodies)
        assert find(store, "okapi", "bob", "v") == {doc("f0"), doc("f2"), doc("f4")}
        assert find(store, "okapi", "zed", "v", "eng") == {doc("f1"), doc("f3")}
        assert find(store, "okapi", "carol", "v") == set()

        # an edit, a deletion and a permission-only change, in one incremental pass (multi-page)
        m.put("f0", "doc0.txt", "document 0 rewritten about the tapir census", ["bob"])
        gone = doc("f1")
        m.delete("f1")
        m.share("f2", ["carol"])  # bob loses access, carol gains it
        before = store.counters()
        rep = sync.poll()
        if vendor == "dropbox":  # sharing changes are not in list_folder: the permission-only pass finds them
            assert rep.outcomes == {"indexed": 1, "deleted": 1}
            assert sync.acl_sync() == 1
        else:
            assert rep.outcomes == {"indexed": 1, "deleted": 1, "acl": 1}
        assert not rep.resync and m.downloads == 6  # only the edited file was downloaded
        c = store.counters(before["last_id"])
        assert c["parsed"] == 1 and 1 <= c["embedded"] <= 2  # the edit only; the ACL change embeds nothing
        assert find(store, "tapir", "bob", "v") == {doc("f0")}
        assert find(store, "okapi", "bob", "v") == {doc("f4")}  # lost f2 after the next sync
        assert find(store, "okapi", "carol", "v") == {doc("f2")}
        assert store.get_doc_by_id(gone) is None

        # the cursor expires; meanwhile f3 vanished without a change record (found by the resync's listing)
        m.min_seq = m.seq + 1
        m.delete("f3", logged=False)
        m.put("f4", "doc4.txt", "document 4 now about the dugong", ["bob"])
        m.min_seq = m.seq  # every cursor issued before now is expired
        rep = sync.poll()
        assert rep.resync and rep.pruned == 1 and m.downloads == 7  # only f4 again; f0 and f2 unchanged
        assert rep.outcomes.get("indexed") == 1 and rep.outcomes.get("skipped") == 2
        assert find(store, "dugong", "bob", "v") == {doc("f4")}
        assert store.get_doc(src, "f3") is None
        # and the fresh cursor works incrementally again
        m.share("f4", ["bob", "carol"])
        rep = sync.poll() if vendor != "dropbox" else None
        if rep is not None:
            assert not rep.resync and rep.outcomes == {"acl": 1} and m.downloads == 7
        else:
            assert sync.poll().events == 0 and sync.acl_sync() == 1
        assert find(store, "dugong", "carol", "v") == {doc("f4")}
    finally:
        server.stop()


def test_vendor_errors_are_specific(monkeypatch):
    from ingest.config import ConfigError
    from ingest.sources.connector import ConnectorError, make_connector

    monkeypatch.delenv("VENDOR_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="VENDOR_TOKEN is not set"):
        make_connector("v", VENDORS["graph"][1]("http://127.0.0.1:1"))
    with pytest.raises(ValueError, match="graph needs drive_id"):
        make_connector("v", {"type": "graph"})
    with pytest.raises(ValueError, match="type must be one of"):
        make_connector("v", {"type": "ftp"})
    monkeypatch.setenv("VENDOR_TOKEN", "tok-secret-value")
    m = Model()
    server = box_server(m).start()
    try:
        c = make_connector("v", {"type": "box", "base_url": server.url + "/nothing", "token": "env:VENDOR_TOKEN"})
        with pytest.raises(ConnectorError, match=r"source v: GET .*/nothing/2.0/events -> HTTP 404") as e:
            c.changes(None)
        assert "tok-secret-value" not in str(e.value)
    finally:
        server.stop()


def test_graph_lifecycle_notification_renews_subscription(monkeypatch):
    from ingest.sources.webhooks import app

    monkeypatch.setenv("VENDOR_TOKEN", "tok-123")
    s = VendorServer()
    patched = []

    @s.route("PATCH", "/v1.0/subscriptions/*")
    def renew(env, q, body):
        patched.append((env["PATH_INFO"], json.loads(body)))
        return "200 OK", {"id": env["PATH_INFO"].rsplit("/", 1)[1], **json.loads(body)}

    s.start()
    try:
        enqueued = []
        cfg = {"sources": {"sp": VENDORS["graph"][1](s.url)},
               "webhooks": {"g": {"scheme": "graph", "source": "sp", "secret": "cs-1"}}}
        wsgi = app(None, cfg, enqueue=enqueued.append)
        body = json.dumps({"value": [{"subscriptionId": "sub-9", "clientState": "cs-1",
                                      "lifecycleEvent": "reauthorizationRequired", "resource": "drives/D/root",
                                      "organizationId": "t-1"}]}).encode()
        import io

        out = []
        wsgi({"REQUEST_METHOD": "POST", "PATH_INFO": "/g", "CONTENT_LENGTH": str(len(body)),
              "wsgi.input": io.BytesIO(body)}, lambda st, h: out.append(st))
        assert out == ["202 Accepted"] and enqueued == ["sp"]
        assert patched and patched[0][0] == "/v1.0/subscriptions/sub-9"
        assert patched[0][1]["expirationDateTime"].endswith("Z")
    finally:
        s.stop()
