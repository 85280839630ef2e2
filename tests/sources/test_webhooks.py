"""Webhook receivers served by the real `ingest serve` server (cheroot), enqueueing into a real Celery
broker (the embedded SQLite one); each scheme: signed request accepted and exactly one poll enqueued,
tampered body / wrong secret / stale timestamp -> 401 and nothing enqueued, replay -> nothing enqueued.
Then a webhook-triggered poll carries WebDAV (notified by Nextcloud's webhook_listeners) and S3 (generic
hmac) changes into search."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone

import pytest

from tests.support.dms_servers import free_port
from tests.support.queue_helpers import queued
SECRET, SECRET2 = "s3cr3t-primary", "s3cr3t-secondary"


@pytest.fixture
def hooks(world_dir, monkeypatch):
    """`ingest serve` with one receiver per scheme, a SQLite broker; yields (base url, queued(), drain())."""
    from ingest.serve.app import make_server

    store = str(world_dir / "index.db")
    broker = f"sqla+sqlite:///{world_dir}/broker.sqlite"
    monkeypatch.setenv("INGEST_BROKER", broker)
    monkeypatch.setenv("HOOK_SECRET", SECRET)
    cfg = {"webhooks": {
        "g": {"scheme": "graph", "source": "src", "secret": "env:HOOK_SECRET"},
        "d": {"scheme": "drive", "source": "src", "secret": "env:HOOK_SECRET"},
        "b": {"scheme": "box", "source": "src", "secret": "env:HOOK_SECRET", "secondary_secret": SECRET2},
        "x": {"scheme": "dropbox", "source": "src", "secret": "env:HOOK_SECRET"},
        "h": {"scheme": "hmac", "source": "src", "secret": "env:HOOK_SECRET", "window": 300},
    }}
    port = free_port()
    server = make_server(store, cfg, "127.0.0.1", port)
    server.prepare()
    t = threading.Thread(target=server.serve, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{port}/hooks", lambda: queued(broker), store
    server.stop()


def post(url, body: bytes, headers: dict, method="POST"):
    req = urllib.request.Request(url, data=body if method == "POST" else None, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read(), dict(e.headers)


# -- documented example payloads and their signing ------------------------------------------------------
GRAPH_BODY = {"value": [{"subscriptionId": "7f105c7d-2dc5-4530-97cd-4e7ae6534c07", "clientState": SECRET,
                         "changeType": "updated", "resource": "drives/b!abc/root",
                         "subscriptionExpirationDateTime": "2026-12-01T11:00:00.0000000Z",
                         "tenantId": "bb8775a4-4d8c-42cf-a1d4-4d58c2bb668f"}]}
BOX_BODY = {"type": "webhook_event", "id": "eb0c4e06-751f-442c-86f8-fd5bb404dbec",
            "created_at": "2026-11-27T12:00:00-08:00", "trigger": "FILE.UPLOADED",
            "webhook": {"id": "53", "type": "webhook"}, "source": {"id": "73835521473", "type": "file"}}
DROPBOX_BODY = {"list_folder": {"accounts": ["dbid:AAH4f99T0taONIb-OurWxbNQ6ywGRopQngc"]},
                "delta": {"users": [12345678]}}
GENERIC_BODY = {"EventName": "s3:ObjectCreated:Put", "Key": "docs/plan.txt"}


def sign(scheme, body: bytes, *, key=SECRET, when=None, delivery="d-1"):
    """Headers a sender following the vendor's documentation would send."""
    if scheme == "graph":
        return {"Content-Type": "application/json"}
    if scheme == "drive":
        return {"X-Goog-Channel-ID": "chan-1", "X-Goog-Channel-Token": key, "X-Goog-Resource-State": "change",
                "X-Goog-Resource-ID": "res-1", "X-Goog-Message-Number": delivery,
                "X-Goog-Channel-Expiration": "Tue, 01 Dec 2026 11:00:00 GMT"}
    if scheme == "box":
        ts = (when or datetime.now(timezone.utc)).isoformat(timespec="seconds")
        sig = base64.b64encode(hmac.new(key.encode(), body + ts.encode(), hashlib.sha256).digest()).decode()
        return {"BOX-DELIVERY-ID": delivery, "BOX-DELIVERY-TIMESTAMP": ts, "BOX-SIGNATURE-PRIMARY": sig,
                "BOX-SIGNATURE-VERSION": "1", "BOX-SIGNATURE-ALGORITHM": "HmacSHA256",
                "Content-Type": "application/json"}
    if scheme == "dropbox":
        return {"X-Dropbox-Signature": hmac.new(key.encode(), body, hashlib.sha256).hexdigest(),
                "Content-Type": "application/json"}
    ts = str(int((when or datetime.now(timezone.utc)).timestamp()))
    sig = hmac.new(key.encode(), f"{ts}.{delivery}.".encode() + body, hashlib.sha256).hexdigest()
    return {"X-Ingest-Timestamp": ts, "X-Ingest-Delivery": delivery, "X-Ingest-Signature": "sha256=" + sig}


