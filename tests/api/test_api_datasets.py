"""The datasets routes over the embedded backends (SQLite, local storage): upload, register, the
pack job run in-process, jobs that name a dataset, deletion."""

from __future__ import annotations

import io
import json
import zipfile

from PIL import Image

from store.settings import get_settings
from worker.datasets import pack_job


def tiny_zip(classes: dict[str, int]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for c, (name, n) in enumerate(classes.items()):
            for i in range(n):
                png = io.BytesIO()
                Image.new("RGB", (12, 10), (40 * c, 100, 200)).save(png, "PNG")
                z.writestr(f"{name}/{i}.png", png.getvalue())
    return buf.getvalue()


def test_upload_pack_train_and_delete_on_local_storage(embedded) -> None:  # noqa: ANN001
    client, storage = embedded.client, get_settings().resolved_storage_dir()
    assert (
        client.post("/datasets", params={"name": "x"}, content=b"GIF89a" * 100).status_code == 415
    )
    assert client.post("/datasets", params={"name": "x"}, content=b"").status_code == 400
    assert client.get("/datasets").json()["items"] == []  # refused uploads leave no row

    r = client.post("/datasets", params={"name": "shapes", "resolution": [32, 64]},
                    content=tiny_zip({"a": 3, "b": 2}))  # fmt: skip
    assert r.status_code == 201, r.text
    ds = r.json()
    assert ds["state"] == "packing" and ds["source_format"] == "zip"
    assert (storage / f"datasets/{ds['id']}/source.zip").stat().st_size == ds["size_bytes"]
    empty_zip = b"PK\x05\x06" + bytes(18)
    assert client.post("/datasets", params={"name": "shapes"}, content=empty_zip).status_code == 409
    r = client.post("/jobs", json={"kind": "train", "config": {"dataset": "shapes"}})
    assert r.status_code == 422 and "packing" in r.json()["detail"]
    assert client.delete("/datasets/shapes").status_code == 409  # its pack job is queued

    assert pack_job(ds["pack_job_id"], get_settings()) == "succeeded"
    ds = client.get("/datasets/shapes").json()
    assert ds["state"] == "ready" and ds["resolutions"] == [32, 64] and ds["image_count"] == 5
    assert ds["classes"] == [{"name": "a", "count": 3}, {"name": "b", "count": 2}]
    r = client.post("/jobs", json={"kind": "train", "config": {"dataset": "shapes", "steps": 2}})
    assert r.status_code == 201, r.text
    config = r.json()["config"]
    assert (config["dataset"], config["dataset_id"]) == ("stored", ds["id"])
    assert config["resolution"] == 64 and config["num_classes"] == 2  # its largest, its classes
    r = client.post("/jobs", json={"kind": "train", "config": {"dataset": "shapes",
                                                               "num_classes": 3}})  # fmt: skip
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "config.num_classes"
    job_id = client.get("/jobs").json()["items"][0]["id"]
    assert client.delete(f"/datasets/{ds['id']}").status_code == 409
    client.post(f"/jobs/{job_id}/cancel")
    assert client.delete(f"/datasets/{ds['id']}").status_code == 204
    assert not (storage / f"datasets/{ds['id']}").exists() or not any(
        (storage / f"datasets/{ds['id']}").iterdir()
    )


def test_register_takes_objects_under_the_allowed_prefixes_only(embedded) -> None:  # noqa: ANN001
    client, storage = embedded.client, get_settings().resolved_storage_dir()
    (storage / "imports").mkdir(parents=True)
    (storage / "imports/set.zip").write_bytes(tiny_zip({"a": 1}))
    body = {"name": "imported", "key": "jobs/x.zip"}
    r = client.post("/datasets/register", json=body)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "key"
    r = client.post("/datasets/register", json={**body, "key": "imports/../jobs/x.zip"})
    assert r.status_code == 422
    assert (
        client.post("/datasets/register", json={**body, "key": "imports/no.zip"}).status_code == 404
    )
    r = client.post("/datasets/register", json={**body, "key": "imports/set.zip"})
    assert r.status_code == 201, r.text
    assert pack_job(r.json()["pack_job_id"], get_settings()) == "succeeded"
    ds = client.get("/datasets/imported").json()
    assert ds["state"] == "ready" and ds["source_format"] == "zip" and len(ds["content_hash"]) == 64
    other = embedded.as_user("eve")
    assert client.get("/datasets/imported", headers=other).status_code == 404
    assert client.delete("/datasets/imported").status_code == 204
    assert (storage / "imports/set.zip").is_file()  # a registered source is not ours to delete


def test_a_packing_dataset_says_where_it_is_and_pack_jobs_have_their_own_queue(embedded) -> None:  # noqa: ANN001
    """#26: a pack job waited 74 minutes behind training and nothing said so."""
    client = embedded.client
    first = client.post("/datasets", params={"name": "one"}, content=tiny_zip({"a": 2})).json()
    second = client.post("/datasets", params={"name": "two"}, content=tiny_zip({"b": 2})).json()
    assert first["progress"] == "queued: waiting for a worker of the pack queue"
    assert second["progress"] == "queued behind 1 pack job"
    listed = {d["name"]: d["progress"] for d in client.get("/datasets").json()["items"]}
    assert listed == {"one": first["progress"], "two": second["progress"]}
    queues = embedded.data_dir / "broker" / "queue"
    sent = [json.loads(m.read_text()) for m in queues.glob("*.msg")]
    routes = {m["properties"]["delivery_info"]["routing_key"] for m in sent}
    assert routes == {get_settings().pack_queue}  # not the training queue
    assert pack_job(first["pack_job_id"], get_settings()) == "succeeded"
    done = client.get("/datasets/one").json()
    assert done["state"] == "ready" and done["progress"] is None
    assert client.get("/datasets/two").json()["progress"].startswith("queued: waiting")
