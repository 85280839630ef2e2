"""Classification detectors (positives and look-alike negatives), validators, policies and
source labels (sidecar, xattr, DMS metadata). Pure functions: no model, no store."""
import json
import os

import pytest
from hypothesis import given, settings, strategies as st

from extractors.base import Element
from ingest.pipeline import classify as c
from ingest.sources import labels as source_labels


def labels_in(text):
    return [(f.label, text[f.start:f.end]) for f in c.detect(text)]


@pytest.mark.parametrize("text, label, span", [
    ("write to jane.doe+hr@example.co.uk today", c.EMAIL, "jane.doe+hr@example.co.uk"),
    ("call +44 20 7946 0958 now", c.PHONE, "+44 20 7946 0958"),
    ("call (415) 555-2671 now", c.PHONE, "(415) 555-2671"),
    ("call 415-555-2671 now", c.PHONE, "415-555-2671"),
    ("visa 4111 1111 1111 1111 exp", c.CARD, "4111 1111 1111 1111"),
    ("mc 5500-0000-0000-0004.", c.CARD, "5500-0000-0000-0004"),
    ("amex 378282246310005", c.CARD, "378282246310005"),
    ("iban DE89 3704 0044 0532 0130 00 ok", c.IBAN, "DE89 3704 0044 0532 0130 00"),
    ("iban GB82WEST12345698765432", c.IBAN, "GB82WEST12345698765432"),
    ("ssn 536-22-1234 on file", c.SSN, "536-22-1234"),
    ("SSN: 536221234", c.SSN, "536221234"),
    ("server 192.168.10.20 is down", c.IP, "192.168.10.20"),
    ("host 2001:db8::8a2e:370:7334 up", c.IP, "2001:db8::8a2e:370:7334"),
    ("id AKIAIOSFODNN7EXAMPLE used", c.API_KEY, "AKIAIOSFODNN7EXAMPLE"),
    ("token ghp_" + "a1B2" * 9 + " leaked", c.API_KEY, "ghp_" + "a1B2" * 9),
    ('api_key = "a8f5f167f44f4964e6c998dee827110c"', c.API_KEY, "a8f5f167f44f4964e6c998dee827110c"),
])
def test_detectors_find_the_real_thing(text, label, span):
    assert (label, span) in labels_in(text)


def test_private_key_block_is_one_span_even_unterminated():
    block = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----"
    assert labels_in(f"key:\n{block}\nafter") == [(c.PRIVATE_KEY, block)]
    cut = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC"
    assert labels_in("x " + cut) == [(c.PRIVATE_KEY, cut)]


@pytest.mark.parametrize("text", [
    "version 1.2.3.4 released",           # version, not an IP
    "v10.0.0.1 of the tool",
    "build 2023.04.01 and 3.10.12",       # dates and versions
    "meeting on 2024-01-15 at 12:30:45",  # date and time, not phone/SSN/IPv6
    "card 4111 1111 1111 1112",           # fails Luhn
    "order number 1234567890123452",      # passes Luhn but no card prefix
    "IBAN DE89 3704 0044 0532 0130 01",   # bad mod-97
    "ssn 000-12-3456 and 666-12-3456 and 912-12-3456 and 536-00-1234",  # invalid area/group
    "see icon@2x.png",                    # file name, not an address
    "ISBN 978-3-16-148410-0 page 555-1234",
    "password: hunter2",                  # short, low entropy: not a credential-looking string
    "ratio 1:2:3 and a::b",
])
def test_look_alikes_are_not_labelled(text):
    assert labels_in(text) == []


def test_validators():
    assert c.luhn_ok("4111111111111111") and not c.luhn_ok("4111111111111112")
    assert c.iban_ok("DE89370400440532013000") and not c.iban_ok("DE89370400440532013001")
    assert not c.iban_ok("DE8937040044053201300")  # wrong length for DE
    assert c.ssn_ok("536", "22", "1234") and not c.ssn_ok("666", "22", "1234")


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="0123456789", min_size=14, max_size=14))
def test_a_luhn_valid_visa_number_is_always_found(body):
    digits = "4" + body
    check = next(d for d in "0123456789" if c.luhn_ok(digits + d))
    number = digits + check
    grouped = " ".join(number[i:i + 4] for i in range(0, 16, 4))
    assert (c.CARD, grouped) in labels_in(f"pay {grouped} now")
    assert c.redact(f"pay {grouped}", c.detect(f"pay {grouped}"), {c.CARD}) == "pay [REDACTED pii:payment_card]"


