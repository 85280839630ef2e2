"""An entity's stored identity, ``TYPE:key`` (see ingest.pipeline.nlp): what the pipeline writes
into ``chunks.entities`` and what the ``entities``/``entities_any`` filters look up."""
from __future__ import annotations

import re
import unicodedata

_WS = re.compile(r"\s+")
_QUOTES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u201c": '"', "\u201d": '"', "\u00a0": " "})
_STRIP = " \t\"'`()[]{}<>,;:|*_"
_POSSESSIVE = re.compile(r"(?:'s|')$", re.IGNORECASE)
_THE = re.compile(r"^the\s+", re.IGNORECASE)


def normalise(text: str) -> str:
    """An entity's surface text as stored (display form); ``""`` when nothing is left."""
    t = unicodedata.normalize("NFKC", text).translate(_QUOTES)
    t = _WS.sub(" ", t).strip(_STRIP)
    t = _POSSESSIVE.sub("", t).strip(_STRIP)
    t = _THE.sub("", t).strip(_STRIP)
    return t


def entity_key(label: str, text: str) -> str:
    """``"ORG:globex"``: the identity of an entity (type upper case, normalised text casefolded)."""
    return f"{label.upper()}:{normalise(text).casefold()}"


def parse_entity(value: str) -> str:
    """A filter value ``"ORG:Globex Corp"`` -> its key; ValueError for a value without a type."""
    label, sep, text = value.partition(":")
    if not sep or not label.strip() or not normalise(text):
        raise ValueError(f"entity {value!r}: expected TYPE:name, e.g. 'ORG:Globex' or 'PERSON:Jane Smith'")
    return entity_key(label.strip(), text)
