"""Outages of the services a job depends on (database, object storage, broker), told apart from the
job's own errors, and calls retried through them with backoff.

An outage is never a job failure: the worker retries, and if the service stays away it stops the run
at its last checkpoint and the job goes back to the queue.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from store.telemetry import OUTAGE_RETRIES, service_of

log = logging.getLogger(__name__)
T = TypeVar("T")


class ServiceUnavailable(RuntimeError):
    """A database, storage or broker call kept failing for the whole retry window."""


def is_outage(error: BaseException) -> bool:
    """True for errors saying a service is unreachable or overloaded, not that a request is bad."""
    import botocore.exceptions as boto
    import kombu.exceptions
    import redis.exceptions
    import sqlalchemy.exc as sa

    if isinstance(error, ServiceUnavailable):
        return True
    if isinstance(error, sa.DBAPIError) and error.connection_invalidated:
        return True
    if isinstance(
        error,
        (
            sa.OperationalError,
            sa.InterfaceError,
            sa.DisconnectionError,
            sa.TimeoutError,
            boto.ConnectionError,
            boto.HTTPClientError,
            kombu.exceptions.OperationalError,
            redis.exceptions.ConnectionError,
            redis.exceptions.TimeoutError,
            ConnectionError,
            TimeoutError,
        ),
    ):
        return True
    if isinstance(error, boto.ClientError):
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return status >= 500 or error.response.get("Error", {}).get("Code") in (
            "SlowDown",
            "Throttling",
            "RequestTimeout",
        )
    cause = error.__cause__ or error.__context__
    return cause is not None and cause is not error and is_outage(cause)


def call_through_outages(
    fn: Callable[[], T],
    what: str,
    *,
    within_s: float,
    first_wait_s: float = 0.5,
    max_wait_s: float = 15.0,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """fn(), retried with exponential backoff while it fails with an outage, for up to `within_s`
    seconds; then ServiceUnavailable naming `what` and the last error. Other errors pass at once."""
    deadline = time.monotonic() + within_s
    wait = first_wait_s
    attempt = 1
    while True:
        try:
            return fn()
        except Exception as e:
            if not is_outage(e):
                raise
            left = deadline - time.monotonic()
            first = (str(e).strip().splitlines() or [""])[0][:200]
            if left <= 0:
                raise ServiceUnavailable(
                    f"{what}: still failing after {within_s:.0f} s ({type(e).__name__}: {first})"
                ) from e
            log.warning(
                "%s failed (attempt %d, %s: %s); retrying", what, attempt, type(e).__name__, first
            )
            OUTAGE_RETRIES.labels(service_of(what, e)).inc()
            sleep(min(wait, left))
            wait = min(wait * 2, max_wait_s)
            attempt += 1
