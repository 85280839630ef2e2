"""``ingest access DOC --as USER``: may this principal read this document, and why.

The decision is the one search makes (:meth:`acl.model.ACL.permits`: some allow token
matches and no deny token does; deny wins; an unknown ACL is visible to no one),
explained with the deciding tokens and, for local files, a fresh look at the file
system (``stale`` when the indexed ACL no longer matches the file's permissions).
"""
from __future__ import annotations

import grp
import pwd
from urllib.parse import unquote, urlparse

from acl.directory import Directory
from acl.model import ACL
from acl.posix import acl_for_path

from ingest.config import load, section
from ingest.stores.common import find_doc


def default_directory(store, cfg: dict | None = None) -> Directory:
    """The directory the ``[directory]`` config table describes (default: OS users, then synced groups)."""
    return Directory.from_config(section(load() if cfg is None else cfg, "directory"), store)


def token_name(token: str) -> str | None:
    """``group:posix:1001`` -> ``ingt_team`` (for people reading an explanation)."""
    kind, _, rest = token.partition(":")
    ns, _, ident = rest.partition(":")
    if ns != "posix" or not ident.isdigit():
        return None
    try:
        return pwd.getpwuid(int(ident)).pw_name if kind == "user" else grp.getgrgid(int(ident)).gr_name
    except KeyError:
        return None


def decide(acl: ACL, tokens: frozenset[str]) -> dict:
    allowed_by, denied_by = sorted(acl.allow & tokens), sorted(acl.deny & tokens)
    allowed = acl.permits(tokens)
    if not acl.known:
        reason = f"ACL unknown ({acl.reason}): visible to no one"
    elif denied_by:
        reason = "denied by " + ", ".join(denied_by) + (" (deny wins over " + ", ".join(allowed_by) + ")"
                                                        if allowed_by else "")
    elif allowed_by:
        reason = "allowed by " + ", ".join(allowed_by)
    else:
        reason = "no allow token matches the principal"
    return {"decision": "allow" if allowed else "deny", "allowed_by": allowed_by, "denied_by": denied_by,
            "reason": reason}


def explain(store, ref: str, principal, directory: Directory | None = None) -> dict:
    directory = directory or default_directory(store)
    row = find_doc(store, ref)
    origin = directory.explain(principal)
    tokens = frozenset(origin)
    acl = ACL.from_json(row["acl"])
    out = {"doc_id": row["doc_id"], "uri": row["uri"], "status": row["status"], "principal": str(principal),
           **decide(acl, tokens),
           "acl": {"allow": sorted(acl.allow), "deny": sorted(acl.deny), "known": acl.known},
           "principal_tokens": {t: origin[t] for t in sorted(origin)},
           "names": {t: n for t in sorted(tokens | acl.allow | acl.deny) if (n := token_name(t))}}
    if row["status"] != "indexed":
        out["note"] = f"not searchable: the document is {row['status']}"
    u = urlparse(row["uri"])
    if u.scheme == "file" and not row.get("parent_id"):
        now = acl_for_path(unquote(u.path))
        if now.version != row["acl_version"]:
            out["stale"] = {"current_acl": {"allow": sorted(now.allow), "deny": sorted(now.deny), "known": now.known},
                            **{f"current_{k}": v for k, v in decide(now, tokens).items()}}
    return out


def render(r: dict) -> str:
    name = lambda t: f"{t} ({r['names'][t]})" if t in r["names"] else t  # noqa: E731
    lines = [f"{r['decision'].upper()}  {r['principal']} -> {r['uri']}  [{r['doc_id']}]",
             "  " + r["reason"].replace(", ".join(r["denied_by"]), ", ".join(map(name, r["denied_by"])), 1)]
    if r["allowed_by"] and r["denied_by"]:
        lines.append("  matching allow tokens: " + ", ".join(map(name, r["allowed_by"])))
    lines.append("  ACL allow: " + (", ".join(map(name, r["acl"]["allow"])) or "(nobody)"))
    if r["acl"]["deny"]:
        lines.append("  ACL deny:  " + ", ".join(map(name, r["acl"]["deny"])))
    lines.append("  principal: " + ", ".join(f"{name(t)} [{'/'.join(src)}]"
                                             for t, src in r["principal_tokens"].items()))
    if "note" in r:
        lines.append("  " + r["note"])
    if "stale" in r:
        lines.append(f"  stale: the file's permissions changed since indexing; re-scan pending"
                     f" (now: {r['stale']['current_decision']}, {r['stale']['current_reason']})")
    return "\n".join(lines)
