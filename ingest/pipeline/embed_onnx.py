"""The ONNX Runtime embedding backend: model ids ``<model>#onnx`` (fp32) and ``<model>#onnx-int8``.

The ONNX file is built from the model's own weights on first use (or ``ingest embed build``):
``torch.onnx.export`` of the transformer with sentence-transformers' mean pooling and L2
normalisation inside the graph, then, for ``onnx-int8``, ``onnxruntime.quantization.
quantize_dynamic`` with the settings in :data:`INT8_SETTINGS`. Nothing is downloaded. The file
is cached under ``$INGEST_EMBED_CACHE`` (default ``$XDG_CACHE_HOME/ingest/onnx``, i.e.
``~/.cache/ingest/onnx``) beside a JSON sidecar holding its sha256 and the key of what it was
built from (weights, exporter settings); a file whose checksum or key does not match is built
again. At load time the file is opened once (no links followed, size from ``fstat``, bounded),
copied in the kernel into a sealed ``memfd`` (no write, shrink or grow once sealed), its checksum
verified on those bytes, and the session created from the same bytes (ONNX Runtime reads the
memfd by path: no copy in Python, none held by the session). The graph ONNX Runtime optimises
from it is kept beside it with its own checksum and loaded instead next time
(:func:`_optimized_paths`).

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
from ingest.embedding import EmbedderBase, cpu_flags, embed_device, embed_threads

log = logging.getLogger("ingest.pipeline.embed")

BUILD_VERSION = 1  # bump when the export or quantization below changes: cached files are rebuilt
OPT_VERSION = 1  # bump when the session options of OnnxEmbedder._load change: optimised graphs are made again
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


def _open_bounded(path: Path) -> tuple[int, os.stat_result]:
    """(descriptor, its fstat) of a regular file of at most MAX_MODEL_BYTES, opened without
    following links."""
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
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def _read_bounded(path: Path) -> bytes:
    """The file's bytes, read once from one descriptor opened without following links."""
    fd, st = _open_bounded(path)
    try:
        first = os.read(fd, st.st_size)  # a regular file comes in one read: no second copy to join
        chunks, left = [first], st.st_size - len(first)
        while left > 0 and first:
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


def ensure_built(model_dir: Path, variant: str) -> None:
    """Build the cached file when it is missing or its sidecar names other sources; cheap when it is
    there (the checksum is verified where the file is loaded, not here)."""
    path, side, key = _paths(model_dir, variant)
    if not (_recorded_sha256(side, key) and path.is_file()):
        build(model_dir, variant)


def build(model_dir: Path, variant: str, *, max_len: int = 256, force: bool = False) -> Path:
    """The cached ONNX file of ``model_dir`` for ``variant`` (``onnx`` or ``onnx-int8``), built
    when missing, stale or corrupt. Safe against concurrent builders (a lock file per model)."""
    return load_verified(model_dir, variant, build_missing=True, force=force, max_len=max_len)[1]


def _paths(model_dir: Path, variant: str) -> tuple[Path, Path, str]:
    key = _source_key(model_dir, variant)
    d = cache_dir()
    stem = f"{model_dir.name}-{key[:16]}-{variant}"
    return d / f"{stem}.onnx", d / f"{stem}.json", key


class VerifiedModel:
    """The verified bytes of a cached ONNX file, as ONNX Runtime loads them: a sealed in-memory
    copy (``memfd``: no write, shrink or grow possible once it is sealed, so the bytes checked
    are the bytes loaded) that ONNX Runtime reads by path (``/proc/self/fd/N``) with no Python
    copy of it; where that is not available, the bytes themselves."""

    def __init__(self, fd: int | None = None, data: bytes | None = None, sha256: str | None = None):
        self.fd, self.data, self.sha256 = fd, data, sha256

    def source(self):
        """What ``onnxruntime.InferenceSession`` takes: a path or the bytes."""
        return f"/proc/self/fd/{self.fd}" if self.fd is not None else self.data

    def close(self) -> None:
        fd, self.fd, self.data = self.fd, None, None
        if fd is not None:
            os.close(fd)

    def __del__(self):
        self.close()


