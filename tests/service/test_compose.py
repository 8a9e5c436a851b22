"""docker-compose.yml: the distributed deployment file is valid and wires the services together."""

from __future__ import annotations

import re
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
    assert 8000 in {target for _, _, target in _ports(api)}


def _ports(service: dict) -> list[tuple[str, int, int]]:
    """(host address, published, target) of each published port, in either form compose writes:
    `{host_ip, published, target}` (compose v2) or `"127.0.0.1:8000:8000/tcp"` (1.29)."""
    ports = []
    for p in service.get("ports", []):
        if isinstance(p, dict):
            ports.append((p.get("host_ip", ""), int(p["published"]), int(p["target"])))
        else:
            *host, published, target = str(p).split("/")[0].split(":")
            ports.append((":".join(host), int(published), int(target)))
    return ports


def test_worker_reserves_a_gpu_and_can_scale(compose: dict) -> None:
    worker = compose["services"]["worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert "container_name" not in worker and "ports" not in worker  # --scale worker=N works
    # It offers jobs as many GPUs as it reserves, and the API knows that pool (#15).
    assert int(worker["environment"]["SAGAN_WORKER_GPUS"]) == int(devices[0]["count"])
    pools = compose["services"]["api"]["environment"]["SAGAN_GPU_POOLS"].split(",")
    assert worker["environment"]["SAGAN_WORKER_GPUS"] in pools


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


def test_presigned_urls_name_the_published_minio_port(compose: dict) -> None:
    for name in ("api", "worker"):
        env = compose["services"][name]["environment"]
        assert env["SAGAN_S3_PUBLIC_ENDPOINT_URL"] == "http://localhost:9000"
    assert ("127.0.0.1", 9000, 9000) in _ports(compose["services"]["minio"])


def test_published_ports_listen_on_this_machine_only_by_default(compose: dict) -> None:
    published = {name: _ports(service) for name, service in compose["services"].items()}
    assert {n for n, ports in published.items() if ports} == {"api", "minio", "flower"}
    for name, ports in published.items():
        assert all(host == "127.0.0.1" for host, _, _ in ports), (name, ports)


def test_images_are_pinned(compose: dict) -> None:
    images = {name: s["image"] for name, s in compose["services"].items() if "build" not in s}
    for name, image in images.items():
        assert ":" in image and not image.endswith(":latest"), (name, image)
    release = r"RELEASE\.\d{4}-\d\d-\d\dT\d\d-\d\d-\d\dZ"
    assert re.fullmatch(rf"minio/minio:{release}", images["minio"])
    assert re.fullmatch(rf"minio/mc:{release}", images["minio-init"])
    assert re.fullmatch(r"postgres:\d+", images["postgres"])
    assert re.fullmatch(r"redis:\d+", images["redis"])


def _mounts(service: dict) -> dict[str, str]:
    """target -> source of a service's volumes (`source:target[:mode]` strings or dicts)."""
    mounts = {}
    for v in service.get("volumes", []):
        if isinstance(v, dict):
            mounts[v["target"]] = str(v.get("source", ""))
        else:
            source, target = str(v).split(":")[:2]
            mounts[target] = source
    return mounts


def test_workers_keep_data_datasets_and_inception_weights(compose: dict) -> None:
    worker = _mounts(compose["services"]["worker"])
    assert worker["/data"] == "worker-data" and worker["/root/.cache/torch"] == "torch-cache"
    assert Path(worker["/data/datasets"]) == ROOT / "datasets"
    assert Path(worker["/weights"]) == ROOT / "weights"
    assert {"worker-data", "torch-cache"} <= set(compose["volumes"])
    # The API checks data_root paths against the same folder.
    assert Path(_mounts(compose["services"]["api"])["/data/datasets"]) == ROOT / "datasets"


def test_the_worker_healthcheck_asks_for_a_recent_beat_of_a_worker_on_its_host(
    compose: dict, embedded_env: Path
) -> None:
    assert compose["services"]["worker"]["healthcheck"]["test"] == [
        "CMD",
        "sagan",
        "worker-health",
    ]
    import socket

    from typer.testing import CliRunner

    from sagan_cli.main import app
    from store.db import session_scope
    from store.migrate import upgrade
    from store.settings import get_settings
    from store.workers import beat_worker

    upgrade(get_settings().resolved_database_url())
    runner = CliRunner()
    none = runner.invoke(app, ["worker-health"])
    assert none.exit_code == 1 and "unhealthy: no worker on" in none.output
    with session_scope(get_settings()) as session:
        beat_worker(session, f"{socket.gethostname()}:4242", "train")
        beat_worker(session, "another-host:7", "train")
    alive = runner.invoke(app, ["worker-health"])
    assert alive.exit_code == 0 and f"healthy: {socket.gethostname()}:4242" in alive.output
    other = runner.invoke(app, ["worker-health", "--host", "third-host"])
    assert other.exit_code == 1
    stale = runner.invoke(app, ["worker-health", "--within", "0"])
    assert stale.exit_code == 1 and "in the last 0 s" in stale.output


def test_workers_send_task_events_for_flower(tmp_path: Path) -> None:
    from store.queue import make_celery
    from store.settings import Settings

    conf = make_celery(Settings(data_dir=tmp_path, broker_url="redis://redis:6379/0")).conf
    assert conf.worker_send_task_events and conf.task_send_sent_event
