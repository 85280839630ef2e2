"""One event type and one task form for every source (issue 14.1/14.3): a change event travels as a
dict; ``ingest.change``/``ingest.changes`` take a folder's and a connector's events alike; a message
of the form before the one event type, still queued after an upgrade, is read as the event it
describes; a message no event can be read from is dead-lettered with the reason, never a crash."""
from __future__ import annotations

import json

import pytest


def test_change_event_on_the_wire():
    from ingest.sources.base import MOVE, UPSERT, ChangeEvent

    ev = ChangeEvent(MOVE, "/srv/share", "a.txt", dest="b/a.txt", seq=7)
    assert ev.to_wire() == {"kind": "move", "source": "/srv/share", "key": "a.txt", "dest": "b/a.txt", "seq": 7}
    assert ChangeEvent.from_wire(ev.to_wire()) == ev and ChangeEvent.from_wire(ev.to_wire()).seq == 7
    assert ev.folder and ev.registry_source == "folder:/srv/share"
    dms = ChangeEvent(UPSERT, "webdav:nc", "fid-42", path="Docs/a.txt", version="etag-1")
    assert not dms.folder and dms.registry_source == "webdav:nc"
    assert ChangeEvent.from_wire(dms.to_wire()) == dms
    for bad in ({"kind": "upsert", "source": "/r"}, {"kind": "upsert", "source": "/r", "key": "a", "x": 1},
                {"kind": 1, "source": "/r", "key": "a"}, ["upsert", "/r", "a"]):
        with pytest.raises(ValueError, match="not a change event"):
            ChangeEvent.from_wire(bad)


def test_task_forms_new_and_old_take_the_one_path(world_dir, store, embedder):
    from ingest.pipeline.document import Pipeline
    from ingest.sources.base import UPSERT, ChangeEvent
    from workers import tasks

    root = world_dir / "docs"
    root.mkdir()
    (root / "a.txt").write_text("A note about the pangolin survey, written for the task form test.\n")
    (root / "b.txt").write_text("Another note, this one about the okapi census in the eastern forest.\n")
    url = str(world_dir / "index.db")
    with tasks.serving(url, Pipeline(store, embedder, nlp=False)):
        ev = ChangeEvent(UPSERT, str(root), "a.txt", seq=(root / "a.txt").stat().st_ctime_ns)
        assert tasks.change.apply(args=[url, ev.to_wire()]).get() == ["indexed"]
        group = [ChangeEvent(UPSERT, str(root), n).to_wire() for n in ("a.txt", "b.txt")]
        assert sorted(tasks.changes.apply(args=[url, group, None]).get()) == ["indexed", "skipped"]
        # the forms before one event type: positional fields, and lists in a group
        assert tasks.change.apply(args=[url, "upsert", str(root), "a.txt", None, None],
                                  kwargs={"version": None}).get() == ["skipped"]
        assert tasks.changes.apply(args=[url, [["upsert", str(root), "b.txt", None, None, None]], None]).get() \
            == ["skipped"]
        # an event made for an older state than indexed is dropped, in either form
        old = ev.seq - 10**9
        assert tasks.change.apply(args=[url, dict(ev.to_wire(), seq=old)]).get() == ["stale"]
        assert tasks.change.apply(args=[url, "upsert", str(root), "a.txt", None, None],
                                  kwargs={"version": old}).get() == ["stale"]
        # no event in it: a dead letter with the reason, acknowledged
        assert tasks.change.apply(args=[url, {"kind": "upsert", "key": "a.txt"}]).get() == ["dead-letter"]
        assert tasks.changes.apply(args=[url, [{"source": str(root)}], None]).get() == ["dead-letter"]
        letters = store.dead_letters()
        assert [d["fault"] for d in letters] == ["permanent", "permanent"]
        assert all("not a change event" in d["reason"] for d in letters), letters


def test_change_tasks_leave_entities_to_the_maintenance_lane_one_piece_per_task(world_dir, store, embedder,
                                                                                 monkeypatch):
    """A worker's change task stores text and vectors and queues ``ingest.entities`` on the maintenance
    lane; that task settles one piece and queues itself again while more is owed (an interactive
    change never waits longer than a piece behind it). The broker is not what this tests: sends are
    recorded."""
    from ingest.pipeline.document import Pipeline
    from ingest.pipeline.nlp import EntityExtractor, NLPConfig
    from ingest.sources.base import UPSERT, ChangeEvent
    from workers import tasks
    from workers.lanes import entities_lane

    root = world_dir / "docs"
    root.mkdir()
    (root / "a.txt").write_text("Jane Smith of Globex Corporation met Bob Jones in Denver on Friday.\n")
    (root / "b.txt").write_text("Initech opened an office in Boston, said Ann Lee of Initech.\n")
    url = str(world_dir / "index.db")
    sent = []
    monkeypatch.setattr(tasks.app, "send_task", lambda name, args=None, kwargs=None, queue=None, **_:
                        sent.append((name, args, queue)))
    monkeypatch.setattr("workers.lanes.is_redis", lambda url: False)  # whatever broker an earlier test left
    p = Pipeline(store, embedder, sandbox=False, nlp=EntityExtractor(NLPConfig()), defer_entities=True)
    with tasks.serving(url, p):
        group = [ChangeEvent(UPSERT, str(root), n).to_wire() for n in ("a.txt", "b.txt")]
        assert tasks.changes.apply(args=[url, group, None]).get() == ["indexed", "indexed"]
        assert sent == [("ingest.entities", [url], entities_lane())] and store.entities_owed() == 2
        assert p.nlp.texts_processed == 0
        monkeypatch.setenv("INGEST_EMBED_PIECE", "1")
        assert tasks.entities.apply(args=[url]).get() == {"chunks": 1, "more": True}
        assert len(sent) == 2 and store.entities_owed() == 1  # queued itself again
        assert tasks.entities.apply(args=[url]).get() == {"chunks": 1, "more": False}
        assert len(sent) == 2 and store.entities_owed() == 0
        assert tasks.entities.apply(args=[url]).get() == {"chunks": 0, "more": False}  # a late one: nothing to do
        # a broker that cannot take the task now does not fail the change; the next change sends it
        (root / "a.txt").write_text("Ann Lee of Initech met Jane Smith in Paris.\n")
        monkeypatch.setattr(tasks.app, "send_task", lambda *a, **k: (_ for _ in ()).throw(ConnectionError("down")))
        assert tasks.changes.apply(args=[url, group[:1], None]).get() == ["indexed"]
        assert p.entities_owed == 1 and store.entities_owed() == 1
        monkeypatch.setattr(tasks.app, "send_task", lambda name, args=None, kwargs=None, queue=None, **_:
                            sent.append((name, args, queue)))
        tasks.owe_entities(url, p)
        assert len(sent) == 3 and p.entities_owed == 0
        assert tasks.entities.apply(args=[url]).get() == {"chunks": 1, "more": False}
    ents = {t.split()[0]: set(json.loads(e)) for t, e in store.db.execute("SELECT text, entities FROM chunks")}
    assert {"ORG:initech", "GPE:boston"} <= ents["Initech"] and {"PERSON:jane smith", "GPE:paris"} <= ents["Ann"]
