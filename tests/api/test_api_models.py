"""Models: listing, sample grids from a real checkpoint (local and S3), checkpoint downloads."""

from __future__ import annotations

import io

import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image


def test_models_are_listed_for_their_owner_only(embedded, make_model):
    made = make_model(None)
    make_model(None, owner="bob")
    listed = embedded.client.get("/models").json()
    assert listed["total"] == 2 and {m["tag"] for m in listed["items"]} == {"latest", "best"}
    assert embedded.client.get("/models", params={"tag": "best"}).json()["total"] == 1

    model = embedded.client.get(f"/models/{made['model_id']}").json()
    assert model["job_id"] == made["job_id"] and model["num_classes"] == 10
    assert model["class_names"][3] == "three" and model["resolution"] == 32
    bob = embedded.as_user("bob")
    assert embedded.client.get(f"/models/{made['model_id']}", headers=bob).status_code == 404
    assert embedded.client.get("/models/nope").json()["detail"] == "model 'nope' not found"


def test_samples_are_a_deterministic_png_grid_with_an_etag(service, tiny_checkpoint, make_model):
    from api.app import create_app

    model_id = make_model(tiny_checkpoint)["model_id"]
    url = f"/models/{model_id}/samples"
    first = service.client.get(url, params={"class": 3, "n": 16, "seed": 7})
    assert first.status_code == 200, first.text
    assert first.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(first.content))
    assert image.size == (4 * 32 + 3 * 2, 4 * 32 + 3 * 2) and image.mode == "RGB"  # 4 x 4, gaps

    # A fresh app (cold cache, so the checkpoint is loaded again) renders the same bytes;
    # the class may be named instead of numbered.
    fresh = TestClient(create_app(), headers=service.client.headers)
    again = fresh.get(url, params={"class": "three", "n": 16, "seed": 7})
    assert again.content == first.content
    assert again.headers["etag"] == first.headers["etag"]

    other_seed = service.client.get(url, params={"class": 3, "n": 16, "seed": 8})
    assert other_seed.content != first.content
    assert other_seed.headers["etag"] != first.headers["etag"]

    revalidate = {"If-None-Match": first.headers["etag"]}
    cached = service.client.get(url, params={"class": 3, "n": 16, "seed": 7}, headers=revalidate)
    assert cached.status_code == 304 and cached.content == b""
    assert cached.headers["etag"] == first.headers["etag"]


def test_sample_generator_is_loaded_once_per_checkpoint(embedded, tiny_checkpoint, make_model):
    model_id = make_model(tiny_checkpoint)["model_id"]
    for seed in range(3):
        params = {"class": 1, "n": 2, "seed": seed}
        assert embedded.client.get(f"/models/{model_id}/samples", params=params).status_code == 200
    assert embedded.client.app.state.services.renderer.loads == 1


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"class": 10}, "class 10 out of range: model has 10 classes (0-9)"),
        ({"class": -1}, "class -1 out of range: model has 10 classes (0-9)"),
        ({"class": "eleven"}, "unknown class 'eleven': give an index 0-9 or one of: zero, one"),
        ({"class": 1, "n": 100000}, "n: must be between 1 and 256 (got 100000)"),
        ({"class": 1, "n": 0}, "n: must be between 1 and 256 (got 0)"),
        ({"class": 1, "seed": -3}, "seed: must be between 0 and 4294967295 (got -3)"),
        ({"class": 1, "truncation": 0}, "truncation: must be a finite number > 0 (got 0.0)"),
        ({"class": 1, "truncation": "nan"}, "truncation: must be a finite number > 0 (got nan)"),
    ],
)
def test_bad_sample_queries_are_400_naming_the_problem(embedded, make_model, params, message):
    model_id = make_model(None)["model_id"]  # refused before any checkpoint is read
    r = embedded.client.get(f"/models/{model_id}/samples", params=params)
    assert r.status_code == 400
    assert r.json()["detail"].startswith(message)


def test_sample_query_without_class_or_with_bad_types_is_a_readable_422(embedded, make_model):
    model_id = make_model(None)["model_id"]
    r = embedded.client.get(f"/models/{model_id}/samples")
    assert r.status_code == 422 and r.json()["detail"] == "class: required"
    r = embedded.client.get(f"/models/{model_id}/samples", params={"class": 1, "n": "many"})
    assert r.status_code == 422
    assert r.json()["detail"].startswith("n: Input should be a valid integer")


def test_samples_of_unknown_or_others_model_are_404(embedded, make_model):
    r = embedded.client.get("/models/missing/samples", params={"class": 1})
    assert r.status_code == 404 and r.json()["detail"] == "model 'missing' not found"
    model_id = make_model(None, owner="bob")["model_id"]
    r = embedded.client.get(f"/models/{model_id}/samples", params={"class": 1})
    assert r.status_code == 404


def test_missing_checkpoint_file_is_503_not_500(embedded, make_model):
    model_id = make_model(None)["model_id"]  # rows only: nothing in storage
    r = embedded.client.get(f"/models/{model_id}/samples", params={"class": 1})
    assert r.status_code == 503 and "not readable" in r.json()["detail"]


def test_checkpoint_download_streams_from_local_storage(embedded, tiny_checkpoint, make_model):
    model_id = make_model(tiny_checkpoint)["model_id"]
    r = embedded.client.get(f"/models/{model_id}/checkpoint")
    assert r.status_code == 200 and r.headers["content-type"] == "application/octet-stream"
    assert "attachment" in r.headers["content-disposition"]
    assert r.content == tiny_checkpoint.read_bytes()


def test_checkpoint_download_redirects_to_a_presigned_s3_url(
    distributed_env, tiny_checkpoint, make_model
):
    from api.app import create_app
    from store.db import session_scope
    from store.settings import get_settings
    from store.tokens import create_token

    model_id = make_model(tiny_checkpoint)["model_id"]
    with session_scope(get_settings()) as session:
        token = create_token(session, "local")[1]
    client = TestClient(create_app(), headers={"Authorization": f"Bearer {token}"})
    r = client.get(f"/models/{model_id}/checkpoint", follow_redirects=False)
    assert r.status_code == 307
    location = r.headers["location"]
    assert location.startswith(distributed_env["SAGAN_S3_ENDPOINT_URL"]) and "Signature" in location
    assert httpx.get(location).content == tiny_checkpoint.read_bytes()

    as_json = client.get(f"/models/{model_id}/checkpoint", params={"redirect": "false"}).json()
    assert as_json["expires_in"] == 300  # minutes, not an hour: SAGAN_CHECKPOINT_URL_SECONDS
    assert httpx.get(as_json["url"]).content == tiny_checkpoint.read_bytes()
