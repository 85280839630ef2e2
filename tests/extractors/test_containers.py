"""Containers whose members become child documents: archives and mail.

Calls ``extractors.archive.extract`` / ``extractors.email_family.extract`` directly
(not through the router). Hostile inputs (zip bomb, tar with links and "../" names,
traversal attachment names) are built here; real samples come from ../shared/corpora.
"""
from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import re
import struct
import tarfile
import unicodedata
import zipfile
import zlib
from email.message import EmailMessage
from pathlib import Path

import pytest
from tests.support.common import need_corpora

from extractors import archive, email_family
from extractors._children import safe_name
from extractors.base import ExtractContext, ExtractionError, Limits

EML = "message/rfc822"
MSG = "application/vnd.ms-outlook"
MB = 1024 * 1024


def ctx_for(tmp_path: Path, **kw) -> ExtractContext:
    return ExtractContext(workdir=tmp_path / "sandbox" / "work", **kw)


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() or p.is_symlink())


def assert_confined(tmp_path: Path, ctx: ExtractContext, result=None) -> None:
    """Everything written lies in the work folder, under a generated name."""
    work = Path(ctx.workdir).resolve()
    for p in files_under(tmp_path):
        if p.name.startswith("input"):
            continue
        assert p.resolve().parent == work, f"{p} written outside the work folder"
        assert re.fullmatch(r"child-\d{5}(\.[a-z0-9]{1,10})?", p.name), p.name
    if result is not None:
        for c in result.children:
            assert Path(c.path).resolve().parent == work
            assert Path(c.path).stat().st_size == c.size
            assert_safe_name(c.name)


def assert_safe_name(name: str) -> None:
    assert name and not name.startswith("/") and "\\" not in name, name
    assert not re.match(r"^[A-Za-z]:", name), name
    parts = name.split("/")
    assert ".." not in parts and "." not in parts and "" not in parts, name
    assert not any(unicodedata.category(ch) in ("Cc", "Cf") for ch in name), ascii(name)


def children_bytes(result) -> dict[str, bytes]:
    return {c.name: Path(c.path).read_bytes() for c in result.children}


# -- safe names -------------------------------------------------------------------------
@pytest.mark.parametrize("raw, expected", [
    ("../../etc/passwd", "etc/passwd"),
    ("/etc/passwd", "etc/passwd"),
    ("C:\\TEMP\\nsmailEG.png", "TEMP/nsmailEG.png"),
    ("..\\..\\windows\\evil.dll", "windows/evil.dll"),
    ("1234/../../1234.txt", "1234/1234.txt"),
    ("a/./b//c.txt", "a/b/c.txt"),
    ("evil\x00name\n.txt", "evilname.txt"),
    ("invoice\u202etxt.exe", "invoicetxt.exe"),
    ("//server/share/x.doc", "server/share/x.doc"),
    ("../..", ""),
])
def test_safe_name(raw, expected):
    assert safe_name(raw) == expected


# -- archives: hostile input built here ---------------------------------------------------
def test_zip_bomb_is_refused_with_the_ratio(tmp_path):
    bomb = tmp_path / "input-bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        zf.writestr("readme.txt", "nothing to see")
        zf.writestr("zeros.bin", bytes(50 * MB))
    ctx = ctx_for(tmp_path)
    with pytest.raises(ExtractionError) as ei:
        archive.extract(bomb, "application/zip", ctx)
    assert ei.value.code == "zip-bomb"
    m = re.search(r"zip bomb: ratio 1:(\d+)", ei.value.message)
    assert m and int(m.group(1)) > 200, ei.value.message
    assert "zeros.bin" in ei.value.message
    assert files_under(tmp_path / "sandbox") == []  # nothing left behind


