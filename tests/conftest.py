"""Shared pytest fixtures for foxhunt's tests."""

from __future__ import annotations

import pytest

from kusto_oracle import KqlOracle, OracleUnavailable
from threatfox_server import FAMILIES, FakeThreatFox, sample_records

# ---------------------------------------------------------------------------------------------
# KQL oracle (tests/kusto_oracle.py): Microsoft's Kusto parser, run with node.
# Needs `npm ci` in the repository root; a missing node or package fails the test, never skips.
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def kql_oracle() -> KqlOracle:
    """Session-wide KQL oracle: ``kql_oracle.check([(id, kql), ...], platform="sentinel")``."""
    try:
        return KqlOracle()
    except OracleUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)


# --- end of KQL oracle block -----------------------------------------------------------------


# --- a fake ThreatFox on 127.0.0.1 (tests/threatfox_server.py), for the fetch and update tests ----


@pytest.fixture
def records() -> list[dict]:
    """The bundled 2022 API records of `threatfox_server.FAMILIES`, re-dated to the last hours."""
    return sample_records(FAMILIES)


@pytest.fixture
def server(records: list[dict]):
    """A fake ThreatFox serving `records`."""
    with FakeThreatFox(records) as fake:
        yield fake
