"""The ONNX Runtime embedding backends against the sentence-transformers/PyTorch reference.

The ONNX files are built once per test session (fp32 export, then int8 from it) into a cache
directory under tmp, offline (HF_HUB_OFFLINE=1: nothing may be downloaded).
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from acl.model import ACL, EVERYONE
from ingest.pipeline.chunking import chunk_id, text_hash
from ingest.embedding import bf16_in_hardware
from ingest.pipeline.embed import DEFAULT_MODEL, default_model_id, get_embedder, split_model_id, with_backend
from ingest.stores.base import ChunkRecord, DocRecord, ModelChanged

REPO = Path(__file__).resolve().parents[2]
ONNX = DEFAULT_MODEL + "#onnx"
INT8 = DEFAULT_MODEL + "#onnx-int8"
BF16 = DEFAULT_MODEL + "#torch-bf16"
OV = DEFAULT_MODEL + "#openvino-bf16"
# a fixed set: short queries, sentences, a long paragraph (truncated at 256 tokens), odd text
TEXTS = [
    "vegetarian dish", "What is the opening time of the city library on Sundays?",
    "Aspirin reduces the risk of myocardial infarction in patients with stable angina.",
    "Der Haushalt der Stadtbibliothek wurde für das nächste Jahr um zwölf Prozent erhöht.",
    "ID 4711-XZ; invoice #2024/17 -- total: EUR 1,234.56 (incl. VAT)",
    "The quarterly report shows revenue growth driven by subscriptions. " * 40,
    "Mitochondrial dysfunction is associated with neurodegeneration in Parkinson's disease.",
    "Le chat dort sur le canapé pendant que la pluie tombe.",
    "def encode(texts): return model.run(None, feeds)[0]",
    "CRISPR-Cas9 gene editing corrected the mutation in induced pluripotent stem cells.",
    "Meeting notes: budget approved, hiring freeze lifted, next review in March.",
    "x",
]


@pytest.fixture(scope="session")
def onnx_cache(tmp_path_factory):
    """A private cache dir for the session; both files built once (fp32 export, int8 from it)."""
    from ingest.pipeline import embed_onnx

    d = tmp_path_factory.mktemp("onnx-cache")
    old = os.environ.get("INGEST_EMBED_CACHE")
    os.environ["INGEST_EMBED_CACHE"] = str(d)
    mdir = get_embedder(DEFAULT_MODEL).dir
    embed_onnx.build(mdir, "onnx")
    embed_onnx.build(mdir, "onnx-int8")
    yield d
    if old is None:
        os.environ.pop("INGEST_EMBED_CACHE", None)
    else:
        os.environ["INGEST_EMBED_CACHE"] = old


def _fresh(model_id):
    """A new embedder object (not the process-wide one), so it loads from the current cache."""
    from ingest.pipeline.embed import _factory

    return _factory(model_id)(model_id)



def _apply_text(store, i: int, name: str, text: str, vec, model: str) -> None:
    """Document ``d<i>`` (``file:///r/<name>``, readable by everyone) with one chunk, ``text``, embedded as ``vec``."""
    d = DocRecord(doc_id=f"d{i}", source="folder:/r", external_id=name, uri=f"file:///r/{name}",
                  mime="text/plain", size=1, mtime_ns=1, content_version="v1", acl=ACL(frozenset({EVERYONE})))
    store.apply(d, [ChunkRecord(chunk_id(d.doc_id, 0, text_hash(text)), 0, text, text_hash(text), 8, None, "",
                                vec.tobytes(), "c", model)])

def test_model_ids_record_the_backend():
    assert split_model_id(DEFAULT_MODEL) == (DEFAULT_MODEL, "torch")
    assert split_model_id(INT8) == (DEFAULT_MODEL, "onnx-int8")
    assert with_backend(INT8, "torch") == DEFAULT_MODEL and with_backend(DEFAULT_MODEL, "onnx") == ONNX
    with pytest.raises(ValueError, match="unknown backend 'int4'"):
        split_model_id(DEFAULT_MODEL + "#int4")
    with pytest.raises(ValueError, match="not one of"):
        with_backend(DEFAULT_MODEL, "tensorrt")
    assert default_model_id({"embed": {"backend": "onnx-int8"}}) in (INT8, DEFAULT_MODEL)  # env may override
    env = os.environ.pop("INGEST_EMBED_BACKEND", None)
    try:
        assert default_model_id({"embed": {"backend": "onnx-int8"}}) == INT8
        assert default_model_id({"embed": {"backend": "torch"}}) == DEFAULT_MODEL
    finally:
        if env is not None:
            os.environ["INGEST_EMBED_BACKEND"] = env


def fixed_set() -> list[str]:
    """TEXTS plus what the pipeline embeds most: 24 SciFact titles (query-like) and 24 abstracts."""
    from tests.support.common import need_corpora

    docs = [json.loads(line) for line, _ in zip(open(need_corpora() / "ir" / "scifact" / "corpus.jsonl"), range(48))]
    return TEXTS + [d["title"] for d in docs[:24]] + [d["text"] for d in docs[24:]]


def test_backends_agree_with_the_pytorch_reference(onnx_cache, embedder):
    texts = fixed_set()
    ref = embedder.encode(texts)
    fp32 = _fresh(ONNX).encode(texts)
    int8 = _fresh(INT8).encode(texts)
    for v in (fp32, int8):
        assert v.dtype == np.float32 and v.shape == ref.shape
        assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-4)  # L2-normalised like sentence-transformers
    c32, c8 = (fp32 * ref).sum(1), (int8 * ref).sum(1)
    assert c32.min() >= 0.9999, c32
    assert c8.mean() >= 0.99 and c8.min() >= 0.97, c8
    # order and batching: fp32 exact (length-sorted batches, padding masked); int8 close (its
    # activations are quantized with one scale per batch, so batch mates move a vector slightly)
    one = _fresh(ONNX)
    one.batch_size = 3
    assert np.allclose(one.encode(texts[::-1])[::-1], fp32, atol=1e-4)
    assert np.allclose(one.encode([texts[5]])[0], fp32[5], atol=1e-4)
    alone = _fresh(INT8).encode([texts[5]])[0]
    assert float(alone @ int8[5]) > 0.99 and float(alone @ ref[5]) > 0.97


