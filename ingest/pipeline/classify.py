"""Classification labels: PII and credential detectors, source labels, and per-label policies.

Detectors (regular expressions, then a validator that rejects look-alikes):

=====================  =====================================================================
``pii:email``          an address with a dotted, alphabetic top-level domain (``icon@2x.png`` is not one)
``pii:phone``          ``+CC ...`` with 8-15 digits, or a North American ``(415) 555-2671`` / ``415-555-2671``
``pii:payment_card``   13-19 digits (spaces/dashes between groups), a known card prefix and the Luhn check
``pii:iban``           country code, check digits, the country's length and the ISO 13616 mod-97 check
``pii:ssn``            ``AAA-GG-SSSS`` (or 9 digits right after "SSN"), with the SSA area/group/serial rules
``pii:ip_address``     IPv4 (no leading zeros, not after "version"/"v") and IPv6 (``ipaddress`` decides)
``secret:api_key``     well-known key formats (AWS, GitHub, Slack, Stripe, Google, OpenAI) and
                       ``api_key = <high-entropy value>`` assignments
``secret:private_key`` ``-----BEGIN ... PRIVATE KEY-----`` blocks
=====================  =====================================================================

Source labels come from the document's source (``ingest.sources.labels``): a sidecar file beside
a local file, the ``user.ingest.labels`` extended attribute, or a DMS item's metadata.

Policies (``[labels] policy`` in the config, see :class:`LabelPolicy`) decide per label:
``index`` (default), ``redact`` (detected spans are replaced *before* the text is chunked,
so neither stored text, the FTS index nor the embedding input holds them) or ``skip`` (the
document is not indexed at all; its code is ``policy-skip``).
"""
from __future__ import annotations

import fnmatch
import ipaddress
import math
import re
from dataclasses import dataclass, field, replace

from ingest.config import section

EMAIL, PHONE, CARD, IBAN, SSN, IP = ("pii:email", "pii:phone", "pii:payment_card", "pii:iban", "pii:ssn",
                                     "pii:ip_address")
API_KEY, PRIVATE_KEY = "secret:api_key", "secret:private_key"
DETECTOR_LABELS = (PRIVATE_KEY, API_KEY, IBAN, CARD, SSN, EMAIL, PHONE, IP)  # also the overlap priority

POLICIES = ("index", "redact", "skip")


# -- validators ---------------------------------------------------------------------------
def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def card_brand(digits: str) -> str | None:
    """The card scheme a number's prefix and length belong to, or None."""
    n, p2, p4 = len(digits), int(digits[:2]), int(digits[:4])
    if digits[0] == "4" and n in (13, 16, 19):
        return "visa"
    if (51 <= p2 <= 55 or 2221 <= p4 <= 2720) and n == 16:
        return "mastercard"
    if p2 in (34, 37) and n == 15:
        return "amex"
    if (digits.startswith("6011") or p2 == 65 or 644 <= int(digits[:3]) <= 649) and n in (16, 19):
        return "discover"
    if 3528 <= p4 <= 3589 and 16 <= n <= 19:
        return "jcb"
    if (p2 in (36, 38, 39) or 300 <= int(digits[:3]) <= 305) and 14 <= n <= 19:
        return "diners"
    if p2 == 62 and 16 <= n <= 19:
        return "unionpay"
    return None


def card_ok(digits: str) -> bool:
    return 13 <= len(digits) <= 19 and card_brand(digits) is not None and luhn_ok(digits)


# ISO 13616 lengths (SWIFT IBAN registry) for the countries that issue IBANs
IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29,
    "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20, "EG": 29,
    "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28,
    "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20,
    "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19,
    "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29,
    "RO": 24, "RS": 22, "SA": 24, "SC": 31, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}


def iban_ok(iban: str) -> bool:
    s = iban.replace(" ", "").upper()
    if IBAN_LENGTHS.get(s[:2]) != len(s) or not s[2:4].isdigit() or not s.isalnum():
        return False
    rearranged = s[4:] + s[:4]
    return int("".join(str(int(ch, 36)) for ch in rearranged)) % 97 == 1


def ssn_ok(area: str, group: str, serial: str) -> bool:
    a = int(area)
    if a == 0 or a == 666 or a >= 900 or group == "00" or serial == "0000":
        return False
    return f"{area}-{group}-{serial}" not in ("078-05-1120", "219-09-9999", "123-45-6789")  # published samples


def _entropy(s: str) -> float:
    counts = {c: s.count(c) for c in set(s)}
    return -sum(n / len(s) * math.log2(n / len(s)) for n in counts.values())


# -- detectors ----------------------------------------------------------------------------
_PRIVATE_KEY = re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"
                          r"(?:.*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----|.*\Z)", re.S)