CASES = [("g", "graph", GRAPH_BODY), ("d", "drive", None), ("b", "box", BOX_BODY), ("x", "dropbox", DROPBOX_BODY),
         ("h", "hmac", GENERIC_BODY)]


def body_for(scheme, payload, key=SECRET):
    if scheme == "graph":  # Graph signs nothing: the secret is the clientState inside the body
        payload = {"value": [dict(payload["value"][0], clientState=key)]}
    return b"" if payload is None else json.dumps(payload).encode()


@pytest.mark.parametrize("name,scheme,payload", CASES, ids=[c[1] for c in CASES])
def test_signed_request_enqueues_exactly_one_poll_and_forgeries_none(hooks, name, scheme, payload):
    base, q, store = hooks
    url = f"{base}/{name}"
    body = body_for(scheme, payload)
    first = sign(scheme, body, delivery="7")
    status, _, _ = post(url, body, first)
    assert status in (200, 202)
    assert q() == [("ingest.poll", [store, "src"])]

    # the same request again (same delivery id / message number / body): acknowledged, nothing enqueued
    status, text, _ = post(url, body, first)
    assert status == 200 and text == b"replay ignored" and len(q()) == 1
    if scheme == "box":  # BOX-DELIVERY-ID is not signed: a replay under a new id is still a replay (defect 13)
        status, text, _ = post(url, body, dict(first, **{"BOX-DELIVERY-ID": "another-id"}))
        assert status == 200 and text == b"replay ignored" and len(q()) == 1

    # wrong secret
    wrong_body = body_for(scheme, payload, key="not-the-secret")
    status, _, _ = post(url, wrong_body, sign(scheme, wrong_body, key="not-the-secret", delivery="8"))
    assert status == 401 and len(q()) == 1

    # one body byte changed after signing (Drive signs no body: it has none to change)
    if body:
        hdrs = sign(scheme, body, delivery="9")
        i = body.index(b"clientState") + 15 if scheme == "graph" else len(body) // 2
        tampered = body[:i] + bytes([body[i] ^ 1]) + body[i + 1:]
        status, _, _ = post(url, tampered, hdrs)
        assert status == 401 and len(q()) == 1

    # a timestamp outside the window (schemes that sign one)
    if scheme in ("box", "hmac"):
        old = datetime.now(timezone.utc) - timedelta(minutes=30)
        status, msg, _ = post(url, body, sign(scheme, body, when=old, delivery="10"))
        assert status == 401 and b"window" in msg and len(q()) == 1
        future = datetime.now(timezone.utc) + timedelta(minutes=30)
        assert post(url, body, sign(scheme, body, when=future, delivery="11"))[0] == 401

    # a new delivery, correctly signed: one more
    body2 = body if scheme not in ("dropbox", "box") else body.replace(b"12345678", b"12345679")
    if scheme == "box":  # the same body and timestamp under another BOX-DELIVERY-ID is a replay (defect 13)
        body2 = body.replace(b"FILE.UPLOADED", b"FILE.PREVIEWED")
    if scheme == "graph":
        body2 = body.replace(b"updated", b"created")
    assert post(url, body2, sign(scheme, body2, delivery="12"))[0] in (200, 202)
    assert len(q()) == 2


