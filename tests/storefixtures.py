"""pytest fixtures of the store tests (registered by tests/conftest.py): the store backends."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.pgcluster import PgCluster, unavailable


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    cluster = PgCluster().start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _url(backend: str, request: pytest.FixtureRequest, path: Path) -> str:
    if backend == "postgresql":
        return request.getfixturevalue("pg_cluster").new_db()
    return str(path)


@pytest.fixture
def store_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return _url(backend, request, tmp_path / "a.db")


@pytest.fixture
def store_url2(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    url = _url(backend, request, tmp_path / "b.db")
    return "sqlite:///" + url if backend == "sqlite" else url  # SQLAlchemy style, absolute
