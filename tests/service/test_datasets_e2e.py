"""Stored datasets end to end: `sagan api` and two `sagan worker` processes with their own caches,
on PostgreSQL, Redis and moto S3.

A folder the test makes is uploaded with `sagan datasets upload` (a tar streamed on the fly),
packed by worker A, then trained on twice and evaluated by worker B, which never saw the folder
and downloads the packed file once into its own cache (many users of one cache at once:
test_dataset_cache.py). Also: a corrupt archive's pack job
fails with the reason, a non-archive is a 415, another user's dataset is a 404 everywhere and
cannot be named by a job, and a dataset in use cannot be deleted.
"""

from __future__ import annotations

import io
import math
import subprocess
import zipfile
from pathlib import Path

import boto3
import httpx
import numpy as np
from PIL import Image
from random_inception import save_random_inception
from servicekit import (
    ADMIN_TOKEN,
    AUTH,
    SAGAN,
    ProcessGroup,
    free_port,
    service_env,
    wait_healthy,
    wait_job,
    wait_until,
)

from store.db import session_scope
from store.settings import get_settings
from store.tokens import create_token

TRAIN = {
    "dataset": "flowers",  # a stored dataset, by name
    "preset": "tiny",
    "steps": 6,
    "batch_size": 8,
    "log_every": 3,
    "checkpoint_every": 0,
    "sample_every": 0,
    "eval_reference_samples": 20,
    "variety_every": 0,
}
ENDED = ("succeeded", "failed", "cancelled")


def make_folder(root: Path, classes: dict[str, int]) -> Path:
    rng = np.random.default_rng(0)
    for c, (name, n) in enumerate(classes.items()):
        (root / name).mkdir(parents=True)
        for i in range(n):
            arr = rng.integers(0, 120, (36, 40, 3), dtype=np.uint8)
            arr[..., c % 3] += 120
            Image.fromarray(arr).save(root / name / f"{i:02d}.png")
    return root


