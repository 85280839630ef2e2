"""Real servers for the DMS connector tests, on free loopback ports.

* :class:`NextcloudLike`: wsgidav (real WebDAV: PROPFIND, GET, MOVE...) with users from its simple
  domain controller and per-share access, extended with Nextcloud's live properties
  (``oc:fileid`` = inode, so it survives moves; ``oc:permissions`` with ``S`` when shared;
  ``oc:owner-id``; folder etags that change when anything below changes, as Nextcloud propagates
  them) and an OCS shares endpoint served beside it.
* :class:`VendorServer`: a cheroot server whose routes serve the documented JSON shapes of a vendor API.
* Every server counts requests per (method, path kind) so tests can count fetches.
"""
from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import socket
import threading
import urllib.parse
from collections import Counter

OC = "{http://owncloud.org/ns}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class HTTPTestServer:
    def start_wsgi(self, app):
        from cheroot import wsgi

        self.port = free_port()
        self.server = wsgi.Server(("127.0.0.1", self.port), app, numthreads=4)
        self.server.prepare()
        self.thread = threading.Thread(target=self.server.serve, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.port}"
        return self

    def stop(self):
        self.server.stop()


def _oc_provider(owner_of, shares):
    from wsgidav.fs_dav_provider import FileResource, FilesystemProvider, FolderResource

    def oc_value(res, name, is_dir):
        st = res.file_stat
        if name == OC + "fileid":
            return str(st.st_ino)
        if name == OC + "owner-id":
            return owner_of(res.path)
        if name == OC + "permissions":
            rel = res.path.strip("/")
            shared = any(p == rel for p in shares)
            return ("S" if shared else "") + ("RGDNVCK" if is_dir else "RGDNVW")
        return None

    class OcFile(FileResource):
        def get_etag(self):
            st = self.file_stat
            return f"{st.st_ino:x}-{st.st_mtime_ns:x}-{st.st_size:x}"

        def get_property_value(self, name):
            v = oc_value(self, name, False)
            return v if v is not None else super().get_property_value(name)

    class OcFolder(FolderResource):
        def get_etag(self):  # Nextcloud propagates etags up: any change below changes the folder's
            h = hashlib.sha256()
            for dirpath, dirs, files in sorted(os.walk(self._file_path)):
                dirs.sort()
                for n in sorted(dirs + files):
                    st = os.stat(os.path.join(dirpath, n))
                    h.update(f"{dirpath}/{n}\0{st.st_ino}\0{st.st_mtime_ns}\0{st.st_size}\n".encode())
            return h.hexdigest()[:20]

        def get_property_value(self, name):
            v = oc_value(self, name, True)
            return v if v is not None else super().get_property_value(name)

        def get_member(self, name):
            return self.provider.get_resource_inst(
                self.path.rstrip("/") + "/" + name, self.environ)

    class OcProvider(FilesystemProvider):
        def get_resource_inst(self, path, environ):
            fp = self._loc_to_file_path(path, environ)
            if not os.path.exists(fp):
                return None
            return OcFolder(path, environ, fp) if os.path.isdir(fp) else OcFile(path, environ, fp)

    return OcProvider


