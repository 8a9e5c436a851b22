"""GET /jobs/<id>/metrics: name and step filters, downsampling, CSV."""

from __future__ import annotations

import csv
import io
import itertools

import pytest

from store.db import session_scope
from store.metrics import write_metrics
from store.settings import get_settings


def _job_with_metrics(client) -> str:
    job_id = client.post(
        "/jobs", json={"kind": "train", "config": {"dataset": "digits", "steps": 1000}}
    ).json()["id"]
    rows = [("d_loss", step, step / 4) for step in range(0, 1000, 10)]  # 100 points
    rows += [("fid", step, 300.0 / (1 + step)) for step in (0, 500, 990)]
    rows += [("is", 990, 1.5)]
    with session_scope(get_settings()) as session:
        write_metrics(session, job_id, rows)
    return job_id


def test_metrics_filter_by_names_and_step_range(service):
    job_id = _job_with_metrics(service.client)
    url = f"/jobs/{job_id}/metrics"
    body = service.client.get(url, params={"names": "fid, is"}).json()
    assert body["job_id"] == job_id
    assert body["series"] == {
        "fid": [[0, 300.0], [500, 300 / 501], [990, 300 / 991]],
        "is": [[990, 1.5]],
    }

    ranged = service.client.get(
        url, params={"names": "d_loss", "since_step": 100, "until_step": 150}
    )
    assert ranged.json()["series"]["d_loss"] == [[s, s / 4] for s in range(100, 151, 10)]

    # A name with no rows yet is an empty series; every name is returned when none is asked for.
    assert service.client.get(url, params={"names": "kid"}).json()["series"] == {"kid": []}
    assert set(service.client.get(url).json()["series"]) == {"d_loss", "fid", "is"}


def test_metrics_are_downsampled_to_max_points_keeping_the_last_step(service):
    job_id = _job_with_metrics(service.client)
    params = {"names": "d_loss", "max_points": 7}
    r = service.client.get(f"/jobs/{job_id}/metrics", params=params)
    points = r.json()["series"]["d_loss"]
    # 100 points down to 7, spread evenly over the run: the first, the last and 5 between.
    assert len(points) == 7 and points[0][0] == 0 and points[-1][0] == 990
    steps = [s for s, _ in points]
    assert steps == sorted(set(steps))
    assert all(150 <= b - a <= 180 for a, b in itertools.pairwise(steps)), steps
    assert all(value == step / 4 for step, value in points)  # real rows, not interpolated


def test_metrics_as_csv(embedded):
    job_id = _job_with_metrics(embedded.client)
    params = {"names": "fid,is", "format": "csv"}
    r = embedded.client.get(f"/jobs/{job_id}/metrics", params=params)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [(row["name"], int(row["step"])) for row in rows] == [
        ("fid", 0),
        ("fid", 500),
        ("fid", 990),
        ("is", 990),
    ]
    assert float(rows[1]["value"]) == 300 / 501  # repr keeps every digit


@pytest.mark.parametrize(
    ("params", "status", "message"),
    [
        ({"since_step": 50, "until_step": 10}, 400, "until_step (10) is before since_step (50)"),
        ({"max_points": 0}, 422, "max_points: Input should be greater than or equal to 1"),
        ({"since_step": "x"}, 422, "since_step: Input should be a valid integer"),
        ({"format": "xml"}, 422, "format: Input should be 'json' or 'csv'"),
    ],
)
def test_bad_metric_queries_name_the_parameter(embedded, params, status, message):
    job_id = _job_with_metrics(embedded.client)
    r = embedded.client.get(f"/jobs/{job_id}/metrics", params=params)
    assert r.status_code == status and message in r.json()["detail"]


def test_other_users_metrics_are_invisible(embedded):
    job_id = _job_with_metrics(embedded.client)
    r = embedded.client.get(f"/jobs/{job_id}/metrics", headers=embedded.as_user("eve"))
    assert r.status_code == 404