def test_bf16_backend_agrees_with_the_pytorch_reference(embedder):
    """``torch-bf16``: the same PyTorch model, its products in bfloat16 (where the CPU lacks
    bfloat16 in hardware PyTorch emulates it: slower, the same vectors)."""
    texts = fixed_set()
    ref = embedder.encode(texts)
    bf = _fresh(BF16)
    assert bf.backend == "torch-bf16" and split_model_id(BF16) == (DEFAULT_MODEL, "torch-bf16")
    v = bf.encode(texts)
    assert v.dtype == np.float32 and v.shape == ref.shape
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-4)
    c = (v * ref).sum(1)
    assert c.mean() >= 0.999 and c.min() >= 0.99, c
    assert float(bf.encode([texts[5]])[0] @ v[5]) > 0.999  # batch mates do not move a vector
    import torch

    assert not torch.is_autocast_enabled("cpu")  # the autocast ends with the call


def test_bf16_without_hardware_bf16_embeds_in_float32(embedder, monkeypatch, caplog):
    """Where the CPU would emulate bfloat16 (3-7x slower than float32), ``torch-bf16`` computes in
    float32: the reference's vectors, and one warning naming the way out."""
    from ingest.pipeline import embed

    monkeypatch.setattr(embed, "bf16_in_hardware", lambda: False)
    bf = _fresh(BF16)
    with caplog.at_level("WARNING", logger="ingest.pipeline.embed"):
        v = bf.encode(TEXTS)
        bf.encode(TEXTS[:2])
    assert np.allclose(v, embedder.encode(TEXTS), atol=1e-5)
    warned = [r.getMessage() for r in caplog.records if "no bfloat16 in hardware" in r.getMessage()]
    assert len(warned) == 1 and "#onnx-int8" in warned[0]


def test_openvino_backend_agrees_with_the_pytorch_reference(onnx_cache, embedder):
    """``openvino-bf16``: the verified ONNX fp32 export run by OpenVINO, bfloat16 where the CPU has it."""
    texts = fixed_set()
    ref = embedder.encode(texts)
    ov = _fresh(OV)
    assert ov.backend == "openvino-bf16" and split_model_id(OV) == (DEFAULT_MODEL, "openvino-bf16")
    v = ov.encode(texts)
    assert ov.precision == ("bf16" if bf16_in_hardware() else "f32")
    assert v.dtype == np.float32 and v.shape == ref.shape
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-4)
    c = (v * ref).sum(1)
    assert c.mean() >= 0.999 and c.min() >= 0.99, c
    assert float(ov.encode([texts[5]])[0] @ v[5]) > 0.999  # batch mates do not move a vector
    assert np.allclose(ov.encode(texts[::-1])[::-1], v, atol=2e-3)  # order and batching
    assert "torch" not in ov.__dict__ and ov.computed == 2 * len(texts) + 1


