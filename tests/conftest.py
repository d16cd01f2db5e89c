"""Suite-wide rules.

Under ``make test`` (which sets TIFFIN_REQUIRE_ALL=1) and in CI (``CI`` set), a skipped
test is a failed one: a machine without Java, Redis or an optional package would
otherwise report a green run that never exercised Spark, Redis or that package. Run by
hand without those variables, tests whose service is missing still skip, so a developer
can run a subset anywhere. Expected failures (xfail) are not skips and keep their own
strictness (``xfail_strict`` in pyproject.toml).
"""

from __future__ import annotations

import os

import pytest

_FALSE = ("", "0", "false", "no", "off")


def _require_all() -> str | None:
    """The variable that forbids skips, or None when skips are allowed."""
    for name in ("TIFFIN_REQUIRE_ALL", "CI"):
        if os.environ.get(name, "").strip().lower() not in _FALSE:
            return name
    return None


def _skip_reason(longrepr: object) -> str:
    # A skip's longrepr is (file, line, "Skipped: reason").
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def _as_failure(report: pytest.TestReport | pytest.CollectReport, variable: str) -> None:
    report.outcome = "failed"
    report.longrepr = (f"skipped, but {variable}={os.environ[variable]} requires every test "
                       f"to run: {_skip_reason(report.longrepr)}")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    variable = _require_all()
    # wasxfail marks an xfail reported as skipped (run=False, or pytest.xfail()).
    if variable and report.skipped and not hasattr(report, "wasxfail"):
        _as_failure(report, variable)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector):
    # A whole module skipped while it was imported (pytest.importorskip at its top).
    report = yield
    variable = _require_all()
    if variable and report.skipped:
        _as_failure(report, variable)
    return report
