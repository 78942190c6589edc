"""CI's switch: a skipped OIDC, browser, S3 or failover test fails the run; other skips stay skips."""

from __future__ import annotations

import subprocess
import sys

from tests.test_cli import ROOT

SKIPPING = """
import pytest

@pytest.fixture
def oidc():
    pytest.skip("node is missing")

def test_needs_the_provider(oidc):
    pass

def test_skips_for_its_own_reasons():
    pytest.skip("not on this platform")
"""

FAILOVER = """
import pytest

pytestmark = pytest.mark.skipif(True, reason="no redis-sentinel")

def test_failover():
    pass
"""


def _pytest(tmp_path, switch: str | None) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_anything.py").write_text(SKIPPING)
    (tmp_path / "test_failover_sentinel.py").write_text(FAILOVER)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": ROOT}
    if switch is not None:
        env["PARTICIPANTS_TEST_NO_SKIP"] = switch
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.ci_no_skip", "-p", "no:cacheprovider", "-q", "-rA",
         "--rootdir", str(tmp_path), "-c", "/dev/null", str(tmp_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_without_the_switch_skips_are_skips(tmp_path):
    done = _pytest(tmp_path, None)
    assert done.returncode == 0, done.stdout
    assert "3 skipped" in done.stdout


def test_under_the_switch_a_skip_of_a_must_run_test_fails(tmp_path):
    done = _pytest(tmp_path, "1")
    assert done.returncode == 1, done.stdout
    out = done.stdout
    assert "test_needs_the_provider" in out and "node is missing" in out
    assert "test_failover" in out and "no redis-sentinel" in out
    assert "2 errors" in out and "1 skipped" in out, out[-2000:]