def _sealed_copy(path: Path) -> tuple[int, int] | None:
    """(sealed memfd holding the file's bytes, size): the file opened once without following
    links, bounded by ``fstat``, copied in the kernel; None where memfd/sealing is missing."""
    import fcntl

    if not (hasattr(os, "memfd_create") and hasattr(fcntl, "F_ADD_SEALS") and os.path.isdir("/proc/self/fd")):
        return None
    fd, st = _open_bounded(path)
    mfd = None
    try:
        mfd = os.memfd_create("ingest-onnx", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        off = 0
        while off < st.st_size:
            n = os.sendfile(mfd, fd, off, min(st.st_size - off, 1 << 30))
            if not n:
                break
            off += n
        fcntl.fcntl(mfd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW
                    | fcntl.F_SEAL_SEAL)
        out, mfd = (mfd, off), None
        return out
    except OSError:  # no memfd, sendfile or sealing here: the caller reads the bytes instead
        return None
    finally:
        os.close(fd)
        if mfd is not None:
            os.close(mfd)


def _sha256_fd(fd: int, size: int) -> str:
    import mmap

    if not size:
        return hashlib.sha256(b"").hexdigest()
    with mmap.mmap(fd, size, prot=mmap.PROT_READ) as m:
        return hashlib.sha256(m).hexdigest()


def _verified(path: Path, side: Path, key: str) -> VerifiedModel | None:
    try:
        meta = json.loads(_read_bounded(side))
        if meta.get("key") != key:
            return None
        sealed = _sealed_copy(path)
        model = VerifiedModel(sealed[0]) if sealed is not None else VerifiedModel(data=_read_bounded(path))
    except (OSError, ValueError, OnnxBuildError):
        return None
    digest = _sha256_fd(model.fd, sealed[1]) if model.fd is not None else hashlib.sha256(model.data).hexdigest()
    if digest != meta.get("sha256"):
        model.close()
        log.warning("embedding cache %s: checksum mismatch, building it again", path)
        return None
    model.sha256 = digest
    return model


def load_verified(model_dir: Path, variant: str, *, build_missing: bool = True, force: bool = False,
                  max_len: int = 256) -> tuple[VerifiedModel, Path]:
    """(the verified ONNX file's bytes, its path); builds it first when needed."""
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
        return VerifiedModel(data=data, sha256=digest), path


def providers() -> list:
    """CUDA when ONNX Runtime has it and ``$INGEST_DEVICE`` does not say cpu; else the CPU."""
    import onnxruntime as ort

    dev = embed_device()
    if dev != "cpu" and "CUDAExecutionProvider" in ort.get_available_providers():
        idx = int(dev.split(":", 1)[1]) if dev and ":" in dev else 0
        return [("CUDAExecutionProvider", {"device_id": idx}), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def _recorded_sha256(side: Path, key: str) -> str | None:
    """The checksum the sidecar records for the cached file built from ``key``, if any."""
    try:
        meta = json.loads(_read_bounded(side))
    except (OSError, ValueError, OnnxBuildError):
        return None
    return meta.get("sha256") if meta.get("key") == key else None


def _optimized_paths(path: Path, sha256: str, prov: list) -> tuple[Path, Path, str]:
    """(file, sidecar, key) of the graph ONNX Runtime optimised from the verified file ``path``
    (checksum ``sha256``) at ``ORT_ENABLE_ALL``: optimising the int8 graph (quantisation fusions)
    is a fifth of a cold query's work. The optimised graph may hold operators fused for this
    runtime version, execution providers and CPU, so all of them are its key."""
    import platform

    import onnxruntime as ort

    key = hashlib.sha256(json.dumps([OPT_VERSION, sha256, ort.__version__, prov, platform.machine(),
                                     " ".join(sorted(cpu_flags()))]).encode()).hexdigest()
    stem = f"{path.stem}-opt-{key[:16]}"
    return path.with_name(stem + ".onnx"), path.with_name(stem + ".json"), key


def _keep_optimized(tmp: Path, path: Path, side: Path, key: str) -> None:
    """Put the graph ONNX Runtime wrote to ``tmp`` in place with its checksum (best effort: a
    cache folder this process cannot write to only means optimising again next time)."""
    try:
        h = hashlib.sha256()
        with open(tmp, "rb") as f:
            for b in iter(lambda: f.read(1 << 24), b""):
                h.update(b)
        side_tmp = tmp.with_suffix(".json")
        side_tmp.write_text(json.dumps({"key": key, "sha256": h.hexdigest(), "optimized_from": path.name}, indent=1))
        os.replace(tmp, path)
        os.replace(side_tmp, side)
        for old in path.parent.glob(path.name.rsplit("-opt-", 1)[0] + "-opt-*"):  # of an older runtime or file
            if old.name not in (path.name, side.name):
                old.unlink()
    except OSError as e:
        log.debug("optimised ONNX graph not kept: %s", e)
    finally:
        for p in (tmp, tmp.with_suffix(".json")):
            try:
                os.unlink(p)
            except OSError:
                pass


class OnnxEmbedder(EmbedderBase):
    """Same interface as :class:`ingest.pipeline.embed.Embedder`; vectors from ONNX Runtime."""

    BACKENDS: tuple[str, ...] = ("onnx", "onnx-int8")

    def __init__(self, model_id: str, batch_size: int | None = None):
        super().__init__(model_id, batch_size or 32)
        if self.backend not in self.BACKENDS:
            raise ValueError(f"{type(self).__name__}: {model_id!r} is not a model id of "
                             f"{' or '.join(self.BACKENDS)}")

    def _load(self):
        import onnxruntime as ort

        so = ort.SessionOptions()
        threads = embed_threads()
        if threads:  # several worker processes share the cores: one intra-op pool each
            so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        prov = providers()
        cpu_only = prov == ["CPUExecutionProvider"]
        path, side, key = _paths(self.dir, self.backend)
        recorded = _recorded_sha256(side, key) if cpu_only else None
        # the graph ONNX Runtime made of this file before (keyed by the file's recorded checksum, and
        # verified on its own): neither the file nor optimising it again is needed
        model = _verified(*_optimized_paths(path, recorded, prov)) if recorded else None
        tmp = opt = None
        if model is None:
            model, path = load_verified(self.dir, self.backend, max_len=self.max_tokens + 2)
            if cpu_only:
                opt = _optimized_paths(path, model.sha256, prov)
                tmp = opt[0].with_name(f".{opt[0].stem}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
                so.optimized_model_filepath = str(tmp)
        try:
            sess = ort.InferenceSession(model.source(), sess_options=so, providers=prov)
        finally:
            model.close()
        if tmp is not None:
            _keep_optimized(tmp, *opt)
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
                out[idx] = self._run(sess, {"input_ids": ids, "attention_mask": mask,
                                            "token_type_ids": np.zeros_like(ids)})
            self.computed += len(texts)
        return out

    def _run(self, sess, feed: dict):
        """One padded batch through the loaded model: its pooled, normalised vectors."""
        return sess.run(None, feed)[0]
