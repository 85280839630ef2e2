"""Webhook receivers fed the examples from the vendors' own documentation, through the real `ingest serve`
server into a real Celery broker (the embedded SQLite one): each accepted once (one `ingest.poll`
enqueued, as every scheme does), refused when forged (401, nothing enqueued), ignored when replayed.
Sent with http.client so that the request carries exactly the documented headers (Nextcloud sends no
Content-Type). Then a property test: no request, however malformed, gets a 500 (defect 14)."""
from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import threading
import time
from datetime import datetime, timezone

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from tests.support.dms_servers import free_port
from tests.support.queue_helpers import queued

# -- the vendors' published examples -------------------------------------------------------------------
GRAPH_SECRET = "secretClientValue"  # Microsoft Graph docs: "Receive change notifications"
GRAPH_NOTIFICATION = {"value": [{
    "id": "lsgTZMr9KwAAA", "subscriptionId": "{subscription_guid}",
    "subscriptionExpirationDateTime": "2016-03-19T22:11:09.952Z", "clientState": "secretClientValue",
    "changeType": "created", "resource": "users/{user_guid}@{tenant_guid}/messages/{long_id_string}",
    "tenantId": "84bd8158-6d4d-4958-8b9f-9d6445542f95",
    "resourceData": {"@odata.type": "#Microsoft.Graph.Message",
                     "@odata.id": "Users/{user_guid}@{tenant_guid}/Messages/{long_id_string}",
                     "@odata.etag": "W/\"CQAAABYAAADkrWGo7bouTKlsgTZMr9KwAAAUWRHf\"", "id": "{long_id_string}"}}]}
GRAPH_VALIDATION = "Validation: Testing client application"

DRIVE_TOKEN = "398348u3tu83ut8uu38"  # Google Drive docs: "Notifications for resource changes"
DRIVE_SYNC = {"X-Goog-Channel-ID": "4ba78bf0-6a47-11e2-bcfd-0800200c9a66", "X-Goog-Channel-Token": DRIVE_TOKEN,
              "X-Goog-Channel-Expiration": "Tue, 19 Nov 2013 01:13:52 GMT",
              "X-Goog-Resource-ID": "ret08u3rv24htgh289g",
              "X-Goog-Resource-URI": "https://www.googleapis.com/drive/v3/files/ret08u3rv24htgh289g",
              "X-Goog-Resource-State": "sync", "X-Goog-Message-Number": "1"}
DRIVE_CHANGE = dict(DRIVE_SYNC, **{"X-Goog-Resource-State": "update", "X-Goog-Changed": "content,properties",
                                   "X-Goog-Message-Number": "10"})

BOX_PRIMARY, BOX_SECONDARY = "SamplePrimaryKey", "SampleSecondaryKey"  # Box: "V2 Webhooks" payload and headers
BOX_BODY = json.dumps({
    "type": "webhook_event", "id": "eb0c4e06-751f-442c-86f8-fd5bb404dbec",
    "created_at": "2016-07-11T10:10:32-07:00", "trigger": "FILE.UPLOADED",
    "webhook": {"id": "53", "type": "webhook"},
    "created_by": {"type": "user", "id": "226067247", "name": "John Q. Developer", "login": "johnq@dev.name"},
    "source": {"id": "73835521473", "type": "file", "name": "Test-Image-3.png"}}, separators=(",", ":")).encode()
BOX_DELIVERY_ID = "673a081b-bb4b-4d45-b4f1-4131a29c1d07"

DROPBOX_SECRET = "dropbox-app-secret"  # Dropbox: "Webhooks" reference
DROPBOX_BODY = b'{"list_folder": {"accounts": ["dbid:AAH4f99T0taONIb-OurWxbNQ6ywGRopQngc"]}, ' \
               b'"delta": {"users": [12345678]}}'

NEXTCLOUD_SECRET = "webhook-header-secret"  # Nextcloud admin manual: webhook_listeners, NodeCreatedEvent
NEXTCLOUD_BODY = json.dumps({"event": {"class": "OCP\\Files\\Events\\Node\\NodeCreatedEvent",
                                       "node": {"id": 437, "path": "/admin/files/test-webhook.txt"}},
                             "user": {"uid": "admin", "displayName": "Admin"}, "time": 1700100000}).encode()

