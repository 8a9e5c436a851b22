"""docker-compose.yml: the distributed deployment file is valid and wires the services together."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose is not installed (apt-get install docker-compose) to validate")
    out = subprocess.run(
        [binary, "-f", str(ROOT / "docker-compose.yml"), "config"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr
    return yaml.safe_load(out.stdout)


def test_compose_file_has_every_service_of_the_deployment(compose: dict) -> None:
    assert set(compose["services"]) == {
        "postgres",
        "redis",
        "minio",
        "minio-init",
        "api",
        "worker",
        "flower",
    }


def test_api_and_worker_point_at_the_shared_services(compose: dict) -> None:
    for name in ("api", "worker"):
        env = compose["services"][name]["environment"]
        assert env["SAGAN_DATABASE_URL"].startswith("postgresql+psycopg://")
        assert env["SAGAN_DATABASE_URL"].endswith("@postgres:5432/sagan")
        assert env["SAGAN_BROKER_URL"] == "redis://redis:6379/0"
        assert env["SAGAN_STORAGE"] == "s3"
        assert env["SAGAN_S3_ENDPOINT_URL"] == "http://minio:9000"
        assert env["AWS_ACCESS_KEY_ID"] and env["AWS_SECRET_ACCESS_KEY"]
    api = compose["services"]["api"]
    assert api["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert api["depends_on"]["minio-init"]["condition"] == "service_completed_successfully"
    assert any(p["target"] == 8000 for p in api["ports"])


def test_worker_reserves_a_gpu_and_can_scale(compose: dict) -> None:
    worker = compose["services"]["worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert "container_name" not in worker and "ports" not in worker  # --scale worker=N works


def test_dockerfiles_build_from_files_that_exist(compose: dict) -> None:
    for name in ("api", "worker"):
        build = compose["services"][name]["build"]
        dockerfile = Path(build["context"]) / build["dockerfile"]
        copies = [line for line in dockerfile.read_text().splitlines() if line.startswith("COPY ")]
        assert copies, f"{dockerfile.name} copies nothing"  # else the loop below checks nothing
        for line in copies:
            for src in line.split()[1:-1]:
                assert (ROOT / src).exists(), f"{dockerfile.name}: COPY {src} is missing"
    assert (ROOT / "docker" / "minio-init.sh").is_file()
