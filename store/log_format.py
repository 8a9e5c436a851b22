"""How the service's processes log (SAGAN_LOG_FORMAT, issue #24): text lines for people (the
default), or one JSON object a line for log collectors: time, level, logger, message, and the
job id, worker and training step where there is one.

A record gets `job_id`, `worker` and `step` from its `extra={...}` first, else from the context
variables below, which the worker sets around a task (`with job_context(job_id, worker):`) and its
trainer callbacks update each step. A record with none of them has no such keys (never null).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

TEXT_FORMAT = "[%(asctime)s %(levelname)s %(name)s] %(message)s"  # what basicConfig had before

job_id: ContextVar[str | None] = ContextVar("sagan_job_id", default=None)
worker: ContextVar[str | None] = ContextVar("sagan_worker", default=None)
step: ContextVar[int | None] = ContextVar("sagan_step", default=None)
CONTEXT: dict[str, ContextVar] = {"job_id": job_id, "worker": worker, "step": step}


class JsonFormatter(logging.Formatter):
    """One JSON object a line: {"time", "level", "logger", "message"} and, when known,
    "job_id", "worker", "step"; "exc_info" and "stack_info" hold a traceback's text."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, var in CONTEXT.items():
            value = getattr(record, key, None)
            if value is None:
                value = var.get()
            if value is not None:
                entry[key] = value
        if record.exc_info:
            if not record.exc_text:
                record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc_info"] = record.exc_text
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        """ISO 8601 in UTC with milliseconds: 2024-05-01T12:00:00.123Z."""
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        return f"{stamp}.{int(record.msecs):03d}Z"


def formatter(fmt: str) -> logging.Formatter:
    """The formatter of a SAGAN_LOG_FORMAT value ("text" or "json")."""
    return JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT)


class LogHandler(logging.StreamHandler):
    """The root logger's handler (stderr) that configure_logging installs, once per process."""


def configure_logging(fmt: str = "text", level: int | str = logging.INFO) -> None:
    """Every entry point's logging: a stderr handler on the root logger in `fmt`, as
    logging.basicConfig did (nothing is added when the root logger has a handler of someone
    else's, e.g. a test runner's). Called again, it changes the format of the handler it added.
    Under json Python's warnings are log records too (else they are lines of text)."""
    root = logging.getLogger()
    ours = [h for h in root.handlers if isinstance(h, LogHandler)]
    for handler in ours:
        handler.setFormatter(formatter(fmt))
    if not root.handlers:
        handler = LogHandler()
        handler.setFormatter(formatter(fmt))
        root.addHandler(handler)
        root.setLevel(level)
    if fmt == "json":
        logging.captureWarnings(True)


def reformat(fmt: str, *loggers: logging.Logger | None) -> None:
    """Give the handlers that others put on these loggers (Celery's) the format `fmt`."""
    if fmt != "json":
        return
    for logger in loggers:
        for handler in logger.handlers if logger is not None else ():
            handler.setFormatter(formatter(fmt))


@contextmanager
def job_context(job: str, worker_name: str | None = None) -> Iterator[None]:
    """Log records inside the block (and in threads started with a copy of this context) carry
    the job's id and the worker's name; the step starts unknown."""
    tokens = [(job_id, job_id.set(job)), (step, step.set(None))]
    if worker_name is not None:
        tokens.append((worker, worker.set(worker_name)))
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)
