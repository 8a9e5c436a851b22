"""docker-compose.yml: the distributed deployment file is valid and wires the services together."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


MONITORING = {"prometheus", "grafana"}  # the `monitoring` profile (#24)
DASHBOARD = ROOT / "docker" / "grafana" / "dashboards" / "sagan.json"
PROMETHEUS_YML = ROOT / "docker" / "prometheus" / "prometheus.yml"


def _config(*profiles: str, env: dict[str, str] | None = None) -> dict:
    """`docker-compose [--profile P] -f docker-compose.yml config`, parsed."""
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose is not installed (apt-get install docker-compose) to validate")
    flags = [arg for p in profiles for arg in ("--profile", p)]
    out = subprocess.run(
        [binary, *flags, "-f", str(ROOT / "docker-compose.yml"), "config"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=None if env is None else {**os.environ, **env},
    )
    assert out.returncode == 0, out.stderr
    return yaml.safe_load(out.stdout)


@pytest.fixture(scope="module")
def compose() -> dict:
    """What `docker compose up` starts: no profile. Compose v2's `config` leaves the services of
    a profile out itself; 1.29 prints them (with their `profiles`), and `up` skips them."""
    config = _config()
    config["services"] = {
        name: s for name, s in config["services"].items() if not s.get("profiles")
    }
    return config


@pytest.fixture(scope="module")
def monitoring() -> dict:
    """`docker compose --profile monitoring config`: the deployment plus Prometheus and Grafana."""
    return _config("monitoring")


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


def test_images_are_pinned(monitoring: dict) -> None:
    images = {name: s["image"] for name, s in monitoring["services"].items() if "build" not in s}
    for name, image in images.items():
        assert ":" in image and not image.endswith(":latest"), (name, image)
    release = r"RELEASE\.\d{4}-\d\d-\d\dT\d\d-\d\d-\d\dZ"
    assert re.fullmatch(rf"minio/minio:{release}", images["minio"])
    assert re.fullmatch(rf"minio/mc:{release}", images["minio-init"])
    assert re.fullmatch(r"postgres:\d+", images["postgres"])
    assert re.fullmatch(r"redis:\d+", images["redis"])
    assert re.fullmatch(r"prom/prometheus:v\d+\.\d+\.\d+", images["prometheus"])
    assert re.fullmatch(r"grafana/grafana:\d+\.\d+\.\d+", images["grafana"])


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


# --- the monitoring profile (#24) -----------------------------------------------------------


def test_monitoring_profile_adds_prometheus_and_grafana_only_under_it(
    compose: dict, monitoring: dict
) -> None:
    assert set(monitoring["services"]) == set(compose["services"]) | MONITORING
    assert not MONITORING & set(compose["services"])
    profiled = {n: s["profiles"] for n, s in monitoring["services"].items() if s.get("profiles")}
    assert profiled == {name: ["monitoring"] for name in MONITORING}
    assert {"prometheus-data", "grafana-data"} <= set(monitoring["volumes"])


def test_monitoring_ports_listen_on_this_machine_only(monitoring: dict) -> None:
    published = {name: _ports(s) for name, s in monitoring["services"].items()}
    assert {n for n, ports in published.items() if ports} == {
        "api",
        "minio",
        "flower",
        "prometheus",
        "grafana",
    }
    assert published["prometheus"] == [("127.0.0.1", 9090, 9090)]
    assert published["grafana"] == [("127.0.0.1", 3000, 3000)]
    # Prometheus has no login: it stays on this machine even when the rest is opened.
    opened = _config("monitoring", env={"SAGAN_BIND_ADDRESS": "0.0.0.0"})["services"]
    assert _ports(opened["prometheus"]) == [("127.0.0.1", 9090, 9090)]
    assert _ports(opened["grafana"]) == [("0.0.0.0", 3000, 3000)]


def test_workers_serve_metrics_on_the_compose_network_only(monitoring: dict) -> None:
    worker = monitoring["services"]["worker"]
    env = worker["environment"]
    assert env["SAGAN_WORKER_METRICS_PORT"] == "9100"
    assert env["SAGAN_WORKER_METRICS_ADDR"] == "0.0.0.0"  # the container's address, not the host's
    assert "ports" not in worker and [str(p) for p in worker["expose"]] == ["9100"]
    from store.settings import Settings

    settings = Settings(
        worker_metrics_port=env["SAGAN_WORKER_METRICS_PORT"],
        worker_metrics_addr=env["SAGAN_WORKER_METRICS_ADDR"],
    )
    assert (settings.worker_metrics_addr, settings.worker_metrics_port) == ("0.0.0.0", 9100)


def _scrape_jobs() -> dict[str, dict]:
    config = yaml.safe_load(PROMETHEUS_YML.read_text())
    assert config["global"]["scrape_interval"] == "15s"
    return {job["job_name"]: job for job in config["scrape_configs"]}


def test_prometheus_scrapes_the_api_with_the_admin_token_and_every_worker(
    monitoring: dict,
) -> None:
    jobs = _scrape_jobs()
    api = jobs["sagan-api"]
    assert api["static_configs"] == [{"targets": ["api:8000"]}]
    assert api["metrics_path"] == "/metrics"
    assert api["authorization"]["type"] == "Bearer"
    token_file = api["authorization"]["credentials_file"]
    assert "credentials" not in api["authorization"]  # the secret is in no committed file
    worker = jobs["sagan-worker"]
    assert worker["metrics_path"] == "/metrics"
    assert worker["dns_sd_configs"] == [
        {"names": ["worker"], "type": "A", "port": 9100, "refresh_interval": "15s"}
    ]
    assert "static_configs" not in worker  # every replica of `--scale worker=N`, not one
    worker_env = monitoring["services"]["worker"]["environment"]
    assert worker["dns_sd_configs"][0]["port"] == int(worker_env["SAGAN_WORKER_METRICS_PORT"])

    prometheus = monitoring["services"]["prometheus"]
    assert _mounts(prometheus)["/etc/prometheus/prometheus.yml"] == str(PROMETHEUS_YML)
    assert "--config.file=/etc/prometheus/prometheus.yml" in " ".join(prometheus["command"])
    # The container writes the API's token (the same variable, the same default) to the file
    # prometheus.yml names, on a tmpfs; `$$` keeps compose from substituting it into the command.
    api_token = monitoring["services"]["api"]["environment"]["SAGAN_ADMIN_TOKEN"]
    assert prometheus["environment"]["SAGAN_ADMIN_TOKEN"] == api_token
    raw = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["prometheus"]
    assert f'"$$SAGAN_ADMIN_TOKEN" > {token_file} &&' in raw["command"][0]
    assert raw["environment"]["SAGAN_ADMIN_TOKEN"] == "${SAGAN_ADMIN_TOKEN:-}"
    assert str(Path(token_file).parent) in prometheus["tmpfs"]


def test_prometheus_config_passes_promtool(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    # promtool checks that the token file exists; the container writes it at start.
    token = tmp_path / "admin-token"
    token.write_text("token")
    text = PROMETHEUS_YML.read_text()
    token_file = _scrape_jobs()["sagan-api"]["authorization"]["credentials_file"]
    config = tmp_path / "prometheus.yml"
    config.write_text(text.replace(token_file, str(token)))
    out = subprocess.run(
        [promtool, "check", "config", str(config)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stdout + out.stderr
    # The dashboard's queries parse as PromQL: each one a recording rule for `check rules`.
    rules = tmp_path / "dashboard-rules.yml"
    exprs = [
        e.replace("$__rate_interval", "1m").replace("$job_id", ".*")
        for e in _dashboard_exprs(variables=False)
    ]
    group = {
        "name": "dashboard",
        "rules": [{"record": f"q{i}", "expr": e} for i, e in enumerate(exprs)],
    }
    rules.write_text(yaml.safe_dump({"groups": [group]}))
    out = subprocess.run(
        [promtool, "check", "rules", str(rules)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stdout + out.stderr


def _dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def _panels(dashboard: dict) -> list[dict]:
    """Every panel, those inside collapsed rows too."""
    out = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def _dashboard_exprs(variables: bool = True) -> list[str]:
    """Every query of the dashboard: its panels' PromQL, and its variables' (Grafana's
    `label_values(metric, label)`, not PromQL) unless variables=False."""
    dashboard = _dashboard()
    exprs = [t["expr"] for p in _panels(dashboard) for t in p.get("targets", [])]
    for variable in dashboard["templating"]["list"] if variables else []:
        if variable["type"] == "query":
            query = variable["query"]
            exprs.append(query["query"] if isinstance(query, dict) else query)
    return exprs


def _exposed_series() -> set[str]:
    """The series names the service exposes: store.telemetry's metric objects with the
    suffixes their type writes (a counter's _total, a histogram's _bucket/_sum/_count), and the
    API's fleet gauges (read from the database at each scrape: no object) from its docstring."""
    from prometheus_client.metrics import MetricWrapperBase

    import store.telemetry as telemetry

    suffixes = {
        "counter": ("_total",),
        "gauge": ("",),
        "histogram": ("_bucket", "_sum", "_count"),
        "summary": ("", "_sum", "_count"),
    }
    objects = {
        family.name: family.type
        for metric in vars(telemetry).values()
        if isinstance(metric, MetricWrapperBase)
        for family in metric.describe()
    }
    assert objects, "store.telemetry has no metric objects"
    series = {name + suffix for name, kind in objects.items() for suffix in suffixes[kind]}
    documented = set(re.findall(r"\bsagan_\w+", telemetry.__doc__ or ""))
    assert {"sagan_jobs", "sagan_queue_oldest_age_seconds", "sagan_job_step"} <= documented
    return series | {name for name in documented if name not in objects}


