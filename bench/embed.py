"""Embedding throughput per backend against raw sentence-transformers ``encode``, in one run.

    python bench/embed.py              # 2,000 SciFact chunks (title + abstract cut at ~200 words)
    python bench/embed.py --n 200      # a quick look
    python bench/embed.py --backends onnx,onnx-int8   # without the torch wrapper (= raw encode)

The same ``--n`` texts go through: raw ``SentenceTransformer.encode`` (PyTorch, batch 32, the
reference), then ``get_embedder(id).encode`` for ``torch``, ``onnx``, ``onnx-int8`` and
``torch-bf16`` and ``openvino-bf16`` (fast only where the CPU has bfloat16 in hardware: ``bf16_in_hardware`` is recorded), each
after one warm-up batch (model load and ONNX build are not timed), rounds interleaved
(``--rounds``) so load on the machine hits all alike. Reported: chunks/s, ratio to raw, and
cosine of each backend's vectors to the raw PyTorch ones (mean, min). Threads: one intra-op
pool of ``$INGEST_EMBED_THREADS`` (default: all cores) for every backend.
Writes ``bench/results/embed.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, write_results  # noqa: E402

CORPUS = REPO.parent / "shared" / "corpora" / "ir" / "scifact"
TARGET_INT8 = 1.7


def texts(n: int) -> list[str]:
    out = []
    for line in open(CORPUS / "corpus.jsonl"):
        d = json.loads(line)
        out.append((d["title"] + "\n" + " ".join(d["text"].split()[:200])).strip())
        if len(out) >= n:
            break
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--backends", default="torch,onnx,onnx-int8,torch-bf16,openvino-bf16",
                    help="comma-separated; 'torch' (get_embedder's PyTorch path) runs the same "
                    "SentenceTransformer.encode as raw, so a loaded machine may leave it out")
    a = ap.parse_args(argv)

    import numpy as np

    from ingest.embedding import bf16_in_hardware
    from ingest.pipeline.embed import DEFAULT_MODEL, get_embedder, with_backend

    xs = texts(a.n)
    ref_e = get_embedder(DEFAULT_MODEL)
    raw = ref_e.model  # the SentenceTransformer itself

    def raw_encode(t):
        return raw.encode(t, batch_size=32, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)

    runners = {"raw sentence-transformers": raw_encode}
    backends = [b.strip() for b in a.backends.split(",") if b.strip()]
    if "onnx-int8" not in backends:
        ap.error("--backends must include onnx-int8 (the target is measured on it)")
    for b in backends:
        runners[b] = get_embedder(with_backend(DEFAULT_MODEL, b)).encode
    for f in runners.values():
        f(xs[:32])  # warm-up: load (and build) outside the timing
    secs = {k: 0.0 for k in runners}
    vecs = {}
    for _ in range(a.rounds):
        for k, f in runners.items():
            t0 = time.perf_counter()
            vecs[k] = np.asarray(f(xs), dtype=np.float32)
            secs[k] += time.perf_counter() - t0
    ref = vecs["raw sentence-transformers"]
    base = a.n * a.rounds / secs["raw sentence-transformers"]
    res = {}
    print(f"{a.n} SciFact chunks x {a.rounds} rounds, threads {os.environ.get('INGEST_EMBED_THREADS', 'all')}")
    print(f"{'backend':<26} {'chunks/s':>9} {'vs raw':>7} {'cos mean':>9} {'cos min':>8}")
    for k in runners:
        cps = a.n * a.rounds / secs[k]
        c = (vecs[k] * ref).sum(1)
        res[k] = {"chunks_per_s": round(cps, 1), "ratio_to_raw": round(cps / base, 3),
                  "cosine_mean": round(float(c.mean()), 5), "cosine_min": round(float(c.min()), 5)}
        print(f"{k:<26} {cps:>9.1f} {cps / base:>7.2f} {c.mean():>9.5f} {c.min():>8.5f}")
    ok = res["onnx-int8"]["ratio_to_raw"] >= TARGET_INT8
    print(f"int8 {res['onnx-int8']['ratio_to_raw']:.2f}x raw (target >= {TARGET_INT8}): {'PASS' if ok else 'FAIL'}")
    out = write_results("embed", {"n": a.n, "rounds": a.rounds, "results": res, "target_int8_ratio": TARGET_INT8,
                                  "pass": ok, "backends": backends, "threads": os.environ.get("INGEST_EMBED_THREADS"),
                                  "bf16_in_hardware": bf16_in_hardware(), "load_avg": os.getloadavg()})
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
