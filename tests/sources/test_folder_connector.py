"""The folder connector (``ingest poll`` on a folder) reads through one descriptor opened without
following links, as the watcher does: a symlink or FIFO is never fetched, and a file swapped
between the hash and the read is refused."""
from __future__ import annotations

import os

import pytest

from ingest.sources.folder_connector import FolderConnector
from ingest.sources.safefs import NotRegular


def _conn(root) -> FolderConnector:
    return FolderConnector("f", {"path": str(root)})


def test_fetch_reads_a_regular_file_and_its_acl(tmp_path):
    (tmp_path / "a.txt").write_text("alpha")
    os.chmod(tmp_path / "a.txt", 0o600)
    doc = _conn(tmp_path).fetch("a.txt")
    assert doc is not None and doc.size == 5
    with doc.opener() as f:
        assert f.read() == b"alpha"
    assert "everyone" not in doc.acl.allow  # 0600: only the owner


def test_fetch_never_follows_a_symlink_or_opens_a_fifo(tmp_path):
    secret = tmp_path.parent / f"{tmp_path.name}-secret.txt"
    secret.write_text("victim's diary")
    root = tmp_path / "root"
    root.mkdir()
    os.symlink(secret, root / "link.txt")
    os.mkfifo(root / "pipe.txt")
    c = _conn(root)
    assert c.fetch("link.txt") is None
    assert c.fetch("pipe.txt") is None  # returns at once: the FIFO is not opened for a blocking read


def test_a_file_swapped_after_the_hash_is_refused(tmp_path):
    (tmp_path / "a.txt").write_text("first")
    doc = _conn(tmp_path).fetch("a.txt")
    (tmp_path / "b.txt").write_text("other")
    os.replace(tmp_path / "b.txt", tmp_path / "a.txt")  # another inode under the same name
    with pytest.raises(NotRegular, match="changed"):
        doc.opener()
