"""Tokens and owners: 401 without a valid token, 404 for another user's things, admins list all."""

from __future__ import annotations

import time

from fastapi.testclient import TestClient

from api.app import create_app
from store.db import session_scope
from store.settings import get_settings
from store.tokens import create_token, revoke_token

OPEN_ROUTES = {
    "/healthz",
    "/readyz",
    "/",
    "/docs",
    "/docs/oauth2-redirect",
    "/redoc",
    "/openapi.json",
}
SOME_ID = "0" * 32


def _routes(app) -> list[tuple[str, str]]:  # noqa: ANN001
    """Every (method, path) the OpenAPI document lists but the open ones, with ids filled in."""
    return [
        (
            method.upper(),
            path.replace("{job_id}", SOME_ID)
            .replace("{model_id}", SOME_ID)
            .replace("{ref}", SOME_ID)
            .replace("{step}", "1"),
        )
        for path, ops in app.openapi()["paths"].items()
        if path not in OPEN_ROUTES
        for method in ops
    ]


def test_every_route_but_health_and_the_page_needs_a_token(embedded):
    anonymous = TestClient(embedded.client.app)
    routes = _routes(embedded.client.app)
    # POST/GET /jobs, a job, its cancel, continue, events, metrics, sample grids, a grid; models,
    # a model, samples, attention, checkpoint; POST/GET /datasets, register, GET/DELETE a dataset;
    # GET /jobs/defaults; PUT an alias, GET /aliases, DELETE an alias; POST/GET /sweeps, a sweep,
    # its trials, its cancel; GET /metrics (an admin's): a new route joins this list, and the
    # test, by itself.
    assert len(routes) == 29, routes
    for method, path in routes:
        r = anonymous.request(method, path)
        assert r.status_code == 401, (method, path, r.text)
    for path in ("/healthz", "/"):
        assert anonymous.get(path).status_code == 200


def test_a_revoked_token_is_401_once_the_api_stops_trusting_it(embedded):
    """An API process trusts a token it looked up for SAGAN_TOKEN_CACHE_SECONDS; 0 asks the
    database on every request, so a revocation counts from the next request."""

    settings = get_settings()
    carol, dave = embedded.as_user("carol"), embedded.as_user("dave")
    trusting = TestClient(create_app(settings.model_copy(update={"token_cache_seconds": 1.0})))
    asking = TestClient(create_app(settings.model_copy(update={"token_cache_seconds": 0})))
    for client in (trusting, asking):
        for headers in (carol, dave):
            assert client.get("/jobs", headers=headers).status_code == 200
    with session_scope(settings) as session:
        rows = __import__("store.tokens").tokens.list_tokens(session)
        for row in rows:
            if row.user in ("carol", "dave"):
                revoke_token(session, row.id)
    r = asking.get("/jobs", headers=carol)
    assert r.status_code == 401 and r.json()["detail"] == "invalid or revoked token"
    assert trusting.get("/jobs", headers=carol).status_code == 200  # trusted a while yet
    time.sleep(1.1)
    for headers in (carol, dave):
        r = trusting.get("/jobs", headers=headers)
        assert r.status_code == 401 and r.json()["detail"] == "invalid or revoked token"


def test_the_token_cache_keeps_the_newest_entries_and_forgets_expired_ones(monkeypatch):
    from api import token_cache
    from store.tokens import Identity

    now = [100.0]
    monkeypatch.setattr(token_cache.time, "monotonic", lambda: now[0])
    cache = token_cache.TokenCache(5.0, max_entries=2)
    for user in ("a", "b", "c"):
        cache.put(f"tok-{user}", Identity(user))
    assert cache.get("tok-a") is None  # the oldest gave way
    assert cache.get("tok-c").user == "c" and cache.get("tok-b").user == "b"
    now[0] += 5.0
    assert cache.get("tok-b") is None and cache.get("tok-c") is None
    off = token_cache.TokenCache(0)
    off.put("tok-a", Identity("a"))
    assert off.get("tok-a") is None


