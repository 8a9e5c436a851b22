"""SAGAN_S3_PUBLIC_ENDPOINT_URL: presigned URLs for users name the address users reach (compose:
http://localhost:9000, where the services use http://minio:9000), and they still download.

Against the real moto server: the services reach it as 127.0.0.1, users as localhost (the same
port under another host name, as minio and localhost are one MinIO)."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from store.settings import Settings
from store.storage import S3Storage, storage_from_settings


@pytest.fixture
def public_endpoint(s3_endpoint: str) -> str:
    public = s3_endpoint.replace("127.0.0.1", "localhost")
    assert public != s3_endpoint
    return public


def test_a_presigned_url_points_at_the_public_endpoint_and_downloads(
    s3_endpoint: str, s3_bucket: str, public_endpoint: str, tmp_path
):
    settings = Settings(
        data_dir=tmp_path,
        storage="s3",
        s3_bucket=s3_bucket,
        s3_prefix="pfx",
        s3_endpoint_url=s3_endpoint,
        s3_public_endpoint_url=public_endpoint,
        s3_region="us-east-1",
    )
    storage = storage_from_settings(settings)
    data = b"checkpoint bytes " * 1000
    storage.put_bytes("jobs/j/checkpoints/step-00000006.pt", data)  # through the services' host

    url = storage.url("jobs/j/checkpoints/step-00000006.pt", 60)
    assert url.startswith(f"{public_endpoint}/{s3_bucket}/pfx/jobs/j/checkpoints/step-00000006.pt?")
    query = parse_qs(urlsplit(url).query)
    assert {"Signature", "X-Amz-Signature"} & set(query), url  # botocore's query auth, v2 or v4

    r = httpx.get(url, timeout=30)  # as the user's browser or `sagan models download` fetches it
    assert r.status_code == 200, r.text[:300]
    assert r.content == data

    # Everything else still goes to the services' endpoint.
    assert storage.client.meta.endpoint_url == s3_endpoint
    assert storage.get_bytes("jobs/j/checkpoints/step-00000006.pt") == data


def test_without_the_setting_urls_name_the_services_endpoint(s3_endpoint: str, s3_bucket: str):
    storage = S3Storage(s3_bucket, endpoint_url=s3_endpoint, region="us-east-1")
    storage.put_bytes("k.bin", b"1")
    url = storage.url("k.bin")
    assert url.startswith(f"{s3_endpoint}/{s3_bucket}/k.bin?")
    assert httpx.get(url, timeout=30).content == b"1"


def test_the_setting_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SAGAN_S3_PUBLIC_ENDPOINT_URL", "http://localhost:9000")
    assert Settings().s3_public_endpoint_url == "http://localhost:9000"