def test_openvino_without_hardware_bf16_embeds_in_float32(onnx_cache, monkeypatch, caplog):
    """Without bfloat16 in hardware OpenVINO compiles in float32: the fp32 export's vectors, and one
    warning naming the way out."""
    from ingest.pipeline import embed_openvino

    monkeypatch.setattr(embed_openvino, "bf16_in_hardware", lambda: False)
    ov = _fresh(OV)
    with caplog.at_level("WARNING", logger="ingest.pipeline.embed"):
        v = ov.encode(TEXTS)
        ov.encode(TEXTS[:2])
    assert ov.precision == "f32"
    assert np.allclose(v, _fresh(ONNX).encode(TEXTS), atol=1e-4)
    warned = [r.getMessage() for r in caplog.records if "no bfloat16 in hardware" in r.getMessage()]
    assert len(warned) == 1 and "#onnx-int8" in warned[0]


def test_openvino_loads_only_the_verified_export(onnx_cache, tmp_path, monkeypatch, caplog):
    """It runs the same cached fp32 file as ``onnx``: a file whose bytes no longer match the checksum
    its sidecar records is built again before OpenVINO reads it, never loaded."""
    import hashlib
    import shutil

    for f in onnx_cache.glob("*-onnx.*"):  # the session's fp32 export and its sidecar
        shutil.copy(f, tmp_path / f.name)
    monkeypatch.setenv("INGEST_EMBED_CACHE", str(tmp_path))
    (path,) = tmp_path.glob("*-onnx.onnx")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the weights
    path.write_bytes(bytes(data))
    with caplog.at_level("WARNING", logger="ingest.pipeline.embed"):
        v = _fresh(OV).encode(TEXTS[:3])  # loads -> checksum wrong -> rebuilt -> OpenVINO reads that
    assert "checksum mismatch" in caplog.text
    assert hashlib.sha256(path.read_bytes()).hexdigest() == json.loads(path.with_suffix(".json").read_text())["sha256"]
    assert np.allclose(v, _fresh(ONNX).encode(TEXTS[:3]), atol=2e-2)


def test_workers_put_the_query_model_of_a_pytorch_store_on_disk(onnx_cache, tmp_path, monkeypatch):
    """A PyTorch store's queries go through the ONNX fp32 export: the worker's warm-up builds it, so the
    first `ingest search` does not; an ONNX store needs nothing more."""
    from ingest.pipeline import embed, embed_onnx

    built = []
    monkeypatch.setattr(embed_onnx, "build", lambda mdir, variant: built.append(variant))
    monkeypatch.setenv("INGEST_EMBED_CACHE", str(tmp_path))  # nothing built yet
    for model_id in (DEFAULT_MODEL, BF16, OV, INT8, ONNX):
        embed.prepare_queries(model_id)
    assert built == ["onnx", "onnx", "onnx"]
    monkeypatch.setenv("INGEST_QUERY_BACKEND", "torch")
    embed.prepare_queries(BF16)
    assert built == ["onnx", "onnx", "onnx"]
    monkeypatch.delenv("INGEST_QUERY_BACKEND")
    monkeypatch.setenv("INGEST_EMBED_CACHE", str(onnx_cache))  # built: only its sidecar is read
    embed.prepare_queries(BF16)
    embed.prepare_queries(OV)
    assert built == ["onnx", "onnx", "onnx"]


def test_auto_backend_takes_bf16_only_where_the_cpu_has_it(monkeypatch):
    from ingest import embedding

    monkeypatch.delenv("INGEST_EMBED_BACKEND", raising=False)
    for flags, want in ((frozenset({"avx2", "amx_bf16", "amx_tile"}), OV),
                        (frozenset({"avx512f", "avx512_bf16"}), OV),
                        (frozenset({"avx2", "avx512f", "avx512_vnni"}), INT8), (frozenset(), INT8)):
        monkeypatch.setattr(embedding, "cpu_flags", lambda flags=flags: flags)
        assert default_model_id({"embed": {"backend": "auto"}}) == want
        monkeypatch.setenv("INGEST_EMBED_BACKEND", "auto")
        assert default_model_id({}) == want
        monkeypatch.delenv("INGEST_EMBED_BACKEND")
    assert embedding.resolve_backend("torch") == "torch"
    with pytest.raises(ValueError, match="not one of"):
        embedding.with_backend(DEFAULT_MODEL, "auto")  # a model id names a backend, never `auto`