def corrupt_zip(folder: Path) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for p in sorted(folder.rglob("*.png")):
            z.write(p, p.relative_to(folder).as_posix())
    data = buf.getvalue()
    return data[: len(data) // 2]  # cut: the central directory is gone


def events(client: httpx.Client, job_id: str) -> list[str]:
    return [e["message"] or "" for e in client.get(f"/jobs/{job_id}/events").json()]


def test_upload_pack_on_one_worker_train_and_evaluate_on_another(
    distributed_env: dict[str, str], tmp_path: Path
) -> None:
    folder = make_folder(tmp_path / "flowers", {"rose": 12, "tulip": 10})
    weights = save_random_inception(tmp_path / "random-inception.pth")
    with session_scope(get_settings()) as session:
        bob = create_token(session, "bob")[1]
    env = service_env(**distributed_env, SAGAN_INCEPTION_WEIGHTS=str(weights))
    port = free_port()
    base = f"http://127.0.0.1:{port}"

    def worker_env(name: str) -> dict[str, str]:
        return {
            **env,
            "SAGAN_DATA_DIR": str(tmp_path / f"data-{name}"),
            "SAGAN_DATASET_CACHE_DIR": str(tmp_path / f"cache-{name}"),
        }

    with ProcessGroup(tmp_path) as group, httpx.Client(
        base_url=base, timeout=60, headers=AUTH
    ) as client, httpx.Client(
        base_url=base, timeout=60, headers={"Authorization": f"Bearer {bob}"}
    ) as other:  # fmt: skip
        api = group.start(["api", "--port", str(port)], env, "api")
        worker_a = group.start(["worker", "--concurrency", "1"], worker_env("a"), "worker-a")
        wait_healthy(base, api)

        # Not an archive: refused from its first bytes, before anything is stored.
        r = client.post("/datasets", params={"name": "notes"}, content=b"%PDF-1.7\n" + bytes(2000))
        assert r.status_code == 415, r.text
        assert "not an archive" in r.json()["detail"]
        r = client.post("/datasets", params={"name": "bad name!"}, content=b"PK")
        assert r.status_code == 422, r.text

        # The folder, uploaded by the CLI as a tar made on the fly; packed by worker A.
        cli = subprocess.run(
            [SAGAN, "datasets", "upload", str(folder), "--name", "flowers", "-r", "32",
             "--json", "--interval", "0.5"],
            env={**env, "SAGAN_URL": base, "SAGAN_TOKEN": ADMIN_TOKEN},
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert cli.returncode == 0, cli.stdout + cli.stderr + worker_a.output()
        listed = client.get("/datasets").json()["items"]
        assert [d["name"] for d in listed] == ["flowers"]
        ds = client.get("/datasets/flowers").json()
        assert ds["state"] == "ready", ds
        assert ds["source_format"] == "tar" and ds["image_count"] == 22
        assert ds["classes"] == [{"name": "rose", "count": 12}, {"name": "tulip", "count": 10}]
        assert ds["resolutions"] == [32] and len(ds["content_hash"]) == 64
        pack = client.get(f"/jobs/{ds['pack_job_id']}").json()
        assert pack["kind"] == "pack" and pack["state"] == "succeeded"
        assert (pack["step"], pack["total_steps"]) == (22, 22)
        assert f"job {pack['id']} succeeded" in worker_a.output()

        # A corrupt archive: accepted (it starts like a zip), its pack job fails with the reason.
        r = client.post("/datasets", params={"name": "broken"}, content=corrupt_zip(folder))
        assert r.status_code == 201, r.text
        broken = r.json()
        job = wait_job(client, broken["pack_job_id"], ENDED, 60, worker_a)
        assert job["state"] == "failed"
        assert job["error"].startswith("dataset error: archive is corrupt or truncated")
        assert "\n" not in job["error"]
        after = client.get(f"/datasets/{broken['id']}").json()
        assert after["state"] == "failed" and after["reason"] == job["error"]
        r = client.post("/jobs", json={"kind": "train", "config": {**TRAIN, "dataset": "broken"}})
        assert r.status_code == 422 and "not ready" in r.json()["detail"]
        assert client.delete("/datasets/broken").status_code == 204

        # Another user: a 404 in every route, and no job of theirs can name it.
        for ref in (ds["id"], "flowers"):
            assert other.get(f"/datasets/{ref}").status_code == 404
            assert other.delete(f"/datasets/{ref}").status_code == 404
        assert other.get("/datasets").json()["items"] == []
        for config in ({**TRAIN, "dataset": ds["id"]}, {**TRAIN, "dataset": "flowers"},
                       {**TRAIN, "dataset": "stored", "dataset_id": ds["id"]}):  # fmt: skip
            r = other.post("/jobs", json={"kind": "train", "config": config})
            assert r.status_code == 422, r.text
            assert r.json()["errors"][0]["field"] == "config.dataset"
        r = client.post("/jobs", json={"kind": "train", "config": {**TRAIN, "resolution": 64}})
        assert r.status_code == 422 and "packed at 32" in r.json()["detail"]

        # Worker A goes; worker B, with an empty cache of its own, trains two jobs on it.
        worker_a.stop()
        worker_b = group.start(["worker", "--concurrency", "1"], worker_env("b"), "worker-b")
        jobs = []
        for seed in (0, 1):
            r = client.post("/jobs", json={"kind": "train", "config": {**TRAIN, "seed": seed}})
            assert r.status_code == 201, r.text
            jobs.append(r.json())
        assert jobs[0]["config"]["dataset"] == "stored"
        assert jobs[0]["config"]["dataset_id"] == ds["id"]
        assert jobs[0]["config"]["num_classes"] == 2
        r = client.delete(f"/datasets/{ds['id']}")
        assert r.status_code == 409 and jobs[0]["id"] in r.json()["detail"]
        done = [wait_job(client, j["id"], ENDED, 150, worker_b) for j in jobs]
        assert [j["state"] for j in done] == ["succeeded", "succeeded"], done
        notes = events(client, jobs[0]["id"]) + events(client, jobs[1]["id"])
        assert sum("downloaded" in n for n in notes) == 1, notes
        assert sum("dataset flowers (32 px)" in n for n in notes) >= 2, notes
        cached = list((tmp_path / "cache-b").glob("*.pack"))
        assert [p.name for p in cached] == [f"{ds['packed']['32']['sha256']}.pack"]
        assert not list((tmp_path / "cache-a").glob("*.pack"))  # A packed; it never trained

        # Evaluation against the stored dataset: statistics keyed by its content hash.
        model = done[0]["latest_model_id"]
        r = client.post("/jobs", json={"kind": "evaluate", "model_id": model, "samples": 100,
                                       "dataset": "flowers"})  # fmt: skip
        assert r.status_code == 201, r.text
        assert r.json()["config"]["dataset_id"] == ds["id"]
        evaluation = wait_job(client, r.json()["id"], ENDED, 150, worker_b)
        assert evaluation["state"] == "succeeded", evaluation["error"]
        fid = client.get(f"/jobs/{evaluation['id']}/metrics").json()["series"]["fid"]
        assert math.isfinite(fid[0][1]) and fid[0][1] >= 0
        assert any("in this worker's dataset cache" in n for n in events(client, evaluation["id"]))
        r = other.post("/jobs", json={"kind": "evaluate", "model_id": model})
        assert r.status_code == 404  # bob cannot see the model either

        s3 = boto3.client("s3", endpoint_url=env["SAGAN_S3_ENDPOINT_URL"])
        bucket = env["SAGAN_S3_BUCKET"]

        def keys(prefix: str) -> list[str]:
            listing = s3.list_objects_v2(Bucket=bucket, Prefix=prefix)
            return sorted(o["Key"] for o in listing.get("Contents", []))

        assert keys("fid-stats/") == [
            f"fid-stats/sha256.{ds['content_hash']}-r32-train-inception-v3-compat-n20.npz"
        ]
        assert keys(f"datasets/{ds['id']}/") == [
            f"datasets/{ds['id']}/packed-r32.pack",
            f"datasets/{ds['id']}/source.tar",
        ]
        wait_until(lambda: client.delete("/datasets/flowers").status_code == 204, 10, "deleted")
        assert keys("datasets/") == []
        assert client.get(f"/datasets/{ds['id']}").status_code == 404
