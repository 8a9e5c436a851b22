"""Both storage backends behave alike: local directory and S3 (a real moto server over HTTP)."""

from pathlib import Path

import boto3
import pytest

from store.storage import LocalStorage, S3Storage, StorageError


@pytest.fixture(params=["local", "s3"])
def storage(request, tmp_path: Path):
    if request.param == "local":
        return LocalStorage(tmp_path / "objects")
    endpoint = request.getfixturevalue("s3_endpoint")
    bucket = request.getfixturevalue("s3_bucket")
    return S3Storage(bucket, prefix="pfx", endpoint_url=endpoint)


def test_file_round_trip_and_listing(storage, tmp_path: Path):
    src = tmp_path / "ckpt.pt"
    src.write_bytes(b"x" * 1000)
    assert storage.put_file("jobs/a/step-1.pt", src) == 1000
    storage.put_bytes("jobs/a/step-2.pt", b"yy")
    assert storage.exists("jobs/a/step-1.pt") and not storage.exists("jobs/a/none.pt")
    assert storage.list("jobs/a/") == ["jobs/a/step-1.pt", "jobs/a/step-2.pt"]
    dest = tmp_path / "back.pt"
    storage.download("jobs/a/step-1.pt", dest)
    assert dest.read_bytes() == b"x" * 1000
    assert storage.get_bytes("jobs/a/step-2.pt") == b"yy"
    assert storage.get_bytes("jobs/a/missing") is None
    storage.check()


def test_keys_cannot_escape_the_root(storage):
    with pytest.raises(StorageError, match="invalid storage key"):
        storage.put_bytes("../etc/passwd", b"no")


def test_s3_objects_land_under_the_prefix_in_the_bucket(s3_endpoint, s3_bucket, tmp_path: Path):
    S3Storage(s3_bucket, prefix="team/", endpoint_url=s3_endpoint).put_bytes("k/v.bin", b"1")
    listed = boto3.client("s3", endpoint_url=s3_endpoint).list_objects_v2(Bucket=s3_bucket)
    assert [o["Key"] for o in listed["Contents"]] == ["team/k/v.bin"]


def test_s3_check_names_a_missing_bucket(s3_endpoint):
    with pytest.raises(StorageError, match="no-such-bucket"):
        S3Storage("no-such-bucket", endpoint_url=s3_endpoint).check()