SW_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # Standard Webhooks: the libraries' test vector
SW_ID, SW_TS, SW_BODY = "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", b'{"test": 2432232314}'
SW_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
SW_SPEC_ID = "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W"  # the specification's example (its key is not published)
SW_SPEC_BODY = b'{"type":"contact.created","timestamp":"2022-11-03T20:26:10.344522Z",' \
               b'"data":{"id":"1f81eb52-5198-4599-803e-771906343485"}}'
SW_SPEC_SIGS = ("v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4= v1a,hnO3f9T8Ytu9HwrXslvumlUpqtNVqkhqw/enGzPCXe5Bdqz"
                "CInXqYXFymVJaA7AZdpXwVLPo3mNl8EM+m7TBAg==")

GITHUB_SECRET, GITHUB_BODY = "It's a Secret to Everybody", b"Hello, World!"  # GitHub: "Validating deliveries"
GITHUB_SIGNATURE = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"


@pytest.fixture
def served(world_dir, monkeypatch):
    from ingest.serve.app import make_server

    store = str(world_dir / "index.db")
    broker = f"sqla+sqlite:///{world_dir}/broker.sqlite"
    monkeypatch.setenv("INGEST_BROKER", broker)
    cfg = {"webhooks": {
        "graph": {"scheme": "graph", "source": "src", "secret": GRAPH_SECRET},
        "drive": {"scheme": "drive", "source": "src", "secret": DRIVE_TOKEN},
        "box": {"scheme": "box", "source": "src", "secret": BOX_PRIMARY, "secondary_secret": BOX_SECONDARY},
        "dropbox": {"scheme": "dropbox", "source": "src", "secret": DROPBOX_SECRET},
        "nextcloud": {"scheme": "nextcloud", "source": "src", "secret": NEXTCLOUD_SECRET,
                      "header": "X-Nextcloud-Webhook-Secret"},
        # the library vector is from 2021: a window that reaches back to it (what a replayed vector needs)
        "vector": {"scheme": "standard", "source": "src", "secret": SW_SECRET,
                   "window": time.time() - int(SW_TS) + 3600},
        "standard": {"scheme": "standard", "source": "src", "secret": SW_SECRET},
        "github": {"scheme": "github", "source": "src", "secret": GITHUB_SECRET},
    }}
    port = free_port()
    server = make_server(store, cfg, "127.0.0.1", port).start_background()
    yield port, (lambda: len(queued(broker))), store, broker
    server.stop()


def send(port, path, body=b"", headers=None, method="POST"):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.putrequest(method, path, skip_accept_encoding=True)
        for k, v in (headers or {}).items():
            c.putheader(k, v)
        if method == "POST":
            c.putheader("Content-Length", str(len(body)))
        c.endheaders(body if method == "POST" else None)
        r = c.getresponse()
        return r.status, r.read(), dict(r.getheaders())
    finally:
        c.close()


def check(port, n, path, body, headers, forged_body, forged_headers, expect=200):
    """accepted once; the identical request again ignored; a forgery refused; returns the count."""
    status, _, _ = send(port, path, body, headers)
    assert status == expect and n() == 1
    status, text, _ = send(port, path, body, headers)
    assert (status, text) == (200, b"replay ignored") and n() == 1
    status, _, _ = send(port, path, forged_body, forged_headers)
    assert status == 401 and n() == 1


def box_headers(body, key, delivery=BOX_DELIVERY_ID, which="PRIMARY", ts=None):
    ts = ts or datetime.now(timezone.utc).isoformat(timespec="seconds")
    sig = base64.b64encode(hmac.new(key.encode(), body + ts.encode(), hashlib.sha256).digest()).decode()
    return {"BOX-DELIVERY-ID": delivery, "BOX-DELIVERY-TIMESTAMP": ts, f"BOX-SIGNATURE-{which}": sig,
            "BOX-SIGNATURE-VERSION": "1", "BOX-SIGNATURE-ALGORITHM": "HmacSHA256",
            "USER-AGENT": "Box-WH-Client/0.1", "Content-Type": "application/json"}


