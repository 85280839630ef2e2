"""S3-compatible object stores (AWS S3, MinIO, Ceph RGW...).

S3 has no change feed to poll, so a pass lists the bucket (metadata only: ``ListObjectsV2`` with
ETags, or ``ListObjectVersions`` when the bucket is versioned, where the version id is the content
version and a delete marker on top is a delete) and compares with the snapshot kept in the cursor.
Only new or changed objects are downloaded. Object keys are the ids: S3 has no move, so a rename
(copy + delete) is a delete and an add (the embedding cache keeps it from re-embedding).

ACL, ``acl_mode``:
  * ``"grants"`` (default): the object's ACL grants with READ or FULL_CONTROL: canonical user ->
    ``user:<source>:<id>``, e-mail grantee -> ``user:<source>:<email>``, the AllUsers group ->
    ``everyone``, AuthenticatedUsers -> ``group:<source>:authenticated-users``. Grants do not change
    the ETag, so each pass also reads the object ACLs (one GetObjectAcl per object) to find
    permission-only changes; set ``acl_poll = false`` to skip that on huge buckets.
  * ``"mapping"``: ``[sources.<name>.acl_map]`` prefix -> tokens, the longest prefix wins.

Config::

    [sources.docs]
    type = "s3"
    bucket = "docs"
    prefix = ""                    # optional
    endpoint_url = "http://minio:9000"
    region = "us-east-1"
    access_key = "env:S3_KEY"
    secret_key = "env:S3_SECRET"
"""
from __future__ import annotations

import json
import posixpath

from acl.model import ACL, EVERYONE, group_token, user_token

from ingest.sources.base import ChangeEvent
from ingest.sources.connector import (ACL_CHANGE, DELETE, UPSERT, ConnectorError, CursorExpired, ListingError,
                                      RawDocument, configured_acl, credential, required, sidecar_labels)

ALL_USERS = "http://acs.amazonaws.com/groups/global/AllUsers"
AUTH_USERS = "http://acs.amazonaws.com/groups/global/AuthenticatedUsers"
READS = {"READ", "FULL_CONTROL"}