def test_store_refuses_to_mix_backends(tmp_path):
    from ingest.stores.sqlite import SQLiteStore

    def doc(i):
        return DocRecord(doc_id=f"d{i}", source="folder:/r", external_id=f"f{i}", uri=f"file:///r/f{i}",
                         mime="text/plain", size=1, mtime_ns=1, content_version="v1", acl=ACL(frozenset({EVERYONE})))

    def chunk(i, model):
        v = np.ones(384, np.float32) / np.sqrt(384)
        return ChunkRecord(f"d{i}-0", 0, "text", f"h{i}", 1, None, "", v.tobytes(), "c", model)

    store = SQLiteStore(tmp_path / "int8.db", model_id=INT8)
    assert store.model_id == INT8
    store.apply(doc(1), [chunk(1, INT8)])
    for other in (DEFAULT_MODEL, ONNX, BF16, OV):
        with pytest.raises(ModelChanged, match="never mixed"):
            store.apply(doc(2), [chunk(2, other)])
    assert store.db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0] == 1
    store.close()
    # an existing store keeps its model whatever the default for new stores is
    env = os.environ.get("INGEST_EMBED_BACKEND")
    os.environ["INGEST_EMBED_BACKEND"] = "torch"
    try:
        assert SQLiteStore(tmp_path / "int8.db").model_id == INT8
        assert SQLiteStore(tmp_path / "new.db").model_id == DEFAULT_MODEL
    finally:
        os.environ["INGEST_EMBED_BACKEND"] = env if env is not None else "torch"
    torch_store = SQLiteStore(tmp_path / "new.db")
    with pytest.raises(ModelChanged, match="never mixed"):
        torch_store.apply(doc(3), [chunk(3, INT8)])


def test_cached_file_with_a_wrong_checksum_is_rebuilt(onnx_cache, caplog):
    from ingest.pipeline import embed_onnx

    mdir = get_embedder(DEFAULT_MODEL).dir
    path = embed_onnx.build(mdir, "onnx-int8")
    side = json.loads(path.with_suffix(".json").read_text())
    good = _fresh(INT8).encode(TEXTS[:3])
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the weights
    path.write_bytes(bytes(data))
    assert embed_onnx._verified(path, path.with_suffix(".json"), side["key"]) is None
    for p in onnx_cache.glob(path.stem + "-opt-*"):  # else loads start from the kept optimised graph,
        p.unlink()                                    # never reading the file (its own test is below)
    with caplog.at_level("WARNING", logger="ingest.pipeline.embed"):
        again = _fresh(INT8).encode(TEXTS[:3])  # loads -> checksum wrong -> rebuilt
    assert "checksum mismatch" in caplog.text
    import hashlib

    assert hashlib.sha256(path.read_bytes()).hexdigest() == json.loads(path.with_suffix(".json").read_text())["sha256"]
    assert np.allclose(again, good, atol=1e-5)
    # a link in place of the cached file is not followed: refused, then rebuilt in its place
    target = onnx_cache / "elsewhere.onnx"
    os.replace(path, target)
    os.symlink(target, path)
    with pytest.raises(embed_onnx.OnnxBuildError):
        embed_onnx._read_bounded(path)
    os.unlink(path)
    os.replace(target, path)


def test_cold_search_offline_without_torch(onnx_cache, tmp_path, embedder):
    """`ingest search` on an int8 store, a PyTorch store, a bf16 PyTorch store and an OpenVINO store,
    offline, in fresh processes: answers, and never imports torch, sentence_transformers or openvino."""
    from ingest.stores.sqlite import SQLiteStore

    texts = ["The library opens at nine on Sundays.", "Aspirin and heart attacks in older adults.",
             "Quarterly revenue grew with subscriptions."]
    for model, enc in ((INT8, _fresh(INT8)), (DEFAULT_MODEL, embedder), (BF16, _fresh(BF16)), (OV, _fresh(OV))):
        db = tmp_path / f"{split_model_id(model)[1]}.db"
        store = SQLiteStore(db, model_id=model)
        vecs = enc.encode(texts)
        for i, t in enumerate(texts):
            _apply_text(store, i, f"f{i}.txt", t, vecs[i], model)
        store.close()
        probe = ("import sys, runpy; sys.argv = ['ingest'] + sys.argv[1:]\n"
                 "try:\n    runpy.run_module('ingest.cli.main', run_name='__main__')\n"
                 "except SystemExit as e:\n    assert not e.code, e.code\n"
                 "print('HEAVY', [m for m in ('torch', 'sentence_transformers', 'openvino') if m in sys.modules])")
        env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONPATH=str(REPO))
        env.pop("INGEST_QUERY_BACKEND", None)
        p = subprocess.run([sys.executable, "-c", probe, "search", "heart attack medicine", "--store", str(db),
                            "--as", "everyone", "--mode", "vector", "--json", "-k", "1"],
                           capture_output=True, text=True, env=env, timeout=300)
        assert p.returncode == 0, p.stderr[-2000:]
        out, heavy = p.stdout.rsplit("HEAVY", 1)
        assert heavy.strip() == "[]", (model, heavy)
        hits = json.loads(out)
        assert hits and hits[0]["uri"].endswith("f1.txt"), (model, hits)


