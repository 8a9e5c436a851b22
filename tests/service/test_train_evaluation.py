"""Evaluation through the service on real PostgreSQL and moto S3, with random Inception weights.

The weights file has the real architecture and goes through the real loading code; only its values
are random (the real file cannot be downloaded here), so the figures are not meaningful, but where
they are stored, at which steps, and what is cached are.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import boto3
import pytest
from fastapi.testclient import TestClient
from random_inception import save_random_inception

from api.app import create_app
from sagan_cli.output import protocol_line
from sagan_core.evaluate.protocol import RESIZER
from store import reset_caches
from store.checkpoints import job_models
from store.db import session_scope
from store.migrate import upgrade
from store.settings import get_settings
from store.tokens import create_token
from worker.tasks import evaluate_job, train_job

EVAL_TRAIN = {
    "dataset": "digits",
    "resolution": 32,
    "preset": "tiny",
    "batch_size": 4,
    "steps": 4,
    "log_every": 2,
    "sample_every": 0,
    "checkpoint_every": 0,
    "eval_every": 2,
    "eval_samples": 12,
    "eval_reference_samples": 12,
}


@pytest.fixture
def service(distributed_env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    weights = save_random_inception(tmp_path / "random-inception.pth")
    monkeypatch.setenv("SAGAN_INCEPTION_WEIGHTS", str(weights))
    monkeypatch.setenv("SAGAN_WORKER_DEVICE", "cpu")
    reset_caches()
    upgrade(get_settings().resolved_database_url())
    with session_scope(get_settings()) as session:
        token = create_token(session, "local")[1]
    with TestClient(create_app(), headers={"Authorization": f"Bearer {token}"}) as client:
        yield client, distributed_env


def _s3(env: dict[str, str]):
    return boto3.client("s3", endpoint_url=env["SAGAN_S3_ENDPOINT_URL"])


def _bucket_keys(env: dict[str, str]) -> list[str]:
    listed = _s3(env).list_objects_v2(Bucket=env["SAGAN_S3_BUCKET"])
    return [o["Key"] for o in listed.get("Contents", [])]


def test_training_with_eval_every_records_is_fid_kid_at_those_steps(service):
    client, env = service
    r = client.post("/jobs", json={"kind": "train", "config": EVAL_TRAIN})
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]

    assert train_job(job_id, get_settings()) == "succeeded", client.get(f"/jobs/{job_id}").json()[
        "error"
    ]

    series = client.get(f"/jobs/{job_id}/metrics", params={"names": "is,fid,kid"}).json()["series"]
    for name in ("is", "fid", "kid"):
        assert [step for step, _ in series[name]] == [2, 4], name
        assert all(math.isfinite(value) for _, value in series[name]), name
    assert all(value >= 1.0 for _, value in series["is"])
    # The best-FID checkpoint is kept and marked besides the latest.
    best_step = min(series["fid"], key=lambda point: point[1])[0]
    with session_scope(get_settings()) as session:
        models = job_models(session, job_id)
    assert models["latest"].step == 4 and models["best"].step == best_step
    # Reference statistics went to storage once, keyed by data set, resolution and count.
    stats = [k for k in _bucket_keys(env) if k.startswith("fid-stats/")]
    assert stats == ["fid-stats/digits-r32-train-inception-v3-compat-n12.npz"]


def test_evaluation_job_writes_its_metrics_and_reuses_cached_statistics(service):
    client, env = service
    job_id = client.post("/jobs", json={"kind": "train", "config": EVAL_TRAIN}).json()["id"]
    assert train_job(job_id, get_settings()) == "succeeded"
    stats_before = {k for k in _bucket_keys(env) if k.startswith("fid-stats/")}
    # Mark the cached object: a rewrite (put) would drop the mark.
    s3, bucket = _s3(env), env["SAGAN_S3_BUCKET"]
    for key in stats_before:
        s3.copy_object(
            Bucket=bucket,
            Key=key,
            CopySource={"Bucket": bucket, "Key": key},
            Metadata={"mark": "first-write"},
            MetadataDirective="REPLACE",
        )
    model_id = client.get(f"/jobs/{job_id}").json()["latest_model_id"]

    r = client.post("/jobs", json={"kind": "evaluate", "model_id": model_id, "samples": 100})
    assert r.status_code == 201, r.text
    eval_id = r.json()["id"]
    assert evaluate_job(eval_id, get_settings()) == "succeeded", client.get(
        f"/jobs/{eval_id}"
    ).json()["error"]

    evaluated = client.get(f"/jobs/{eval_id}").json()
    assert (evaluated["step"], evaluated["total_steps"]) == (100, 100)  # images generated
    series = client.get(f"/jobs/{eval_id}/metrics").json()["series"]
    assert {"is", "fid", "kid"} <= set(series)
    assert [step for step, _ in series["fid"]] == [4]  # recorded at the model's step
    assert math.isfinite(series["fid"][0][1]) and series["fid"][0][1] >= 0
    # Same reference (data set, resolution, count): the cached statistics were read, not rewritten.
    assert {k for k in _bucket_keys(env) if k.startswith("fid-stats/")} == stats_before
    for key in stats_before:
        assert s3.head_object(Bucket=bucket, Key=key)["Metadata"] == {"mark": "first-write"}


def test_scores_carry_the_protocol_they_were_measured_under(service, tmp_path: Path):
    client, _ = service
    config = {**EVAL_TRAIN, "eval_reference_samples": 40}  # per-class FID needs 2+ per class
    job_id = client.post("/jobs", json={"kind": "train", "config": config}).json()["id"]
    assert train_job(job_id, get_settings()) == "succeeded"
    body = client.get(f"/jobs/{job_id}/metrics").json()
    during = {p["step"]: p["protocol"] for p in body["protocols"]}
    assert sorted(during) == [2, 4]  # one per evaluation, at the steps of its values
    weights = (tmp_path / "random-inception.pth").read_bytes()
    assert during[4] == {
        "metrics": ["is", "fid", "kid"],
        "feature_extractor": "torch-fidelity inception-v3-compat",
        "weights_sha256": hashlib.sha256(weights).hexdigest()[:16],
        "generated": 12,  # eval_samples: a training-time FID, not a 50,000-sample one
        "generator": "G_ema",
        "truncation": None,
        "seed": 0,
        "resolution": 32,
        "resizer": RESIZER,
        "reference": {
            "key": "digits-r32-train",
            "split": "train",
            "count": 40,
            "dataset": "digits",
        },
    }

    model_id = client.get(f"/jobs/{job_id}").json()["latest_model_id"]
    r = client.post(
        "/jobs",
        json={"kind": "evaluate", "model_id": model_id, "samples": 100, "classes": [0, 3]},
    )
    assert r.status_code == 201, r.text
    eval_id = r.json()["id"]
    assert evaluate_job(eval_id, get_settings()) == "succeeded"
    body = client.get(f"/jobs/{eval_id}/metrics").json()
    (scored,) = body["protocols"]
    after = scored["protocol"]
    assert scored["step"] == 4 and [s for s, _ in body["series"]["intra_fid"]] == [4]
    # The same model and reference, told apart by what differs: the count and intra-FID.
    assert after["generated"] == 100 and during[4]["generated"] == 12
    assert after["metrics"] == ["is", "fid", "kid", "intra_fid"]
    assert after["intra_fid"]["classes"] == [0, 3]
    same = ("feature_extractor", "weights_sha256", "reference", "resolution", "resizer", "seed")
    assert {k: after[k] for k in same} == {k: during[4][k] for k in same}
    # `sagan jobs metrics` says it in one line under the table
    assert protocol_line(after) == (
        "100 generated (G_ema, seed 0) vs 40 train images of digits; torch-fidelity "
        f"inception-v3-compat {after['weights_sha256']}; 32 px; intra-FID over classes 0, 3"
    )
