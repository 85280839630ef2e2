"""Issue 3's yardstick: every real document in ../shared/corpora (minus ir/) goes through the
real, sandboxed extraction path and ends ok, flagged or quarantined with a specific reason."""
import sys

import pytest

from tests.support.common import REPO, need_corpora

pytestmark = pytest.mark.slow

sys.path.insert(0, str(REPO / "bench"))


@pytest.fixture(scope="module")
def walk():
    need_corpora()
    import corpus_walk

    res = corpus_walk.walk(jobs=2, timeout=60.0, memory_mb=2048, progress=False)
    print("\n" + corpus_walk.markdown(res))
    return res


def test_every_file_ends_with_a_verdict_and_a_specific_reason(walk):
    import corpus_walk

    top = [r for r in walk["rows"] if r["depth"] == 0]
    assert len(top) == walk["files"] == len(corpus_walk.corpus_files()) > 700
    for r in walk["rows"]:
        assert r["verdict"] in ("ok", "flagged", "quarantined"), r
        if r["verdict"] != "ok":
            assert r["code"] and r["reason"] and len(r["reason"]) > 8, r


def test_no_parse_beyond_its_limits(walk):
    # the sandbox kills at 60 s; one file's row includes its own sandboxed parse only
    assert max(r["seconds"] for r in walk["rows"]) < 60 + 10
    assert walk["peak_child_rss_mib"] < 2048 + 1500  # budget over a worker of ~1.5 GiB at most


def _row(walk, suffix):
    return next(r for r in walk["rows"] if r["depth"] == 0 and r["file"].endswith(suffix))


def test_hostile_files_are_stopped_with_their_reasons(walk):
    droste = _row(walk, "pkg/droste.zip")
    assert droste["verdict"] == "quarantined" and droste["code"] == "zip-bomb" and "recursive" in droste["reason"]
    quine = _row(walk, "pkg/quine.gz")
    assert quine["verdict"] == "quarantined" and quine["code"] == "zip-bomb"
    bomb = _row(walk, "bomb_giant.pdf")
    assert bomb["verdict"] != "ok" or bomb["seconds"] < 60, bomb


def test_most_of_the_corpus_is_usable(walk):
    top = [r for r in walk["rows"] if r["depth"] == 0]
    usable = sum(r["verdict"] != "quarantined" for r in top)
    assert usable / len(top) > 0.6, walk["by_format"]
