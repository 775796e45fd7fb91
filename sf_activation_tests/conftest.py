"""Shared pytest fixtures."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import requests

from sf_activation_tests.support.emulator import TEST_SCHEMA_FLAGS, EmulatorHandle, start_emulator

# requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE override a Session's own `verify`,
# so with them set (as on many CI machines) a session trusting the emulator's
# certificate would still be checked against the system bundle. Tests set `verify`.
for _name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
    os.environ.pop(_name, None)


@pytest.fixture(scope="session")
def emulator_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorHandle]:
    """One emulator for the whole test session (built-in objects, no faults)."""
    with start_emulator(tmp_path_factory.mktemp("emulator")) as handle:
        yield handle


@pytest.fixture
def emulator(emulator_session: EmulatorHandle) -> EmulatorHandle:
    """The session's emulator, emptied of records and counters before the test."""
    emulator_session.reset()
    return emulator_session


@pytest.fixture(scope="session")
def schema_emulator_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorHandle]:
    """One emulator with the test describes (TEST_SCHEMA_FLAGS) added, for the session."""
    with start_emulator(tmp_path_factory.mktemp("emulator-schemas"), *TEST_SCHEMA_FLAGS) as handle:
        yield handle


@pytest.fixture
def emu(schema_emulator_session: EmulatorHandle) -> EmulatorHandle:
    """The test-describes emulator, emptied of records and counters before the test."""
    schema_emulator_session.reset()
    return schema_emulator_session


@pytest.fixture
def http(emu: EmulatorHandle) -> requests.Session:
    """Plain requests to `emu`, trusting its certificate and sending its token."""
    return emu.session()
