"""A dataset upload streams through the API: its peak memory does not grow with the upload.

A real `sagan api` process (PostgreSQL, Redis, and a moto S3 server of this test's own, so the
object's bytes leave with it) takes 384 MB generated on the fly (a tar header, then filler) in a
chunked request. Its peak resident size (VmHWM) may grow by a few parts (8 MiB each), not by the
upload: the test allows 64 MB, and the peak must stay under half the upload.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import boto3
import httpx
from servicekit import AUTH, ProcessGroup, free_port, service_env, wait_healthy

UPLOAD_BYTES = 384 * 2**20
CHUNK = 2**20
ALLOWED_GROWTH = 64 * 2**20


def vm_hwm(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def body(sha: hashlib._Hash) -> object:  # noqa: ANN001
    header = tarfile.TarInfo("class/big.bin")
    header.size = UPLOAD_BYTES
    first = header.tobuf()
    sha.update(first)
    yield first
    chunk = bytes(range(256)) * (CHUNK // 256)
    for _ in range(UPLOAD_BYTES // CHUNK):
        sha.update(chunk)
        yield chunk


def test_api_peak_memory_stays_flat_while_a_large_upload_streams(
    migrated_postgres_url: str, redis_url: str, tmp_path: Path
) -> None:
    s3_port = free_port()
    moto = subprocess.Popen(
        [str(Path(sys.executable).with_name("moto_server")), "-p", str(s3_port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    endpoint = f"http://127.0.0.1:{s3_port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="uploads")
                break
            except Exception:
                assert time.monotonic() < deadline, "moto_server did not start"
                time.sleep(0.2)
        env = service_env(
            SAGAN_DATA_DIR=str(tmp_path / "data"),
            SAGAN_DATABASE_URL=migrated_postgres_url,
            SAGAN_BROKER_URL=redis_url,
            SAGAN_STORAGE="s3",
            SAGAN_S3_BUCKET="uploads",
            SAGAN_S3_ENDPOINT_URL=endpoint,
        )
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        with ProcessGroup(tmp_path) as group, httpx.Client(
            base_url=base, headers=AUTH, timeout=httpx.Timeout(30, read=300)
        ) as client:  # fmt: skip
            api = group.start(["api", "--port", str(port)], env, "api")
            wait_healthy(base, api)
            # Warm every code path first (auth, database, S3 client, a small upload).
            small = client.post(
                "/datasets", params={"name": "warm"}, content=b"PK\x05\x06" + bytes(18)
            )
            assert small.status_code == 201, small.text
            before = vm_hwm(api.proc.pid)
            sha = hashlib.sha256()
            r = client.post("/datasets", params={"name": "big"}, content=body(sha))
            assert r.status_code == 201, r.text
            after = vm_hwm(api.proc.pid)
            ds = r.json()
            assert ds["size_bytes"] == UPLOAD_BYTES + 512 and ds["source_format"] == "tar"
            assert ds["content_hash"] == sha.hexdigest()
            head = boto3.client("s3", endpoint_url=endpoint).head_object(
                Bucket="uploads", Key=f"datasets/{ds['id']}/source.tar"
            )
            assert head["ContentLength"] == UPLOAD_BYTES + 512
            mb = 2**20
            print(f"API VmHWM {before / mb:.0f} MB before, {after / mb:.0f} MB after a "
                  f"{UPLOAD_BYTES / mb:.0f} MB upload")  # fmt: skip
            assert after - before < ALLOWED_GROWTH, (before, after)
            assert after < UPLOAD_BYTES / 2, (before, after)
    finally:
        moto.kill()
        moto.wait()
