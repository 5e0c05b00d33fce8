"""The flow tier's one Prefect server, shared by every test in tests/flow/."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.prefect_harness import PrefectApi, prefect_server


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectApi]:
    yield from prefect_server(tmp_path_factory)