def test_reembed_switches_a_torch_store_to_int8(onnx_cache, tmp_path, embedder):
    from ingest.pipeline.reembed import reembed
    from ingest.search.index import Index
    from ingest.stores.sqlite import SQLiteStore


    store = SQLiteStore(tmp_path / "s.db", model_id=DEFAULT_MODEL)

    texts = ["Solar panels on the school roof.", "A recipe for lentil soup with cumin."]
    vecs = embedder.encode(texts)
    for i, t in enumerate(texts):
        _apply_text(store, i, f"f{i}", t, vecs[i], DEFAULT_MODEL)
    out = reembed(store, INT8)
    assert out["switched"] and store.model_id == INT8
    got = {r[0]: np.frombuffer(r[1], np.float32) for r in store.db.execute("SELECT text, vec FROM chunks")}
    ref = _fresh(INT8).encode(texts)
    assert all(float(got[t] @ ref[i]) > 0.9999 for i, t in enumerate(texts))  # the int8 vectors, not torch's
    assert {r[0] for r in store.db.execute("SELECT DISTINCT model_id FROM chunks")} == {INT8}
    hits = Index(store).search("soup", principal="everyone", k=1, mode="vector", audit=False)
    assert hits[0].text.startswith("A recipe")


def test_new_stores_take_the_configured_backend_existing_stores_keep_their_model(tmp_path, monkeypatch):
    from ingest.pipeline.embed import DEFAULT_BACKEND
    from ingest.stores.sqlite import SQLiteStore

    monkeypatch.delenv("INGEST_EMBED_BACKEND", raising=False)  # conftest pins torch for the other tests
    want = OV if bf16_in_hardware() else INT8  # `auto`: what this CPU is fast at
    assert DEFAULT_BACKEND == "auto" and default_model_id({}) == want
    monkeypatch.setenv("INGEST_EMBED_BACKEND", "onnx-int8")
    assert SQLiteStore(tmp_path / "new.db").model_id == INT8
    SQLiteStore(tmp_path / "old.db", model_id=DEFAULT_MODEL).close()
    assert SQLiteStore(tmp_path / "old.db").model_id == DEFAULT_MODEL  # kept until `ingest reembed`
    monkeypatch.setenv("INGEST_EMBED_BACKEND", "torch")
    assert default_model_id({}) == DEFAULT_MODEL


@pytest.mark.parametrize("recorded", [DEFAULT_MODEL, INT8])
def test_the_pipeline_of_an_existing_store_embeds_with_its_recorded_model_not_the_default(
        tmp_path, monkeypatch, recorded):
    """A store made before the default changed (PyTorch) is embedded by PyTorch until `ingest reembed`;
    the worker's pipeline asks for the store's model id, never the default for new stores."""
    from ingest.pipeline import document
    from ingest.pipeline.document import Pipeline
    from ingest.stores.sqlite import SQLiteStore

    SQLiteStore(tmp_path / "old.db", model_id=recorded).close()
    asked = []
    monkeypatch.setattr(document, "get_embedder", lambda model_id: asked.append(model_id) or object())
    for backend in (None, "torch", "onnx", "onnx-int8"):  # None: the default for new stores
        if backend is None:
            monkeypatch.delenv("INGEST_EMBED_BACKEND", raising=False)
        else:
            monkeypatch.setenv("INGEST_EMBED_BACKEND", backend)
        store = SQLiteStore(tmp_path / "old.db")
        assert store.model_id == recorded
        Pipeline(store, sandbox=False, nlp=False).embedder
        store.close()
    assert asked == [recorded] * 4


