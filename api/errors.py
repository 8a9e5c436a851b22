"""Error answers as the OpenAPI document declares them.

Every error body is `{"detail": "<message>"}` (`api.schemas.ErrorOut`); a 422 also carries
`errors: [{"field", "message", "type"}]` (`api.schemas.ValidationErrorOut`), whether pydantic
found the problem in the request or a handler did (`InvalidField`). The `*_RESPONSES` dicts are
what routers and routes pass as `responses=`, so the document lists the statuses each route can
really answer, with these bodies.
"""

from __future__ import annotations

from typing import Any

from api.schemas import ErrorOut, NotReady, ValidationErrorOut

Responses = dict[int | str, dict[str, Any]]
# A field path longer than this is shown cut (with `...`), as api.limits shows ids: the body names
# the field three times (detail, errors[].field, errors[].message), none of them in full.
SHOWN_FIELD_CHARS = 64
# Seconds a client waits before retrying a request a database, storage or broker outage refused
# (a 503: the outage is not the request's fault, and the service keeps no state of it).
OUTAGE_RETRY_AFTER_S = 5


def encodable(text: str) -> str:
    """`text` with lone surrogates escaped (`\\ud800`): a JSON body may carry one (`"\\ud800"`
    is valid JSON), Python keeps it in a str, and a message quoting it could not be encoded as
    UTF-8, so the answer would be a 500 instead of the error it names."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


class InvalidField(Exception):
    """A 422 found by a handler (beyond what the request models check): answered exactly like a
    request validation error, `detail` being `<field>: <message>`."""

    def __init__(self, field: str, message: str, type: str = "value_error") -> None:
        if len(field) > SHOWN_FIELD_CHARS:  # e.g. an unknown config key of 100,000 characters
            field = field[:SHOWN_FIELD_CHARS] + "..."
        field, message = encodable(field), encodable(message)
        super().__init__(f"{field}: {message}")
        self.field, self.message, self.type = field, message, type

    def body(self) -> dict[str, Any]:
        text = f"{self.field}: {self.message}"
        return {
            "detail": text,
            "errors": [{"field": self.field, "message": text, "type": self.type}],
        }


def error(description: str) -> dict[str, Any]:
    """A `responses` entry: an ErrorOut body."""
    return {"model": ErrorOut, "description": description}


# Answered by api.limits' middlewares, before any route runs, for every route.
NUL_400: Responses = {
    400: error("a query parameter or header value contains a NUL byte (`%00`); `detail` names it")
}
# Every route of the jobs and models routers.
AUTH_401: Responses = {
    401: {
        **error("no token, or an invalid or revoked one"),
        "headers": {"WWW-Authenticate": {"description": "`Bearer`", "schema": {"type": "string"}}},
    }
}
VALIDATION_422: Responses = {
    422: {
        "model": ValidationErrorOut,
        "description": "a parameter or body field is invalid; `detail` and `errors` name it",
    }
}
# Routes that take a request body.
BODY_413: Responses = {
    413: error("the request body is over SAGAN_MAX_BODY_BYTES (the connection is closed)")
}
# Any route whose database, storage or broker is down (api.app: an outage is not a 500).
OUTAGE_503: Responses = {
    503: {
        **error("the database, object storage or broker is unavailable; retry after `Retry-After`"),
        "headers": {"Retry-After": {"description": "seconds", "schema": {"type": "integer"}}},
    }
}
# A router's responses: what any of its routes may answer.
PROTECTED_RESPONSES: Responses = {**NUL_400, **AUTH_401, **VALIDATION_422, **OUTAGE_503}
NOT_READY_503: Responses = {
    503: {
        "model": NotReady,
        "description": "`detail` names what is down; `checks` has every result",
    }
}
