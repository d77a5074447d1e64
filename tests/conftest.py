"""Shared pytest fixtures for foxhunt's tests."""

from __future__ import annotations

import pytest

from kusto_oracle import KqlOracle, OracleUnavailable

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