def test_graph_validation_and_notification(served):
    port, n, store, broker = served
    status, text, hdrs = send(port, "/hooks/graph?validationToken=Validation%3A%20Testing%20client%20application",
                              b"", {"Content-Type": "text/plain; charset=utf-8"})
    assert (status, text) == (200, GRAPH_VALIDATION.encode()) and hdrs["Content-Type"].startswith("text/plain")
    assert n() == 0
    body = json.dumps(GRAPH_NOTIFICATION).encode()
    forged = body.replace(b"secretClientValue", b"guessedClientValue")
    check(port, n, "/hooks/graph", body, {"Content-Type": "application/json"}, forged,
          {"Content-Type": "application/json"}, expect=202)
    assert queued(broker) == [("ingest.poll", [store, "src"])]


def test_drive_sync_and_change(served):
    port, n, _, _ = served
    assert send(port, "/hooks/drive", b"", DRIVE_SYNC)[0] == 200 and n() == 0  # the handshake enqueues nothing
    check(port, n, "/hooks/drive", b"", DRIVE_CHANGE, b"",
          dict(DRIVE_CHANGE, **{"X-Goog-Channel-Token": "guessed", "X-Goog-Message-Number": "11"}))


def test_box_v2_signatures(served):
    port, n, _, _ = served
    h = box_headers(BOX_BODY, BOX_PRIMARY)
    check(port, n, "/hooks/box", BOX_BODY, h, BOX_BODY, box_headers(BOX_BODY, "guessed", delivery="x-1"))
    # the unsigned BOX-DELIVERY-ID changed: still the same signed delivery (defect 13)
    assert send(port, "/hooks/box", BOX_BODY, dict(h, **{"BOX-DELIVERY-ID": "f00"}))[1] == b"replay ignored"
    assert n() == 1
    # the secondary key (rotation) signs a new delivery
    later = BOX_BODY.replace(b"FILE.UPLOADED", b"FILE.PREVIEWED")
    assert send(port, "/hooks/box", later, box_headers(later, BOX_SECONDARY, which="SECONDARY"))[0] == 200
    assert n() == 2
    # the documented headers' own signature (made with a key we do not hold) and their 2016 timestamp: refused
    doc = {"BOX-DELIVERY-ID": BOX_DELIVERY_ID, "BOX-DELIVERY-TIMESTAMP": "2016-07-11T10:10:33-07:00",
           "BOX-SIGNATURE-PRIMARY": "isCeDp7mLR41/MjcSEFLag9bWmpJkgmN80Je4VIESdo=",
           "BOX-SIGNATURE-SECONDARY": "1UbiiKS7/2o5vNIlyMh7e5QGCHq8lflWFgEF+YWBugI=",
           "BOX-SIGNATURE-VERSION": "1", "BOX-SIGNATURE-ALGORITHM": "HmacSHA256"}
    status, text, _ = send(port, "/hooks/box", BOX_BODY, doc)
    assert status == 401 and b"window" in text and n() == 2


def test_dropbox_challenge_and_signature(served):
    port, n, _, _ = served
    status, text, hdrs = send(port, "/hooks/dropbox?challenge=4ab1c1dd0c1b", method="GET")
    assert (status, text) == (200, b"4ab1c1dd0c1b") and hdrs["X-Content-Type-Options"] == "nosniff"
    sig = hmac.new(DROPBOX_SECRET.encode(), DROPBOX_BODY, hashlib.sha256).hexdigest()
    check(port, n, "/hooks/dropbox", DROPBOX_BODY, {"X-Dropbox-Signature": sig, "Content-Type": "application/json"},
          DROPBOX_BODY.replace(b"12345678", b"87654321"), {"X-Dropbox-Signature": sig})


