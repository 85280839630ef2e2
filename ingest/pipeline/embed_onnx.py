"""The ONNX Runtime embedding backend: model ids ``<model>#onnx`` (fp32) and ``<model>#onnx-int8``.

The ONNX file is built from the model's own weights on first use (or ``ingest embed build``):
``torch.onnx.export`` of the transformer with sentence-transformers' mean pooling and L2
normalisation inside the graph, then, for ``onnx-int8``, ``onnxruntime.quantization.
quantize_dynamic`` with the settings in :data:`INT8_SETTINGS`. Nothing is downloaded. The file
is cached under ``$INGEST_EMBED_CACHE`` (default ``$XDG_CACHE_HOME/ingest/onnx``, i.e.
``~/.cache/ingest/onnx``) beside a JSON sidecar holding its sha256 and the key of what it was
built from (weights, exporter settings); a file whose checksum or key does not match is built
again. At load time the file is read once from one descriptor (no links followed, size from
``fstat``, bounded), its checksum verified on those bytes, and the session created from the
same bytes.

Only the build imports torch; loading and running need ``onnxruntime``, ``tokenizers`` and
numpy, so a cold query costs about a second instead of ten.
"""
from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import stat
import threading
from pathlib import Path

from ingest.config import settings
from ingest.pipeline.embed import Embedder, embed_device, embed_threads

log = logging.getLogger("ingest.pipeline.embed")

BUILD_VERSION = 1  # bump when the export or quantization below changes: cached files are rebuilt
OPSET = 17
# Dynamic (activations quantized per batch at run time), per-channel weights, MatMul only.
# Measured on all-MiniLM-L6-v2 (bench/embed.py): ONNX Runtime's defaults (per-tensor, every
# quantizable op incl. Gather/Attention) give mean cosine 0.94 to PyTorch; per-channel MatMul
# weights keep mean >= 0.99. See the README ("Embedding backends").
INT8_SETTINGS = {"per_channel": True, "op_types_to_quantize": ["MatMul"], "weight_type": "QInt8",
                 "reduce_range": False}
MAX_MODEL_BYTES = 2 << 30  # a cached model file larger than this is refused, not read

_build_lock = threading.RLock()  # an int8 build first builds (or verifies) the fp32 file


class OnnxBuildError(RuntimeError):
    pass


def cache_dir() -> Path:
    d = settings().embed_cache
    if d:
        return Path(d).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "ingest" / "onnx"