class S3Connector:
    def __init__(self, name: str, cfg: dict):
        self.name, self.cfg = name, cfg
        self.bucket = required(cfg, "bucket", name, "s3")
        self.source = f"s3:{name}"
        self.prefix = cfg.get("prefix", "")
        self.acl_mode = cfg.get("acl_mode", "grants")
        if self.acl_mode not in ("grants", "mapping"):
            raise ValueError(f"source {name}: acl_mode must be grants or mapping, not {self.acl_mode!r}")
        self.acl_map = cfg.get("acl_map") or {}
        self.acl_poll = bool(cfg.get("acl_poll", True)) and self.acl_mode == "grants"
        self._client = None
        self._items: dict[str, dict] = {}

    @property
    def client(self):
        if self._client is None:
            import boto3
            from botocore.config import Config

            self._client = boto3.client(
                "s3", endpoint_url=self.cfg.get("endpoint_url"), region_name=self.cfg.get("region", "us-east-1"),
                aws_access_key_id=credential(self.cfg, "access_key", self.name),
                aws_secret_access_key=credential(self.cfg, "secret_key", self.name),
                config=Config(retries={"max_attempts": 3, "mode": "standard"}))
        return self._client

    def _call(self, what: str, fn, **kw):
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(**kw)
        except ClientError as e:
            code = e.response.get("Error", {}).get("Code", "?")
            raise ConnectorError(f"source {self.name}: {what} on bucket {self.bucket}: {code}") from None
        except BotoCoreError as e:
            raise ConnectorError(f"source {self.name}: {what} on bucket {self.bucket}: {e}") from None

    # -- listing ---------------------------------------------------------------------------
    def _versioned(self) -> bool:
        v = self._call("GetBucketVersioning", self.client.get_bucket_versioning, Bucket=self.bucket)
        return v.get("Status") == "Enabled"

    def _list(self) -> dict[str, dict]:
        """key -> {version, size, mtime_ns}: the live objects (a complete listing or an exception)."""
        items: dict[str, dict] = {}
        if self._versioned():
            pages = self.client.get_paginator("list_object_versions").paginate(Bucket=self.bucket,
                                                                                Prefix=self.prefix)
            for page in self._pages(pages, "ListObjectVersions"):
                for v in page.get("Versions", []):
                    if v.get("IsLatest") and not v["Key"].endswith("/"):
                        items[v["Key"]] = {"version": v["VersionId"], "etag": v["ETag"].strip('"'),
                                           "size": v["Size"], "mtime_ns": _ns(v["LastModified"])}
            return items  # a key whose latest version is a delete marker is not live
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix)
        for page in self._pages(pages, "ListObjectsV2"):
            for o in page.get("Contents", []):
                if not o["Key"].endswith("/"):
                    items[o["Key"]] = {"version": o["ETag"].strip('"'), "etag": o["ETag"].strip('"'),
                                       "size": o["Size"], "mtime_ns": _ns(o["LastModified"])}
        return items

    def _pages(self, pages, what):
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            yield from pages
        except (ClientError, BotoCoreError) as e:
            raise ConnectorError(f"source {self.name}: {what} on bucket {self.bucket}: {e}") from None

    # -- ACL -----------------------------------------------------------------------------------
    def _acl(self, key: str) -> ACL:
        if self.acl_mode == "mapping":
            best = max((p for p in self.acl_map if key.startswith(p)), key=len, default=None)
            return configured_acl(self.acl_map[best] if best is not None else None, self.name)
        g = self._call("GetObjectAcl", self.client.get_object_acl, Bucket=self.bucket, Key=key)
        allow = set()
        for grant in g.get("Grants", []):
            if grant.get("Permission") not in READS:
                continue
            ge = grant.get("Grantee", {})
            if ge.get("Type") == "CanonicalUser":
                allow.add(user_token(ge["ID"], self.name))
            elif ge.get("Type") == "AmazonCustomerByEmail":
                allow.add(user_token(ge["EmailAddress"], self.name))
            elif ge.get("URI") == ALL_USERS:
                allow.add(EVERYONE)
            elif ge.get("URI") == AUTH_USERS:
                allow.add(group_token("authenticated-users", self.name))
        return ACL(frozenset(allow))

    # -- the contract --------------------------------------------------------------------------
    def changes(self, cursor: str | None) -> tuple[list[ChangeEvent], str]:
        try:
            old = json.loads(cursor) if cursor else {}
            old = {k: (v[0], v[1]) for k, v in old.items()}
        except (ValueError, TypeError, IndexError, AttributeError):
            raise CursorExpired(f"source {self.name}: unreadable cursor") from None
        items = self._list()
        self._items = items
        events, snap = [], {}
        for key, it in items.items():
            aclv = self._acl(key).version if self.acl_poll else None
            snap[key] = (it["version"], aclv)
            was = old.get(key)
            if was is None or was[0] != it["version"]:
                events.append(ChangeEvent(UPSERT, self.source, key, path=key, version=it["version"]))
            elif was[1] != aclv:
                events.append(ChangeEvent(ACL_CHANGE, self.source, key, path=key))
        events += [ChangeEvent(DELETE, self.source, key, path=key) for key in old if key not in items]
        return events, json.dumps(snap, sort_keys=True)

    def list_ids(self) -> set[str]:
        try:
            return set(self._list())
        except ConnectorError as e:
            raise ListingError(f"{e}; nothing pruned") from None

    def fetch(self, ref: str) -> RawDocument | None:
        from botocore.exceptions import ClientError

        try:
            head = self.client.head_object(Bucket=self.bucket, Key=ref)
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None  # gone, or its latest version is a delete marker
            raise ConnectorError(f"source {self.name}: HeadObject {ref}: {e.response.get('Error', {}).get('Code')}") \
                from None
        version = head.get("VersionId") if head.get("VersionId") not in (None, "null") else head["ETag"].strip('"')
        kw = {"VersionId": head["VersionId"]} if head.get("VersionId") not in (None, "null") else {}
        endpoint = (self.cfg.get("endpoint_url") or "https://s3.amazonaws.com").rstrip("/")
        labels, label_error = sidecar_labels(self._read_sidecar, ref)
        return RawDocument(id=ref, name=posixpath.basename(ref), uri=f"{endpoint}/{self.bucket}/{ref}",
                           version=version, acl=self._acl(ref), size=head.get("ContentLength"),
                           labels=labels, label_error=label_error,
                           mtime_ns=_ns(head["LastModified"]), metadata={"etag": head["ETag"].strip('"')},
                           opener=lambda: self._call("GetObject", self.client.get_object, Bucket=self.bucket,
                                                     Key=ref, **kw)["Body"])

    def acl(self, ref: str) -> ACL:
        return self._acl(ref)

    def ref_at(self, path: str) -> str | None:
        """The id of the item at ``path`` (a key is its own id)."""
        return path

    def _read_sidecar(self, key: str, limit: int) -> bytes | None:
        from botocore.exceptions import ClientError

        if self._items and key not in self._items:  # the listing says there is none
            return None
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=key, Range=f"bytes=0-{limit}")["Body"]
        except ClientError as e:
            code = e.response.get("Error", {}).get("Code")
            if code in ("404", "NoSuchKey", "NotFound"):
                return None
            raise ConnectorError(f"source {self.name}: GetObject {key}: {code}") from None
        with body:
            return body.read(limit + 1)


def _ns(dt) -> int:
    return int(dt.timestamp() * 1e9)