def test_another_users_resources_are_404_on_every_route(service, make_model, tiny_checkpoint):
    made = make_model(tiny_checkpoint, owner="alice")
    job, model = made["job_id"], made["model_id"]
    alice, bob = service.as_user("alice"), service.as_user("bob")
    reads = [
        f"/jobs/{job}", f"/jobs/{job}/events", f"/jobs/{job}/metrics", f"/models/{model}",
        f"/models/{model}/samples?class=1&n=1", f"/models/{model}/attention?class=1&x=0&y=0",
        f"/models/{model}/checkpoint?redirect=false",
    ]  # fmt: skip
    for path in reads:
        assert service.client.get(path, headers=alice).status_code == 200, path
        assert service.client.get(path, headers=bob).status_code == 404, path
    assert service.client.post(f"/jobs/{job}/cancel", headers=bob).status_code == 404
    assert service.client.get("/models", headers=bob).json()["total"] == 0
    evaluate = {"kind": "evaluate", "model_id": model, "samples": 100}
    assert service.client.post("/jobs", json=evaluate, headers=bob).status_code == 404


def test_an_admin_lists_everyones_jobs_and_nobody_else_may(service, make_model):
    make_model(None, owner="alice")
    make_model(None, owner="bob")
    admin = service.as_user("root", admin=True)
    everyone = service.client.get("/jobs", params={"all_owners": True}, headers=admin).json()
    assert sorted(j["owner"] for j in everyone["items"]) == ["alice", "bob"]
    assert service.client.get("/jobs", headers=admin).json()["total"] == 0  # its own: none
    r = service.client.get("/jobs", params={"all_owners": True}, headers=service.as_user("bob"))
    assert r.status_code == 403 and "admin" in r.json()["detail"]


def test_the_bootstrap_admin_token_from_the_environment_is_an_admin(embedded_env, monkeypatch):
    from store.migrate import upgrade

    monkeypatch.setenv("SAGAN_ADMIN_TOKEN", "operator-secret-0123456789")
    settings = type(get_settings())()  # as the environment says now
    upgrade(settings.resolved_database_url())
    client = TestClient(create_app(settings))
    good = {"Authorization": "Bearer operator-secret-0123456789"}
    assert client.get("/jobs", params={"all_owners": True}, headers=good).status_code == 200
    bad = {"Authorization": "Bearer operator-secret-012345678"}
    assert client.get("/jobs", headers=bad).status_code == 401


def test_active_jobs_past_the_quota_are_429_and_a_replay_still_answers(embedded_env):
    from store.migrate import upgrade

    settings = get_settings().model_copy(update={"max_active_jobs": 2})
    upgrade(settings.resolved_database_url())
    client = TestClient(create_app(settings))
    with session_scope(settings) as session:
        client.headers["Authorization"] = "Bearer " + create_token(session, "dora")[1]
    body = {"kind": "train", "config": {"steps": 5}}
    first = client.post("/jobs", json=body, headers={"Idempotency-Key": "a"})
    assert first.status_code == 201
    assert client.post("/jobs", json=body).status_code == 201
    over = client.post("/jobs", json=body)
    assert over.status_code == 429
    assert over.json()["detail"].startswith("dora has 2 active jobs (queued or running), the limit")
    assert client.post("/jobs", json=body, headers={"Idempotency-Key": "a"}).status_code == 200
    client.post(f"/jobs/{first.json()['id']}/cancel")  # a slot frees up
    assert client.post("/jobs", json=body).status_code == 201


def test_the_openapi_document_declares_the_bearer_scheme_and_401s(embedded):
    doc = embedded.client.get("/openapi.json").json()
    scheme = doc["components"]["securitySchemes"]["token"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            if path in OPEN_ROUTES:
                assert "security" not in op, (method, path)
            else:
                assert op.get("security") == [{"token": []}], (method, path)
                assert "401" in op["responses"], (method, path)
