"""One rule for a missing prerequisite: outside CI a test is skipped with the reason; in CI
(``CI`` set to anything but empty/0/false) it fails, because a missing server or tool there
is a broken CI machine, not a reason to prove nothing."""
import os

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def missing(what: str):
    """Skip outside CI, fail in CI."""
    if in_ci():
        pytest.fail(f"{what} (CI: it must be installed)")
    pytest.skip(what)
