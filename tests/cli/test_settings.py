"""One settings object (issue 14): TOML + environment, typed, validated once, documented in the
README's table, read when asked for (never frozen at import)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from ingest import config
from ingest.config import ConfigError, Settings, settings, settings_table

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    import os

    for k in list(os.environ):
        if k.startswith("INGEST_"):
            monkeypatch.delenv(k)
    monkeypatch.setenv("INGEST_CONFIG", str(tmp_path / "config.toml"))
    return tmp_path / "config.toml"


def test_defaults_toml_and_environment_override(clean_env, monkeypatch):
    assert settings().task_time_limit == 600 and settings().lanes is True and settings().broker is None
    clean_env.write_text('[worker]\ntask_time_limit = 120\nmax_retries = 2\n[queue]\nlanes = false\n'
                         '[queue.max_depth]\nbulk = 50\n')
    s = settings()
    assert (s.task_time_limit, s.task_max_retries, s.lanes, s.max_depth_bulk) == (120, 2, False, 50)
    assert s.soft_time_limit == 90 and s.visibility_timeout_s == 420
    monkeypatch.setenv("INGEST_TASK_TIME_LIMIT", "200")  # the environment wins, and is seen at once
    monkeypatch.setenv("INGEST_LANES", "on")
    s = settings()
    assert (s.task_time_limit, s.lanes, s.task_max_retries) == (200, True, 2)


@pytest.mark.parametrize("env,value,message", [
    ("INGEST_TASK_TIME_LIMIT", "abc", "INGEST_TASK_TIME_LIMIT='abc': expected a number of seconds"),
    ("INGEST_TASK_TIME_LIMIT", "10", "INGEST_TASK_TIME_LIMIT='10': expected a number of seconds >= 31"),
    ("INGEST_TASK_MAX_RETRIES", "2.5", "INGEST_TASK_MAX_RETRIES='2.5': expected a whole number"),
    ("INGEST_LANES", "maybe", "INGEST_LANES='maybe': expected on or off"),
    ("INGEST_QUERY_BACKEND", "tensorrt", "INGEST_QUERY_BACKEND='tensorrt': expected one of onnx, torch"),
])
def test_a_bad_environment_value_is_named(clean_env, monkeypatch, env, value, message):
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError) as e:
        settings()
    assert str(e.value) == message


def test_a_bad_toml_value_names_the_key(clean_env):
    clean_env.write_text('[worker]\nmax_retries = "five"\n')
    with pytest.raises(ConfigError, match=r"config \[worker\] max_retries='five': expected a whole number"):
        settings()
    with pytest.raises(ConfigError, match=r"config \[queue.max_depth\] bulk=0: expected a whole number >= 1"):
        settings({"queue": {"max_depth": {"bulk": 0}}})


def test_retry_settings_are_read_when_used(clean_env, monkeypatch):
    from workers.tasks import backoff

    monkeypatch.setenv("INGEST_RETRY_BASE_S", "0.001")
    monkeypatch.setenv("INGEST_RETRY_CAP_S", "0.002")
    assert max(backoff(10) for _ in range(200)) <= 0.002
    monkeypatch.setenv("INGEST_RETRY_CAP_S", "50")
    assert max(backoff(10) for _ in range(200)) > 0.002


def test_settings_reach_their_readers(clean_env, monkeypatch):
    from ingest.cli.runner import bulk_group
    from ingest.pipeline.budget import soft_limit_s
    from workers.app import visibility_timeout
    from workers.lanes import lanes_enabled, max_depths

    monkeypatch.setenv("INGEST_TASK_TIME_LIMIT", "100")
    monkeypatch.setenv("INGEST_BULK_GROUP", "7")
    monkeypatch.setenv("INGEST_LANES", "off")
    monkeypatch.setenv("INGEST_MAX_DEPTH_BULK", "33")
    assert soft_limit_s() == 70 and visibility_timeout() == 400 and bulk_group(100, 2) == [7]
    assert lanes_enabled() is False and max_depths({})["bulk"] == 33
    with pytest.raises(ValueError, match="unknown lane"):
        max_depths({"queue": {"max_depth": {"urgent": 5}}})


def test_no_module_reads_ingest_variables_itself():
    """Every INGEST_* read goes through the settings object; extractors/ (a leaf that may not
    import ingest) reads its own, which the table lists too. (INGEST_CONFIG names the file itself:
    the CLI saves and restores it around a command with --config.)"""
    env_only = {f.metadata["env"] for f in __import__("dataclasses").fields(Settings) if f.metadata["key"] is None}
    found = []
    for d in ("ingest", "workers", "acl", "extractors"):
        for p in sorted((REPO / d).rglob("*.py")):
            for m in re.finditer(r"(?:environ\.get|getenv|environ\[)\(?\s*f?\"(INGEST_[A-Z_]*)\"(?!\]\s*=)", p.read_text()):
                if p.name != "config.py" and m.group(1) != "INGEST_CONFIG" \
                        and not (d == "extractors" and m.group(1) in env_only):
                    found.append(f"{p.relative_to(REPO)}: {m.group(1)}")
    assert found == []


def test_the_readme_table_is_the_settings_object():
    readme = (REPO / "README.md").read_text()
    assert settings_table() in readme, "README's settings table is stale: paste `python -m ingest.config`"
    assert len(settings_table().splitlines()) == len(__import__("dataclasses").fields(Settings)) + 4
    assert config.settings is settings


def test_the_cli_names_a_bad_setting_before_any_work(tmp_path):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("INGEST_")}
    env.update(PYTHONPATH=str(REPO), INGEST_TASK_TIME_LIMIT="abc", INGEST_CONFIG=str(tmp_path / "none.toml"))
    r = subprocess.run([sys.executable, "-m", "ingest.cli", "status", "--store", str(tmp_path / "s.db")], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip() == "ingest status: INGEST_TASK_TIME_LIMIT='abc': expected a number of seconds"
    assert not (tmp_path / "s.db").exists()


def test_config_option_is_the_settings_file_too(tmp_path):
    import os
    import subprocess
    import sys

    cfg = tmp_path / "c.toml"
    cfg.write_text("[worker]\nmax_retries = -1\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("INGEST_")}
    env.update(PYTHONPATH=str(REPO))
    r = subprocess.run([sys.executable, "-m", "ingest.cli", "serve", "--config", str(cfg), "--store",
                        str(tmp_path / "s.db")], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip() == "ingest serve: config [worker] max_retries=-1: expected a whole number >= 0"
