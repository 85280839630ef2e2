"""The connectors' HTTP client (``ingest.sources.connector.Http``: WebDAV, Graph, Box, Drive and
Dropbox downloads) against real local servers: credentials never follow a redirect to another origin
(defect 10 of issue 13), and a password written inside a source URL never reaches an error (defect 15)."""
from __future__ import annotations

import base64

import pytest

from tests.support.dms_servers import HTTPTestServer, free_port
class Recorder(HTTPTestServer):
    """A server that records each request's headers and answers from ``routes`` (path -> (status, headers, body))."""

    def __init__(self, routes=None):
        self.routes = routes or {}
        self.seen: list[tuple[str, dict]] = []

    def start(self):
        def app(environ, start_response):
            hdrs = {k[5:].replace("_", "-").title(): v for k, v in environ.items() if k.startswith("HTTP_")}
            self.seen.append((environ["PATH_INFO"], hdrs))
            status, extra, body = self.routes.get(environ["PATH_INFO"], ("404 Not Found", [], b"no"))
            start_response(status, [("Content-Length", str(len(body)))] + extra)
            return [body]

        return self.start_wsgi(app)


@pytest.fixture
def servers():
    a, b = Recorder().start(), Recorder().start()
    yield a, b
    a.stop()
    b.stop()


BASIC = "Basic " + base64.b64encode(b"crawler:hunter2").decode()


def test_cross_origin_redirect_drops_credentials(servers):
    from ingest.sources.connector import Http

    a, b = servers
    b.routes["/blob"] = ("200 OK", [], b"the document bytes")
    a.routes["/dav/doc.txt"] = ("302 Found", [("Location", b.url + "/blob?sig=presigned")], b"")
    a.routes["/dav/moved.txt"] = ("301 Moved Permanently", [("Location", a.url + "/dav/doc.txt")], b"")
    for token, basic, want in ((None, ("crawler", "hunter2"), BASIC), ("graph-token", None, "Bearer graph-token")):
        a.seen.clear()
        b.seen.clear()
        http = Http(a.url + "/dav", token=token, basic=basic, what="webdav nc")
        status, _, data = http.open("GET", "moved.txt")  # same-origin hop, then a hop to another origin
        assert status == 200 and data == b"the document bytes"
        assert [p for p, _ in a.seen] == ["/dav/moved.txt", "/dav/doc.txt"]
        assert all(h.get("Authorization") == want for _, h in a.seen)  # kept within the origin
        assert [p for p, _ in b.seen] == ["/blob"]
        assert "Authorization" not in b.seen[0][1] and "Cookie" not in b.seen[0][1]
        # streamed downloads (RawDocument.open) take the same path
        with http.open("GET", "doc.txt", stream=True) as r:
            assert r.read() == b"the document bytes"
        assert "Authorization" not in b.seen[-1][1]


def test_another_port_is_another_origin(servers):
    from ingest.sources.connector import Http

    a, b = servers
    a.routes["/x"] = ("307 Temporary Redirect", [("Location", f"http://127.0.0.1:{b.port}/y")], b"")
    b.routes["/y"] = ("200 OK", [], b"ok")
    assert Http(a.url, basic=("crawler", "hunter2")).open("GET", "/x")[2] == b"ok"
    assert "Authorization" not in b.seen[0][1]


def test_password_in_a_source_url_never_reaches_an_error(servers):
    from ingest.sources.connector import ConnectorError, HTTPError, Http, _redact

    a, _ = servers
    assert _redact("https://crawler:hunter2@cloud.example.com:8443/dav/x?token=t#f") == \
        "https://cloud.example.com:8443/dav/x"
    assert _redact("https://user@host/p@q") == "https://host/p@q"
    dead = free_port()
    with pytest.raises(ConnectorError) as e:
        Http(f"http://crawler:hunter2@127.0.0.1:{dead}/dav", what="webdav nc").open("GET", "f.txt")
    assert "hunter2" not in str(e.value) and "crawler" not in str(e.value) and str(dead) in str(e.value)
    host = a.url.split("://")[1]
    with pytest.raises(HTTPError) as e:  # an HTTP error status names the URL too
        Http(f"http://crawler:hunter2@{host}/dav", what="webdav nc").open("GET", "missing.txt")
    assert e.value.status == 404 and "hunter2" not in str(e.value) and "/dav/missing.txt" in str(e.value)
    assert a.seen[-1][1]["Authorization"] == BASIC  # the URL's userinfo became the Basic credential
