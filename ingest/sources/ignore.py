"""Which paths under a watched folder are never documents.

Editors, office suites, browsers and operating systems litter folders with
temporary, lock and metadata files.  Indexing them would waste work, leak
half-written content and, worse, produce churn: a save in Word creates and
deletes several of these files.  Both the folder watcher and the reconcile
scan (``folder.walk``) consult :func:`is_ignored`, so the two always agree.

All rules live in :data:`RULES` below; nothing else in the code base should
hard-code a pattern.  Matching is case-insensitive (SMB shares and Windows
clients write ``Thumbs.db``, ``THUMBS.DB``, ``~WRL0001.TMP`` ...).

Two scopes:

``dir``
    A directory name.  It hides everything below it, so it is tested against
    *every* component of a path (``a/.git/objects/x`` is ignored, and so is
    ``a/.git`` itself).
``name``
    A file name pattern (shell glob).  Tested against the *last* component
    only: a directory that happens to be called ``old~`` or ``x.tmp`` is not a
    temp file, and its contents are still indexed.
"""
from __future__ import annotations

import fnmatch
import re
from typing import NamedTuple


class Rule(NamedTuple):
    pattern: str  # shell glob (fnmatch syntax), matched case-insensitively
    scope: str  # "dir" (any path component) or "name" (last component only)
    why: str


RULES: tuple[Rule, ...] = (
    # --- directories whose whole subtree is never content ---------------------
    Rule(".git", "dir", "git repository metadata"),
    Rule(".svn", "dir", "subversion metadata"),
    Rule("__pycache__", "dir", "python bytecode cache"),
    Rule(".ingest", "dir", "this pipeline's own state folder"),
    # --- office suites ----------------------------------------------------------
    Rule("~$*", "name", "MS Office owner/lock file (~$report.docx)"),
    Rule(".~lock.*#", "name", "LibreOffice lock file (.~lock.report.odt#)"),
    # --- generic temp files (MS Office ~WRL0001.tmp, atomic-save x.docx.tmp) ---
    Rule("*.tmp", "name", "temporary file"),
    Rule("*.temp", "name", "temporary file"),
    # --- text editors -------------------------------------------------------------
    Rule("*.swp", "name", "vim swap file"),
    Rule("*.swo", "name", "vim swap file"),
    Rule("*.swx", "name", "vim swap file"),
    Rule("4913", "name", "vim probe file written to test directory writability"),
    Rule("*~", "name", "backup file (vim, emacs, gedit, ...)"),
    Rule(".#*", "name", "emacs lock symlink"),
    Rule("#*#", "name", "emacs auto-save file"),
    # --- operating system metadata ------------------------------------------------
    Rule(".DS_Store", "name", "macOS Finder metadata"),
    Rule("Thumbs.db", "name", "Windows thumbnail cache"),
    Rule("desktop.ini", "name", "Windows folder settings"),
    # --- partial downloads -----------------------------------------------------------
    Rule("*.part", "name", "partial download (Firefox, wget, ...)"),
    Rule("*.crdownload", "name", "partial download (Chrome)"),
)


def _compile(scope: str) -> re.Pattern[str]:
    parts = [fnmatch.translate(r.pattern.lower()) for r in RULES if r.scope == scope]
    return re.compile("|".join(f"(?:{p})" for p in parts) or r"(?!)")


_DIR_RE = _compile("dir")
_NAME_RE = _compile("name")


def _components(rel_path: str) -> list[str]:
    return [c for c in rel_path.split("/") if c and c != "."]


def is_ignored(rel_path: str, *, is_dir: bool = False) -> bool:
    """True if ``rel_path`` (relative to the watched root, POSIX separators)
    must not be indexed or produce events.

    For a file path (the default) both scopes apply: any component that is an
    ignored directory, or a last component matching a file-name rule.  With
    ``is_dir=True`` the path names a directory and only ``dir`` rules apply,
    so a directory named ``x.tmp`` is still watched and scanned.
    """
    parts = [c.lower() for c in _components(rel_path)]
    if not parts:
        return False  # the root itself
    if any(_DIR_RE.match(c) for c in parts):
        return True
    return not is_dir and _NAME_RE.match(parts[-1]) is not None


def is_ignored_dir_name(name: str) -> bool:
    """True if a directory with this (single) name hides its whole subtree."""
    return _DIR_RE.match(name.lower()) is not None