def test_handshakes_enqueue_nothing(hooks):
    base, q, _ = hooks
    status, text, hdrs = post(f"{base}/g?validationToken=Validation%3A+Testing+client+application", b"",
                              {"Content-Type": "text/plain"})
    assert status == 200 and text == b"Validation: Testing client application"
    assert hdrs["Content-Type"].startswith("text/plain")
    status, text, hdrs = post(f"{base}/x?challenge=abc123", b"", {}, method="GET")
    assert status == 200 and text == b"abc123" and hdrs["X-Content-Type-Options"] == "nosniff"
    h = sign("drive", b"")
    h["X-Goog-Resource-State"] = "sync"
    assert post(f"{base}/d", b"", h)[0] == 200
    assert q() == []
    # Box secondary key (rotation) is accepted; a missing timestamp is not
    body = json.dumps(BOX_BODY).encode()
    h = sign("box", body, key=SECRET2, delivery="sec-1")
    h["BOX-SIGNATURE-SECONDARY"] = h.pop("BOX-SIGNATURE-PRIMARY")
    assert post(f"{base}/b", body, h)[0] == 200 and len(q()) == 1
    h = sign("box", body, delivery="sec-2")
    del h["BOX-DELIVERY-TIMESTAMP"]
    assert post(f"{base}/b", body, h)[0] == 401
    assert post(f"{base}/nope", b"{}", {})[0] == 404
    assert post(f"{base}/g", b"not json", {})[0] == 400
    assert len(q()) == 1


def test_receiver_config_errors_are_specific():
    from ingest.sources.webhooks import app

    with pytest.raises(ValueError, match="scheme must be one of"):
        app(None, {"webhooks": {"w": {"scheme": "sms", "source": "s", "secret": "x"}}})
    with pytest.raises(ValueError, match="source"):
        app(None, {"webhooks": {"w": {"scheme": "hmac", "secret": "x"}}})
    with pytest.raises(ValueError, match="secret is required"):
        app(None, {"webhooks": {"w": {"scheme": "hmac", "source": "s"}}})


# -- webhook-triggered polls through the real task ----------------------------------------------------
def run_queued(broker_url):
    """Consume the interactive lane and run each task's code (what a worker does with it)."""
    from workers.app import configure
    from workers.tasks import poll

    app = configure(broker_url)
    results = []
    with app.connection_for_read() as conn:
        ch = conn.default_channel
        while (msg := ch.basic_get("interactive")) is not None:
            args, kwargs, _ = msg.decode()
            assert msg.headers["task"] == "ingest.poll"
            results.append(poll.apply(args=args, kwargs=kwargs, throw=True).get())
            msg.ack()
    return results


