"""Bad input is never a 500 from the database or the renderer: a 4xx naming the problem."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from store.db import session_scope
from store.models import Job
from store.settings import get_settings

MAX_INT32, MAX_INT64 = 2**31 - 1, 2**63 - 1


def _job_rows() -> int:
    with session_scope(get_settings()) as session:
        return session.execute(select(func.count()).select_from(Job)).scalar_one()


@pytest.mark.parametrize(
    ("config", "message"),
    [
        # PostgreSQL keeps total_steps in a 32-bit INTEGER; SQLite refuses ints past 2**63.
        ({"steps": 2**31}, "config.steps: must be <= 2147483647 (got 2147483648)"),
        ({"steps": 10**30}, "config.steps: must be <= 2147483647 (got 10"),
        ({"seed": 2**64}, "config.seed: must be <= 4294967295 (got 18446744073709551616)"),
        ({"eval_samples": 10**30}, "config.eval_samples: must be <= 2147483647"),
    ],
)
def test_integers_too_large_for_the_database_are_a_422(service, config: dict, message: str):
    r = service.client.post("/jobs", json={"kind": "train", "config": config})
    assert r.status_code == 422, r.text
    assert message in r.json()["detail"]
    assert _job_rows() == 0 and service.queued_messages() == 0


@pytest.mark.parametrize(
    "raw",
    [
        b'{"kind": "train", "config": {"steps": 100000000000000000000000000000000000000000}}',
        b'{"kind": "train", "config": {"lr_g": NaN}}',
        b'{"kind": "train", "config": {"beta1": NaN}}',
        b'{"kind": "train", "config": {"ema_decay": Infinity}}',
        b'{"kind": "train", "config": {"lr_d": 1e400}}',
        b'{"kind": "train", "config": {"steps": 1e400}}',
    ],
)
def test_huge_and_non_finite_json_numbers_are_a_422(embedded, raw: bytes):
    r = embedded.client.post("/jobs", content=raw, headers={"Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    field = raw.split(b'"config": {"')[1].split(b'"')[0].decode()
    assert r.json()["detail"].startswith(f"config.{field}: ")
    assert _job_rows() == 0


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("metrics", {"since_step": 2**64}, "since_step"),
        ("metrics", {"since_step": MAX_INT32 + 1}, "since_step"),
        ("metrics", {"until_step": MAX_INT64 + 1}, "until_step"),
        ("metrics", {"since_step": "abc"}, "since_step"),
        ("metrics", {"max_points": -1}, "max_points"),
        ("events", {"after": 10**30}, "after"),
        ("events", {"after": -(10**30)}, "after"),
        ("events", {"after": MAX_INT32 + 1}, "after"),
    ],
)
def test_out_of_range_job_query_params_are_a_422_naming_them(service, path, params, field):
    job_id = service.client.post("/jobs", json={"kind": "train", "config": {"steps": 10}}).json()
    r = service.client.get(f"/jobs/{job_id['id']}/{path}", params=params)
    assert r.status_code == 422, r.text
    assert r.json()["detail"].startswith(f"{field}: ")


def test_largest_allowed_query_params_are_answered(service):
    # Steps and event ids are INTEGER columns (32 bits on PostgreSQL); offsets are 64-bit.
    job_id = service.client.post("/jobs", json={"kind": "train", "config": {"steps": 10}}).json()
    url = f"/jobs/{job_id['id']}"
    metrics = service.client.get(f"{url}/metrics", params={"since_step": MAX_INT32})
    assert metrics.status_code == 200 and metrics.json()["series"] == {}
    metrics = service.client.get(f"{url}/metrics", params={"until_step": MAX_INT32})
    assert metrics.status_code == 200 and metrics.json()["series"] == {}
    events = service.client.get(f"{url}/events", params={"after": MAX_INT32})
    assert events.status_code == 200 and events.json() == []
    events = service.client.get(f"{url}/events", params={"after": -MAX_INT32 - 1})
    assert [e["to_state"] for e in events.json() if e["kind"] == "state"] == ["queued"]
    for listing in ("/jobs", "/models"):
        page = service.client.get(listing, params={"offset": MAX_INT64})
        assert page.status_code == 200 and page.json()["items"] == []


@pytest.mark.parametrize("listing", ["/jobs", "/models"])
def test_offset_past_int64_is_a_422(embedded, listing: str):
    r = embedded.client.get(listing, params={"offset": 2**64})
    assert r.status_code == 422, r.text
    assert r.json()["detail"].startswith("offset: Input should be less than or equal to")


@pytest.mark.parametrize("value", ["²", "٣", "--3", "-", "+3", "3.0", "0x3", ""])
def test_class_that_is_not_an_ascii_index_or_a_name_is_refused(embedded, make_model, value):
    # "²" and "٣" pass str.isdigit(); "--3" passed the old lstrip("-") check; int() refuses
    # the first and last, "٣" it reads as 3. None of them is a class index or a class name.
    model_id = make_model(None)["model_id"]
    r = embedded.client.get(f"/models/{model_id}/samples", params={"class": value})
    assert r.status_code == 400, r.text
    assert r.json()["detail"].startswith(f"unknown class {value!r}: give an index 0-9")

    body = {"kind": "evaluate", "model_id": model_id, "classes": [value]}
    r = embedded.client.post("/jobs", json=body)
    assert r.status_code == 422, r.text
    assert r.json()["detail"].startswith(f"classes: unknown class {value!r}")
    assert _job_rows() == 1  # only the model's own training job


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"class": -1}, "class -1 out of range: model has 10 classes (0-9)"),
        ({"class": 10**30}, f"class {10**30} out of range: model has 10 classes (0-9)"),
        ({"class": "unknown"}, "unknown class 'unknown': give an index 0-9 or one of: zero"),
        ({"class": 3, "n": 0}, "n: must be between 1 and 256 (got 0)"),
        ({"class": 3, "seed": -1}, "seed: must be between 0 and 4294967295 (got -1)"),
        ({"class": 3, "seed": 2**64}, f"seed: must be between 0 and 4294967295 (got {2**64})"),
        ({"class": 3, "truncation": 0}, "truncation: must be a finite number > 0 (got 0.0)"),
        ({"class": 3, "truncation": "nan"}, "truncation: must be a finite number > 0 (got nan)"),
        ({"class": 3, "truncation": "1e400"}, "truncation: must be a finite number > 0 (got inf)"),
    ],
)
def test_bad_sample_queries_are_a_400_naming_the_parameter(embedded, make_model, params, message):
    model_id = make_model(None)["model_id"]  # no file: a query that got past checks would 503
    r = embedded.client.get(f"/models/{model_id}/samples", params=params)
    assert r.status_code == 400, r.text
    assert r.json()["detail"].startswith(message)


@pytest.mark.parametrize("value", [True, 3.5, None, [3], {"index": 3}])
def test_evaluate_classes_must_be_integers_or_strings(embedded, make_model, value):
    # true is not class 1, and 3.5 is not class 3.
    model_id = make_model(None)["model_id"]
    body = {"kind": "evaluate", "model_id": model_id, "classes": [value]}
    r = embedded.client.post("/jobs", json=body)
    assert r.status_code == 422, r.text
    assert r.json()["detail"].startswith("classes[0].")
    assert _job_rows() == 1


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({"Authorization": b"Bearer " + "é".encode()}, "invalid or revoked token"),
        ({"Authorization": b"Bearer alice\x7f"}, "invalid or revoked token"),
        ({"Authorization": "Bearer " + "a" * 129}, "invalid or revoked token"),
        ({"Idempotency-Key": "k" * 129}, "idempotency-key: String should have at most 128"),
    ],
)
def test_bad_headers_are_refused_naming_the_header(embedded, headers, message):
    r = embedded.client.post(
        "/jobs", json={"kind": "train", "config": {"steps": 5}}, headers=headers
    )
    assert 400 <= r.status_code < 500, r.text
    assert r.json()["detail"].startswith(message)
    assert _job_rows() == 0