def _metric_names(expr: str) -> set[str]:
    """The sagan_* names an expression reads (label values in quotes left out)."""
    return set(re.findall(r"\bsagan_\w+", re.sub(r'"[^"]*"', '""', expr)))


def test_dashboard_reads_only_metrics_the_service_exposes() -> None:
    exposed = _exposed_series()
    used = {name for expr in _dashboard_exprs() for name in _metric_names(expr)}
    assert used and used <= exposed, sorted(used - exposed)
    # What issue #24 asks the dashboard to show.
    assert {
        "sagan_jobs",
        "sagan_queue_jobs",
        "sagan_queue_oldest_age_seconds",
        "sagan_workers_alive",
        "sagan_job_images_per_second",
        "sagan_job_step",
        "sagan_job_heartbeat_age_seconds",
        "sagan_worker_gpu_memory_gib",
        "sagan_worker_gpu_utilization_ratio",
        "sagan_worker_gpu_power_watts",
        "sagan_http_requests_total",
        "sagan_http_request_duration_seconds_bucket",
        "sagan_checkpoint_upload_seconds_bucket",
        "sagan_checkpoint_upload_bytes_total",
        "sagan_outage_retries_total",
    } <= used
    # Latency quantiles are taken over bucket rates kept apart by route and le.
    latency = [e for e in _dashboard_exprs() if "sagan_http_request_duration_seconds" in e]
    assert latency and all(
        re.search(r"histogram_quantile\(0\.\d+, sum by \(le, route\) \(rate\(", e) for e in latency
    )