class NextcloudLike(HTTPTestServer):
    """``/remote.php/dav/files/crawler`` (crawler:crawlpw), ``/remote.php/dav/files/bob`` (bob only),
    and ``/ocs/v2.php/apps/files_sharing/api/v1/shares``."""

    DAV = "/remote.php/dav/files/crawler"
    OCS = "/ocs/v2.php/apps/files_sharing/api/v1/shares"

    def __init__(self, root, *, ocs: bool = True, owner: str = "alice"):
        self.root = str(root)
        self.bob_root = os.path.join(self.root + ".bob")
        os.makedirs(self.bob_root, exist_ok=True)
        self.shares: dict[str, list[dict]] = {}  # path -> [{"share_type", "share_with", "permissions"}]
        self.owner = owner
        self.ocs_enabled = ocs
        self.requests: Counter = Counter()
        self.fail = False  # when True every request gets 500 (a failed listing)

    def share(self, path: str, share_type: int, with_: str | None, permissions: int = 1):
        self.shares.setdefault(path.strip("/"), []).append(
            {"share_type": share_type, "share_with": with_, "permissions": permissions})

    def unshare(self, path: str, with_: str):
        self.shares[path.strip("/")] = [s for s in self.shares.get(path.strip("/"), []) if s["share_with"] != with_]
        if not self.shares[path.strip("/")]:
            del self.shares[path.strip("/")]

    def start(self):
        from wsgidav.wsgidav_app import WsgiDAVApp

        prov = _oc_provider(lambda p: self.owner, self.shares)
        dav = WsgiDAVApp({
            "provider_mapping": {self.DAV: prov(self.root, fs_opts={}), "/remote.php/dav/files/bob":
                                 prov(self.bob_root, fs_opts={})},
            "http_authenticator": {"domain_controller": None, "accept_basic": True, "accept_digest": False,
                                   "default_to_digest": False},
            "simple_dc": {"user_mapping": {self.DAV: {"crawler": {"password": "crawlpw"}},
                                           "/remote.php/dav/files/bob": {"bob": {"password": "bobpw"}}}},
            "verbose": 1, "logging": {"enable": False}, "dir_browser": {"enable": False},
            "lock_storage": True, "property_manager": None,
        })

        def app(environ, start_response):
            path, method = environ.get("PATH_INFO", ""), environ["REQUEST_METHOD"]
            self.requests["OCS " + method if path.startswith(self.OCS) else method] += 1
            if self.fail:
                start_response("500 Internal Server Error", [("Content-Type", "text/plain")])
                return [b"down"]
            if path.startswith(self.OCS):
                return self._ocs(environ, start_response)
            return dav(environ, start_response)

        return self.start_wsgi(app)

    def _ocs(self, environ, start_response):
        if not self.ocs_enabled:
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"no OCS"]
        auth = environ.get("HTTP_AUTHORIZATION", "")
        if auth != "Basic " + base64.b64encode(b"crawler:crawlpw").decode() or \
                environ.get("HTTP_OCS_APIREQUEST") != "true":
            start_response("401 Unauthorized", [("Content-Type", "application/json")])
            return [b'{"ocs":{"meta":{"status":"failure","statuscode":997}}}']
        data = [{"id": str(i), "share_type": s["share_type"], "share_with": s["share_with"],
                 "permissions": s["permissions"], "path": "/" + p, "uid_owner": self.owner,
                 "item_type": "folder" if os.path.isdir(os.path.join(self.root, p)) else "file"}
                for i, (p, lst) in enumerate(sorted(self.shares.items())) for s in lst]
        body = json.dumps({"ocs": {"meta": {"status": "ok", "statuscode": 200, "message": "OK"},
                                   "data": data}}).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]

    def dav_url(self):
        return self.url + self.DAV

    def source_cfg(self, **extra):
        return {"type": "webdav", "url": self.dav_url(), "user": "crawler", "password": "crawlpw",
                "ocs_url": self.url + self.OCS, **extra}


class VendorServer(HTTPTestServer):
    """Routes: ``(method, path) -> handler(environ, query, body) -> (status, json_or_bytes[, headers])``.
    Counts requests per route."""

    def __init__(self):
        self.routes: dict[tuple[str, str], object] = {}
        self.requests: Counter = Counter()
        self.bodies: list[tuple[str, str, bytes, dict]] = []

    def route(self, method, path):
        def deco(fn):
            self.routes[(method, path)] = fn
            return fn
        return deco

    def start(self):
        def app(environ, start_response):
            method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")
            n = int(environ.get("CONTENT_LENGTH") or 0)
            body = environ["wsgi.input"].read(n) if n else b""
            query = dict(urllib.parse.parse_qsl(environ.get("QUERY_STRING", "")))
            headers = {k[5:].replace("_", "-").lower(): v for k, v in environ.items() if k.startswith("HTTP_")}
            self.requests[(method, path)] += 1
            self.bodies.append((method, path, body, headers))
            fn = self.routes.get((method, path))
            if fn is None:
                fn = next((f for (m, p), f in self.routes.items() if m == method and p.endswith("*")
                           and path.startswith(p[:-1])), None)
            if fn is None:
                start_response("404 Not Found", [("Content-Type", "application/json")])
                return [b'{"error": "no route"}']
            res = fn(environ, query, body)
            status, payload = res[0], res[1]
            extra = res[2] if len(res) > 2 else []
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            ctype = "application/octet-stream" if isinstance(payload, bytes) else "application/json"
            start_response(status, [("Content-Type", ctype), ("Content-Length", str(len(data)))] + extra)
            return [data]

        return self.start_wsgi(app)


@contextlib.contextmanager
def moto_server():
    """A moto S3 server on a free loopback port, emptied first; yields (url, boto3 client)."""
    import urllib.request

    import boto3
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        url = f"http://127.0.0.1:{port}"
        # moto keeps its buckets in this process across server instances: every use starts from none
        urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/reset", method="POST"), timeout=10).close()
        yield url, boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="k",
                                aws_secret_access_key="s")
    finally:
        server.stop()
