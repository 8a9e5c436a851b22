"""Limits on what a request may carry, checked before any handler or the database sees it.

- `BodySizeLimit`: a body over `max_body_bytes` (SAGAN_MAX_BODY_BYTES) is a 413, answered from
  the Content-Length header alone, or, for a chunked body, as soon as the bytes that came through
  `receive` pass the limit; the rest is never read or buffered.
- `RejectNulBytes`: a NUL byte in a query parameter or a header value is a 400 naming it
  (PostgreSQL text cannot hold NUL; SQLite would store it).
- `JobIdPath` / `ModelIdPath`: a job or model id in a path that no job or model can have (ids are
  `uuid4().hex`) is a 404 exactly like a missing one, without a database query.

Both middlewares are plain ASGI (no BaseHTTPMiddleware): they never buffer a body.
"""

from __future__ import annotations

import json
import re
from typing import Annotated
from urllib.parse import parse_qsl

from fastapi import Depends, HTTPException, Path, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.deps import OwnerDep
from store.aliases import ALIAS_RE
from store.jobs import JobNotFound
from store.sweeps import SweepNotFound

MAX_BODY_SETTING = "SAGAN_MAX_BODY_BYTES"
MAX_UPLOAD_SETTING = "SAGAN_MAX_DATASET_BYTES"
# store.models.new_id: uuid4().hex, 32 lowercase hex digits.
ID_RE = re.compile(r"[0-9a-f]{32}")
SHOWN_ID_CHARS = 64


class BodyTooLarge(Exception):
    """Raised from `receive` once a body has passed the limit: the app stops reading it."""


async def _send_json(send: Send, status: int, detail: str, *, close: bool = False) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:
        # The client may still be sending; the server closes rather than reads what is left.
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server refuses it; otherwise counting still applies
    return None


class BodySizeLimit:
    """413 for a request body over `max_body_bytes`, without reading the rest of it."""

    def __init__(
        self, app: ASGIApp, max_body_bytes: int, uploads: dict[str, int] | None = None
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.uploads = uploads or {}  # POST path -> its own limit (streamed uploads)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_body_bytes
        setting = MAX_BODY_SETTING
        if scope.get("method") == "POST" and scope.get("path") in self.uploads:
            limit, setting = self.uploads[scope["path"]], MAX_UPLOAD_SETTING
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            # The app never runs, so nothing calls receive: the body is not read at all.
            await _send_json(
                send,
                413,
                f"request body too large: {declared} bytes, the limit is {limit} ({setting})",
                close=True,
            )
            return

        received = 0
        response_started = False
        refused = False

        async def limited_receive() -> Message:
            nonlocal received, refused
            if refused:
                raise BodyTooLarge
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    refused = True
                    if not response_started:
                        await _send_json(
                            send,
                            413,
                            f"request body too large: over {limit} bytes, the limit is {limit} "
                            f"({setting})",
                            close=True,
                        )
                    raise BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal response_started
            if refused:
                return  # the 413 is sent (or the response cut short): the app's answer is dropped
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except BodyTooLarge:
            pass  # answered in limited_receive


def _shown(text: str) -> str:
    """A name or id for a message: cut to SHOWN_ID_CHARS characters (repr escapes the rest)."""
    return text if len(text) <= SHOWN_ID_CHARS else text[:SHOWN_ID_CHARS] + "..."


def _nul_problem(scope: Scope) -> str | None:
    query = scope.get("query_string", b"").decode("latin-1")
    if "\x00" in query or "%00" in query:
        for name, value in parse_qsl(query, keep_blank_values=True):
            if "\x00" in name:
                return f"query parameter name {_shown(name)!r} contains a NUL byte"
            if "\x00" in value:
                return f"{_shown(name)}: contains a NUL byte"
    for name, value in scope.get("headers", ()):
        if b"\x00" in name:
            return f"header name {_shown(name.decode('latin-1'))!r} contains a NUL byte"
        if b"\x00" in value:
            return f"{_shown(name.decode('latin-1'))}: contains a NUL byte"
    return None


class RejectNulBytes:
    """400 for a NUL byte in a query parameter or header value: PostgreSQL cannot take it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            problem = _nul_problem(scope)
            if problem is not None:
                await _send_json(send, 400, problem)
                return
        await self.app(scope, receive, send)


async def nul_in_stored_text(request: Request, exc: DataError) -> JSONResponse:
    """The safety net for a NUL byte that came in a JSON body string and reached PostgreSQL:
    a 400, not a 500 (psycopg refuses the value before sending it; the connection is fine)."""
    if "NUL (0x00)" not in str(getattr(exc, "orig", "")):
        raise exc  # any other DataError stays a 500 (app._unexpected), logged as before
    return JSONResponse(
        {"detail": "request body: a text value contains a NUL byte, which cannot be stored"},
        status_code=400,
    )


# -- ids in paths ---------------------------------------------------------------------------------


# Each depends on the caller first (FastAPI resolves it once per request), so a request without
# valid credentials is refused as such whatever its id.


async def _checked_job_id(
    job_id: Annotated[str, Path(description="a job id: 32 lowercase hex digits")],
    _caller: OwnerDep,
) -> str:
    if not ID_RE.fullmatch(job_id):
        raise JobNotFound(_shown(job_id))  # answered like any missing job
    return job_id


async def _checked_model_id(
    model_id: Annotated[
        str,
        Path(description="a model id (32 lowercase hex digits) or `@alias`, one of your aliases"),
    ],
    _caller: OwnerDep,
) -> str:
    alias = model_id.startswith("@") and ALIAS_RE.fullmatch(model_id[1:])
    if not (ID_RE.fullmatch(model_id) or alias):
        # api.routes.models.owned_model answers a missing model the same way.
        raise HTTPException(404, f"model {_shown(model_id)!r} not found")
    return model_id


JobIdPath = Annotated[str, Depends(_checked_job_id)]
ModelIdPath = Annotated[str, Depends(_checked_model_id)]


async def _checked_sweep_id(
    sweep_id: Annotated[str, Path(description="a sweep id: 32 lowercase hex digits")],
    _caller: OwnerDep,
) -> str:
    if not ID_RE.fullmatch(sweep_id):
        raise SweepNotFound(_shown(sweep_id))  # answered like any missing sweep
    return sweep_id


SweepIdPath = Annotated[str, Depends(_checked_sweep_id)]
