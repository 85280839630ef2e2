"""Mail: RFC 822/MIME messages (.eml, stdlib ``email``) and Outlook .msg (python-oxmsg).

Elements, in order:

* ``title`` (level 1): the Subject (left out when there is none);
* ``paragraph`` with the header lines From / To / Cc / Date (and Bcc where a .msg keeps
  it); ``meta["headers"]`` holds them as a dict;
* the body as ``paragraph``s (split at blank lines): the text/plain alternative when
  there is one, else text/html converted to text (lxml; scripts, styles and the head
  dropped, block elements become line breaks);
* a ``paragraph`` "Attachments: a.pdf, b.png" naming the attachments (so the message
  is found by an attachment's name).

Attachments become child documents (``Extraction.children``) holding their decoded
bytes (base64, quoted-printable, uuencode, BinHex 4.0 data fork), with
``meta={"content_type", "filename", "disposition", "content_id", "sha256"}``:

* every part with ``Content-Disposition: attachment``, and every part with a file name;
* non-text parts without a file name, unless they are inline/Content-ID images of an
  HTML body (logos, signatures: not documents of their own);
* other text types (text/calendar, text/rtf, ...) that are not the body;
* ``message/rfc822`` parts -> a child ``.eml`` (the pipeline extracts it like any mail);
* uuencoded blocks inside a plain-text body ("begin 644 name" ... "end", as old
  Outlook and PINE sent them) -> children, and cut out of the body text;
* .msg: attachments by value; an attached Outlook message -> a child ``.eml`` built
  from its properties (its own attachments included); OLE objects and links are
  named in a warning and not extracted.

Signatures (application/pgp-signature, pkcs7-signature) are not children; an encrypted
body (multipart/encrypted, S/MIME enveloped data) gives a warning.

Charsets: the declared one (with common aliases: iso-8859-1 read as windows-1252,
gb2312 as gb18030, ks_c_5601-1987 as cp949...), else UTF-8, else a guess
(charset_normalizer), else windows-1252 with replacement. Raw 8-bit bytes in headers
are recovered (UTF-8, else windows-1252).

Limits: attachment count (``max_members``), size of one (``max_member_bytes``) and of
all together (``max_expanded_bytes``): over a limit an attachment is skipped with a
warning and the message itself is still extracted. At ``ctx.depth >= max_depth`` no
attachments are extracted (warning). Attachments need ``ctx.workdir``; without one
-> ``ExtractionError(ErrorCode.EXTRACTOR_CRASH, "no work folder for child documents")``.
"""
from __future__ import annotations

import binascii
import codecs
import email
import email.generator
import email.parser
import email.policy
import io
import re
import sys
from email.header import decode_header
from email.message import EmailMessage, Message
from pathlib import Path

from ._children import ChildWriter, extension_for, fix_surrogates, safe_name
from .base import Element, ExtractContext, Extraction, ExtractionError
from .errors import ErrorCode

OUR_VERSION = 1
_OLE2_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"

# -- charsets -------------------------------------------------------------------------
# Names seen in real mail / MSG code pages that Python does not know, or knows as a
# narrower charset than the senders meant.
_CHARSET_ALIASES = {
    "iso-8859-1": "cp1252", "iso8859-1": "cp1252", "latin1": "cp1252", "latin-1": "cp1252",
    "us-ascii": "ascii", "ansi_x3.4-1968": "ascii",
    "gb2312": "gb18030", "gbk": "gb18030", "x-gbk": "gb18030", "cn-gb": "gb18030",
    "ks_c_5601-1987": "cp949", "ks_c_5601": "cp949", "euc-kr": "cp949",
    "shift_jis": "cp932", "shift-jis": "cp932", "x-sjis": "cp932", "sjis": "cp932",
    "windows-874": "cp874", "windows-950": "cp950", "big5": "cp950", "dos-720": "cp720",
    "iso-8859-8-i": "iso-8859-8", "iso-8859-6-i": "iso-8859-6",
    "x-mac-roman": "mac_roman", "macintosh": "mac_roman", "x-mac-ce": "mac_latin2",
    "x-mac-cyrillic": "mac_cyrillic", "x-mac-greek": "mac_greek", "x-mac-turkish": "mac_turkish",
    "x-mac-icelandic": "mac_iceland", "utf8": "utf-8", "unicode-1-1-utf-8": "utf-8",
    "cp1148ms": "cp1140",
}
_NO_CHARSET = {"", "x-unknown", "unknown", "unknown-8bit", "x-user-defined", "default",
               "none", "charset"}


def _codec_search(name: str):
    # Python hands search functions the name lower-cased with "-"/" " turned into "_".
    wanted = _CHARSET_ALIASES.get(name.replace("_", "-")) or _CHARSET_ALIASES.get(name)
    if wanted:
        try:
            return codecs.lookup(wanted)
        except LookupError:
            return None
    return None


