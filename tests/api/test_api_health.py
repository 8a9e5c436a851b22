"""/healthz and /readyz: readiness names the backend that is down."""

from __future__ import annotations

import socket

from fastapi.testclient import TestClient

from api.app import create_app
from store.settings import Settings


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_healthz_answers_without_touching_backends(data_dir):
    settings = Settings(
        data_dir=data_dir, database_url=f"postgresql+psycopg://x@127.0.0.1:{_closed_port()}/x"
    )
    r = TestClient(create_app(settings)).get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}


def test_readyz_is_ok_when_every_backend_answers(service):
    r = service.client.get("/readyz")
    assert r.status_code == 200, r.text
    assert r.json() == {
        "status": "ok",
        "checks": {"database": "ok", "broker": "ok", "storage": "ok"},
    }


def test_readyz_names_a_missing_bucket(distributed_env, s3_endpoint):
    settings = Settings(
        **{
            **{k.removeprefix("SAGAN_").lower(): v for k, v in distributed_env.items()},
            "s3_bucket": "no-such-bucket-here",
        }
    )
    r = TestClient(create_app(settings)).get("/readyz")
    assert r.status_code == 503
    body = r.json()
    assert body["detail"].startswith("not ready: storage is down")
    assert "no-such-bucket-here" in body["detail"]
    assert body["checks"]["database"] == "ok" and body["checks"]["broker"] == "ok"


def test_readyz_names_a_broker_and_database_that_are_down(data_dir):
    settings = Settings(
        data_dir=data_dir,
        database_url=f"postgresql+psycopg://x@127.0.0.1:{_closed_port()}/x",
        broker_url=f"redis://127.0.0.1:{_closed_port()}/0",
    )
    r = TestClient(create_app(settings)).get("/readyz")
    assert r.status_code == 503
    checks = r.json()["checks"]
    assert checks["storage"] == "ok"
    assert checks["database"] != "ok" and checks["broker"] != "ok"
    assert "database is down" in r.json()["detail"] and "broker is down" in r.json()["detail"]


def test_openapi_docs_describe_every_route(embedded):
    assert embedded.client.get("/docs").status_code == 200
    paths = embedded.client.get("/openapi.json").json()["paths"]
    assert {
        "/jobs",
        "/jobs/{job_id}",
        "/jobs/{job_id}/cancel",
        "/jobs/{job_id}/events",
        "/jobs/{job_id}/metrics",
        "/models",
        "/models/{model_id}",
        "/models/{model_id}/samples",
        "/models/{model_id}/checkpoint",
        "/healthz",
        "/readyz",
    } <= set(paths)
