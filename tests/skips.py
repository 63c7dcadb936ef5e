"""A skip is not a pass: a run in which any test did not run fails, unless a partial run was asked for.

Every test skips only when something it needs is missing (HAProxy, Chromium, docker-compose, Playwright),
and `make install` installs all of them. A developer who wants a partial run anyway sets
BOXOFFICE_ALLOW_SKIPS=1; the run then passes and ends with how many tests did not run, and why.
"""

from __future__ import annotations

import os
from collections import Counter

import pytest

ALLOW_SKIPS = "BOXOFFICE_ALLOW_SKIPS"
not_run: Counter[str] = Counter()  # why -> how many tests (or whole modules) did not run, this session


def skips_allowed() -> bool:
    return os.environ.get(ALLOW_SKIPS, "").strip() == "1"


def _reason(report: pytest.CollectReport | pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:  # (path, line, "Skipped: why")
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def pytest_sessionstart(session: pytest.Session) -> None:
    not_run.clear()


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if report.skipped:  # a whole module (pytest.importorskip at its top)
        not_run[f"{report.nodeid} (whole module): {_reason(report)}"] += 1


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and not getattr(report, "wasxfail", None):
        not_run[_reason(report)] += 1


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not_run and not skips_allowed() and exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not not_run:
        return
    verdict = (f"partial run ({ALLOW_SKIPS}=1)" if skips_allowed()
               else f"the run FAILS: a skip is not a pass (install what is missing: make install; "
                    f"or ask for a partial run: {ALLOW_SKIPS}=1)")
    terminalreporter.section(f"{sum(not_run.values())} did not run", sep="=", red=not skips_allowed(), bold=True)
    for why, count in not_run.most_common():
        terminalreporter.line(f"{count:5d}  {why}")
    terminalreporter.line(verdict)
