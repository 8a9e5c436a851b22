"""Metric reads do not hold up the other routes (#24): the event loop never waits for the database
(the token lookup runs in the thread pool), and GET /jobs/<id>/metrics works under a limiter of
its own, api.deps.METRIC_READ_SLOTS reads at once, the others waiting for a slot.

Not timed: PostgreSQL table locks hold requests inside the database for as long as the test needs,
and the checks are about order (what answers while what is held). Each wait is bounded
(`_until`, `_answered`) only so that a regression fails instead of hanging.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from api.app import create_app
from api.deps import METRIC_READ_SLOTS
from store import reset_caches
from store.db import session_scope
from store.metrics import write_metrics
from store.migrate import upgrade
from store.settings import get_settings
from store.tokens import create_token

HANG_GUARD_S = 60  # far beyond any answer here; only a regression waits this long


@pytest.fixture
def pg_api(
    empty_postgres_url: str, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[TestClient, str]]:
    """The API on a PostgreSQL database of its own (local storage, filesystem broker: no Redis),
    one TestClient portal (one event loop) for all requests, with user local's token, looked up
    in the database on every request (no SAGAN_TOKEN_CACHE_SECONDS: these tests hold lookups)."""
    monkeypatch.setenv("SAGAN_DATA_DIR", str(data_dir))
    monkeypatch.setenv("SAGAN_TOKEN_CACHE_SECONDS", "0")
    monkeypatch.setenv("SAGAN_DATABASE_URL", empty_postgres_url)
    monkeypatch.setenv("SAGAN_STORAGE", "local")
    monkeypatch.delenv("SAGAN_BROKER_URL", raising=False)
    reset_caches()
    upgrade(empty_postgres_url)
    with session_scope(get_settings()) as session:
        token = create_token(session, "local", note="test")[1]
    with TestClient(create_app()) as client:
        client.headers["Authorization"] = f"Bearer {token}"
        yield client, empty_postgres_url
    reset_caches()


@contextmanager
def _locked(url: str, table: str) -> Iterator[Callable[[], int]]:
    """The table locked (ACCESS EXCLUSIVE: even a SELECT of it waits) until the block ends;
    yields a count of the requests waiting for that lock."""
    engine = create_engine(url)
    try:
        with engine.connect() as holder, engine.connect() as watcher:
            holder.execute(text(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"))
            watcher.execute(text("SET application_name = 'watcher'"))

            def waiting() -> int:
                query = text(
                    "SELECT count(*) FROM pg_locks"
                    " WHERE NOT granted AND relation = CAST(:t AS regclass)"
                )
                n = watcher.execute(query, {"t": table}).scalar_one()
                watcher.rollback()
                return n

            try:
                yield waiting
            finally:
                holder.rollback()  # the lock goes: the held requests go on
    finally:
        engine.dispose()


def _until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + HANG_GUARD_S
    while not check():
        assert time.monotonic() < deadline, f"not reached: {what}"
        time.sleep(0.02)


class _InFlight:
    """A request sent from a thread of its own; its answer once it came."""

    def __init__(self, client: TestClient, path: str, params: dict | None = None):
        self.answer: httpx.Response | BaseException | None = None
        self.thread = threading.Thread(target=self._send, args=(client, path, params), daemon=True)
        self.thread.start()

    def _send(self, client: TestClient, path: str, params: dict | None) -> None:
        try:
            self.answer = client.get(path, params=params)
        except BaseException as e:  # noqa: BLE001 - reported by the test's assertion
            self.answer = e

    @property
    def done(self) -> bool:
        return not self.thread.is_alive()

    def status(self) -> int:
        self.thread.join(HANG_GUARD_S)
        assert self.done, "the request did not answer"
        assert isinstance(self.answer, httpx.Response), self.answer
        return self.answer.status_code


def _answered(client: TestClient, path: str) -> int:
    """The status of a GET that must answer while others are held (a hang fails the test)."""
    return _InFlight(client, path).status()


def _job_with_metrics(client: TestClient) -> str:
    r = client.post("/jobs", json={"kind": "train", "config": {"dataset": "digits", "steps": 100}})
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]
    with session_scope(get_settings()) as session:
        write_metrics(session, job_id, [("d_loss", step, step / 4) for step in range(100)])
    return job_id


def test_a_token_lookup_held_by_the_database_does_not_stall_the_event_loop(pg_api):
    client, url = pg_api
    job_id = _job_with_metrics(client)
    with _locked(url, "api_tokens") as waiting:
        held = [_InFlight(client, "/jobs"), _InFlight(client, f"/jobs/{job_id}/metrics")]
        _until(lambda: waiting() >= 1, "a token lookup waiting for the lock")
        # The loop still serves a route without a token while a lookup waits in the database
        # (with the lookup on the loop, nothing answered until the lock went) ...
        assert _answered(client, "/healthz") == 200
        # ... and the other request's lookup (another route's) too.
        _until(lambda: waiting() == 2, "both token lookups waiting for the lock")
        assert not any(r.done for r in held)
    assert [r.status() for r in held] == [200, 200]


def test_metric_reads_wait_for_their_own_slots_and_other_routes_answer(pg_api):
    client, url = pg_api
    job_id = _job_with_metrics(client)
    limiter = client.app.state.services.metric_reads
    assert limiter.total_tokens == METRIC_READ_SLOTS
    extra = 2
    with _locked(url, "metrics") as waiting:
        # Distinct queries: each is a render (a cache miss) that reads the locked table.
        reads = [
            _InFlight(client, f"/jobs/{job_id}/metrics", {"max_points": 1 + i})
            for i in range(METRIC_READ_SLOTS + extra)
        ]
        _until(
            lambda: (
                waiting() == METRIC_READ_SLOTS
                and client.portal.call(limiter.statistics).tasks_waiting == extra
            ),
            f"{METRIC_READ_SLOTS} renders held by the lock and {extra} reads waiting for a slot",
        )
        # Every slot taken by a held read: the other routes do not wait for one.
        for path in ("/jobs", f"/jobs/{job_id}", f"/jobs/{job_id}/events", "/healthz"):
            assert _answered(client, path) == 200, path
        assert not any(r.done for r in reads)
        assert waiting() == METRIC_READ_SLOTS  # still no more than that many in the database
    assert [r.status() for r in reads] == [200] * len(reads)
    _until(lambda: limiter.borrowed_tokens == 0, "every slot back (once its answer was sent)")
    points = [len(r.answer.json()["series"]["d_loss"]) for r in reads]
    assert points == [1 + i for i in range(len(reads))]
