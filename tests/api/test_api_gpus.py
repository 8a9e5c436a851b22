"""Jobs of many GPUs (issue #15): placement by queue, refused when no worker pool can run them."""

from __future__ import annotations

import pytest
import redis
from fastapi.testclient import TestClient

from store.settings import Settings


def _post(client: TestClient, **config):
    return client.post("/jobs", json={"kind": "train", "config": {"steps": 10, **config}})


def _client_with(service, **settings) -> TestClient:
    from api.app import create_app

    client = TestClient(create_app(Settings(**settings)))
    client.headers.update(service.client.headers)
    return client


def test_more_gpus_than_any_pool_is_a_422_naming_the_pools_setting(embedded):
    r = _post(embedded.client, gpus=2)
    assert r.status_code == 422, r.text
    assert r.json()["detail"] == (
        "config.gpus: must be <= 1 (got 2); the operator's limit is SAGAN_GPU_POOLS (the GPUs "
        "of the largest worker pool)"
    )
    assert _post(embedded.client, gpus=0).json()["detail"] == "config.gpus: must be >= 1 (got 0)"
    r = _post(embedded.client, gpus=1)
    assert r.status_code == 201 and r.json()["config"]["gpus"] == 1


@pytest.mark.parametrize("service", ["distributed"], indirect=True)
def test_a_job_of_n_gpus_goes_to_the_queue_of_its_size(distributed_env, service):
    broker = redis.Redis.from_url(distributed_env["SAGAN_BROKER_URL"])
    client = _client_with(service, gpu_pools="1,4")
    r = _post(client, gpus=3, sync_bn=False)
    assert r.status_code == 201, r.text
    assert r.json()["config"]["gpus"] == 3 and r.json()["config"]["sync_bn"] is False
    assert broker.llen("train.gpus3") == 1 and broker.llen("train") == 0
    assert _post(client, gpus=1).status_code == 201
    assert broker.llen("train") == 1
    r = _post(client, gpus=5)
    assert "must be <= 4 (got 5)" in r.json()["detail"]
    broker.close()


def test_pools_and_queues_from_settings(monkeypatch):
    monkeypatch.setenv("SAGAN_GPU_POOLS", "8,1")
    monkeypatch.setenv("SAGAN_BROKER_URL", "redis://127.0.0.1:6379/13")
    s = Settings()
    assert s.pool_sizes() == [1, 8] and s.limits().gpus == 8
    assert s.queues_served(2) == ["train", "train.gpus2"]
    assert len(s.all_queues()) == 8
    # The embedded mode's one worker is the pool: its SAGAN_WORKER_GPUS.
    monkeypatch.delenv("SAGAN_GPU_POOLS")
    monkeypatch.delenv("SAGAN_BROKER_URL")
    assert Settings(worker_gpus=2).pool_sizes() == [2]
    assert Settings().pool_sizes() == [1]


def test_nodes_need_a_cluster_launcher_and_stay_within_its_limit(embedded):
    r = _post(embedded.client, nodes=2)
    assert r.status_code == 422, r.text
    assert r.json()["detail"] == (
        "config.nodes: must be <= 1 (got 2); the operator's limit is SAGAN_MAX_NODES with "
        "SAGAN_LAUNCHER=slurm; SAGAN_LAUNCHER=local runs one machine"
    )
    client = _client_with(embedded, launcher="slurm", max_nodes=4)
    r = _post(client, nodes=4)
    assert r.status_code == 201 and r.json()["config"]["nodes"] == 4, r.text
    assert "must be <= 4 (got 5)" in _post(client, nodes=5).json()["detail"]
    assert _post(client, nodes=0).json()["detail"] == "config.nodes: must be >= 1 (got 0)"