_codec_registered = False


def _register_codecs() -> None:
    """Make the aliases above resolvable everywhere (python-oxmsg decodes .msg strings
    with names like "windows-950" that Python lacks). Only adds names Python does not
    know; idempotent."""
    global _codec_registered
    if not _codec_registered:
        codecs.register(_codec_search)
        _codec_registered = True


def decode_text(data: bytes, charset: str | None) -> tuple[str, str | None]:
    """Bytes of a text part -> (text, warning or None)."""
    cs = (charset or "").strip().strip("\"'").lower()
    cs = _CHARSET_ALIASES.get(cs, cs)
    if cs not in _NO_CHARSET:
        try:
            codecs.lookup(cs)
        except LookupError:
            text = _guess_decode(data)
            return text, f"unknown charset {charset!r}: decoded by guessing"
        try:
            return data.decode(cs), None
        except UnicodeDecodeError:
            if cs == "ascii":  # 8-bit text declared (or defaulted) as ASCII
                return _guess_decode(data), None
            replaced = data.decode(cs, "replace")
            if replaced.count("\ufffd") <= 2:
                # one or two stray bytes (a cut multi-byte character): keep the charset
                return replaced, None
            return _guess_decode(data), f"text is not valid {charset} as declared: decoded by guessing"
    return _guess_decode(data), None


