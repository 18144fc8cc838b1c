from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from tests.agent_fixtures import cached_bundle_dir
from tests.agent_io import AgentProcess
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


@pytest.fixture(scope="session")
def agent_bundle(pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny real bundle of `tests/agent_fixtures.py`: built once per session at most, and
    reused across runs from pytest's cache while its sources are unchanged."""
    return cached_bundle_dir(pytestconfig, tmp_path_factory)


@pytest.fixture
def agents() -> Iterator[list[AgentProcess]]:
    """Agent subprocesses a test starts (append them here): killed after the test."""
    started: list[AgentProcess] = []
    yield started
    for agent in started:
        agent.kill()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI", "").lower() == "true" and report.skipped:
        report.outcome = "failed"
        report.longrepr = (
            f"skipped under CI=true (a missing dependency fails here): {report.longrepr}")