def test_overlaps_go_to_the_stronger_detector():
    # the digits of an IBAN could pass for a card number; the IBAN wins and nothing is double-counted
    assert [l for l, _ in labels_in("DE89 3704 0044 0532 0130 00")] == [c.IBAN]


def test_policy_config_and_errors():
    p = c.LabelPolicy.from_config({"labels": {"policy": {"pii:payment_card": "redact", "secret:*": "skip",
                                                         "secret:api_key": "index"}}})
    assert p.for_label("pii:payment_card") == "redact"
    assert p.for_label("secret:private_key") == "skip"   # glob
    assert p.for_label("secret:api_key") == "index"      # exact beats glob
    assert p.for_label("pii:email") == "index"           # default
    with pytest.raises(ValueError, match="'pii:email' is 'delete'"):
        c.LabelPolicy({"pii:email": "delete"})
    with pytest.raises(ValueError, match="cannot be redacted"):
        c.LabelPolicy({"sensitivity:secret": "redact"})
    with pytest.raises(ValueError, match="unknown key"):
        c.LabelPolicy.from_config({"labels": {"polcy": {}}})


def test_classify_redacts_only_redact_labels_and_skips():
    els = [Element("heading", "Contact jane@example.com"), Element("paragraph", "Card 4111 1111 1111 1111, ok.")]
    cls = c.classify(els, ["sensitivity:internal"], c.LabelPolicy({"pii:payment_card": "redact"}))
    assert cls.labels == ["sensitivity:internal", c.EMAIL, c.CARD]
    assert cls.elements[0] is els[0]  # e-mail policy is index: untouched
    assert cls.elements[1].text == "Card [REDACTED pii:payment_card], ok."
    assert cls.redactions == {c.CARD: 1} and cls.skip is None
    assert els[1].text.startswith("Card 4111")  # the extraction itself is not modified
    skip = c.classify(els, ["sensitivity:secret"], c.LabelPolicy({"sensitivity:*": "skip"}))
    assert skip.skip == "sensitivity:secret" and skip.elements == []


def test_source_labels_from_sidecars_and_xattr(tmp_path):
    f = tmp_path / "report.pdf"
    f.write_bytes(b"x")
    assert source_labels.source_labels_for_path(f) == []
    (tmp_path / "report.pdf.labels").write_text("confidential\nproject:apollo\n\n")
    (tmp_path / "report.pdf.labels.json").write_text(json.dumps({"labels": ["legal-hold", "confidential"]}))
    os.setxattr(f, source_labels.XATTR, b"sensitivity:restricted, team/finance")
    assert source_labels.source_labels_for_path(f) == ["confidential", "project:apollo", "legal-hold", "sensitivity:restricted",
                                           "team/finance"]
    (tmp_path / "report.pdf.labels.json").write_text("[1, 2")
    with pytest.raises(ValueError, match=r"report\.pdf\.labels\.json: not valid JSON"):
        source_labels.source_labels_for_path(f)
    (tmp_path / "report.pdf.labels.json").write_text('["bad;label"]')
    with pytest.raises(ValueError, match="label #1 has characters") as err:
        source_labels.source_labels_for_path(f)
    assert "bad;label" not in str(err.value)  # a sidecar's content is never quoted


def test_labels_from_dms_metadata():
    meta = {"sensitivityLabel": {"displayName": "Highly Confidential"}, "tags": "hr, payroll",
            "classification": "Secret", "title": "ignored"}
    assert source_labels.labels_from_metadata(meta) == ["hr", "payroll", "sensitivity:highly confidential",
                                            "classification:secret"]
    assert source_labels.labels_from_metadata(None) == [] and source_labels.labels_from_metadata({"sensitivity": "  "}) == []
