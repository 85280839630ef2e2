"""Lane depth and oldest-item age from a real Redis broker (redis-server on a loopback port)."""
import shutil
import subprocess
import time

import pytest

from tests.support.common import wait_for
from tests.support.obs_helpers import free_port


@pytest.fixture
def redis_url(tmp_path):
    exe = shutil.which("redis-server")
    if exe is None:
        from tests.support.ci import missing

        missing("redis-server is not installed (Debian package redis-server)")
    port = free_port()
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import redis

    r = redis.Redis(port=port)
    wait_for(lambda: _ping(r), timeout=20, what="redis-server")
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(10)


def _ping(r):
    try:
        return r.ping()
    except Exception:  # noqa: BLE001 - not up yet
        return False


def test_lane_depth_and_oldest_age_from_redis(redis_url):
    from ingest.obs.lanes import lane_stats, queued_header
    from workers.app import configure

    app = configure(redis_url)

    def send(lane, n):  # as ingest.cli.runner.Queue sends: stamped with the time it was queued
        with app.connection_for_write(redis_url) as conn:  # this broker, not a pooled older one
            for i in range(n):
                app.send_task("ingest.change", args=["/s", "upsert", "/r", f"f{i}", None, None], queue=lane,
                              connection=conn, headers=queued_header())

    assert lane_stats(redis_url)["bulk"] == {"depth": 0, "oldest_age": None}
    send("bulk", 3)
    time.sleep(1.2)
    send("interactive", 1)
    st = lane_stats(redis_url)
    assert st["bulk"]["depth"] == 3 and 1.2 <= st["bulk"]["oldest_age"] < 30
    assert st["interactive"]["depth"] == 1 and st["interactive"]["oldest_age"] < 1.0
    assert st["maintenance"] == {"depth": 0, "oldest_age": None}