def test_webhook_triggered_poll_webdav_and_s3(world_dir, monkeypatch, embedder):

    from tests.support.dms_servers import NextcloudLike
    from moto.server import ThreadedMotoServer
    import boto3

    from acl.model import Principal
    from ingest.search.index import Index
    from ingest.serve.app import make_server
    from ingest.stores import open_store

    root = world_dir / "nc"
    root.mkdir()
    dav = NextcloudLike(root).start()
    s3port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=s3port, verbose=False)
    moto.start()
    s3url = f"http://127.0.0.1:{s3port}"
    s3 = boto3.client("s3", endpoint_url=s3url, region_name="us-east-1", aws_access_key_id="k",
                      aws_secret_access_key="s")
    s3.create_bucket(Bucket="hooked")
    store = str(world_dir / "index.db")
    broker = f"sqla+sqlite:///{world_dir}/broker.sqlite"
    cfg_file = world_dir / "config.toml"
    cfg_file.write_text(f"""
[sources.nc]
type = "webdav"
url = "{dav.dav_url()}"
ocs_url = "{dav.url + dav.OCS}"
user = "crawler"
password = "env:NC_PW"
[sources.bk]
type = "s3"
bucket = "hooked"
endpoint_url = "{s3url}"
access_key = "k"
secret_key = "s"
[webhooks.nc]
scheme = "nextcloud"
source = "nc"
secret = "env:HOOK_SECRET"
header = "X-Nextcloud-Webhook-Secret"
[webhooks.bk]
scheme = "hmac"
source = "bk"
secret = "env:HOOK_SECRET"
""")
    for k, v in {"INGEST_BROKER": broker, "HOOK_SECRET": SECRET, "NC_PW": "crawlpw",
                 "INGEST_CONFIG": str(cfg_file)}.items():
        monkeypatch.setenv(k, v)
    from ingest import config

    port = free_port()
    server = make_server(store, config.load(), "127.0.0.1", port)
    server.prepare()
    threading.Thread(target=server.serve, daemon=True).start()
    n = [0]

    def notify(name):
        n[0] += 1
        if name == "nc":  # Nextcloud's webhook_listeners: a header secret, its NodeWrittenEvent body
            body = json.dumps({"event": {"class": "OCP\\Files\\Events\\Node\\NodeWrittenEvent",
                                         "node": {"id": n[0], "path": "/crawler/files/r.txt"}},
                               "user": {"uid": "crawler", "displayName": "Crawler"}, "time": n[0]}).encode()
            hdrs = {"X-Nextcloud-Webhook-Secret": SECRET}
        else:
            body = json.dumps({"EventName": "changed"}).encode()
            hdrs = sign("hmac", body, delivery=str(n[0]))
        assert post(f"http://127.0.0.1:{port}/hooks/{name}", body, hdrs)[0] == 200

    def seen(query, user, ns, *groups):
        idx = Index(open_store(store))
        return {h.uri for h in idx.search(query, principal=Principal(user, groups, namespace=ns), k=10,
                                          mode="bm25", audit=False)}

    try:
        (root / "r.txt").write_text("hooked wombat report")
        dav.share("r.txt", 0, "bob")
        s3.put_object(Bucket="hooked", Key="k.txt", Body=b"hooked platypus memo", ACL="public-read")
        notify("nc")
        notify("bk")
        res = run_queued(broker)
        assert [r["outcomes"] for r in res] == [{"indexed": 1}, {"indexed": 1}]
        assert seen("wombat", "bob", "nc") == {dav.dav_url() + "/r.txt"}
        assert seen("platypus", "anyone", "bk") == {s3url + "/hooked/k.txt"}
        # edit + permission loss on WebDAV, delete on S3: each reaches search after one notification
        (root / "r.txt").write_text("hooked wombat report, second edition with quetzal")
        t = time.time_ns()
        os.utime(root / "r.txt", ns=(t, t))
        dav.unshare("r.txt", "bob")
        dav.share("r.txt", 0, "carol")
        s3.delete_object(Bucket="hooked", Key="k.txt")
        notify("nc")
        notify("bk")
        res = run_queued(broker)
        assert [r["outcomes"] for r in res] == [{"indexed": 1}, {"deleted": 1}]
        assert seen("quetzal", "bob", "nc") == set() and len(seen("quetzal", "carol", "nc")) == 1
        assert seen("platypus", "anyone", "bk") == set()
        # a move (metadata only) on WebDAV
        (root / "sub").mkdir()
        os.rename(root / "r.txt", root / "sub" / "r.txt")
        notify("nc")
        assert [r["outcomes"] for r in run_queued(broker)] == [{"moved": 1}]
        assert seen("quetzal", "alice", "nc") == {dav.dav_url() + "/sub/r.txt"}
        assert run_queued(broker) == []  # nothing else was enqueued
    finally:
        server.stop()
        moto.stop()
        dav.stop()
