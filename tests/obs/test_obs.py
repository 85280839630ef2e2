"""Observability: stage timings and traces per document, quality snapshots and alerts, JSON logs,
and the alert reaching the log, the metrics and `ingest status`."""
import json
import logging
import re
import subprocess
import sys

import pytest
from tests.support.common import run_events
from tests.support.obs_helpers import DAY, degrade, samples, write_docs


@pytest.fixture
def store(either_store):
    """Every test here runs on both stores: ingest/obs reaches the store only through its methods."""
    return either_store


def _outcomes(store):
    return [dict(r) for r in store.db.execute("SELECT * FROM outcomes ORDER BY id")]


def test_trace_has_stage_timings_versions_and_cause_and_status_doc_shows_the_trip(pipeline, world_dir, capsys):
    from ingest.cli.main import main
    from ingest.obs.trace import doc_trip, render_trip

    src = world_dir / "share"
    a, b = write_docs(src, 2, "note")
    (src / "blank.txt").write_bytes(b"")
    run_events(pipeline, src)
    rows = {r["external_id"]: r for r in _outcomes(pipeline.store)}
    ok = json.loads(rows["note-0.md"]["trace"])
    assert rows["note-0.md"]["action"] == "indexed"
    assert {"fetch", "extract", "quality", "chunk", "embed", "store"} <= set(ok["stages"]), ok
    assert all(v >= 0 for v in ok["stages"].values()) and ok["stages"]["extract"] > 0
    assert ok["event"] == {"kind": "upsert", "path": "note-0.md", "dest": None}
    assert ok["version"] == pipeline.store.get_doc(f"folder:{src}", "note-0.md")["content_version"]
    assert ok["chunks"] >= 1 and ok["computed"] + ok["cached"] == ok["chunks"]
    bad = json.loads(rows["blank.txt"]["trace"])
    assert rows["blank.txt"]["action"] == "error" and rows["blank.txt"]["detail"].startswith("empty-file")
    assert "extract" in bad["stages"] and "embed" not in bad["stages"] and bad["status"] == "quarantined"

    v1 = ok["version"]
    a.write_text(a.read_text() + "\nAn added line about the budget.\n")
    run_events(pipeline, src)
    trip = doc_trip(pipeline.store, str(a))
    assert [s["action"] for s in trip["steps"]] == ["indexed", "indexed"]
    assert trip["steps"][0]["version"] == v1 and trip["steps"][1]["version"] != v1
    assert trip["steps"][1]["version"] == trip["document"]["content_version"]
    text = render_trip(trip)
    assert text.count("upsert note-0.md") == 2 and "extract" in text and v1[:12] in text

    assert main(["status", str(a), "--store", pipeline.store.url_arg]) == 0
    out = capsys.readouterr().out
    assert out.count("result   indexed") == 2 and trip["document"]["content_version"][:12] in out
    assert main(["status", str(src / "blank.txt"), "--store", pipeline.store.url_arg, "--json"]) == 0
    j = json.loads(capsys.readouterr().out)
    assert j["document"]["error_code"] == "empty-file" and j["steps"][-1]["action"] == "error"
    assert main(["status", str(src / "nope.md"), "--store", pipeline.store.url_arg]) == 2


