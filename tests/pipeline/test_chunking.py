"""Chunking: heading-aware, bounded by the real tokenizer, deterministic, stable under edits."""
from extractors.base import Element
from ingest.pipeline.chunking import Chunker, chunk_id


def _chunker(embedder, **kw):
    return Chunker(embedder.count_tokens, embedder.max_tokens, **kw)


def _doc(n_sections=5, paras=4, words=70, seed=0):
    import random

    rnd = random.Random(seed)
    vocab = "alpha beta gamma delta revenue cost market team plan risk audit ledger".split()
    els = [Element("title", "Annual Report", level=1)]
    for s in range(n_sections):
        els.append(Element("heading", f"Section {s}", level=2, page=s + 1))
        for p in range(paras):
            els.append(Element("paragraph", " ".join(rnd.choice(vocab) for _ in range(words)) + ".", page=s + 1))
    return els


def test_no_chunk_exceeds_model_window(embedder):
    long_para = "word " * 3000  # one run-on paragraph, no sentence ends
    sentences = " ".join(f"Sentence number {i} is here." for i in range(400))
    els = [Element("heading", "H", level=1), Element("paragraph", long_para), Element("paragraph", sentences),
           Element("table", "\n".join(["a | b | c"] + [f"{i} | x{i} | y{i}" for i in range(300)]))]
    ch = _chunker(embedder).chunk(els)
    assert len(ch) > 10
    for c in ch:
        assert embedder.count_tokens(c.text) == c.tokens <= embedder.max_tokens, c.tokens
    # nothing lost: every word of the input is in some chunk
    joined = " ".join(c.text for c in ch)
    assert joined.count("word") >= 3000
    for i in range(0, 400, 37):
        assert f"Sentence number {i} is here." in joined
    # table parts repeat the header row
    assert sum(1 for c in ch if c.text.startswith("a | b | c")) >= 2


def test_sections_pages_and_determinism(embedder):
    els = _doc()
    a = _chunker(embedder).chunk(els)
    b = _chunker(embedder).chunk(els)
    assert [c.text for c in a] == [c.text for c in b]
    assert all(embedder.count_tokens(c.text) == c.tokens for c in a)
    assert all(c.section.startswith("Annual Report > Section") for c in a)
    assert {c.page for c in a} == {1, 2, 3, 4, 5}
    for c in a:  # a chunk never spans two sections
        assert c.section.endswith(f"Section {c.page - 1}")
    ids = [chunk_id("d", c.index, c.text_hash) for c in a]
    assert len(set(ids)) == len(ids)


def test_overlap_only_when_a_section_is_split(embedder):
    ch = _chunker(embedder).chunk(_doc(n_sections=2, paras=8))
    by_section = {}
    for c in ch:
        by_section.setdefault(c.section, []).append(c)
    for parts in by_section.values():
        assert len(parts) >= 2
        for prev, cur in zip(parts, parts[1:]):
            last_sentence = prev.text.rsplit("\n\n", 1)[-1]
            assert cur.text.startswith(last_sentence[-40:]) or last_sentence[-40:] in cur.text[:400]
    single = _chunker(embedder).chunk([Element("heading", "S", level=1), Element("paragraph", "Short text.")])
    assert len(single) == 1 and single[0].text == "S\n\nShort text."


def test_edit_changes_only_nearby_chunks(embedder):
    els = _doc(n_sections=6, paras=6)
    before = _chunker(embedder).chunk(els)
    els2 = list(els)
    i = 10  # a paragraph in the second section
    els2[i] = Element("paragraph", els2[i].text.replace("alpha", "omega", 3) + " Extra words added here.",
                      page=els2[i].page)
    after = _chunker(embedder).chunk(els2)
    changed = {c.text_hash for c in after} - {c.text_hash for c in before}
    assert 1 <= len(changed) <= 3, len(changed)


def test_section_path_is_embedded_with_every_chunk_within_the_window(embedder):
    """Title and section context go in front of each chunk's embedding input, the room for it
    is reserved (embed_text never exceeds the model window), and the heading a chunk opens
    with is not repeated."""
    title = "Quarterly Revenue Review of the Northern Region " * 3  # a long title: 27 words
    long_para = " ".join(f"Sentence {i} about ledger audits." for i in range(300))
    els = [Element("title", title.strip(), level=1), Element("heading", "Methods", level=2),
           Element("paragraph", long_para), Element("paragraph", "word " * 2000)]
    ch = _chunker(embedder).chunk(els)
    assert len(ch) > 5
    for c in ch:
        assert c.section.endswith("> Methods")
        assert c.context and c.section.startswith(c.context[:40])
        assert embedder.count_tokens(c.embed_text) <= embedder.max_tokens, c.index
    first, later = ch[0], ch[3]
    assert first.text.startswith(title.strip()[:40])  # the headings open the first chunk ...
    assert first.embed_text == first.text or not first.embed_text.startswith(first.text)
    assert later.embed_text.startswith(later.context.split(" > ")[0])  # ... later ones get the path
    assert later.embed_text.endswith(later.text) and len(later.embed_text) > len(later.text)
    # a document without headings embeds its text as it is
    plain = _chunker(embedder).chunk([Element("paragraph", "Just one short paragraph.")])
    assert plain[0].context == "" and plain[0].embed_text == plain[0].text


def test_context_changes_vectors_but_not_chunk_ids(pipeline, world_dir, store):
    """The pipeline embeds embed_text (context + text): a chunk under a heading gets a different
    vector from the same text alone, and the cache key is the hash of what was embedded."""
    import numpy as np

    from ingest.pipeline.chunking import text_hash

    body = "The ledger audit found no discrepancies in the northern warehouse stock counts."
    (world_dir / "a.txt").write_text(f"# Warehouse inventory report\n\n{'Intro text. ' * 200}\n\n{body}\n")
    (world_dir / "b.txt").write_text(body + "\n")
    from tests.support.common import run_events

    run_events(pipeline, world_dir)
    rows = store.db.execute("SELECT c.text, c.section, c.vec, d.external_id FROM chunks c JOIN documents d"
                            " USING(doc_id) ORDER BY d.external_id, c.idx").fetchall()
    a_last = [r for r in rows if r["external_id"] == "a.txt"][-1]
    b = [r for r in rows if r["external_id"] == "b.txt"][0]
    assert a_last["section"] == "Warehouse inventory report" and body in a_last["text"]
    va = np.frombuffer(a_last["vec"], dtype=np.float32)
    emb = pipeline.embedder.encode([f"Warehouse inventory report\n\n{a_last['text']}"])[0]
    assert np.allclose(va, emb, atol=1e-5)  # the stored vector is the one of context + text
    key = text_hash(f"Warehouse inventory report\n\n{a_last['text']}")
    assert store.cached_vectors(pipeline.embedder.model_id, [key])
    assert b["section"] == ""