_KNOWN_KEYS = re.compile(
    r"(?<![A-Za-z0-9])(?:"
    r"(?:AKIA|ASIA)[0-9A-Z]{16}"                     # AWS access key id
    r"|gh[pousr]_[A-Za-z0-9]{36,255}"                # GitHub tokens
    r"|github_pat_[A-Za-z0-9_]{60,255}"
    r"|xox[abprs]-[A-Za-z0-9-]{10,}"                 # Slack
    r"|(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16,}"     # Stripe
    r"|AIza[0-9A-Za-z_-]{35}"                        # Google API key
    r"|sk-(?:proj-)?[A-Za-z0-9_-]{32,}"              # OpenAI-style
    r")(?![A-Za-z0-9])")
_ASSIGNED_SECRET = re.compile(
    r"(?i)\b(?:api[_-]?key|apikey|access[_-]?key|secret(?:[_-]?key)?|client[_-]?secret|auth[_-]?token"
    r"|access[_-]?token|token|password|passwd|pwd)\b[\"']?\s*[:=]\s*[\"']?([A-Za-z0-9_\-/+=.]{16,})")
_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?(?![A-Za-z0-9])")
_CARD = re.compile(r"(?<![\d.,-])\d(?:[ -]?\d){12,18}(?![\d.,]\d|\d|-\d)")
_SSN = re.compile(r"(?<![\d-])(\d{3})-(\d{2})-(\d{4})(?![\d-])")
_SSN_KEYWORD = re.compile(r"(?i)\b(?:ssn|social security(?: number| no\.?)?)\b\D{0,20}?(\d{3})[ -]?(\d{2})[ -]?(\d{4})"
                          r"(?!\d)")
_EMAIL = re.compile(r"(?<![\w.+%-])[A-Za-z0-9](?:[A-Za-z0-9._%+-]{0,63})@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}"
                    r"[A-Za-z0-9])?\.)+([A-Za-z]{2,24})(?![\w-])")
_NOT_TLD = {"png", "jpg", "jpeg", "gif", "svg", "webp", "js", "css", "py", "md", "txt", "pdf"}
_PHONE_INTL = re.compile(r"(?<![\w+])\+\d{1,3}(?:[ .-]?\(\d{1,4}\))?(?:[ .-]?\d{1,5}){2,6}(?![\d-])")
_PHONE_NANP = re.compile(r"(?<![\w+.-])(?:\(\d{3}\)\s?|\d{3}[-. ])\d{3}[-. ]\d{4}(?![\w-]|\.\d)")
_IPV4 = re.compile(r"(?<![\w.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
                   r"(?![\w.]|\.\d)")
_VERSIONISH = re.compile(r"(?i)(?:\bv|\bversion|\bver\.?|\brelease|\brev\.?|\bbuild|\bOID)\s*$")
_IPV6 = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")


@dataclass(frozen=True)
class Finding:
    label: str
    start: int
    end: int


def _find_cards(text):
    for m in _CARD.finditer(text):
        raw = m.group(0)
        seps = set(re.sub(r"\d", "", raw))
        if len(seps) <= 1 and card_ok(re.sub(r"\D", "", raw)):
            yield m.start(), m.end()


def _find_assigned(text):
    for m in _ASSIGNED_SECRET.finditer(text):
        v = m.group(1)
        has_digit, has_alpha = any(c.isdigit() for c in v), any(c.isalpha() for c in v)
        if has_digit and has_alpha and _entropy(v) >= 3.0:
            yield m.start(1), m.end(1)


def _find_ssn(text):
    for rx in (_SSN, _SSN_KEYWORD):
        for m in rx.finditer(text):
            if ssn_ok(*m.groups()):
                yield m.start(1), m.end(3)


def _find_email(text):
    for m in _EMAIL.finditer(text):
        if m.group(1).lower() not in _NOT_TLD:
            yield m.start(), m.end()


def _find_phone(text):
    for m in _PHONE_INTL.finditer(text):
        if 8 <= sum(c.isdigit() for c in m.group(0)) <= 15:
            yield m.start(), m.end()
    for m in _PHONE_NANP.finditer(text):
        if m.group(0)[0] != "(" and "." in m.group(0) and "-" in m.group(0):
            continue  # mixed separators: not a phone number
        yield m.start(), m.end()


def _find_ip(text):
    for m in _IPV4.finditer(text):
        if not _VERSIONISH.search(text[max(0, m.start() - 12):m.start()]):
            yield m.start(), m.end()
    for m in _IPV6.finditer(text):
        s = m.group(0)
        groups = [g for g in s.split(":") if g]
        if len(groups) < 3 or not any(c.isalpha() for c in s) and "::" not in s:
            continue  # times (12:30:45), plain digit groups, C++ scopes (a::b)
        try:
            ipaddress.IPv6Address(s)
        except ValueError:
            continue
        yield m.start(), m.end()


