"""Under CI (``PARTICIPANTS_TEST_NO_SKIP=1``, set by .ci/run) a skipped OIDC, browser, S3 or failover
test fails the run: those skips mean a missing tool (node, Chromium, moto, a Redis Sentinel), and a
green run that never ran them would claim what it did not test.

Which tests: those in files named like ``MUST_RUN_FILES``, and those using a fixture of
``MUST_RUN_FIXTURES`` (the OIDC provider, the S3 server). Other skips stay skips. Loaded by
tests/conftest.py; a pytest plugin of its own so that its test can load it alone (``-p``).
"""

from __future__ import annotations

import fnmatch
import os
from pathlib import Path
from typing import Any

import pytest

SWITCH = "PARTICIPANTS_TEST_NO_SKIP"
MUST_RUN_FILES = ("test_oidc_*.py", "test_console_browser*.py", "test_s3_*.py", "test_failover_*.py")
MUST_RUN_FIXTURES = frozenset({"oidc", "oidc_session", "start_oidc_provider", "s3_server", "s3_settings"})


def must_run(item: pytest.Item) -> bool:
    name = Path(str(item.fspath)).name
    if any(fnmatch.fnmatch(name, pattern) for pattern in MUST_RUN_FILES):
        return True
    return bool(MUST_RUN_FIXTURES & set(getattr(item, "fixturenames", ())))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    outcome = yield
    report = outcome.get_result()
    if os.environ.get(SWITCH) != "1" or not report.skipped or hasattr(report, "wasxfail"):
        return
    if must_run(item):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped under {SWITCH}=1, where this test must run: {reason}"