def _source_key(model_dir: Path, variant: str) -> str:
    """What the file is built from: the model's config and weights (size, mtime) and our settings."""
    h = hashlib.sha256()
    h.update(json.dumps([BUILD_VERSION, OPSET, variant, INT8_SETTINGS if variant == "onnx-int8" else None]).encode())
    for name in ("config.json", "modules.json", "1_Pooling/config.json", "sentence_bert_config.json"):
        p = model_dir / name
        h.update(name.encode() + b"\0" + (p.read_bytes() if p.is_file() else b"-") + b"\0")
    for name in ("model.safetensors", "pytorch_model.bin"):
        p = model_dir / name
        if p.is_file():
            st = p.stat()
            h.update(f"{name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()


def check_pooling(model_dir: Path) -> None:
    """The graph implements mean pooling (+ L2 normalisation): refuse models that pool otherwise."""
    p = model_dir / "1_Pooling" / "config.json"
    if p.is_file():
        cfg = json.loads(p.read_text())
        modes = [k for k, v in cfg.items() if k.startswith("pooling_mode") and v]
        if modes != ["pooling_mode_mean_tokens"]:
            raise OnnxBuildError(f"ONNX backend: {model_dir} pools with {modes or 'nothing'}; "
                                 "only mean pooling is supported (use the torch backend)")


def _read_bounded(path: Path) -> bytes:
    """The file's bytes, read once from one descriptor opened without following links."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise OnnxBuildError(f"{path}: a symbolic link, not followed") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OnnxBuildError(f"{path}: not a regular file")
        if st.st_size > MAX_MODEL_BYTES:
            raise OnnxBuildError(f"{path}: {st.st_size} bytes, more than the {MAX_MODEL_BYTES} allowed")
        chunks, left = [], st.st_size
        while left > 0:
            b = os.read(fd, min(left, 1 << 24))
            if not b:
                break
            chunks.append(b)
            left -= len(b)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _export(model_dir: Path, out: Path, max_len: int) -> None:
    """torch.onnx.export of transformer + mean pooling + L2 normalisation (torch imported here only)."""
    import torch
    from transformers import AutoModel

    class Pooled(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask, token_type_ids):
            h = self.m(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)[0]
            mask = attention_mask.unsqueeze(-1).to(h.dtype)
            pooled = (h * mask).sum(1) / mask.sum(1).clamp(min=1e-9)  # sentence-transformers' Pooling
            return torch.nn.functional.normalize(pooled, p=2, dim=1)  # its Normalize module

    model = AutoModel.from_pretrained(str(model_dir), local_files_only=True, attn_implementation="eager")
    model.eval()
    ids = torch.ones((2, 16), dtype=torch.long)
    args = (ids, torch.ones_like(ids), torch.zeros_like(ids))
    axes = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"},
            "token_type_ids": {0: "batch", 1: "seq"}, "sentence_embedding": {0: "batch"}}
    with torch.no_grad():
        torch.onnx.export(Pooled(model), args, str(out), input_names=["input_ids", "attention_mask", "token_type_ids"],
                          output_names=["sentence_embedding"], dynamic_axes=axes, opset_version=OPSET,
                          do_constant_folding=True, dynamo=False)


def _quantize(src: Path, out: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    s = INT8_SETTINGS
    quantize_dynamic(str(src), str(out), per_channel=s["per_channel"], reduce_range=s["reduce_range"],
                     op_types_to_quantize=s["op_types_to_quantize"], weight_type=getattr(QuantType, s["weight_type"]))


def build(model_dir: Path, variant: str, *, max_len: int = 256, force: bool = False) -> Path:
    """The cached ONNX file of ``model_dir`` for ``variant`` (``onnx`` or ``onnx-int8``), built
    when missing, stale or corrupt. Safe against concurrent builders (a lock file per model)."""
    return load_verified(model_dir, variant, build_missing=True, force=force, max_len=max_len)[1]


def _paths(model_dir: Path, variant: str) -> tuple[Path, Path, str]:
    key = _source_key(model_dir, variant)
    d = cache_dir()
    stem = f"{model_dir.name}-{key[:16]}-{variant}"
    return d / f"{stem}.onnx", d / f"{stem}.json", key


def _verified(path: Path, side: Path, key: str) -> bytes | None:
    try:
        meta = json.loads(_read_bounded(side))
        data = _read_bounded(path)
    except (OSError, ValueError, OnnxBuildError):
        return None
    if meta.get("key") != key:
        return None
    if hashlib.sha256(data).hexdigest() != meta.get("sha256"):
        log.warning("embedding cache %s: checksum mismatch, building it again", path)
        return None
    return data


def load_verified(model_dir: Path, variant: str, *, build_missing: bool = True, force: bool = False,
                  max_len: int = 256) -> tuple[bytes, Path]:
    """(bytes of the verified ONNX file, its path); builds it first when needed."""
    if variant not in ("onnx", "onnx-int8"):
        raise ValueError(f"ONNX backend: unknown variant {variant!r}")
    path, side, key = _paths(model_dir, variant)
    if not force:
        data = _verified(path, side, key)
        if data is not None:
            return data, path
    if not build_missing:
        raise OnnxBuildError(f"{path}: missing or stale")
    check_pooling(model_dir)
    import fcntl
    import tempfile
    import time

    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with _build_lock, open(path.parent / f".{path.stem}.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be building the same file
        if not force:
            data = _verified(path, side, key)
            if data is not None:
                return data, path
        t0 = time.monotonic()
        log.info("building %s ONNX model from %s (once; cached in %s)", variant, model_dir, path.parent)
        with tempfile.TemporaryDirectory(dir=path.parent, prefix=".build-") as tmp:
            if variant == "onnx-int8":  # quantized from the (verified, cached) fp32 export
                _, fp32 = load_verified(model_dir, "onnx", max_len=max_len)
                final = Path(tmp) / "model-int8.onnx"
                _quantize(fp32, final)
            else:
                final = Path(tmp) / "model.onnx"
                _export(model_dir, final, max_len)
            data = final.read_bytes()
            digest = hashlib.sha256(data).hexdigest()
            os.replace(final, path)
            tmp_side = Path(tmp) / "meta.json"
            tmp_side.write_text(json.dumps({"key": key, "sha256": digest, "variant": variant, "model": str(model_dir),
                                            "build_version": BUILD_VERSION, "opset": OPSET,
                                            "int8": INT8_SETTINGS if variant == "onnx-int8" else None}, indent=1))
            os.replace(tmp_side, side)
        log.info("built %s (%d bytes) in %.1f s", path.name, len(data), time.monotonic() - t0)
        return data, path


def providers() -> list:
    """CUDA when ONNX Runtime has it and ``$INGEST_DEVICE`` does not say cpu; else the CPU."""
    import onnxruntime as ort

    dev = embed_device()
    if dev != "cpu" and "CUDAExecutionProvider" in ort.get_available_providers():
        idx = int(dev.split(":", 1)[1]) if dev and ":" in dev else 0
        return [("CUDAExecutionProvider", {"device_id": idx}), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class OnnxEmbedder(Embedder):
    """Same interface as :class:`ingest.pipeline.embed.Embedder`; vectors from ONNX Runtime."""

    def __init__(self, model_id: str, batch_size: int | None = None):
        super().__init__(model_id, batch_size or 32)
        if self.backend not in ("onnx", "onnx-int8"):
            raise ValueError(f"OnnxEmbedder: {model_id!r} is not an ONNX model id")

    def _load(self):
        import onnxruntime as ort

        data, path = load_verified(self.dir, self.backend, max_len=self.max_tokens + 2)
        so = ort.SessionOptions()
        threads = embed_threads()
        if threads:  # several worker processes share the cores: one intra-op pool each
            so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        prov = providers()
        sess = ort.InferenceSession(data, sess_options=so, providers=prov)
        self.on_gpu = sess.get_providers()[0] == "CUDAExecutionProvider"
        if self.on_gpu and self.batch_size < 128:
            self.batch_size = 128  # a GPU wants larger batches; 128 x 256 tokens fits any card
        log.debug("loaded %s with %s", path.name, sess.get_providers())
        return sess

    @property
    def encoder(self):
        """A tokenizer that truncates at the model's length (the counting one does not)."""
        tok = self.__dict__.get("_enc")
        if tok is None:
            from tokenizers import Tokenizer

            tok = Tokenizer.from_file(str(self.dir / "tokenizer.json"))
            tok.enable_truncation(max_length=self.max_tokens + 2)
            tok.no_padding()
            self.__dict__["_enc"] = tok
        return tok

    def encode(self, texts: list[str]):
        import numpy as np

        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            sess = self.model
            encs = self.encoder.encode_batch(list(texts))
            order = sorted(range(len(encs)), key=lambda i: -len(encs[i].ids))  # little padding per batch
            out = np.empty((len(texts), self.dim), dtype=np.float32)
            for s in range(0, len(order), self.batch_size):
                idx = order[s:s + self.batch_size]
                n = max(len(encs[i].ids) for i in idx)
                ids = np.zeros((len(idx), n), dtype=np.int64)
                mask = np.zeros((len(idx), n), dtype=np.int64)
                for r, i in enumerate(idx):
                    e = encs[i].ids
                    ids[r, :len(e)] = e
                    mask[r, :len(e)] = 1
                out[idx] = sess.run(None, {"input_ids": ids, "attention_mask": mask,
                                           "token_type_ids": np.zeros_like(ids)})[0]
            self.computed += len(texts)
        return out
