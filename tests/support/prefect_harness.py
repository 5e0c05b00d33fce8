"""One temporary local Prefect server for the whole test session (flow and deployment tests).

``prefect_api`` is a session fixture, declared in ``tests/flow/conftest.py``: one server
(``prefect_test_harness``: SQLite in a temporary folder) for the whole flow tier. PREFECT_HOME is a temporary
folder and analytics are off, so nothing is written outside the test's folders or sent anywhere.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

# Settings read when prefect is first imported (no telemetry, quiet, no ephemeral server).
_ENV = {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_ENABLED": "false",
    "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
}


@dataclass
class PrefectApi:
    url: str
    home: Path

    def cli_env(self, **extra: str) -> dict[str, str]:
        """Environment for a ``prefect`` CLI subprocess talking to this server."""
        env = {**os.environ, **_ENV, "PREFECT_API_URL": self.url, "PREFECT_HOME": str(self.home)}
        return {**env, **extra}


def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectApi]:
    """Start a temporary local Prefect server; yield its API; stop it."""
    home = tmp_path_factory.mktemp("prefect-home")
    with ExitStack() as stack:
        patch = stack.enter_context(pytest.MonkeyPatch.context())
        for name, value in {**_ENV, "PREFECT_HOME": str(home)}.items():
            patch.setenv(name, value)
        from prefect.settings import (
            PREFECT_HOME,
            PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW,
            PREFECT_SERVER_ANALYTICS_ENABLED,
            temporary_settings,
        )
        from prefect.testing.utilities import prefect_test_harness

        stack.enter_context(
            temporary_settings(
                updates={
                    PREFECT_HOME: home,
                    PREFECT_SERVER_ANALYTICS_ENABLED: False,
                    PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW: "ignore",
                }
            )
        )
        stack.enter_context(prefect_test_harness(server_startup_timeout=60))
        from prefect.settings import PREFECT_API_URL

        yield PrefectApi(PREFECT_API_URL.value(), home)