def test_degraded_source_raises_an_alert_naming_it_and_the_measure_and_others_raise_nothing(
        pipeline, world_dir, caplog, monkeypatch):
    from ingest.obs import quality
    from ingest.obs.metrics import registry_for
    from prometheus_client import generate_latest

    monkeypatch.setenv("INGEST_CONFIG", str(world_dir / "none.toml"))
    (world_dir / "none.toml").write_text("")
    fin, hr = world_dir / "finance-share", world_dir / "hr-share"
    fin_files, _ = write_docs(fin, 4, "fin"), write_docs(hr, 4, "hr")
    for root in (fin, hr):
        run_events(pipeline, root)
    store, now = pipeline.store, quality.time.time()
    for days in (3, 2, 1):  # a trailing window of healthy days
        quality.snapshot(store, now=now - days * DAY)
    assert quality.refresh(store, {}, now) == []

    degrade(fin_files)
    for root in (fin, hr):
        run_events(pipeline, root)
    fsrc, hsrc = f"folder:{fin}", f"folder:{hr}"
    since = quality.period_of(now - DAY)
    expected = f"share-empty for source {fsrc} rose from 0% to 100% since {since}"
    # `ingest status` (a real process, JSON logs) takes today's snapshot, raises the alert, prints it
    r = subprocess.run([sys.executable, "-m", "ingest.cli.main", "--log-json", "status", "--store", store.url_arg],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert f"alert   {expected}" in r.stdout.splitlines()
    assert not [ln for ln in r.stdout.splitlines() if ln.startswith("alert") and hsrc in ln]
    logged = [json.loads(ln) for ln in r.stderr.splitlines() if ln.startswith("{")]
    warned = [d for d in logged if d["logger"] == "ingest.pipeline.quality" and d["level"] == "WARNING"]
    assert {(d["alert"]["source"], d["alert"]["measure"]) for d in warned} >= {(fsrc, "share-empty")}
    assert not [d for d in warned if d["alert"]["source"] == hsrc]
    assert any(d["message"] == f"quality alert: {expected}" for d in warned)

    caplog.set_level(logging.WARNING, logger="ingest.pipeline.quality")
    alerts = quality.refresh(store, {}, now)
    assert not [rec for rec in caplog.records if rec.name == "ingest.pipeline.quality"]  # held, not raised again
    assert {a["source"] for a in alerts} == {fsrc}, alerts  # hr-share raises nothing
    by_measure = {a["measure"]: a for a in alerts}
    assert by_measure["share-empty"]["message"] == expected, by_measure
    assert by_measure["share-quarantined"]["value"] == 1.0
    assert "share-flagged" not in by_measure and "garbage-ratio" not in by_measure

    text = generate_latest(registry_for(store, {}, None, refresh_every=0)).decode()
    flagged = samples(text, "ingest_quality_alert")
    assert flagged[(("measure", "share-empty"), ("source", fsrc))] == 1.0
    assert not [k for k in flagged if ("source", hsrc) in k]
    share = samples(text, "ingest_quality_share")
    assert share[(("measure", "empty"), ("source", fsrc))] == 1.0
    assert share[(("measure", "empty"), ("source", hsrc))] == 0.0

    # thresholds come from [quality.alerts]; a disabled measure is not alerted on
    cfg = {"quality": {"alerts": {"share-empty": False, "share-quarantined": 2.0}}}
    assert quality.judge(store, cfg, now) == []
    from ingest.config import ConfigError
    with pytest.raises(ConfigError, match="unknown key.*share-emtpy"):
        quality.rules({"quality": {"alerts": {"share-emtpy": 0.1}}})

    # the source recovers: the alert clears
    write_docs(fin, 4, "fin")
    run_events(pipeline, fin)
    assert quality.refresh(store, {}, now) == []


def test_json_log_line_per_document_outcome_without_document_text(pipeline, world_dir):
    import io

    from ingest.obs.logs import JSONFormatter

    src = world_dir / "share"
    write_docs(src, 2, "secretive")
    (src / "empty.md").write_bytes(b"")
    buf = io.StringIO()
    h = logging.StreamHandler(buf)
    h.setFormatter(JSONFormatter())
    root = logging.getLogger()
    old = root.level
    root.addHandler(h)
    root.setLevel(logging.INFO)
    try:
        run_events(pipeline, src)
    finally:
        root.removeHandler(h)
        root.setLevel(old)
    lines = [json.loads(ln) for ln in buf.getvalue().splitlines()]
    outs = [ln["outcome"] for ln in lines if ln["logger"] == "ingest.outcome"]
    assert sorted(o["external_id"] for o in outs) == ["empty.md", "secretive-0.md", "secretive-1.md"]
    ok = next(o for o in outs if o["external_id"] == "secretive-0.md")
    assert ok["action"] == "indexed" and ok["doc_id"] and ok["source"] == f"folder:{src}"
    assert {"extract", "embed", "store"} <= set(ok["stages"]) and ok["reason"] is None
    bad = next(o for o in outs if o["external_id"] == "empty.md")
    assert bad["action"] == "error" and bad["reason"].startswith("empty-file")
    body = buf.getvalue()
    assert "quarterly revenue" not in body and "Second paragraph" not in body  # no document text


def test_log_json_option_and_environment(monkeypatch):
    from ingest.cli.main import build_parser
    from ingest.obs import logs

    assert build_parser().parse_args(["--log-json", "status"]).log_json is True
    monkeypatch.delenv("INGEST_LOG_JSON", raising=False)
    assert not logs.json_wanted()
    monkeypatch.setenv("INGEST_LOG_JSON", "1")
    assert logs.json_wanted()
    rec = logging.LogRecord("ingest.x", logging.WARNING, __file__, 1, "hello %s", ("there",), None)
    d = json.loads(logs.JSONFormatter().format(rec))
    assert d["message"] == "hello there" and d["level"] == "WARNING" and re.match(r"\d{4}-\d\d-\d\dT", d["ts"])


def test_sink_lag_reaches_metrics_and_the_status_page(store, world_dir):
    """A secondary store that has not applied the latest outbox rows shows as lag, by name,
    in /metrics and on the status page; once its cursor catches up the lag is zero."""
    from prometheus_client import CollectorRegistry, generate_latest

    from acl.model import ACL
    from ingest.obs.metrics import StoreCollector
    from ingest.obs.page import render, state
    from ingest.stores.base import DocRecord

    store.set_sink_cursor("replica-pg", "postgresql://user:secret@db/ingest", store.outbox_head())
    for i in range(3):  # three changes the sink has not seen
        store.record_failure(DocRecord(doc_id=f"d{i}", source="s", external_id=f"e{i}", uri=f"file:///e{i}",
                                       mime=None, size=1, mtime_ns=1, content_version="v", acl=ACL(frozenset({"everyone"})),
                                       status="error", error_code="corrupt", error="bad"))
    reg = CollectorRegistry()
    reg.register(StoreCollector(store, {}, None, refresh_every=0))
    text = generate_latest(reg).decode()
    assert re.search(r'ingest_sink_pending\{sink="replica-pg"\} 3\.0', text), text
    assert re.search(r'ingest_sink_lag_seconds\{sink="replica-pg"\} [0-9.e+-]+', text)
    page = render(state(store, {}, None), "ops")
    assert "replica-pg" in page and "No secondary sinks" not in page and "secret" not in page
    store.set_sink_cursor("replica-pg", "postgresql://user:secret@db/ingest", store.outbox_head())
    text = generate_latest(reg).decode()
    assert re.search(r'ingest_sink_pending\{sink="replica-pg"\} 0\.0', text), text
