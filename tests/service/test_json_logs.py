"""SAGAN_LOG_FORMAT=json (issue #24): the API, the workers and `sagan up` log one JSON object a
line, and a job's lines carry its id; text stays the default."""

from __future__ import annotations

import json
import logging
import re
import signal
import sys
import threading
from collections.abc import Iterator
from contextvars import copy_context
from pathlib import Path

import httpx
import pytest
from servicekit import (
    AUTH,
    TINY_TRAIN,
    ProcessGroup,
    free_port,
    service_env,
    wait_healthy,
    wait_job,
)

from store import log_format
from store.log_format import JsonFormatter, job_context

ISO_UTC_MS = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"


def _record(msg: str = "hello %s", *args: object, **attrs: object) -> logging.LogRecord:
    record = logging.LogRecord("sagan.test", logging.WARNING, __file__, 1, msg, args, None)
    record.__dict__.update(attrs)
    return record


def _json(record: logging.LogRecord) -> dict:
    line = JsonFormatter().format(record)
    assert "\n" not in line
    return json.loads(line)


@pytest.fixture(autouse=True)
def _no_task_context() -> Iterator[None]:
    """Tests before these ran trainer callbacks in this process (JobCallbacks.should_stop sets
    the step outside any task): each test here starts with no job, worker or step."""
    tokens = [(var, var.set(None)) for var in log_format.CONTEXT.values()]
    yield
    for var, token in reversed(tokens):
        var.reset(token)


def test_a_record_about_nothing_has_the_four_keys_only() -> None:
    entry = _json(_record("hello %s", "world"))
    assert entry.keys() == {"time", "level", "logger", "message"}  # no job_id key (not null)
    assert re.fullmatch(ISO_UTC_MS, entry["time"]), entry
    assert (entry["level"], entry["logger"], entry["message"]) == (
        "WARNING",
        "sagan.test",
        "hello world",
    )


def test_extra_fields_come_first_then_the_task_context() -> None:
    with job_context("job-ctx", "host:1"):
        log_format.step.set(7)
        from_context = _json(_record())
        from_extra = _json(_record(job_id="job-extra", step=3))
        # a thread started with a copy of the task's context (the heartbeat thread) has them too
        seen: list[dict] = []
        thread = threading.Thread(
            target=copy_context().run, args=(lambda: seen.append(_json(_record())),)
        )
        thread.start()
        thread.join()
    after = _json(_record())
    assert {k: from_context[k] for k in ("job_id", "worker", "step")} == {
        "job_id": "job-ctx",
        "worker": "host:1",
        "step": 7,
    }
    assert (from_extra["job_id"], from_extra["worker"], from_extra["step"]) == (
        "job-extra",
        "host:1",
        3,
    )
    assert seen[0]["job_id"] == "job-ctx"
    assert "job_id" not in after and "step" not in after  # reset when the task ends


def test_an_exception_is_one_line_with_its_traceback_as_text() -> None:
    try:
        raise ValueError('bad "value"\nsecond line')
    except ValueError:
        record = _record("job failed", exc_info=sys.exc_info())
    entry = _json(record)
    assert entry["message"] == "job failed"
    assert entry["exc_info"].startswith("Traceback (most recent call last):")
    assert 'ValueError: bad "value"\nsecond line' in entry["exc_info"]


def test_text_stays_the_default() -> None:
    from store.settings import Settings

    assert Settings().log_format == "text"
    line = log_format.formatter("text").format(_record())
    assert re.fullmatch(
        r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} WARNING sagan.test\] hello %s", line
    )


def test_up_under_json_logs_only_json_lines_and_the_jobs_carry_its_id(tmp_path: Path) -> None:
    port = free_port()
    env = service_env(SAGAN_LOG_FORMAT="json")
    base = f"http://127.0.0.1:{port}"
    with ProcessGroup(tmp_path) as group:
        # --access-log: uvicorn's access lines too
        argv = ["up", "--port", str(port), "--data-dir", str(tmp_path / "data"), "--access-log"]
        up = group.start(argv, env, "up")
        wait_healthy(base, up)
        with httpx.Client(base_url=base, headers=AUTH, timeout=30) as client:
            config = {**TINY_TRAIN, "steps": 4, "checkpoint_every": 2, "log_every": 2}
            r = client.post("/jobs", json={"kind": "train", "config": config})
            assert r.status_code == 201, r.text
            job_id = r.json()["id"]
            job = wait_job(client, job_id, ("succeeded", "failed", "cancelled"), 120, up)
            assert job["state"] == "succeeded", job
        assert up.stop(signal.SIGINT, timeout=60) == 0, up.output()

    entries = []
    for line in up.output().splitlines():  # stdout and stderr of `sagan up` and its workers
        if line.strip():
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:
                raise AssertionError(f"not JSON: {line!r}\n{up.output()}") from None
    for entry in entries:
        assert {"time", "level", "logger", "message"} <= entry.keys(), entry
        assert re.fullmatch(ISO_UTC_MS, entry["time"]), entry
    loggers = {e["logger"] for e in entries}
    # the CLI's, uvicorn's (server and access), Celery's and the worker's own lines
    assert {"sagan", "uvicorn.error", "uvicorn.access", "celery.apps.worker"} <= loggers, loggers
    assert {"worker.callbacks", "worker.job_life"} <= loggers, loggers

    about_job = [e for e in entries if e["logger"].startswith("worker.") and job_id in e["message"]]
    assert about_job, up.output()
    for entry in about_job:
        assert entry.get("job_id") == job_id, entry
        assert re.fullmatch(r"\S+:\d+", entry.get("worker", "")), entry
    checkpoints = [e for e in about_job if "checkpoint step" in e["message"]]
    assert [e["step"] for e in checkpoints] == [2, 4], checkpoints  # the step each was saved at
    assert any(e["message"] == f"job {job_id} succeeded" for e in about_job), about_job
    # only the job's own lines carry an id, and it is the job's
    assert {e["job_id"] for e in entries if "job_id" in e} == {job_id}
    assert not [e for e in entries if e["logger"].startswith("uvicorn") and "job_id" in e]
