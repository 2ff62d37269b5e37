"""Shared fixtures. `simulator`: a simulator process shared by the session, reset per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.simproc import SimProc, start_simulator


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
