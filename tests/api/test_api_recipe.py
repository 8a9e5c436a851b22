"""What a training job gets for the fields it leaves out: a preset that follows the workers
(SAGAN_GPU_QUEUES) and the data set, augmentation that follows its size, and the reason, in the
job and before it (GET /jobs/defaults). An explicit choice is always kept."""

from __future__ import annotations

from conftest import user_token
from fastapi.testclient import TestClient
from test_api_datasets import tiny_zip

from api.app import create_app
from sagan_core.recipe import ADA_POLICY
from store.settings import get_settings
from worker.datasets import pack_job


def _train(client: TestClient, **config) -> dict:  # noqa: ANN003
    r = client.post("/jobs", json={"kind": "train", "config": config})
    assert r.status_code == 201, r.text
    return r.json()


def test_cpu_workers_get_the_tiny_preset_and_the_data_sets_augmentation(embedded) -> None:  # noqa: ANN001
    client = embedded.client
    job = _train(client, dataset="color_shapes")
    config = job["config"]
    assert (config["preset"], config["g_ch"], config["steps"]) == ("tiny", 8, 2000)  # colour detail
    assert (config["diff_augment"], config["ada_target"]) == (ADA_POLICY, 0.6)
    assert job["defaults_note"] == (
        "preset tiny: CPU workers, 1,200 images at 32 px (paper would take about a day); "
        f"augmentation {ADA_POLICY} with ADA (target 0.6): under 100,000 images"
    )
    assert client.get(f"/jobs/{job['id']}").json()["defaults_note"] == job["defaults_note"]
    shown = client.get("/jobs/defaults", params={"dataset": "color_shapes"}).json()
    assert shown == {
        "preset": "tiny",
        "diff_augment": ADA_POLICY,
        "ada_target": 0.6,
        "note": job["defaults_note"],
    }
    # A stored dataset: its own image count and resolution
    r = client.post("/datasets", params={"name": "mine", "resolution": [32, 64]},
                    content=tiny_zip({"a": 3, "b": 2}))  # fmt: skip
    assert pack_job(r.json()["pack_job_id"], get_settings()) == "succeeded"
    job = _train(client, dataset="mine", resolution=32)
    assert job["defaults_note"].startswith("preset tiny: CPU workers, 5 images at 32 px")
    r = client.get("/jobs/defaults", params={"dataset": "nope"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "config.dataset"


def test_an_explicit_choice_is_kept_and_not_reported_as_chosen(embedded) -> None:  # noqa: ANN001
    job = _train(embedded.client, dataset="digits", preset="paper", diff_augment="")
    config = job["config"]
    assert (config["preset"], config["g_ch"], config["steps"]) == ("paper", 64, 10000)
    assert (config["diff_augment"], config["ada_target"]) == ("", 0.0)
    assert job["defaults_note"] is None
    job = _train(embedded.client, dataset="digits", preset="tiny")  # the preset is yours
    assert job["defaults_note"].startswith("augmentation ")  # only the augmentation was chosen


def test_gpu_queues_get_the_paper_preset(embedded) -> None:  # noqa: ANN001
    settings = get_settings().model_copy(
        update={"gpu_queues": ["train"], "ready_requires_worker": False}
    )
    client = TestClient(create_app(settings))
    client.headers["Authorization"] = f"Bearer {user_token('local')}"
    job = _train(client, dataset="color_shapes")
    assert job["config"]["preset"] == "paper" and job["config"]["g_ch"] == 64
    assert job["defaults_note"].startswith("preset paper: GPU workers, 1,200 images at 32 px")
    # Two GPUs go to train.gpus2, which is not listed: CPU workers there
    assert client.get("/jobs/defaults", params={"gpus": 2}).json()["preset"] == "tiny"
