"""tests/conftest.py turns skips into failures under make test and CI, and only there.

Each case runs pytest in a subprocess on a small suite of its own that uses a copy of
our tests/conftest.py, with the variables under test set or removed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CONFTEST = Path(__file__).parents[1] / "conftest.py"

SUITE = {
    "test_tools.py": '''
import shutil
import pytest

def test_runs():
    assert 1 + 1 == 2

def test_needs_a_service():
    pytest.skip("frobnicator is not running")

@pytest.mark.skipif(True, reason="no frob-tool binary")
def test_needs_a_tool():
    pass

@pytest.fixture(scope="module")
def session():
    pytest.skip("no Java for the session")

def test_a_fixture_skips(session):
    pass

@pytest.mark.xfail(strict=True, reason="a known bug")
def test_known_bug():
    assert 1 == 2

@pytest.mark.xfail(run=False, reason="would hang")
def test_not_run():
    pass

def test_xfail_inside():
    pytest.xfail("decided at run time")
''',
}
MODULE_SKIP = {"test_optional.py": '''
import pytest
pytest.importorskip("tiffin_no_such_module_anywhere")

def test_never_collected():
    pass
''', "test_other.py": "def test_runs():\n    pass\n"}


def run_suite(tmp_path: Path, files: dict[str, str], env_set: dict[str, str]
              ) -> subprocess.CompletedProcess:
    shutil.copy(CONFTEST, tmp_path / "conftest.py")
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "TIFFIN_REQUIRE_ALL")}
    env.update(env_set)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA", "--rootdir",
         str(tmp_path), str(tmp_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def outcome_counts(stdout: str) -> dict[str, int]:
    last = stdout.strip().splitlines()[-1]
    return {word: int(n) for n, word in re.findall(r"(\d+) (\w+)", last)}


@pytest.mark.parametrize("env_set", [{}, {"CI": "false"}, {"TIFFIN_REQUIRE_ALL": "0"}])
def test_by_hand_skips_stay_skips(tmp_path, env_set):
    result = run_suite(tmp_path, SUITE, env_set)
    assert result.returncode == 0, result.stdout
    assert outcome_counts(result.stdout) == {"passed": 1, "skipped": 3, "xfailed": 3}
    assert "frobnicator is not running" in result.stdout


@pytest.mark.parametrize("env_set", [{"CI": "true"}, {"TIFFIN_REQUIRE_ALL": "1"}])
def test_under_make_test_or_ci_every_skip_fails_with_its_reason(tmp_path, env_set):
    result = run_suite(tmp_path, SUITE, env_set)
    assert result.returncode == 1, result.stdout
    # A skip mark and a skipping fixture act in setup: pytest calls a failure there an error.
    assert outcome_counts(result.stdout) == {"failed": 1, "errors": 2, "passed": 1,
                                             "xfailed": 3}, result.stdout
    (variable, value), = env_set.items()
    for reason in ("frobnicator is not running", "no frob-tool binary", "no Java for the session"):
        assert f"skipped, but {variable}={value} requires every test to run: {reason}" \
            in result.stdout, result.stdout


def test_a_strict_xfail_that_passes_still_fails_either_way(tmp_path):
    files = {"test_fixed.py": '''
import pytest

@pytest.mark.xfail(strict=True, reason="was a bug")
def test_fixed():
    pass
'''}
    for env_set in ({}, {"TIFFIN_REQUIRE_ALL": "1"}):
        result = run_suite(tmp_path, files, env_set)
        assert result.returncode == 1
        assert outcome_counts(result.stdout) == {"failed": 1}, result.stdout
        assert "XPASS(strict)" in result.stdout


def test_a_module_skipped_at_import_fails_collection_under_make_test(tmp_path):
    relaxed = run_suite(tmp_path, MODULE_SKIP, {})
    assert relaxed.returncode == 0, relaxed.stdout
    assert outcome_counts(relaxed.stdout) == {"passed": 1, "skipped": 1}
    strict = run_suite(tmp_path, MODULE_SKIP, {"TIFFIN_REQUIRE_ALL": "1"})
    assert strict.returncode == 2, strict.stdout  # interrupted: an error during collection
    assert outcome_counts(strict.stdout) == {"error": 1}, strict.stdout
    assert ("skipped, but TIFFIN_REQUIRE_ALL=1 requires every test to run: could not import "
            "'tiffin_no_such_module_anywhere'") in strict.stdout
