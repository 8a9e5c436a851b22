"""Outages told apart from a job's own errors, and calls retried through them."""

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from store.outages import ServiceUnavailable, call_through_outages, is_outage


def _refused_database_error() -> OperationalError:
    engine = create_engine(
        "postgresql+psycopg://x@127.0.0.1:9/x", connect_args={"connect_timeout": 2}
    )
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except OperationalError as e:
        return e
    finally:
        engine.dispose()
    raise AssertionError("port 9 answered")


def test_a_refused_database_is_an_outage_and_a_bad_value_is_not():
    assert is_outage(_refused_database_error())
    assert is_outage(ConnectionRefusedError())
    assert not is_outage(ValueError("batch_size: must be > 0"))
    assert not is_outage(RuntimeError("CUDA out of memory"))


def test_calls_are_retried_through_an_outage_then_succeed():
    error, calls, waits = _refused_database_error(), [], []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 4:
            raise error
        return "done"

    assert call_through_outages(flaky, "metrics", within_s=60, sleep=waits.append) == "done"
    assert len(calls) == 4 and waits == [0.5, 1.0, 2.0]  # exponential backoff


def test_an_outage_that_outlasts_the_window_names_the_call_and_other_errors_pass_at_once():
    error = _refused_database_error()

    def down() -> None:
        raise error

    with pytest.raises(ServiceUnavailable, match="job 7: metrics: still failing after 0 s"):
        call_through_outages(down, "job 7: metrics", within_s=0, sleep=lambda s: None)
    calls = []

    def bad() -> None:
        calls.append(1)
        raise KeyError("fid")

    with pytest.raises(KeyError):
        call_through_outages(bad, "x", within_s=60, sleep=lambda s: None)
    assert len(calls) == 1
