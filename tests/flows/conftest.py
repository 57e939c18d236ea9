"""Fixtures of the flows tests: one real Prefect server for the whole session (tests/flows/prefect_server.py)."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterator

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from prefect_server import PrefectServer, prefect_server as _start_server  # noqa: E402


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    """A real `prefect server start` on 127.0.0.1 (own PREFECT_HOME, SQLite), started on first use and stopped by
    its process group at the end of the session. PREFECT_API_URL is not set for the session: point a test at
    `prefect_server.api_url` with `temporary_settings`, or pass `prefect_server.env()` to a subprocess."""
    with _start_server(tmp_path_factory.mktemp("prefect")) as server:
        yield server
