"""Shared fixtures: real PostgreSQL, Redis and moto S3, and embedded-mode data directories."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

PG_ADMIN_URL = os.environ.get(
    "SAGAN_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
REDIS_HOST = os.environ.get("SAGAN_TEST_REDIS", "redis://127.0.0.1:6379")
MOTO_PORT = int(os.environ.get("SAGAN_TEST_MOTO_PORT", "5055"))

SERVICE_ENV = (
    "SAGAN_DATA_DIR",
    "SAGAN_DATABASE_URL",
    "SAGAN_BROKER_URL",
    "SAGAN_STORAGE",
    "SAGAN_STORAGE_DIR",
    "SAGAN_S3_BUCKET",
    "SAGAN_S3_PREFIX",
    "SAGAN_S3_ENDPOINT_URL",
)


def _port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def reset_service_caches() -> None:
    """Settings, engine and Celery app are cached per process; tests that change env reset them."""
    from store import reset_caches

    reset_caches()


# `make test` runs two pytest processes at once: `-m alone`, the long CPU-bound tests (training the
# default digits job, #11: minutes on one torch thread; the compiled fast path, #14), and
# `-m "not alone"`, every other test,
# in order, so the service tests (which share Redis db 13 and the moto server) never
# run at the same time as each other. (pytest-xdist's loadgroup cannot do this with pytest 9:
# it still writes the group into `_nodeid`, which pytest 9 no longer reads.)
ALONE = (
    "tests/core/test_quality.py",
    "tests/core/test_fast_path.py",
    "tests/core/test_distributed.py",  # two CPU processes per run (#15)
    # a `sagan up` of its own (SQLite, its own port and data dir; no shared Redis or moto)
    "tests/service/test_readme_walkthrough.py",
    "tests/service/test_colour_quality.py",  # a `sagan up` training a colour set for minutes
    # a `sagan up` of its own running a sweep of four trials (the distributed one shares Redis)
    "tests/service/test_sweeps_e2e.py::"
    "test_embedded_grid_prunes_the_clearly_worse_trials_and_promotes_the_best",
)


def _compiles(item: pytest.Item) -> bool:
    """A test of the fast path (#14): torch.compile of G and D, minutes on a cold cache."""
    callspec = getattr(item, "callspec", None)
    return callspec is not None and callspec.params.get("path") == "fast"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "alone: a long CPU-bound test (make test runs them apart)")


@pytest.hookimpl(tryfirst=True)  # before -m selects by markers
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.nodeid.split("::")[0] in ALONE or item.nodeid in ALONE or _compiles(item):
            item.add_marker(pytest.mark.alone)


@pytest.fixture(autouse=True, scope="session")
def _aws_test_credentials() -> None:
    # moto accepts any credentials; boto3 must find some and must not read the developer's.
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")


@pytest.fixture(autouse=True)
def _clean_service_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in SERVICE_ENV:
        monkeypatch.delenv(name, raising=False)
    reset_service_caches()
    yield
    reset_service_caches()


@contextmanager
def _scratch_database() -> Iterator[str]:
    from sqlalchemy import create_engine, text

    if not _port_open(5432):
        pytest.fail("PostgreSQL is not running on 127.0.0.1:5432 (make test starts it)")
    name = f"sagan_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL database of this test run's own, dropped at the end."""
    with _scratch_database() as url:
        yield url


@pytest.fixture
def empty_postgres_url() -> Iterator[str]:
    """A new, empty PostgreSQL database for one test."""
    with _scratch_database() as url:
        yield url


@pytest.fixture
def migrated_postgres_url(postgres_url: str) -> Iterator[str]:
    """The run's PostgreSQL database at the head revision, emptied of rows after the test."""
    from sqlalchemy import create_engine, text

    from store.migrate import upgrade

    upgrade(postgres_url)
    yield postgres_url
    engine = create_engine(postgres_url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "TRUNCATE jobs, job_events, metrics, checkpoints, models, workers, api_tokens, "
                "sweeps, datasets CASCADE"
            )
        )
    engine.dispose()


@pytest.fixture
def redis_url() -> str:
    """A Redis database index of its own, emptied first."""
    import redis

    if not _port_open(6379):
        pytest.fail("Redis is not running on 127.0.0.1:6379 (make test starts it)")
    # SAGAN_TEST_REDIS_DB: two suites run at once on one Redis keep apart
    url = f"{REDIS_HOST}/{os.environ.get('SAGAN_TEST_REDIS_DB', '13')}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()
    return url


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real moto S3 server over HTTP: the one `make test` started, else one started here."""
    if _port_open(MOTO_PORT):
        yield f"http://127.0.0.1:{MOTO_PORT}"
        return
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint: str) -> str:
    """A new, empty bucket on the moto server."""
    import boto3

    name = f"sagan-test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=name)
    return name


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """An embedded-mode data directory (SQLite, local storage, filesystem broker live under it)."""
    path = tmp_path / "sagan-data"
    path.mkdir()
    return path


@pytest.fixture
def embedded_env(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the service's settings at an embedded data directory, as `sagan up` does."""
    monkeypatch.setenv("SAGAN_DATA_DIR", str(data_dir))
    reset_service_caches()
    return data_dir


@pytest.fixture
def distributed_env(
    migrated_postgres_url: str,
    redis_url: str,
    s3_endpoint: str,
    s3_bucket: str,
    data_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> dict[str, str]:
    """Point the service's settings at real PostgreSQL, Redis and S3, as `docker compose` does."""
    env = {
        "SAGAN_DATA_DIR": str(data_dir),
        "SAGAN_DATABASE_URL": migrated_postgres_url,
        "SAGAN_BROKER_URL": redis_url,
        "SAGAN_STORAGE": "s3",
        "SAGAN_S3_BUCKET": s3_bucket,
        "SAGAN_S3_ENDPOINT_URL": s3_endpoint,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    reset_service_caches()
    return env