def test_settings_name_the_default_backend():
    """The settings table (README) says which backend an unset `[embed] backend` means."""
    from dataclasses import fields

    from ingest.config import Settings
    from ingest.embedding import CHOICES
    from ingest.pipeline.embed import DEFAULT_BACKEND

    assert DEFAULT_BACKEND in CHOICES
    meaning = next(f for f in fields(Settings) if f.name == "embed_backend").metadata["meaning"]
    assert f"unset: `{DEFAULT_BACKEND}`" in meaning


@pytest.mark.parametrize("available, device, want", [
    (["CUDAExecutionProvider", "CPUExecutionProvider"], None, [("CUDAExecutionProvider", {"device_id": 0}),
                                                                "CPUExecutionProvider"]),
    (["CUDAExecutionProvider", "CPUExecutionProvider"], "cuda:1", [("CUDAExecutionProvider", {"device_id": 1}),
                                                                    "CPUExecutionProvider"]),
    (["CUDAExecutionProvider", "CPUExecutionProvider"], "cpu", ["CPUExecutionProvider"]),
    (["CPUExecutionProvider"], None, ["CPUExecutionProvider"]),
    (["CPUExecutionProvider"], "cuda", ["CPUExecutionProvider"]),
])
def test_cuda_provider_selected_when_onnxruntime_has_it(monkeypatch, available, device, want):
    import onnxruntime as ort

    from ingest.pipeline.embed_onnx import providers

    monkeypatch.setattr(ort, "get_available_providers", lambda: list(available))
    if device is None:
        monkeypatch.delenv("INGEST_DEVICE", raising=False)
    else:
        monkeypatch.setenv("INGEST_DEVICE", device)
    assert providers() == want


def test_bad_cuda_device_is_a_clear_error(monkeypatch):
    import onnxruntime as ort

    from ingest.pipeline.embed_onnx import providers

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setenv("INGEST_DEVICE", "cuda:x")
    with pytest.raises(ValueError, match="INGEST_DEVICE"):
        providers()


def test_intra_op_threads_follow_the_worker_share(onnx_cache, monkeypatch):
    """Worker processes sharing the cores get one intra-op pool of cores / processes each."""
    monkeypatch.delenv("INGEST_TORCH_THREADS", raising=False)
    monkeypatch.setenv("INGEST_EMBED_THREADS", "1")
    e = _fresh(INT8)
    opts = e.model.get_session_options()
    assert opts.intra_op_num_threads == 1 and opts.inter_op_num_threads == 1
    assert e.model.get_providers() == ["CPUExecutionProvider"] and not e.on_gpu
    assert e.encode(["one thread"]).shape == (1, 384)


def test_optimised_graph_is_kept_and_gives_the_same_vectors(onnx_cache, caplog):
    """The graph ONNX Runtime optimised on the first load is kept beside the cached file (with
    its checksum) and later loads start from it: the same vectors bit for bit; a corrupt one is
    refused and made again."""
    from ingest.pipeline import embed_onnx

    mdir = get_embedder(DEFAULT_MODEL).dir
    for variant, model_id in (("onnx-int8", INT8), ("onnx", ONNX)):
        path = embed_onnx.build(mdir, variant)
        for p in onnx_cache.glob(path.stem + "-opt-*"):
            p.unlink()
        first = _fresh(model_id).encode(TEXTS)  # optimised from the file itself, graph written
        opts = sorted(onnx_cache.glob(path.stem + "-opt-*"))
        assert [p.suffix for p in opts] == [".json", ".onnx"], opts
        onnx_file = opts[1]
        side = json.loads(opts[0].read_text())
        import hashlib

        assert hashlib.sha256(onnx_file.read_bytes()).hexdigest() == side["sha256"]
        stamp = onnx_file.stat().st_mtime_ns
        again = _fresh(model_id).encode(TEXTS)  # from the kept graph
        assert np.array_equal(first, again)
        assert onnx_file.stat().st_mtime_ns == stamp
        data = bytearray(onnx_file.read_bytes())
        data[len(data) // 2] ^= 0xFF
        onnx_file.write_bytes(bytes(data))
        with caplog.at_level("WARNING", logger="ingest.pipeline.embed"):
            third = _fresh(model_id).encode(TEXTS)
        assert "checksum mismatch" in caplog.text
        assert np.array_equal(first, third)
        assert hashlib.sha256(onnx_file.read_bytes()).hexdigest() == json.loads(opts[0].read_text())["sha256"]
