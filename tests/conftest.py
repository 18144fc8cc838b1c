from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import settings

from tests.mosquitto import Broker

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# CI explores the same examples on every run, so a result is reproducible; locally each run
# explores new ones.
settings.register_profile("ci", derandomize=True)
if os.environ.get("CI", "").lower() == "true":
    settings.load_profile("ci")


@pytest.fixture
def broker() -> Iterator[Broker]:
    """A private Mosquitto on a free loopback port, stopped after the test."""
    with Broker() as running:
        yield running


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI", "").lower() == "true" and report.skipped:
        report.outcome = "failed"
        report.longrepr = (
            f"skipped under CI=true (a missing dependency fails here): {report.longrepr}")