def _guess_decode(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    # Accented letters between ASCII ones (Western European text): Windows-1252. Runs
    # of 8-bit bytes (Cyrillic, CJK...): ask charset_normalizer.
    high = [i for i, b in enumerate(data[:200_000]) if b >= 0x80]
    isolated = sum(1 for i in high
                   if (i == 0 or data[i - 1] < 0x80) and (i + 1 >= len(data) or data[i + 1] < 0x80))
    if high and isolated / len(high) > 0.5:
        return data.decode("cp1252", "replace")
    try:
        from charset_normalizer import from_bytes

        best = from_bytes(data[:200_000]).best()
        if best is not None and best.encoding:
            return data.decode(best.encoding, "replace")
    except Exception:  # noqa: BLE001 - a guess, never a failure
        pass
    return data.decode("cp1252", "replace")


# -- HTML -> text ---------------------------------------------------------------------
_BLOCK_TAGS = {
    "p", "div", "br", "li", "tr", "table", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote",
    "pre", "section", "article", "header", "footer", "ul", "ol", "hr", "dd", "dt", "dl",
    "address", "center", "form", "fieldset", "nav", "aside", "main", "figure", "caption",
}


def html_to_text(html: str) -> str:
    if not html or not html.strip():
        return ""
    try:
        from lxml import etree
        from lxml import html as lh

        parser = lh.HTMLParser(encoding="utf-8", remove_comments=True)
        root = lh.document_fromstring(html.encode("utf-8", "surrogatepass"), parser=parser)
    except Exception:  # noqa: BLE001 - not HTML after all: strip tags by hand
        return re.sub(r"<[^>]+>", " ", html)
    for bad in root.xpath("//script|//style|//head|//noscript|//template|//title"):
        bad.drop_tree()
    for el in root.iter():
        if not isinstance(el.tag, str):
            continue
        tag = el.tag.lower()
        if tag in ("td", "th"):
            el.tail = "\t" + (el.tail or "")
        elif tag == "br":
            el.tail = "\n" + (el.tail or "")
        elif tag in _BLOCK_TAGS:
            el.text = "\n" + (el.text or "")
            el.tail = "\n\n" + (el.tail or "")
    del etree
    text = root.text_content()
    lines = [re.sub(r"[ \t\u00a0]+", " ", line).strip() for line in text.splitlines()]
    text = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


# -- BinHex 4.0 / uuencode ------------------------------------------------------------
_HQX = "!\"#$%&'()*+,-012345689@ABCDEFGHIJKLMNPQRSTUVXYZ[`abcdefhijklmpqr"
_HQX_MAP = {ch: i for i, ch in enumerate(_HQX)}


def binhex_decode(text: bytes, limit: int) -> tuple[str | None, bytes]:
    """The data fork (and stored name) of a BinHex 4.0 file. Raises ValueError."""
    s = text.decode("latin-1")
    marker = s.find("(This file must be converted with BinHex")
    start = s.find(":", marker if marker >= 0 else 0)
    end = s.find(":", start + 1)
    if start < 0 or end < 0:
        raise ValueError("no BinHex data between ':' markers")
    raw = bytearray()
    acc = nbits = 0
    for ch in s[start + 1:end]:
        if ch in " \t\r\n":
            continue
        acc = ((acc << 6) | _HQX_MAP[ch]) & 0xFFFFFF
        nbits += 6
        if nbits >= 8:
            nbits -= 8
            raw.append((acc >> nbits) & 0xFF)
    out = bytearray()
    i = 0
    while i < len(raw):
        b = raw[i]
        if b == 0x90 and i + 1 < len(raw):
            n = raw[i + 1]
            i += 2
            if n == 0:
                out.append(0x90)
            elif out:
                out.extend(out[-1:] * (n - 1))
        else:
            out.append(b)
            i += 1
        if len(out) > limit:
            raise ValueError(f"BinHex data larger than {limit} bytes")
    nlen = out[0]
    name = bytes(out[1:1 + nlen]).decode("mac_roman")
    p = 1 + nlen + 1  # name, version byte
    dlen = int.from_bytes(out[p + 10:p + 14], "big")
    data = bytes(out[p + 20:p + 20 + dlen])
    if len(data) != dlen:
        raise ValueError("BinHex data fork truncated")
    return name or None, data


_UU_BEGIN = re.compile(r"^begin [0-7]{3,4} (\S.*?)[ \t]*$")


def split_uuencoded(text: str) -> tuple[str, list[tuple[str, bytes]]]:
    """Cut "begin NNN name" ... "end" blocks out of plain text; return them decoded."""
    if "begin " not in text:
        return text, []
    lines = text.split("\n")
    kept: list[str] = []
    found: list[tuple[str, bytes]] = []
    i = 0
    while i < len(lines):
        m = _UU_BEGIN.match(lines[i].rstrip("\r"))
        if m:
            j = i + 1
            data = bytearray()
            ok = True
            while j < len(lines) and lines[j].rstrip("\r").strip() != "end":
                line = lines[j].rstrip("\r")
                if line:
                    try:
                        data += _uu_line(line.encode("latin-1"))
                    except (binascii.Error, UnicodeEncodeError):
                        ok = False
                        break
                j += 1
            if ok and j < len(lines):
                found.append((m.group(1), bytes(data)))
                i = j + 1
                continue
        kept.append(lines[i])
        i += 1
    return "\n".join(kept), found


def _uu_line(line: bytes) -> bytes:
    try:
        return binascii.a2b_uu(line)
    except binascii.Error:
        # Some encoders pad oddly: decode only as many characters as the length says.
        nbytes = (((line[0] - 32) & 63) * 4 + 5) // 3
        return binascii.a2b_uu(line[:nbytes])


# -- entry point ----------------------------------------------------------------------
def extract(path: Path, mime: str, ctx: ExtractContext) -> Extraction:
    _register_codecs()
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError as exc:
        raise ExtractionError(ErrorCode.CORRUPT, f"cannot read file: {exc}") from exc
    if head.startswith(_OLE2_MAGIC) or "outlook" in (mime or ""):
        return _extract_msg(path, mime, ctx)
    return _extract_eml(path, mime, ctx)


class _Mail:
    """What one message yields while it is walked."""

    def __init__(self, ctx: ExtractContext, path: Path):
        self.ctx = ctx
        self.writer = ChildWriter(ctx, path, mode="mail", what="message")
        self.body: list[str] = []
        self.warnings: list[str] = []
        self.attachment_names: list[str] = []
        self.too_deep = ctx.depth >= ctx.limits.max_depth
        self.n = 0  # attachments seen (for generated names)
        self.encrypted = False
        self.linesep = "\n"

    def attach(self, raw_name: str | None, data: bytes, meta: dict, content_type: str) -> None:
        self.n += 1
        label = raw_name or f"attachment-{self.n}{extension_for(content_type)}"
        if self.too_deep:
            self.attachment_names.append(safe_name(label) or label)
            return
        child = self.writer.write_bytes(
            raw_name, data, fallback=f"attachment-{self.n}{extension_for(content_type)}",
            meta=meta)
        self.attachment_names.append(child.name if child else (safe_name(label) or label))

    def result(self, elements: list[Element], extractor: str, version: str,
               mime: str) -> Extraction:
        if self.too_deep and self.n:
            self.warnings.append(
                f"{self.n} attachment(s) not extracted: mail nested deeper than "
                f"{self.ctx.limits.max_depth} levels")
        if self.attachment_names:
            elements.append(Element("paragraph",
                                    "Attachments: " + ", ".join(self.attachment_names),
                                    meta={"attachments": len(self.attachment_names)}))
        return Extraction(elements=elements, extractor=extractor, extractor_version=version,
                          mime=mime, warnings=[*self.warnings, *self.writer.warnings],
                          children=list(self.writer.children))


def _paragraphs(text: str) -> list[Element]:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    out = []
    for block in re.split(r"\n[ \t]*\n", text):
        block = block.strip("\n").rstrip()
        if block.strip():
            out.append(Element("paragraph", block))
    return out


def _header_elements(subject: str, headers: dict[str, str]) -> list[Element]:
    elements = []
    if subject:
        elements.append(Element("title", subject, level=1))
    lines = [f"{k}: {v}" for k, v in headers.items() if v]
    if lines:
        elements.append(Element("paragraph", "\n".join(lines),
                                meta={"headers": {k: v for k, v in headers.items() if v}}))
    return elements


# -- EML ------------------------------------------------------------------------------
_MAIL_HEADERS = {"from", "to", "cc", "subject", "date", "message-id", "received",
                 "mime-version", "return-path", "sender", "reply-to", "content-type",
                 "delivered-to", "x-mailer", "in-reply-to", "references"}
_SIGNATURES = {"application/pgp-signature", "application/pkcs7-signature",
               "application/x-pkcs7-signature"}
_BODY_TYPES = {"text/plain", "text/html", "text/enriched", "text/richtext"}
# an enclosed mail; message/global (RFC 6532, UTF-8 headers) may be base64-encoded, which
# Python's parser leaves as an opaque payload: decoded, it is a mail like any other
_ENCLOSED_MAIL = {"message/rfc822", "message/global"}
_BINHEX_TYPES = {"application/mac-binhex40", "application/mac-binhex", "application/binhex",
                 "application/x-binhex40", "application/x-mac-binhex40"}


def _extract_eml(path: Path, mime: str, ctx: ExtractContext) -> Extraction:
    data = _utf16_to_utf8(path.read_bytes())
    try:
        msg = email.message_from_bytes(data, policy=email.policy.default)
    except Exception as exc:  # noqa: BLE001 - the email package rarely raises at all
        raise ExtractionError(ErrorCode.CORRUPT, f"eml: {type(exc).__name__}: {exc}") from exc
    if not any(k.lower() in _MAIL_HEADERS for k in msg.keys()):
        raise ExtractionError(ErrorCode.CORRUPT, "eml: no mail headers (From, To, Subject, Date, ...)")
    mail = _Mail(ctx, path)
    with mail.writer:
        linesep = "\r\n" if b"\r\n" in data[:65536] else "\n"
        mail.linesep = linesep
        for defect in getattr(msg, "defects", [])[:3]:
            mail.warnings.append(f"MIME defect: {type(defect).__name__}")
        _walk(msg, mail, body=True)
        if mail.encrypted and not mail.body:
            mail.warnings.append("message body is encrypted: not readable without the key")
        headers = {name: _header(msg, name) for name in ("From", "To", "Cc", "Date")}
        elements = _header_elements(_header(msg, "Subject"), headers)
        for text in mail.body:
            elements.extend(_paragraphs(text))
        version = f"email-py{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}"
        return mail.result(elements, "eml/email", f"{version}+{OUR_VERSION}", mime)


def _utf16_to_utf8(data: bytes) -> bytes:
    """A whole message saved as UTF-16 (Windows tools do): re-encode it as UTF-8."""
    head = data[:400]
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        encoding = "utf-16"
    elif head.count(b"\x00") > len(head) // 3:
        encoding = "utf-16-be" if head[:1] == b"\x00" else "utf-16-le"
    else:
        return data
    try:
        return data.decode(encoding).encode("utf-8")
    except UnicodeDecodeError:
        return data


def _raw_header(msg: Message, name: str) -> str | None:
    for k, v in msg.raw_items():
        if k.lower() == name.lower():
            return re.sub(r"\r?\n[ \t]", " ", str(v))
    return None


def _header(msg: Message, name: str) -> str:
    try:
        value = msg.get(name)
        text = str(value) if value is not None else ""
    except Exception:  # noqa: BLE001 - a malformed header: fall back to its raw text
        text = None
    if text is None or "\ufffd" in text or _ENCODED_WORD.search(text):
        raw = _raw_header(msg, name)
        if raw is not None:
            text = decode_words(fix_surrogates(raw))
    return re.sub(r"\s+", " ", text or "").strip()


_ENCODED_WORD = re.compile(r"=\?[^?\s]+\?[bBqQ]\?")


def decode_words(value: str) -> str:
    """RFC 2047 encoded words, decoded with our charset aliases and fallbacks (the email
    package leaves a word as-is when its charset fails, e.g. GBK text labelled gb2312)."""
    try:
        parts = decode_header(value)
    except Exception:  # noqa: BLE001
        return value
    out = []
    for chunk, charset in parts:
        if isinstance(chunk, str):
            out.append(chunk)
        else:
            out.append(decode_text(chunk, charset)[0])
    return "".join(out)


def _filename(part: Message) -> str | None:
    try:
        name = part.get_filename()
    except Exception:  # noqa: BLE001
        name = None
    # The parsed value loses things the raw header still has: raw 8-bit bytes become
    # U+FFFD, "C:\TEMP\x.png" loses its backslashes to quoted-string unescaping, an
    # unquoted name with spaces is cut at the first space.
    for header, param in (("Content-Disposition", "filename"), ("Content-Type", "name")):
        raw = _raw_header(part, header)
        if not raw:
            continue
        m = re.search(r'(?:^|;)\s*' + param + r'\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;"]*))',
                      raw, re.IGNORECASE)
        if not m:
            continue
        quoted, bare = m.group(1), m.group(2)
        value = quoted if quoted is not None else (bare or "").strip()
        if not value:
            continue
        if name is None or "\ufffd" in name:
            name = decode_words(fix_surrogates(value))
        elif quoted is not None and "\\" in quoted and \
                quoted.replace("\\", "") == name.replace("\\", ""):
            name = quoted  # a Windows path sent unescaped
        elif quoted is None and " " in value and value.startswith(name):
            name = value
        break
    if name and _ENCODED_WORD.search(name):
        name = decode_words(name)
    return name.strip() if name else None


def _walk(part: Message, mail: _Mail, body: bool) -> None:
    ctype = part.get_content_type()
    if ctype in _ENCLOSED_MAIL:
        _attach_message(part, mail)
        return
    if part.is_multipart():
        subs = [p for p in part.get_payload() if isinstance(p, Message)]
        if ctype == "multipart/alternative" and body:
            best = _pick_alternative(subs)
            for sub in subs:
                _walk(sub, mail, body=sub is best)
        elif ctype == "multipart/encrypted":
            mail.encrypted = True
        elif ctype.startswith("message/"):  # delivery-status and friends: header blocks
            if body:
                mail.body.append("\n\n".join(str(s).strip() for s in subs if str(s).strip()))
        else:
            for sub in subs:
                _walk(sub, mail, body)
        return
    _leaf(part, mail, body)


def _pick_alternative(subs: list[Message]) -> Message | None:
    def score(p: Message) -> int:
        ct = p.get_content_type()
        if ct == "text/plain" and p.get_content_disposition() != "attachment":
            payload = p.get_payload(decode=True) or b""
            return 3 if payload.strip() else 0
        if ct == "text/html" or ct.startswith("multipart/"):
            return 2
        return 1

    best, best_score = None, -1
    for p in subs:
        s = score(p)
        if s > best_score:
            best, best_score = p, s
    return best


def _leaf(part: Message, mail: _Mail, body: bool) -> None:
    ctype = part.get_content_type()
    name = _filename(part)
    disposition = part.get_content_disposition()
    if ctype in _SIGNATURES:
        return  # a signature is not a document
    if ctype in ("application/pkcs7-mime", "application/x-pkcs7-mime") and \
            "enveloped" in str(part.get_param("smime-type", "") or "").lower():
        mail.encrypted = True
        return
    if ctype in _BODY_TYPES and not name and disposition != "attachment":
        if body:
            _add_body(part, mail)
        return
    if (not name and disposition != "attachment" and part.get_content_maintype() != "text"
            and (part.get("Content-ID") or disposition == "inline")):
        return  # an inline image of an HTML body
    try:
        payload = part.get_payload(decode=True)
    except Exception as exc:  # noqa: BLE001
        mail.warnings.append(f"attachment {name!r} not decodable: {type(exc).__name__}: {exc}")
        return
    if payload is None:
        return
    meta = {"content_type": ctype, "filename": name, "disposition": disposition,
            "content_id": _header(part, "Content-ID") or None}
    if ctype in _BINHEX_TYPES:
        try:
            stored, payload = binhex_decode(payload, mail.ctx.limits.max_member_bytes)
            meta["encoding"] = "binhex"
            name = name or stored
        except (ValueError, KeyError, IndexError, UnicodeDecodeError) as exc:
            mail.warnings.append(f"attachment {name!r}: BinHex data not decodable ({exc}); "
                                 f"kept as sent")
    mail.attach(name, payload, meta, ctype)


def _add_body(part: Message, mail: _Mail) -> None:
    ctype = part.get_content_type()
    try:
        payload = part.get_payload(decode=True) or b""
    except Exception:  # noqa: BLE001
        payload = str(part.get_payload()).encode("utf-8", "surrogateescape")
    text, warning = decode_text(payload, part.get_content_charset())
    if warning:
        mail.warnings.append(warning)
    if ctype == "text/html":
        text = html_to_text(text)
    elif ctype in ("text/enriched", "text/richtext"):
        text = re.sub(r"<[^>]*>", "", text)
    else:
        text, blocks = split_uuencoded(text)
        for uu_name, data in blocks:
            mail.attach(uu_name, data, {"content_type": _guess_type(uu_name), "filename": uu_name,
                                        "disposition": "inline", "encoding": "uuencode"},
                        _guess_type(uu_name))
    if text.strip():
        mail.body.append(text)


def _guess_type(name: str) -> str:
    import mimetypes

    return mimetypes.guess_type(name, strict=False)[0] or "application/octet-stream"


def _attach_message(part: Message, mail: _Mail) -> None:
    payload = part.get_payload()
    inner = payload[0] if isinstance(payload, list) and payload else None
    cte = str(part.get("Content-Transfer-Encoding", "") or "").strip().lower()
    if isinstance(inner, Message) and cte in ("base64", "quoted-printable"):
        # the parser read the encoded text as a mail (no headers, the base64 as its body):
        # decode it, then it is the enclosed mail
        import binascii
        import quopri

        raw = _serialize(inner, mail.linesep)
        data = binascii.a2b_base64(raw) if cte == "base64" else quopri.decodestring(raw)
        data = data.lstrip(b"\r\n")
        subject = _header(email.message_from_bytes(data, policy=email.policy.default), "Subject")
    elif isinstance(inner, Message):
        data = _serialize(inner, mail.linesep)
        subject = _header(inner, "Subject")
    else:
        data = part.get_payload(decode=True) or b""
        subject = ""
    name = _filename(part)
    meta = {"content_type": "message/rfc822", "filename": name,
            "disposition": part.get_content_disposition(), "subject": subject or None}
    mail.attach(name, data, meta, "message/rfc822")


def _serialize(msg: Message, linesep: str) -> bytes:
    buf = io.BytesIO()
    try:
        policy = email.policy.default.clone(linesep=linesep, refold_source="none",
                                            max_line_length=None)
        email.generator.BytesGenerator(buf, mangle_from_=False, policy=policy).flatten(msg)
    except Exception:  # noqa: BLE001 - odd structure: fall back to the legacy generator
        buf = io.BytesIO()
        email.generator.BytesGenerator(buf, mangle_from_=False,
                                       policy=email.policy.compat32).flatten(msg)
    return buf.getvalue()


# -- MSG (Outlook) --------------------------------------------------------------------
_PID_SUBJECT = 0x0037
_PID_BODY = 0x1000
_PID_TRANSPORT_HEADERS = 0x007D
_PID_SENDER_NAME = 0x0C1A
_PID_SENDER_EMAIL = 0x0C1F
_PID_SENDER_SMTP = 0x5D01
_PID_SENT_REPRESENTING_NAME = 0x0042
_PID_SMTP_ADDRESS = 0x39FE
_PID_EMAIL_ADDRESS = 0x3003
_PID_MESSAGE_CODEPAGE = 0x3FFD
_PID_INTERNET_CODEPAGE = 0x3FDE
_PID_DISPLAY_TO = 0x0E04
_PID_DISPLAY_CC = 0x0E03
_PID_DISPLAY_BCC = 0x0E02
_PID_RECIPIENT_TYPE = 0x0C15
_PID_ATTACH_METHOD = 0x3705
_PID_ATTACH_FILENAME = 0x3704
_PID_DISPLAY_NAME = 0x3001
_PID_ATTACH_CONTENT_ID = 0x3712
_PID_RTF_COMPRESSED = 0x1009
_PID_HTML = 0x1013
_EMBEDDED_STORAGE = "__substg1.0_3701000D"
_EMBEDDED_HDR_OFFSET = 24  # MS-OXMSG 2.4.1.2: properties header of an embedded message


def _oxmsg():
    try:
        import oxmsg
        from oxmsg.properties import Properties
    except ImportError as exc:
        raise ExtractionError(ErrorCode.EXTRACTOR_CRASH, f"msg: python-oxmsg not importable: {exc}") from exc
    return oxmsg, Properties


def _extract_msg(path: Path, mime: str, ctx: ExtractContext) -> Extraction:
    oxmsg, _ = _oxmsg()
    try:
        msg = oxmsg.Message.load(str(path))
        _ = msg.properties  # parse now: errors belong to "corrupt"
    except ExtractionError:
        raise
    except Exception as exc:  # noqa: BLE001 - olefile/oxmsg raise many kinds
        raise ExtractionError(ErrorCode.CORRUPT, f"msg: {type(exc).__name__}: {exc}") from exc
    mail = _Mail(ctx, path)
    mail.linesep = "\r\n"
    with mail.writer:
        subject, headers, body, html = _msg_fields(msg, mail.warnings)
        elements = _header_elements(subject, headers)
        if body and body.strip():
            elements.extend(_paragraphs(body))
        elif html:
            elements.extend(_paragraphs(html_to_text(html)))
        elif _safe(lambda: msg.properties.binary_prop_value(_PID_RTF_COMPRESSED)):
            mail.warnings.append("body stored only as compressed RTF: not extracted")
        for att in _safe(lambda: msg.attachments, ()) or ():
            _msg_attachment(att, mail)
        try:
            from importlib.metadata import version as _v

            lib = _v("python-oxmsg")
        except Exception:  # noqa: BLE001
            lib = "unknown"
        return mail.result(elements, "msg/python-oxmsg", f"python-oxmsg-{lib}+{OUR_VERSION}",
                           mime)


def _safe(fn, default=None):
    try:
        return fn()
    except Exception:  # noqa: BLE001 - one unreadable property must not sink the message
        return default


def _clean(s: str | None) -> str:
    return (s or "").replace("\x00", "").strip()


def _str8_encoding(props) -> str:
    """PtypString8 properties are in the message code page; oxmsg falls back to Latin-9
    when that is absent, which garbles e.g. Big5 mail: use the internet code page then."""
    from oxmsg.domain.encodings import encoding_from_codepage

    for pid in (_PID_MESSAGE_CODEPAGE, _PID_INTERNET_CODEPAGE):
        cp = _safe(lambda: props.int_prop_value(pid))
        if cp:
            enc = _safe(lambda: encoding_from_codepage(cp))
            if enc:
                return enc
    return "cp1252"


def _format_date(value) -> str:
    from email.utils import format_datetime

    try:
        return format_datetime(value)
    except Exception:  # noqa: BLE001
        return str(value)


def _prop_text(storage, props, pid: int, encoding: str) -> str:
    """A string property: UTF-16 (PtypString) as oxmsg reads it, 8-bit (PtypString8)
    decoded here with ``encoding``."""
    name8 = f"__substg1.0_{pid:04X}001E"
    for stream in getattr(storage, "streams", ()):
        if stream.name == name8:
            return _clean(decode_text(stream.bytes_.split(b"\x00", 1)[0], encoding)[0])
    return _clean(_safe(lambda: props.str_prop_value(pid), ""))


def _msg_fields(msg, warnings: list[str]) -> tuple[str, dict[str, str], str, str]:
    props = msg.properties
    storage = msg._storage
    enc = _str8_encoding(props)
    subject = _prop_text(storage, props, _PID_SUBJECT, enc)
    transport = _prop_text(storage, props, _PID_TRANSPORT_HEADERS, enc)
    th = email.parser.HeaderParser(policy=email.policy.default).parsestr(transport) \
        if transport else None

    def from_transport(name: str) -> str:
        if th is None:
            return ""
        return _header(th, name)

    sender = from_transport("From")
    if not sender:
        sname = _prop_text(storage, props, _PID_SENDER_NAME, enc)
        saddr = _prop_text(storage, props, _PID_SENDER_SMTP, enc) or \
            _prop_text(storage, props, _PID_SENDER_EMAIL, enc)
        sender = f"{sname} <{saddr}>" if sname and saddr and sname != saddr else (sname or saddr)
        sender = sender or _prop_text(storage, props, _PID_SENT_REPRESENTING_NAME, enc)
    to, cc, bcc = [], [], []
    for r in _safe(lambda: msg.recipients, ()) or ():
        rprops = r.properties
        rst = r._storage
        name = _prop_text(rst, rprops, _PID_DISPLAY_NAME, enc)
        addr = _prop_text(rst, rprops, _PID_SMTP_ADDRESS, enc) or \
            _prop_text(rst, rprops, _PID_EMAIL_ADDRESS, enc)
        shown = f"{name} <{addr}>" if name and addr and name != addr else (name or addr)
        rtype = _safe(lambda: rprops.int_prop_value(_PID_RECIPIENT_TYPE), 1)
        {2: cc, 3: bcc}.get(rtype, to).append(shown)
    to_s = ", ".join(x for x in to if x) or from_transport("To") or \
        _prop_text(storage, props, _PID_DISPLAY_TO, enc)
    cc_s = ", ".join(x for x in cc if x) or from_transport("Cc") or \
        _prop_text(storage, props, _PID_DISPLAY_CC, enc)
    bcc_s = ", ".join(x for x in bcc if x)
    sent = _safe(lambda: msg.sent_date)
    headers = {"From": sender, "To": to_s, "Cc": cc_s, "Bcc": bcc_s,
               "Date": _format_date(sent) if sent else from_transport("Date")}
    body = _prop_text(storage, props, _PID_BODY, _safe(lambda: props.body_encoding) or enc)
    html = ""
    raw_html = _safe(lambda: props.binary_prop_value(_PID_HTML), None)
    if raw_html:
        html, warning = decode_text(raw_html, _safe(lambda: props.body_encoding) or enc)
        if warning:
            warnings.append(f"HTML body: {warning}")
    elif not body:
        html = _safe(lambda: msg.html_body, "") or ""
    return subject, headers, body, html


def _msg_attachment(att, mail: _Mail) -> None:
    props = att.properties
    method = _safe(lambda: props.int_prop_value(_PID_ATTACH_METHOD), 1) or 1
    name = _clean(_safe(lambda: att.file_name)) or \
        _clean(_safe(lambda: props.str_prop_value(_PID_ATTACH_FILENAME))) or \
        _clean(_safe(lambda: props.str_prop_value(_PID_DISPLAY_NAME))) or None
    if method == 5:  # an attached Outlook message: rebuilt as .eml
        storage = next((s for s in att._storage.storages if s.name == _EMBEDDED_STORAGE), None)
        if storage is None:
            mail.warnings.append(f"attached message {name!r} not readable")
            return
        try:
            data, subject = _embedded_to_eml(storage, mail)
        except ExtractionError:
            raise
        except Exception as exc:  # noqa: BLE001
            mail.warnings.append(f"attached message {name!r} not readable: "
                                 f"{type(exc).__name__}: {exc}")
            return
        eml_name = name or (f"{subject}.eml" if subject else None)
        if eml_name and not eml_name.lower().endswith((".eml", ".msg")):
            eml_name += ".eml"
        elif eml_name and eml_name.lower().endswith(".msg"):
            eml_name = eml_name[:-4] + ".eml"
        mail.attach(eml_name, data, {"content_type": "message/rfc822", "filename": name,
                                     "disposition": "attachment", "subject": subject or None,
                                     "converted_from": "msg"}, "message/rfc822")
        return
    if method == 6:
        mail.warnings.append(f"attachment {name!r}: embedded OLE object, not extracted")
        return
    if method in (2, 3, 4, 7):
        mail.warnings.append(f"attachment {name!r}: a link to a file, not its content")
        return
    data = _safe(lambda: att.file_bytes)
    if data is None:
        return
    ctype = _clean(_safe(lambda: att.mime_type)) or "application/octet-stream"
    cid = _clean(_safe(lambda: props.str_prop_value(_PID_ATTACH_CONTENT_ID))) or None
    mail.attach(name, data, {"content_type": ctype, "filename": name,
                             "disposition": "attachment", "content_id": cid}, ctype)


def _embedded_to_eml(storage, mail: _Mail) -> tuple[bytes, str]:
    """An attached Outlook message -> RFC 822 bytes (headers, body, its attachments)."""
    oxmsg, Properties = _oxmsg()

    class _Embedded(oxmsg.Message):
        @property
        def properties(self):  # noqa: D401 - embedded messages have a shorter header
            if not hasattr(self, "_emb_props"):
                self._emb_props = Properties(storage, properties_header_offset=_EMBEDDED_HDR_OFFSET)
            return self._emb_props

        @property
        def _properties(self):
            return self.properties

    inner = _Embedded(storage)
    warnings: list[str] = []
    subject, headers, body, html = _msg_fields(inner, warnings)
    out = EmailMessage()
    for key in ("From", "To", "Cc", "Date"):
        if headers.get(key):
            try:
                out[key] = headers[key]
            except Exception:  # noqa: BLE001 - not a valid address list: keep as text
                out[f"X-Original-{key}"] = headers[key]
    if subject:
        out["Subject"] = subject
    if body:
        out.set_content(body)
    elif html:
        out.set_content(html, subtype="html")
    else:
        out.set_content("")
    limits = mail.ctx.limits
    total = 0
    for i, att in enumerate(_safe(lambda: inner.attachments, ()) or (), 1):
        data = _safe(lambda: att.file_bytes)
        if not data:
            continue
        total += len(data)
        if len(data) > limits.max_member_bytes or total > limits.max_expanded_bytes or \
                i > limits.max_members:
            mail.warnings.append(f"attached message {subject!r}: attachment {i} left out (limits)")
            continue
        ctype = _clean(_safe(lambda: att.mime_type)) or "application/octet-stream"
        maintype, _, subtype = ctype.partition("/")
        fname = _clean(_safe(lambda: att.file_name)) or f"attachment-{i}{extension_for(ctype)}"
        out.add_attachment(data, maintype=maintype or "application",
                           subtype=subtype or "octet-stream", filename=fname)
    policy = email.policy.default.clone(linesep="\r\n")
    return out.as_bytes(policy=policy), subject