def test_metric_name_check_sees_suffixes_and_skips_label_values() -> None:
    exposed = _exposed_series()
    assert "sagan_http_requests_total" in exposed and "sagan_http_requests" not in exposed
    assert "sagan_checkpoint_upload_seconds_bucket" in exposed
    assert "sagan_checkpoint_upload_seconds" not in exposed  # a histogram has no bare series
    assert _metric_names('sum(rate(sagan_jobs{job="sagan_worker"}[5m]))') == {"sagan_jobs"}


def test_dashboard_is_a_grafana_dashboard_on_the_provisioned_datasource() -> None:
    dashboard = _dashboard()
    assert dashboard["uid"] and dashboard["title"]
    assert 36 <= dashboard["schemaVersion"] <= 41
    datasource = yaml.safe_load(
        (ROOT / "docker/grafana/provisioning/datasources/prometheus.yml").read_text()
    )["datasources"]
    assert len(datasource) == 1 and datasource[0]["type"] == "prometheus"
    assert datasource[0]["url"] == "http://prometheus:9090"
    uid = datasource[0]["uid"]
    panels = _panels(dashboard)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    for panel in panels:
        assert panel["type"] in {"row", "timeseries", "stat"}, panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24 and grid["h"] > 0, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["targets"], panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": uid}, panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == uid and target["expr"], panel["title"]
    for variable in dashboard["templating"]["list"]:
        assert variable["datasource"]["uid"] == uid
    titles = {p["title"] for p in panels}
    assert {"Jobs by state", "Images/s per job", "GPU memory per job"} <= titles


def test_grafana_provisions_the_datasource_and_the_dashboard_file(monitoring: dict) -> None:
    grafana = monitoring["services"]["grafana"]
    mounts = _mounts(grafana)
    provisioning = ROOT / "docker" / "grafana" / "provisioning"
    assert Path(mounts["/etc/grafana/provisioning/datasources"]) == provisioning / "datasources"
    assert Path(mounts["/etc/grafana/provisioning/dashboards"]) == provisioning / "dashboards"
    providers = yaml.safe_load((provisioning / "dashboards" / "sagan.yml").read_text())
    (provider,) = providers["providers"]
    assert provider["type"] == "file"
    inside = provider["options"]["path"]
    assert (Path(mounts[inside]) / DASHBOARD.name).resolve() == DASHBOARD.resolve()
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{inside}/{DASHBOARD.name}"
    # A login, no anonymous viewers; the password comes from the environment (a default).
    env = grafana["environment"]
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "false" and env["GF_SECURITY_ADMIN_PASSWORD"]
    assert "prometheus" in grafana["depends_on"]