def test_nextcloud_node_created_without_content_type(served):
    port, n, _, _ = served
    h = {"X-Nextcloud-Webhook-Secret": NEXTCLOUD_SECRET, "User-Agent": "Nextcloud Webhook"}  # no Content-Type
    check(port, n, "/hooks/nextcloud", NEXTCLOUD_BODY, h, NEXTCLOUD_BODY.replace(b"437", b"438"),
          {"X-Nextcloud-Webhook-Secret": "guessed"})
    assert send(port, "/hooks/nextcloud", NEXTCLOUD_BODY.replace(b"437", b"439"), {})[0] == 401 and n() == 1


def test_standard_webhooks_library_vector_and_spec_example(served):
    from standardwebhooks.webhooks import Webhook  # the reference implementation, as the oracle

    port, n, _, _ = served
    assert Webhook(SW_SECRET).sign(SW_ID, datetime.fromtimestamp(int(SW_TS), timezone.utc), SW_BODY) == SW_SIGNATURE
    vector = {"webhook-id": SW_ID, "webhook-timestamp": SW_TS, "webhook-signature": SW_SIGNATURE,
              "Content-Type": "application/json"}
    check(port, n, "/hooks/vector", SW_BODY, vector, SW_BODY,
          dict(vector, **{"webhook-id": "msg_other",
                          "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA="}))
    # the same vector at the default 5-minute window: too old
    status, text, _ = send(port, "/hooks/standard", SW_BODY, dict(vector, **{"webhook-id": "msg_fresh"}))
    assert status == 401 and b"window" in text
    # the specification's example, re-signed now: ours among several signatures (a v1a one skipped)
    now = datetime.now(timezone.utc)
    ours = Webhook(SW_SECRET).sign(SW_SPEC_ID, now, SW_SPEC_BODY)
    spec = {"webhook-id": SW_SPEC_ID, "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": SW_SPEC_SIGS.replace(" ", f" {ours} ")}
    assert send(port, "/hooks/standard", SW_SPEC_BODY, spec)[0] == 200 and n() == 2
    # a retry: same webhook-id, new timestamp and signature: ignored
    later = datetime.fromtimestamp(now.timestamp() + 5, timezone.utc)
    retry = dict(spec, **{"webhook-timestamp": str(int(later.timestamp())),
                          "webhook-signature": Webhook(SW_SECRET).sign(SW_SPEC_ID, later, SW_SPEC_BODY)})
    assert send(port, "/hooks/standard", SW_SPEC_BODY, retry)[1] == b"replay ignored" and n() == 2
    # the specification's own signatures alone (its key is not ours): refused
    forged = dict(spec, **{"webhook-id": "msg_2", "webhook-signature": SW_SPEC_SIGS})
    assert send(port, "/hooks/standard", SW_SPEC_BODY, forged)[0] == 401 and n() == 2


def test_github_published_vector(served):
    port, n, _, _ = served
    assert "sha256=" + hmac.new(GITHUB_SECRET.encode(), GITHUB_BODY, hashlib.sha256).hexdigest() == GITHUB_SIGNATURE
    h = {"X-Hub-Signature-256": GITHUB_SIGNATURE, "X-GitHub-Delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958",
         "X-GitHub-Event": "push", "Content-Type": "application/json", "User-Agent": "GitHub-Hookshot/044aadd"}
    check(port, n, "/hooks/github", GITHUB_BODY, h, b"Hello, World?", dict(h, **{"X-GitHub-Delivery": "x"}))
    # a redelivery id on the same signed body is still the same delivery
    assert send(port, "/hooks/github", GITHUB_BODY, dict(h, **{"X-GitHub-Delivery": "new"}))[1] == b"replay ignored"
    assert n() == 1


# -- no input gives a 500 ------------------------------------------------------------------------------------
HEADER_NAMES = ["x-ingest-timestamp", "x-ingest-delivery", "x-ingest-signature", "box-delivery-timestamp",
                "box-signature-primary", "box-signature-version", "x-dropbox-signature", "x-goog-channel-token",
                "x-goog-resource-state", "webhook-id", "webhook-timestamp", "webhook-signature",
                "x-hub-signature-256", "x-github-delivery", "x-nextcloud-webhook-secret"]
