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


def test_creating_the_app_and_reading_jobs_do_not_import_torch(data_dir):
    # torch loads lazily, where sampling or config validation needs it, never at import or start.
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from fastapi.testclient import TestClient\n"
        "from api.app import create_app\n"
        "from store.migrate import upgrade\n"
        "from store.settings import Settings\n"
        f"s = Settings(data_dir={str(data_dir)!r}, ready_requires_worker=False, auth=False)\n"
        "upgrade(s.resolved_database_url())\n"
        "client = TestClient(create_app(s))\n"
        "assert client.get('/jobs').status_code == 200\n"
        "assert client.get('/readyz').status_code == 200\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def test_unexpected_errors_are_json_with_a_detail(embedded, monkeypatch):
    from api.routes import jobs as job_routes

    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(job_routes, "job_out", broken)
    client = TestClient(embedded.client.app, raise_server_exceptions=False)
    client.headers.update(embedded.client.headers)  # its token
    r = client.post("/jobs", json={"kind": "train", "config": {"steps": 3}})
    assert r.status_code == 500
    assert r.json() == {"detail": "internal error (RuntimeError): disk on fire"}


def test_readiness_needs_a_training_worker_not_only_the_pack_worker(embedded_env):
    """`sagan up` runs a pack worker beside the training one (#26): with the training worker dead
    the service is not ready, whatever the pack worker says."""
    from store.db import session_scope
    from store.migrate import upgrade
    from store.settings import get_settings
    from store.workers import beat_worker

    settings = get_settings().model_copy(update={"ready_requires_worker": True})
    upgrade(settings.resolved_database_url())
    client = TestClient(create_app(settings))
    with session_scope(settings) as session:
        beat_worker(session, "host:1", settings.pack_queue)
    r = client.get("/readyz")
    assert r.status_code == 503 and "no worker of the 'train' queue" in r.json()["detail"]
    with session_scope(settings) as session:
        beat_worker(session, "host:2", f"{settings.pack_queue},{settings.train_queue}")
    assert client.get("/readyz").status_code == 200