def test_a_repeated_read_is_a_304_until_new_metrics_arrive(service):
    job_id = _job_with_metrics(service.client)
    url, params = f"/jobs/{job_id}/metrics", {"names": "is"}
    first = service.client.get(url, params=params)
    etag = first.headers["etag"]
    again = service.client.get(url, params=params, headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.headers["etag"] == etag
    other_query = service.client.get(url, params={"names": "fid"}, headers={"If-None-Match": etag})
    assert other_query.status_code == 200
    with session_scope(get_settings()) as session:  # a resumed run overwrites step 990
        write_metrics(session, job_id, [("is", 990, 2.5)])
    fresh = service.client.get(url, params=params, headers={"If-None-Match": etag})
    assert fresh.status_code == 200 and fresh.headers["etag"] != etag
    assert fresh.json()["series"] == {"is": [[990, 2.5]]}


def test_an_unknown_metric_name_is_a_400_naming_the_closest_and_the_known_ones(service):
    job_id = _job_with_metrics(service.client)
    r = service.client.get(f"/jobs/{job_id}/metrics", params={"names": "d_los,fid"})
    assert r.status_code == 400
    detail = r.json()["detail"]
    assert detail.startswith("names: unknown metric 'd_los'; did you mean 'd_loss'? ")
    assert "Known for this train job: " in detail and "g_loss" in detail and "kid" in detail
    assert detail.endswith("; rows so far: d_loss, fid, is")
    r = service.client.get(f"/jobs/{job_id}/metrics", params={"names": "dloss,zzz"})
    assert r.json()["detail"].startswith(
        "names: unknown metrics 'dloss' (did you mean 'd_loss'?), 'zzz'. Known for this train"
    )


def test_a_name_without_rows_yet_is_accepted_when_the_job_can_write_it(service):
    job_id = _job_with_metrics(service.client)
    url = f"/jobs/{job_id}/metrics"
    # Before the first evaluation or variety score: empty series, not a 400.
    r = service.client.get(url, params={"names": "kid,class_accuracy,gamma_g/blocks.1.attn"})
    assert r.status_code == 200
    assert r.json()["series"] == {"class_accuracy": [], "gamma_g/blocks.1.attn": [], "kid": []}
    # A name the job has rows for is known whatever it is.
    with session_scope(get_settings()) as session:
        write_metrics(session, job_id, [("custom_score", 10, 0.5)])
    r = service.client.get(url, params={"names": "custom_score"})
    assert r.status_code == 200 and r.json()["series"] == {"custom_score": [[10, 0.5]]}


def test_an_evaluation_job_knows_its_own_names(embedded):
    from store import jobs

    with session_scope(get_settings()) as session:
        job, _ = jobs.create_job(
            session, owner="local", kind="evaluate", config={"classes": [3]}, total_steps=2
        )
        job_id = job.id
    url = f"/jobs/{job_id}/metrics"
    r = embedded.client.get(url, params={"names": "fid,intra_fid,fid_class_3"})
    assert r.status_code == 200 and set(r.json()["series"]) == {"fid", "intra_fid", "fid_class_3"}
    r = embedded.client.get(url, params={"names": "d_loss"})
    assert r.status_code == 400
    assert r.json()["detail"] == (
        "names: unknown metric 'd_loss'. Known for this evaluate job: fid, fid_class_<k>, "
        "intra_fid, is, is_std, kid, kid_std; no rows yet"
    )


@pytest.mark.parametrize("service", ["distributed"], indirect=True)
def test_a_cached_read_is_answered_while_every_thread_pool_connection_is_busy(service):
    """A metric read's identity and owner checks run on the event loop with a pool of their own
    (#9): a loop waiting for a connection that thread-pool handlers hold would stall every
    request, and those handlers could not even give theirs back (their teardown is scheduled by
    the loop)."""
    from store.db import sessionmaker_for

    job_id = _job_with_metrics(service.client)
    url = f"/jobs/{job_id}/metrics"
    assert service.client.get(url, params={"names": "d_loss"}).status_code == 200  # cached now
    engine = sessionmaker_for(get_settings().resolved_database_url()).kw["bind"]
    held = [engine.connect() for _ in range(engine.pool.size() + engine.pool._max_overflow)]
    try:
        r = service.client.get(url, params={"names": "d_loss"})
        assert r.status_code == 200 and len(r.json()["series"]["d_loss"]) == 100
    finally:
        for conn in held:
            conn.close()