latin1 = st.text(st.characters(max_codepoint=255, blacklist_categories=("Cs",)), max_size=40)
header_value = st.one_of(latin1, st.sampled_from(["²", "1e9", "-1", "nan", "9" * 40, "v1,", "sha256=", ""]),
                         st.integers(0, 2 ** 40).map(str))
bodies = st.one_of(st.binary(max_size=200), st.sampled_from([
    b'{"value":["str"]}', b'{"value":[1]}', b'{"value":{}}', b'{"value":[{"clientState":7}]}', b"[" * 5000,
    b'{"value":[{"clientState":"%s","lifecycleEvent":"reauthorizationRequired"}]}' % GRAPH_SECRET.encode()]))


@pytest.fixture(scope="module")
def wsgi_hooks():
    from ingest.sources.webhooks import app

    cfg = {"webhooks": {"graph": {"scheme": "graph", "source": "src", "secret": GRAPH_SECRET},
                        "drive": {"scheme": "drive", "source": "src", "secret": DRIVE_TOKEN},
                        "box": {"scheme": "box", "source": "src", "secret": BOX_PRIMARY},
                        "dropbox": {"scheme": "dropbox", "source": "src", "secret": DROPBOX_SECRET},
                        "hmac": {"scheme": "hmac", "source": "src", "secret": "k"},
                        "nextcloud": {"scheme": "nextcloud", "source": "src", "secret": NEXTCLOUD_SECRET,
                                      "header": "X-Nextcloud-Webhook-Secret"},
                        "standard": {"scheme": "standard", "source": "src", "secret": SW_SECRET},
                        "github": {"scheme": "github", "source": "src", "secret": GITHUB_SECRET}}}
    enqueued = []
    return app(None, cfg, enqueue=enqueued.append), enqueued


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(["graph", "drive", "box", "dropbox", "hmac", "nextcloud", "standard", "github"]),
       method=st.sampled_from(["POST", "GET", "PUT"]), headers=st.dictionaries(st.sampled_from(HEADER_NAMES),
                                                                               header_value, max_size=6),
       query=st.sampled_from(["", "validationToken=", "challenge=x", "a=%ZZ&&=", "validationToken=%FF"]),
       body=bodies, length=st.sampled_from([None, "abc", "-1", "²", "99999999999"]))
def test_no_request_gets_a_500(wsgi_hooks, name, method, headers, query, body, length):
    import io

    hooks, enqueued = wsgi_hooks
    environ = {"REQUEST_METHOD": method, "PATH_INFO": f"/{name}", "QUERY_STRING": query,
               "CONTENT_LENGTH": str(len(body)) if length is None else length, "wsgi.input": io.BytesIO(body)}
    environ.update({"HTTP_" + k.upper().replace("-", "_"): v for k, v in headers.items()})
    got = []
    out = b"".join(hooks(environ, lambda status, hdrs: got.append(status)))
    assert got and not got[0].startswith("5"), (got, out)
    assert got[0].split()[0] in ("200", "202", "400", "401", "404", "413"), got


def test_the_reported_500s_are_clean_400s(wsgi_hooks):
    """The two inputs of defect 14: an hmac timestamp "²" (isdigit, then int()) and Graph {"value":["str"]}."""
    import io

    hooks, _ = wsgi_hooks

    def call(name, body, **hdrs):
        got = []
        env = {"REQUEST_METHOD": "POST", "PATH_INFO": f"/{name}", "CONTENT_LENGTH": str(len(body)),
               "wsgi.input": io.BytesIO(body), **{"HTTP_" + k: v for k, v in hdrs.items()}}
        out = b"".join(hooks(env, lambda s, h: got.append(s)))
        return got[0], out

    status, out = call("hmac", b"{}", X_INGEST_TIMESTAMP="²", X_INGEST_DELIVERY="d", X_INGEST_SIGNATURE="sha256=0")
    assert status == "400 Bad Request" and b"unix seconds" in out
    status, out = call("graph", b'{"value":["str"]}')
    assert status == "400 Bad Request" and b"notification collection" in out
