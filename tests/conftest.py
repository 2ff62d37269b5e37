"""Shared fixtures: `clean_env` (autouse: no real keys), `simulator` (one process per session, reset per test)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from harness.secrets import SECRET_ENV_VARS
from tests.simproc import SimProc, start_simulator


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees a developer's real keys or hosts: a test that wants one plants it itself."""
    for name in (*SECRET_ENV_VARS, "POSTHOG_HOST", "ANTHROPIC_BASE_URL"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def simulator_session() -> Iterator[SimProc]:
    """One simulator subprocess for the whole session (time scale 0.02, seed 1)."""
    sim = start_simulator("--time-scale", "0.02", "--seed", "1")
    yield sim
    sim.stop()


@pytest.fixture
def simulator(simulator_session: SimProc) -> SimProc:
    """The session simulator with its requests, events, buckets and faults reset."""
    simulator_session.reset()
    return simulator_session
