"""The OpenVINO embedding backend: model id ``<model>#openvino-bf16``.

It runs the same verified ONNX fp32 export as the ``onnx`` backend (built once from the model's
own weights, cached with its checksum: :mod:`ingest.pipeline.embed_onnx`), compiled by OpenVINO's
CPU plugin with bfloat16 inference precision: on a CPU that multiplies bfloat16 in hardware (AMX,
AVX512-BF16) its matrix products run in bfloat16 (layer norms and softmax stay float32), about
twice as fast as int8 ONNX Runtime there with cosine 0.99998 to the PyTorch vectors (bench/embed.py).
Loading takes about half a second and no torch, so a worker that embeds with it stays light.

Without bfloat16 in hardware OpenVINO would not be faster than int8 ONNX Runtime: the model is
compiled in float32 instead (the same vectors within cosine 0.99998) and one warning names
``ingest reembed --model <model>#onnx-int8``. ``[embed] backend = "auto"`` picks this backend only
where the hardware is there (:func:`ingest.embedding.resolve_backend`). CPU only: on a CUDA
device use ``onnx`` / ``onnx-int8`` (ONNX Runtime's CUDA provider) or ``torch-bf16``.

Queries of such a store are embedded through the ONNX Runtime fp32 export of the same file
(:func:`ingest.pipeline.embed.query_embedder`), so a cold ``ingest search`` imports neither
OpenVINO nor torch.
"""
from __future__ import annotations

import logging

from ingest.embedding import bf16_in_hardware, embed_device, embed_threads, with_backend
from ingest.pipeline.embed_onnx import OnnxEmbedder, load_verified

log = logging.getLogger("ingest.pipeline.embed")


class OpenVinoEmbedder(OnnxEmbedder):
    """The ONNX fp32 export run by OpenVINO in bfloat16 (float32 where the CPU lacks bfloat16)."""

    BACKENDS = ("openvino-bf16",)

    def _load(self):
        import openvino as ov

        if (embed_device() or "cpu").startswith("cuda"):
            log.warning("%s: OpenVINO runs on the CPU here, not on %s", self.model_id, embed_device())
        precision = "bf16" if bf16_in_hardware() else "f32"
        if precision == "f32":
            log.warning("%s: this CPU has no bfloat16 in hardware; embedding in float32 (the same vectors "
                        "within cosine 0.99998, slower than int8). `ingest reembed --model %s` moves the "
                        "store to a backend suited to this machine", self.model_id,
                        with_backend(self.model_id, "onnx-int8"))
        cfg: dict = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": precision,
                     "ENABLE_CPU_PINNING": False}  # worker processes share the cores: no pinning
        threads = embed_threads()
        if threads:  # several worker processes share the cores: one pool each
            cfg["INFERENCE_NUM_THREADS"] = threads
        model, path = load_verified(self.dir, "onnx", max_len=self.max_tokens + 2)
        try:  # read from the verified bytes (a sealed memfd by path, or the bytes themselves)
            core = ov.Core()
            compiled = core.compile_model(core.read_model(model.source()), "CPU", cfg)
        finally:
            model.close()
        self.precision = precision
        self.on_gpu = False
        log.debug("loaded %s with OpenVINO (%s)", path.name, precision)
        return compiled.create_infer_request()

    def _run(self, sess, feed: dict):
        return sess.infer(feed)[0]
