"""The OpenAPI document tells the truth: it is valid OpenAPI 3, declares the bearer scheme and, per
operation, the statuses the route can answer, with the bodies the service really sends
(`ErrorOut`, `ValidationErrorOut`), and real error responses validate against it."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

import pytest
from fastapi.testclient import TestClient
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate as validate_openapi
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from sagan_core.config import MAX_INT, MAX_SEED, Limits, TrainConfig
from sagan_core.config_fields import CHOICES, DESCRIPTIONS

PUBLIC = {"GET /healthz", "GET /readyz"}
ERROR = "#/components/schemas/ErrorOut"
VALIDATION_ERROR = "#/components/schemas/ValidationErrorOut"
# What each route can answer beyond the common 400 (NUL bytes), 401 and 422.
STATUSES = {
    "GET /healthz": {200, 400},
    "GET /readyz": {200, 400, 503},
    "POST /jobs": {200, 201, 400, 401, 404, 409, 413, 422, 429, 503},
    "GET /jobs": {200, 400, 401, 403, 422, 503},
    "GET /jobs/{job_id}": {200, 400, 401, 404, 422, 503},
    "POST /jobs/{job_id}/cancel": {200, 400, 401, 404, 409, 422, 503},
    "GET /jobs/{job_id}/events": {200, 400, 401, 404, 422, 503},
    "GET /jobs/{job_id}/metrics": {200, 304, 400, 401, 404, 422, 503},
    "GET /models": {200, 400, 401, 422, 503},
    "GET /models/{model_id}": {200, 400, 401, 404, 422, 503},
    "GET /models/{model_id}/samples": {200, 304, 400, 401, 404, 422, 503},
    "GET /models/{model_id}/attention": {200, 304, 400, 401, 404, 422, 503},
    "GET /models/{model_id}/checkpoint": {200, 307, 400, 401, 404, 422, 503},
}


@pytest.fixture(scope="module")
def document(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from api.app import create_app
    from store.settings import Settings

    return create_app(Settings(data_dir=tmp_path_factory.mktemp("openapi"))).openapi()


def _operations(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        f"{method.upper()} {path}": operation
        for path, methods in document["paths"].items()
        for method, operation in methods.items()
    }


def _schema_ref(response: dict[str, Any]) -> str | None:
    return response.get("content", {}).get("application/json", {}).get("schema", {}).get("$ref")


def test_the_document_is_valid_openapi_3(document):
    assert document["openapi"].startswith("3.")
    validate_openapi(document)  # raises on anything OpenAPI 3.x does not allow


def test_every_route_is_documented_with_a_summary_and_a_description(document):
    operations = _operations(document)
    assert set(STATUSES) <= set(operations)
    for label, operation in operations.items():
        assert operation.get("summary"), label
        assert operation.get("description"), label
        for parameter in operation.get("parameters", []):
            assert parameter.get("description"), (label, parameter["name"])


def test_bodies_and_answers_have_examples(document):
    schemas = document["components"]["schemas"]
    for name in ("JobCreate", "TrainConfig", "JobOut", "EventOut", "ModelOut"):
        assert schemas[name]["examples"], name
    metrics = document["paths"]["/jobs/{job_id}/metrics"]["get"]
    assert metrics["responses"]["200"]["content"]["application/json"]["example"]["series"]
    # The metrics route says which names it takes (400 for the others).
    assert "fid_class_<k>" in metrics["description"] and "`400`" in metrics["description"]


def test_the_bearer_scheme_and_401_on_every_operation_but_the_probes(document):
    assert document["components"]["securitySchemes"]["token"] == {
        "type": "http",
        "scheme": "bearer",
        "description": document["components"]["securitySchemes"]["token"]["description"],
    }
    for label, operation in _operations(document).items():
        if label in PUBLIC:
            assert "security" not in operation and "401" not in operation["responses"], label
            continue
        assert operation["security"] == [{"token": []}], label
        unauthorized = operation["responses"]["401"]
        assert _schema_ref(unauthorized) == ERROR, label
        assert "WWW-Authenticate" in unauthorized["headers"], label


def test_each_route_declares_the_statuses_it_can_answer(document):
    operations = _operations(document)
    for label, statuses in STATUSES.items():
        declared = {int(status) for status in operations[label]["responses"]}
        assert declared == statuses, label
    for label, operation in operations.items():  # routes added since: the common ones at least
        declared = {int(status) for status in operation["responses"]}
        assert 400 in declared, label  # a NUL byte in a query or header value
        if label not in PUBLIC:
            assert {401, 422, 503} <= declared, label  # 503: an outage under the request


def test_every_error_is_declared_with_the_body_the_service_sends(document):
    schemas = document["components"]["schemas"]
    # FastAPI's default 422 (detail: a list of objects) is not what the service answers.
    assert "HTTPValidationError" not in schemas and "ValidationError" not in schemas
    assert schemas["ErrorOut"]["required"] == ["detail"]
    assert schemas["ValidationErrorOut"]["required"] == ["detail", "errors"]
    assert set(schemas["FieldError"]["required"]) == {"field", "message", "type"}
    for label, operation in _operations(document).items():
        for status, response in operation["responses"].items():
            if int(status) < 400:
                continue
            expected = {"422": VALIDATION_ERROR, "503": None}.get(status, ERROR)
            ref = _schema_ref(response)
            if expected is None:  # /readyz's 503 has its checks too; the others are ErrorOut
                assert ref in (ERROR, "#/components/schemas/NotReady"), (label, status)
            else:
                assert ref == expected, (label, status)


# -- a train job's config: the TrainConfig schema, generated from the dataclass -----------------


def _typed(prop: dict[str, Any]) -> dict[str, Any]:
    """The non-null branch of a nullable property (`anyOf: [{...}, {type: null}]`)."""
    for branch in prop.get("anyOf", [prop]):
        if branch.get("type") != "null":
            return branch
    raise AssertionError(prop)


def test_a_jobs_config_is_the_train_config_schema(document):
    schemas = document["components"]["schemas"]
    config = schemas["JobCreate"]["properties"]["config"]
    assert {"$ref": "#/components/schemas/TrainConfig"} in config["anyOf"]
    assert "config.<field>" in config["description"]
    schema = schemas["TrainConfig"]
    assert schema["type"] == "object" and schema["additionalProperties"] is False
    assert list(schema["properties"]) == TrainConfig.field_names()
    assert schema["examples"] and "required" not in schema  # every field is optional


def test_every_field_has_its_description_type_and_default(document):
    properties = document["components"]["schemas"]["TrainConfig"]["properties"]
    hints = typing.get_type_hints(TrainConfig)
    json_types = {int: "integer", float: "number", str: "string", bool: "boolean"}
    for f in dataclasses.fields(TrainConfig):
        prop = properties[f.name]
        assert prop["description"] == DESCRIPTIONS[f.name], f.name
        assert prop["default"] == f.default, f.name  # null included: "from the preset"
        args = typing.get_args(hints[f.name])
        nullable = type(None) in args
        base = next((a for a in args if a is not type(None)), hints[f.name])
        assert nullable == ("anyOf" in prop), f.name
        assert _typed(prop)["type"] == json_types[base], f.name
    assert "paper 64, tiny 32" in properties["batch_size"]["description"]


def test_choices_are_enums(document):
    properties = document["components"]["schemas"]["TrainConfig"]["properties"]
    for field, choices in CHOICES.items():
        assert _typed(properties[field])["enum"] == list(choices), field
    assert {"digits", "cifar10", "folder", "packed"} <= set(properties["dataset"]["enum"])
    assert properties["resolution"]["enum"] == [32, 64, 128, 256]
    assert _typed(properties["preset"])["enum"] == ["tiny", "paper"]


def test_bounds_are_the_operators_limits_and_the_cores_own(document):
    properties = document["components"]["schemas"]["TrainConfig"]["properties"]
    limits = Limits()

    def bounds(field: str) -> dict[str, Any]:
        keys = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "maxLength")
        return {k: v for k, v in _typed(properties[field]).items() if k in keys}

    assert bounds("batch_size") == {"minimum": 1, "maximum": limits.batch_size}
    assert bounds("g_ch") == {"minimum": 1, "maximum": limits.channels}
    assert bounds("steps") == {"minimum": 1, "maximum": limits.steps}
    assert bounds("eval_reference_samples") == {"minimum": 2, "maximum": limits.reference_samples}
    assert bounds("seed") == {"minimum": 0, "maximum": MAX_SEED}
    assert bounds("log_every") == {"minimum": 1, "maximum": MAX_INT}
    assert bounds("lr_g") == {"exclusiveMinimum": 0}
    assert bounds("beta2") == {"minimum": 0, "exclusiveMaximum": 1}
    assert bounds("ema_decay") == {"minimum": 0, "maximum": 1}
    assert bounds("data_root") == {"maxLength": limits.data_root_chars}
    assert bounds("diff_augment") == {"maxLength": 64}
    assert properties["device"]["pattern"] == "^(auto|cpu|cuda|mps|cuda:[0-9]+)$"


# -- real responses against the document ---------------------------------------------------------


def _assert_declared(document: dict[str, Any], method: str, path: str, response: Any) -> None:
    """The response's status is declared for the operation, and its JSON body validates against
    the schema declared for that status (its $refs resolved in the document's components)."""
    operation = document["paths"][path][method.lower()]
    status = str(response.status_code)
    assert status in operation["responses"], f"{method} {path}: {status} is not declared"
    assert response.headers["content-type"].startswith("application/json")
    uri = "urn:sagan:openapi"
    registry = Registry().with_resource(uri, Resource.from_contents(document, DRAFT202012))
    escaped_path = path.replace("~", "~0").replace("/", "~1")
    pointer = f"/paths/{escaped_path}/{method.lower()}/responses/{status}"
    pointer += "/content/application~1json/schema"
    Draft202012Validator({"$ref": f"{uri}#{pointer}"}, registry=registry).validate(response.json())


def test_a_401_is_the_declared_body(document, embedded):
    anonymous = TestClient(embedded.client.app)
    r = anonymous.get("/jobs")
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    _assert_declared(document, "GET", "/jobs", r)
    r = anonymous.get("/models", headers={"Authorization": "Bearer sgn_not-a-token"})
    assert r.status_code == 401
    _assert_declared(document, "GET", "/models", r)


def test_a_404_is_the_declared_body(document, embedded):
    r = embedded.client.get(f"/jobs/{'0' * 32}/events")
    assert r.status_code == 404
    _assert_declared(document, "GET", "/jobs/{job_id}/events", r)
    r = embedded.client.get("/models/not-an-id/checkpoint")
    assert r.status_code == 404
    _assert_declared(document, "GET", "/models/{model_id}/checkpoint", r)


def test_a_422_from_the_request_models_is_the_declared_body(document, embedded):
    r = embedded.client.get("/jobs", params={"limit": 0, "state": "sleeping"})
    assert r.status_code == 422
    _assert_declared(document, "GET", "/jobs", r)
    assert [e["field"] for e in r.json()["errors"]] == ["state", "limit"]
    r = embedded.client.post(
        "/jobs", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 422
    _assert_declared(document, "POST", "/jobs", r)


def test_a_422_from_a_handler_is_the_declared_body_too(document, embedded):
    r = embedded.client.post("/jobs", json={"kind": "train", "config": {"resolution": 100}})
    assert r.status_code == 422
    _assert_declared(document, "POST", "/jobs", r)
    body = r.json()
    assert body["detail"].startswith("config.resolution: ")
    assert body["errors"] == [
        {"field": "config.resolution", "message": body["detail"], "type": "value_error"}
    ]
    r = embedded.client.post("/jobs", json={"kind": "evaluate"})
    assert r.status_code == 422
    _assert_declared(document, "POST", "/jobs", r)
    assert r.json() == {
        "detail": "model_id: required for evaluate jobs",
        "errors": [
            {
                "field": "model_id",
                "message": "model_id: required for evaluate jobs",
                "type": "missing",
            }
        ],
    }


def test_a_400_and_a_413_from_the_limits_are_the_declared_body(document, embedded):
    r = embedded.client.get("/models", params={"job_id": "a\x00b"})
    assert r.status_code == 400
    _assert_declared(document, "GET", "/models", r)
    limit = embedded.client.app.state.services.settings.max_body_bytes
    r = embedded.client.post(
        "/jobs", content=b"x" * (limit + 1), headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 413
    _assert_declared(document, "POST", "/jobs", r)


def test_a_lone_surrogate_in_the_body_is_a_422_not_a_500(document, embedded):
    # "\ud800" is valid JSON; an unknown config key quoting it could not be encoded (a 500).
    body = b'{"kind": "train", "config": {"dataset": "digits", "\\ud800": 1}}'
    r = embedded.client.post("/jobs", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    _assert_declared(document, "POST", "/jobs", r)
    assert "\\ud800" in r.json()["detail"]


def test_a_body_that_cannot_be_parsed_is_the_declared_400(document, embedded):
    for body in (
        b'{"kind": "\xff"}',
        b'{"config": {"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}",
    ):
        r = embedded.client.post(
            "/jobs", content=body, headers={"Content-Type": "application/json"}
        )
        assert r.status_code == 400, r.text
        _assert_declared(document, "POST", "/jobs", r)


def test_a_422_names_a_long_unknown_field_cut_not_whole(document, embedded):
    for body in ({"k" * 100_000: 1}, {"kind": "train", "config": {"k" * 100_000: 1}}):
        r = embedded.client.post("/jobs", json=body)
        assert r.status_code == 422 and len(r.content) < 1000, len(r.content)
        _assert_declared(document, "POST", "/jobs", r)
        assert r.json()["errors"][0]["field"].endswith("k...")