def test_gzip_bomb_with_a_lying_trailer_is_stopped_while_streaming(tmp_path):
    """Declared sizes are only used to refuse early: with the gzip trailer's size
    forged to look harmless, the bytes coming out of the decompressor still count."""
    honest = tmp_path / "input-zeros.gz"
    honest.write_bytes(gzip.compress(bytes(50 * MB), compresslevel=9))
    with pytest.raises(ExtractionError) as ei:
        archive.extract(honest, "application/gzip", ctx_for(tmp_path))
    assert ei.value.code == "zip-bomb" and "ratio 1:" in ei.value.message
    assert "declares" in ei.value.message  # caught on the trailer

    forged = tmp_path / "input-forged.gz"
    data = bytearray(honest.read_bytes())
    data[-4:] = (1000).to_bytes(4, "little")  # "1000 bytes uncompressed"
    forged.write_bytes(bytes(data))
    with pytest.raises(ExtractionError) as ei:
        archive.extract(forged, "application/gzip", ctx_for(tmp_path))
    assert ei.value.code == "zip-bomb"
    assert re.search(r"ratio 1:\d+ so far", ei.value.message), ei.value.message
    assert files_under(tmp_path / "sandbox") == []


def test_tar_gz_bomb_counts_bytes_of_skipped_members(tmp_path):
    """A member skipped for its size is still decompressed by the tar reader to get past
    it; those bytes count against the ratio too."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        ti = tarfile.TarInfo("zeros.bin")
        ti.size = 50 * MB
        tf.addfile(ti, io.BytesIO(bytes(ti.size)))
    tgz = tmp_path / "input-bomb.tgz"
    with open(tgz, "wb") as fh:
        # gzip.compress + a forged trailer: no early refusal on the declared size
        data = bytearray(gzip.compress(buf.getvalue(), compresslevel=9))
        data[-4:] = (4096).to_bytes(4, "little")
        fh.write(data)
    ctx = ctx_for(tmp_path, limits=Limits(max_member_bytes=MB))
    with pytest.raises(ExtractionError) as ei:
        archive.extract(tgz, "application/gzip", ctx)
    assert ei.value.code == "zip-bomb" and "ratio 1:" in ei.value.message


def test_tar_with_links_and_traversal_names(tmp_path):
    tar = tmp_path / "input-evil.tar"
    with tarfile.open(tar, "w") as tf:
        def add(name, data=b"", **kw):
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            for k, v in kw.items():
                setattr(ti, k, v)
            tf.addfile(ti, io.BytesIO(data) if data else None)

        add("docs/ok.txt", b"hello tar")
        add("../../escape.txt", b"I want out")
        add("/abs/rooted.txt", b"absolute")
        add("docs/link-to-passwd", type=tarfile.SYMTYPE, linkname="/etc/passwd")
        add("docs/hard", type=tarfile.LNKTYPE, linkname="docs/ok.txt")
        add("docs/fifo", type=tarfile.FIFOTYPE)
        add("docs", type=tarfile.DIRTYPE)
    ctx = ctx_for(tmp_path)
    r = archive.extract(tar, "application/x-tar", ctx)
    got = children_bytes(r)
    assert got == {"docs/ok.txt": b"hello tar", "escape.txt": b"I want out",
                   "abs/rooted.txt": b"absolute"}
    assert any("link-to-passwd" in w and "symbolic link" in w for w in r.warnings), r.warnings
    assert any("'docs/hard'" in w and "hard link" in w for w in r.warnings), r.warnings
    assert any("fifo" in w.lower() for w in r.warnings), r.warnings
    assert "escape.txt" in r.text and "docs/ok.txt" in r.text  # the listing
    assert all(Path(c.path).suffix == ".txt" for c in r.children)  # work files keep the extension
    assert_confined(tmp_path, ctx, r)
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path.parent / "escape.txt").exists()


def test_zip_traversal_names_stay_in_the_work_folder(tmp_path):
    z = tmp_path / "input-evil.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("../../../../tmp/evil.txt", b"x")
        zf.writestr("C:\\Windows\\evil.dll", b"y")
        zf.writestr("same.txt", b"1")
        zf.writestr("./same.txt", b"2")  # a duplicate after normalising: renamed
        link = zipfile.ZipInfo("link-to-shadow")
        link.external_attr = (0o120777 << 16)  # a symbolic link (Info-ZIP unix mode)
        zf.writestr(link, "/etc/shadow")
    ctx = ctx_for(tmp_path)
    r = archive.extract(z, "application/zip", ctx)
    assert children_bytes(r) == {"tmp/evil.txt": b"x", "Windows/evil.dll": b"y",
                                 "same.txt": b"1", "same (2).txt": b"2"}
    assert any("link-to-shadow" in w and "not a regular file" in w for w in r.warnings)
    assert_confined(tmp_path, ctx, r)


def test_nested_archives_stop_at_the_depth_limit(tmp_path):
    inner = b"deepest text"
    data, name = inner, "level5.txt"
    for level in range(5, 0, -1):  # level1.zip > level2.zip > ... > level5.txt
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr(name, data)
        data, name = buf.getvalue(), f"level{level}.zip"
    top = tmp_path / "input-nested.zip"
    top.write_bytes(data)

    # Walk as the pipeline does: each child is extracted at depth + 1.
    path, depth, seen = top, 0, []
    while True:
        ctx = ExtractContext(workdir=tmp_path / f"work{depth}", depth=depth)
        try:
            r = archive.extract(path, "application/zip", ctx)
        except ExtractionError as exc:
            assert exc.code == "too-deep"
            assert exc.message == "archive nested deeper than 3 levels"
            break
        seen.append(r.children[0].name)
        path, depth = Path(r.children[0].path), depth + 1
    assert seen == ["level2.zip", "level3.zip", "level4.zip"] and depth == 3


def test_archive_limits(tmp_path):
    z = tmp_path / "input-many.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for i in range(20):
            zf.writestr(f"f{i:02d}.txt", os.urandom(1000))
        zf.writestr("big.bin", os.urandom(300_000))
    with pytest.raises(ExtractionError) as ei:
        archive.extract(z, "application/zip", ctx_for(tmp_path, limits=Limits(max_members=10)))
    assert ei.value.code == "too-large" and "limit 10" in ei.value.message

    r = archive.extract(z, "application/zip", ctx_for(tmp_path, limits=Limits(max_member_bytes=100_000)))
    assert len(r.children) == 20 and "big.bin" not in children_bytes(r)
    assert any("big.bin" in w and "100000" in w for w in r.warnings), r.warnings

    with pytest.raises(ExtractionError) as ei:
        archive.extract(z, "application/zip", ctx_for(tmp_path, limits=Limits(max_expanded_bytes=50_000)))
    assert ei.value.code == "too-large"


def _flag_all_encrypted(data: bytes) -> bytes:
    """Set the 'encrypted' bit of every member (local headers and central directory)."""
    b = bytearray(data)
    for sig, off in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        i = b.find(sig)
        while i >= 0:
            struct.pack_into("<H", b, i + off, struct.unpack_from("<H", b, i + off)[0] | 1)
            i = b.find(sig, i + 4)
    return bytes(b)


def _zipcrypto(name: str, data: bytes, password: bytes) -> bytes:
    """A one-member ZIP with traditional PKWARE encryption (zipfile cannot write one)."""
    def crc_update(c: int, byte: int) -> int:
        return zlib.crc32(bytes([byte]), c ^ 0xFFFFFFFF) ^ 0xFFFFFFFF

    keys = [0x12345678, 0x23456789, 0x34567890]

    def update(p: int) -> None:
        keys[0] = crc_update(keys[0], p)
        keys[1] = ((keys[1] + (keys[0] & 0xFF)) * 134775813 + 1) & 0xFFFFFFFF
        keys[2] = crc_update(keys[2], keys[1] >> 24)

    for ch in password:
        update(ch)
    crc = zlib.crc32(data)
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    plain = os.urandom(11) + bytes([crc >> 24]) + comp.compress(data) + comp.flush()
    enc = bytearray()
    for p in plain:
        t = (keys[2] | 2) & 0xFFFF
        enc.append(p ^ (((t * (t ^ 1)) >> 8) & 0xFF))
        update(p)
    fn = name.encode()
    local = struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 1, 8, 0, 0x21, crc, len(enc),
                        len(data), len(fn), 0) + fn + bytes(enc)
    central = struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 1, 8, 0, 0x21, crc, len(enc),
                          len(data), len(fn), 0, 0, 0, 0, 0, 0) + fn
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 1, 1, len(central), len(local), 0)
    return local + central + end


def test_encrypted_zip_members(tmp_path):
    plain = tmp_path / "input-plain.zip"
    with zipfile.ZipFile(plain, "w") as zf:
        zf.writestr("a.txt", "alpha")
        zf.writestr("b.txt", "beta")
    locked = tmp_path / "input-locked.zip"
    locked.write_bytes(_flag_all_encrypted(plain.read_bytes()))
    with pytest.raises(ExtractionError) as ei:
        archive.extract(locked, "application/zip", ctx_for(tmp_path))
    assert ei.value.code == "encrypted" and "password required" in ei.value.message

    secret = tmp_path / "input-secret.zip"
    secret.write_bytes(_zipcrypto("secret.txt", b"the launch codes" * 10, b"hunter2"))
    with pytest.raises(ExtractionError) as ei:
        archive.extract(secret, "application/zip", ctx_for(tmp_path, passwords=[("*", "wrong")]))
    assert ei.value.code == "encrypted"
    r = archive.extract(secret, "application/zip",
                        ctx_for(tmp_path, passwords=[("*/input-secret.zip", "hunter2")]))
    assert children_bytes(r) == {"secret.txt": b"the launch codes" * 10}


def test_single_file_compressors_and_compressed_tars(tmp_path):
    payload = b"quarterly report\n" * 100
    for suffix, compress in ((".gz", gzip.compress), (".bz2", bz2.compress), (".xz", lzma.compress)):
        f = tmp_path / f"input-report.txt{suffix}"
        f.write_bytes(compress(payload))
        r = archive.extract(f, "application/octet-stream", ctx_for(tmp_path))
        assert children_bytes(r) == {"input-report.txt": payload}, suffix
        assert r.text == "input-report.txt"
        # A child's work file has no suffix: the gzip header's stored name, else source_path.
        r = archive.extract(f, "application/octet-stream",
                            ctx_for(tmp_path, source_path="/share/q3.txt" + suffix))
        assert [c.name for c in r.children] == ["q3.txt"]

    for mode, mime in (("w:gz", "application/gzip"), ("w:bz2", "application/x-bzip2"),
                       ("w:xz", "application/x-xz")):
        f = tmp_path / f"input-docs.{mode[2:]}"
        with tarfile.open(f, mode) as tf:
            ti = tarfile.TarInfo("inner/notes.md")
            ti.size = len(payload)
            tf.addfile(ti, io.BytesIO(payload))
        r = archive.extract(f, mime, ctx_for(tmp_path))
        assert children_bytes(r) == {"inner/notes.md": payload}, mode
        assert r.extractor.startswith("tar.")


def test_7z_built_here(tmp_path):
    py7zr = pytest.importorskip("py7zr")
    f = tmp_path / "input-docs.7z"
    with py7zr.SevenZipFile(f, "w") as z:
        z.writestr(b"seven zip text", "folder/a.txt")
        z.writestr(b"", "folder/empty.txt")
        z.writestr(os.urandom(5000), "b.bin")
    ctx = ctx_for(tmp_path)
    r = archive.extract(f, "application/x-7z-compressed", ctx)
    got = children_bytes(r)
    assert got["folder/a.txt"] == b"seven zip text" and got["folder/empty.txt"] == b""
    assert len(got["b.bin"]) == 5000
    assert r.extractor == "7z/py7zr"
    assert_confined(tmp_path, ctx, r)


def test_no_workdir_and_not_an_archive(tmp_path):
    z = tmp_path / "input.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("a.txt", "a")
    with pytest.raises(ExtractionError) as ei:
        archive.extract(z, "application/zip", ExtractContext())
    assert ei.value.code == "extractor-crash" and "no work folder" in ei.value.message
    junk = tmp_path / "input-junk.zip"
    junk.write_bytes(b"PK\x03\x04" + os.urandom(200))
    with pytest.raises(ExtractionError) as ei:
        archive.extract(junk, "application/zip", ctx_for(tmp_path))
    assert ei.value.code == "corrupt"


# -- archives: the corpora ----------------------------------------------------------------
def test_droste_zip_and_gzip_quine_are_stopped():
    pkg = need_corpora() / "tika-test-documents" / "pkg"
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        ctx = ExtractContext(workdir=Path(d) / "w")
        with pytest.raises(ExtractionError) as ei:
            archive.extract(pkg / "droste.zip", "application/zip", ctx)
        assert ei.value.code == "zip-bomb"
        assert "recursive archive" in ei.value.message and "'droste.zip'" in ei.value.message
        with pytest.raises(ExtractionError) as ei:
            archive.extract(pkg / "quine.gz", "application/gzip", ctx)
        assert ei.value.code == "zip-bomb" and "recursive archive" in ei.value.message
        assert not any(Path(d).rglob("child-*"))
        # And were they not byte-identical, the depth limit would end the chain:
        with pytest.raises(ExtractionError) as ei:
            archive.extract(pkg / "droste.zip", "application/zip",
                            ExtractContext(workdir=Path(d) / "w", depth=3))
        assert ei.value.code == "too-deep"


def test_corpus_archives(tmp_path):
    pkg = need_corpora() / "tika-test-documents" / "pkg"
    names = {"testEXCEL.xls", "testHTML.html", "testOpenOffice2.odt", "testPDF.pdf",
             "testPPT.ppt", "testRTF.rtf", "testTXT.txt", "testWORD.doc", "testXML.xml"}
    results = {}
    for f, mime in (("test-documents.zip", "application/zip"),
                    ("test-documents.tar", "application/x-tar"),
                    ("test-documents.tgz", "application/gzip"),
                    ("test-documents.7z", "application/x-7z-compressed")):
        r = archive.extract(pkg / f, mime, ctx_for(tmp_path / f))
        assert {c.name.rsplit("/", 1)[-1] for c in r.children} == names, f
        assert "testPDF.pdf" in r.text
        results[f] = {c.name.rsplit("/", 1)[-1]: Path(c.path).read_bytes() for c in r.children}
    assert results["test-documents.zip"] == results["test-documents.tar"] \
        == results["test-documents.tgz"] == results["test-documents.7z"]

    r = archive.extract(pkg / "testZipEncrypted.zip", "application/zip", ctx_for(tmp_path / "e"))
    assert [c.name for c in r.children] == ["unencrypted.txt"]
    assert any("encrypted.txt" in w and "encrypted" in w for w in r.warnings)

    r = archive.extract(pkg / "gbk.zip", "application/zip", ctx_for(tmp_path / "g"))
    assert r.children[0].name.startswith("审计压缩包文件检索测试/")  # GBK names, no UTF-8 flag

    p7 = pkg / "test7Z_protected_passTika.7z"
    with pytest.raises(ExtractionError) as ei:
        archive.extract(p7, "application/x-7z-compressed", ctx_for(tmp_path / "p"))
    assert ei.value.code == "encrypted" and "password required" in ei.value.message
    r = archive.extract(p7, "application/x-7z-compressed",
                        ctx_for(tmp_path / "p", passwords=[("*.7z", "Tika")]))
    assert [c.name for c in r.children] == ["text.txt"] and r.children[0].size > 0


# -- mail ---------------------------------------------------------------------------------
def _norm(name: str) -> str:
    return unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().lower()


def _manifest_attachment_counts(corpora: Path) -> dict[str, int]:
    counts = {}
    for line in (corpora / "MANIFEST.tsv").read_text(encoding="utf-8", errors="replace").splitlines():
        cols = line.split("\t")
        if len(cols) >= 5 and "hunnysoft-mua-samples/" in cols[0]:
            m = re.search(r"(\d+) attachment\(s\)", cols[4])
            if m:
                counts[cols[0].rsplit("/", 1)[-1]] = int(m.group(1))
    return counts


# Where the attachment as sent differs from the file in attachment-originals/ (the
# sender's software changed it, not our decoding): how to get from the original to it.
_KNOWN_DIFFERENCES = {
    # Outlook 2000 dropped the file's final CRLF when quoted-printable encoding it.
    ("m0022.txt.eml", "aaa.txt"): lambda o: o[:-2] if o.endswith(b"\r\n") else o,
    # PINE base64-encoded the text with CR CR LF line ends.
    ("m3004.txt.eml", "HasenundFrösche.txt"): lambda o: o.replace(b"\r\n", b"\r\r\n"),
    # Eudora's BinHex data fork holds the text with Macintosh CR line ends.
    ("m2011.txt.eml", "HasenundFrösche.txt"): lambda o: o.replace(b"\r\n", b"\r"),
}


def test_hunnysoft_attachments_match_the_originals(tmp_path):
    corpora = need_corpora()
    folder = corpora / "emails" / "hunnysoft-mua-samples"
    originals = {p.name: p.read_bytes() for p in (folder / "attachment-originals").iterdir()}
    by_name = {_norm(n): n for n in originals}
    expected_counts = _manifest_attachment_counts(corpora)
    compared = exact = 0
    matched_originals = set()
    messages = sorted(folder.glob("*.eml"))
    assert len(messages) >= 70
    for msg in messages:
        ctx = ctx_for(tmp_path / msg.stem)
        r = email_family.extract(msg, EML, ctx)
        assert r.extractor == "eml/email"
        assert len(r.children) >= expected_counts.get(msg.name, 0), (msg.name, r.children)
        assert_confined(tmp_path / msg.stem, ctx, r)
        for child in r.children:
            data = Path(child.path).read_bytes()
            assert child.meta["content_type"] and "filename" in child.meta
            base = child.name.rsplit("/", 1)[-1]
            if _norm(base) in by_name:
                candidates = [by_name[_norm(base)]]
            else:  # renamed by the MUA (Eudora's "2aa3ed95.png", Netscape's "C:\TEMP\...")
                candidates = [n for n, b in originals.items() if len(b) == len(data)]
            if not candidates:
                continue
            compared += 1
            fix = _KNOWN_DIFFERENCES.get((msg.name, child.name))
            wanted = [fix(originals[n]) if fix else originals[n] for n in candidates]
            assert data in wanted, f"{msg.name}: {child.name} differs from {candidates}"
            exact += fix is None
            matched_originals.update(n for n in candidates if (fix(originals[n]) if fix else originals[n]) == data)
    assert compared >= 95 and exact >= compared - len(_KNOWN_DIFFERENCES)
    assert {"blueball.png", "greenball.png", "redball.png", "aaa.txt", "abc.txt",
            "HasenundFrosche.txt", "farmerandstork.txt", "hareandtortoise.txt",
            "Biodiversite de semaine en semaine.doc", "winmail.dat"} <= matched_originals


def test_hunnysoft_details(tmp_path):
    folder = need_corpora() / "emails" / "hunnysoft-mua-samples"

    def run(name):
        return email_family.extract(folder / name, EML, ctx_for(tmp_path / name))

    r = run("m1005.txt.eml")  # Netscape: filename="C:\TEMP\nsmailEG.png"
    assert [c.name for c in r.children][:2] == ["TEMP/nsmailEG.png", "TEMP/nsmail39.png"]
    r = run("m0018.txt.eml")  # uuencoded inside a plain-text body
    assert [c.name for c in r.children] == ["blueball.png", "greenball.png", "redball.png"]
    assert "begin 666" not in r.text and "The Hare and the Tortoise" in r.text
    r = run("m2011.txt.eml")  # BinHex 4.0
    assert [c.meta.get("encoding") for c in r.children] == ["binhex", "binhex"]
    r = run("m1015.txt.eml")  # RFC 2047 in a quoted file name
    assert r.children[0].name == "HasenundFrösche.txt"
    r = run("m2012.txt.eml")  # raw ISO-8859-1 byte in the file name
    assert r.children[-1].name == "HasenundFrösche.txt"
    r = run("invalid-charset.txt.eml")
    assert "The Hare and the Tortoise" in r.text and any("invalid-charset" in w for w in r.warnings)
    r = run("m2011.txt.eml")
    title = r.elements[0]
    assert title.kind == "title" and title.text == "Die Hasen und die Frösche"
    assert "To: Jürgen Schmürgen <jschmuergen@example.com>" in r.elements[1].text
    assert "Die Hasen klagten einst über ihre mißliche Lage" in r.text


def test_path_traversal_attachment_names(tmp_path):
    corpora = need_corpora() / "emails" / "php-mime-mail-parser"
    for name in ("m0027.eml", "m0124.eml"):  # name="1234/../../1234.txt"
        ctx = ctx_for(tmp_path / name)
        r = email_family.extract(corpora / name, EML, ctx)
        assert [c.name for c in r.children] == ["1234/1234.txt"]
        assert r.children[0].meta["filename"] == "1234/../../1234.txt"
        assert_confined(tmp_path / name, ctx, r)
    assert not list(tmp_path.rglob("1234*"))


def test_hostile_attachment_names_built_here(tmp_path):
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "a@example.com", "b@example.com", "names"
    msg.set_content("see attachments")
    evil = ["../../../../tmp/evil.txt", "/etc/cron.d/evil", "C:\\Windows\\System32\\evil.dll",
            "..\\..\\boot.ini", "ok\x07bell.txt", "rtl\u202etxt.exe", "..", ""]
    for i, n in enumerate(evil):
        msg.add_attachment(f"payload {i}".encode(), maintype="application",
                           subtype="octet-stream", filename=n)
    f = tmp_path / "input-evil.eml"
    f.write_bytes(bytes(msg))
    ctx = ctx_for(tmp_path)
    r = email_family.extract(f, EML, ctx)
    names = [c.name for c in r.children]
    assert names[:6] == ["tmp/evil.txt", "etc/cron.d/evil", "Windows/System32/evil.dll",
                         "boot.ini", "okbell.txt", "rtltxt.exe"]
    assert re.fullmatch(r"attachment-\d+\.bin", names[6]) and re.fullmatch(r"attachment-\d+\.bin", names[7])
    assert_confined(tmp_path, ctx, r)
    assert not list(Path("/tmp").glob("evil.txt"))


def test_message_with_328_attachments(tmp_path):
    f = need_corpora() / "emails" / "php-mime-mail-parser" / "issue408.eml"
    ctx = ctx_for(tmp_path / "all")
    r = email_family.extract(f, EML, ctx)  # default limits: all of them
    assert len(r.children) == 328 and not r.warnings
    assert len({c.name for c in r.children}) == 328
    assert Path(r.children[0].path).read_bytes().startswith(b":20:XYZ1801/04XXX")
    # A deployment with a lower bound: the first N, and a warning that says so.
    r = email_family.extract(f, EML, ctx_for(tmp_path / "few", limits=Limits(max_members=100)))
    assert len(r.children) == 100
    assert sum("more than 100 attachments (limit)" in w for w in r.warnings) == 228
    assert "test mail with more than 300 attachments" in r.text


def test_mail_limits_depth_and_nested_messages(tmp_path):
    inner = EmailMessage()
    inner["From"], inner["Subject"] = "c@example.com", "inner subject"
    inner.set_content("inner body text")
    inner.add_attachment(b"inner attachment", maintype="text", subtype="plain", filename="in.txt")
    outer = EmailMessage()
    outer["From"], outer["To"], outer["Subject"] = "a@example.com", "b@example.com", "outer"
    outer.set_content("outer body")
    outer.add_alternative("<html><body><p>outer <b>html</b></p><script>x()</script></body></html>",
                          subtype="html")
    outer.add_attachment(inner)
    outer.add_attachment(os.urandom(5000), maintype="application", subtype="pdf", filename="big.pdf")
    f = tmp_path / "input-outer.eml"
    f.write_bytes(bytes(outer))

    r = email_family.extract(f, EML, ctx_for(tmp_path / "a"))
    assert r.elements[0].text == "outer" and "outer body" in r.text and "x()" not in r.text
    eml_child = next(c for c in r.children if c.meta["content_type"] == "message/rfc822")
    assert eml_child.name.endswith(".eml")
    r2 = email_family.extract(Path(eml_child.path), EML, ctx_for(tmp_path / "b", depth=1))
    assert "inner body text" in r2.text and [c.name for c in r2.children] == ["in.txt"]

    r = email_family.extract(f, EML, ctx_for(tmp_path / "c", limits=Limits(max_member_bytes=1000)))
    assert "big.pdf" not in [c.name for c in r.children]
    assert any("big.pdf" in w and "1000" in w for w in r.warnings)

    r = email_family.extract(f, EML, ctx_for(tmp_path / "d", depth=3))
    assert r.children == [] and any("deeper than 3" in w for w in r.warnings)
    assert "outer body" in r.text

    with pytest.raises(ExtractionError) as ei:
        email_family.extract(f, EML, ExtractContext())
    assert ei.value.code == "extractor-crash"


def test_outlook_msg(tmp_path):
    corpora = need_corpora()
    ms = corpora / "tika-test-documents" / "microsoft"
    r = email_family.extract(ms / "testMSG_att_msg.msg", MSG, ctx_for(tmp_path / "a"))
    assert r.extractor == "msg/python-oxmsg"
    assert [c.name for c in r.children] == ["Test Attachment.eml", "smbprn.00009008.KdcPjl.pdf"]
    assert Path(r.children[1].path).read_bytes().startswith(b"%PDF")
    inner = email_family.extract(Path(r.children[0].path), EML, ctx_for(tmp_path / "b", depth=1))
    assert "Blah blah blah" in inner.text

    r = email_family.extract(ms / "testMSG_chinese.msg", MSG, ctx_for(tmp_path / "c"))
    assert "中文測試" in r.text and "格式測試" in r.elements[0].text  # Big5, no message code page

    r = email_family.extract(ms / "test-outlook2003.msg", MSG, ctx_for(tmp_path / "d"))
    assert len(r.children) == 11 and r.elements[0].text == "Welcome to Microsoft Office Outlook 2003"

    u = corpora / "unstructured-example-docs"
    r = email_family.extract(u / "fake-email-with-cc-and-bcc.msg", MSG, ctx_for(tmp_path / "e"))
    headers = r.elements[1].meta["headers"]
    assert headers["Cc"] == "steve@unstructured.io" and headers["Bcc"] == "hello@unstructured.io"
    r = email_family.extract(u / "fake-email-attachment.msg", MSG, ctx_for(tmp_path / "f"))
    assert [c.name for c in r.children] == ["fake-attachment.txt"]
    assert r.children[0].meta["content_type"] == "text/plain"