_DETECTORS = {
    PRIVATE_KEY: lambda t: ((m.start(), m.end()) for m in _PRIVATE_KEY.finditer(t)),
    API_KEY: lambda t: [*((m.start(), m.end()) for m in _KNOWN_KEYS.finditer(t)), *_find_assigned(t)],
    IBAN: lambda t: ((m.start(), m.end()) for m in _IBAN.finditer(t) if iban_ok(m.group(0))),
    CARD: _find_cards,
    SSN: _find_ssn,
    EMAIL: _find_email,
    PHONE: _find_phone,
    IP: _find_ip,
}


def detect(text: str) -> list[Finding]:
    """Non-overlapping findings in text order; where two detectors claim the same
    characters, the one earlier in :data:`DETECTOR_LABELS` wins (an IBAN is not also a card)."""
    taken: list[Finding] = []
    for label in DETECTOR_LABELS:
        for start, end in _DETECTORS[label](text):
            if not any(start < f.end and f.start < end for f in taken):
                taken.append(Finding(label, start, end))
    return sorted(taken, key=lambda f: f.start)


def redact(text: str, findings: list[Finding], labels: set[str]) -> str:
    out, pos = [], 0
    for f in findings:
        if f.label in labels:
            out.append(text[pos:f.start])
            out.append(f"[REDACTED {f.label}]")
            pos = f.end
    out.append(text[pos:])
    return "".join(out)


# -- policies -----------------------------------------------------------------------------
@dataclass
class LabelPolicy:
    """``[labels] policy = { "pii:payment_card" = "redact", "secret:*" = "skip", ... }``;
    an exact label beats a glob, and anything not named is ``index`` (or ``[labels] default``)."""

    rules: dict[str, str] = field(default_factory=dict)
    default: str = "index"

    def __post_init__(self):
        for key, value in [*self.rules.items(), ("default", self.default)]:
            if value not in POLICIES:
                raise ValueError(f"config [labels]: policy for {key!r} is {value!r}; "
                                 f"use one of {', '.join(POLICIES)}")
        for key, value in self.rules.items():
            if value == "redact" and not any(fnmatch.fnmatchcase(d, key) for d in DETECTOR_LABELS):
                raise ValueError(f"config [labels]: {key!r} cannot be redacted: only detector labels "
                                 f"({', '.join(DETECTOR_LABELS)}) have spans to redact; use index or skip")

    @classmethod
    def from_config(cls, cfg: dict) -> "LabelPolicy":
        s = section(cfg, "labels")
        unknown = set(s) - {"policy", "default"}
        if unknown:
            raise ValueError(f"config [labels]: unknown key(s) {', '.join(sorted(unknown))}; "
                             "expected policy and default")
        rules = s.get("policy", {})
        if not isinstance(rules, dict):
            raise ValueError("config [labels]: policy must be a table of label = \"index|redact|skip\"")
        return cls(dict(rules), s.get("default", "index"))

    def for_label(self, label: str) -> str:
        if label in self.rules:
            return self.rules[label]
        globs = [k for k in self.rules if any(ch in k for ch in "*?[") and fnmatch.fnmatchcase(label, k)]
        return self.rules[max(globs, key=len)] if globs else self.default


@dataclass
class Classification:
    labels: list[str]  # source labels then detected labels, sorted within each
    elements: list  # the elements to chunk (redacted copies where a redact policy applies)
    redactions: dict[str, int]  # label -> spans replaced
    skip: str | None = None  # the label whose policy is "skip", when the document must not be indexed


def classify(elements: list, source_labels: list[str], policy: LabelPolicy) -> Classification:
    """Detect labels over every element, apply the policies, return what to chunk."""
    per_el = [detect(el.text) if el.text else [] for el in elements]
    detected = sorted({f.label for fs in per_el for f in fs})
    labels = list(dict.fromkeys([*source_labels, *detected]))
    for lab in labels:
        if policy.for_label(lab) == "skip":
            return Classification(labels, [], {}, skip=lab)
    to_redact = {lab for lab in detected if policy.for_label(lab) == "redact"}
    counts: dict[str, int] = {}
    if not to_redact:
        return Classification(labels, elements, counts)
    out = []
    for el, fs in zip(elements, per_el):
        hit = [f for f in fs if f.label in to_redact]
        for f in hit:
            counts[f.label] = counts.get(f.label, 0) + 1
        out.append(replace(el, text=redact(el.text, hit, to_redact)) if hit else el)
    return Classification(labels, out, counts)
