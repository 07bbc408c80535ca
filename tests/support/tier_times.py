"""A pytest plugin that prints how long each test tier took (``make test`` shows it last).

One pytest run covers every tier, so session fixtures start once; this plugin adds up,
per tier (the first folder under ``tests/``: unit, integration, e2e), the setup, call and
teardown time of its tests, which includes starting the tier's servers (Redis, the
Kubernetes control plane) in the first test that needs them. Building the Kubernetes
tools happens before the first test and is printed by the e2e conftest itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parents[1]


@dataclass
class _Tier:
    tests: int = 0
    seconds: float = 0.0
    failed: set[str] = field(default_factory=set)


class TierTimes:
    """Collects per-tier durations from the test reports; prints them in the summary."""

    def __init__(self) -> None:
        self.tiers: dict[str, _Tier] = {}

    @staticmethod
    def tier_of(nodeid: str, path: Path) -> str:
        try:
            relative = path.resolve().relative_to(TESTS_DIR)
        except ValueError:
            return nodeid.split("/", 1)[0]
        return relative.parts[0] if len(relative.parts) > 1 else "(top level)"

    @pytest.hookimpl
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        tier = self.tiers.setdefault(self.tier_of(report.nodeid, Path(report.fspath)), _Tier())
        tier.seconds += report.duration
        if report.when == "call":
            tier.tests += 1
        if report.failed:
            tier.failed.add(report.nodeid)

    @pytest.hookimpl(trylast=True)
    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if not self.tiers:
            return
        terminalreporter.write_sep("-", "time per tier (setup + call + teardown)")
        for name, tier in sorted(self.tiers.items(), key=lambda item: -item[1].seconds):
            failed = f", {len(tier.failed)} failed" if tier.failed else ""
            terminalreporter.write_line(f"{name:<14} {tier.seconds:8.1f} s  {tier.tests:5d} tests{failed}")


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(TierTimes(), "callboard-tier-times")
