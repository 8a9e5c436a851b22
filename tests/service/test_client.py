"""`sagan jobs|models|login|logout`: the client, run as a subprocess against a real `sagan up`.

One embedded service for the module (a tiny digits run, then a job that fails); the tests at the
end need no service (credentials, `--set`, id prefixes, the order of `watch` lines)."""

from __future__ import annotations

import io
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from PIL import Image
from servicekit import (
    ADMIN_TOKEN,
    SAGAN,
    TINY_TRAIN,
    ProcessGroup,
    ServiceProcess,
    free_port,
    service_env,
    wait_healthy,
)

from sagan_cli import jobs, watch
from sagan_cli.client import Api, ClientError, Credentials, mask, resolve_credentials


@dataclass
class Service:
    url: str
    data: Path
    up: ServiceProcess
    home: Path  # the client's cwd and XDG_CONFIG_HOME: no ./data/token, no login store of yours


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    root = tmp_path_factory.mktemp("client")
    data = root / "data"
    (data / "datasets" / "empty").mkdir(parents=True)  # a folder data set without images
    home = root / "home"
    home.mkdir()
    port = free_port()
    with ProcessGroup(root) as group:
        up = group.start(["up", "--port", str(port), "--data-dir", str(data)], service_env(), "up")
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, up)
        yield Service(url, data, up, home)


def sagan(
    service: Service | None,
    *args: str,
    token: str | None = ADMIN_TOKEN,
    url: str | None = "",  # "": the service's; None: no SAGAN_URL
    stdin: str | None = None,
    timeout: float = 150,
) -> subprocess.CompletedProcess:
    home = service.home if service else Path(os.environ.get("TMPDIR", "/tmp"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAGAN_")}
    env.update(XDG_CONFIG_HOME=str(home / "config"), SAGAN_DATA_DIR=str(home / "no-data"))
    if url == "" and service is not None:
        url = service.url
    if url:
        env["SAGAN_URL"] = url
    if token:
        env["SAGAN_TOKEN"] = token
    out = subprocess.run(
        [SAGAN, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=home,
        input=stdin,
    )
    assert "Traceback" not in out.stderr, out.stderr
    return out


@pytest.fixture(scope="module")
def trained(service: Service) -> tuple[str, subprocess.CompletedProcess]:
    """A tiny digits job made with `jobs create --set ... --watch`: its id and the output."""
    sets = [a for k, v in TINY_TRAIN.items() for a in ("--set", f"{k}={json.dumps(v)}")]
    out = sagan(service, "jobs", "create", *sets, "--watch", "--interval", "0.3")
    assert out.returncode == 0, out.stdout + out.stderr + service.up.output()
    return out.stdout.splitlines()[0], out


def test_create_watch_streams_steps_and_ends_with_the_job(trained: tuple) -> None:
    job_id, out = trained
    assert len(job_id) == 32 and int(job_id, 16) >= 0
    lines = out.stdout.splitlines()
    assert any(" queued " in line for line in lines) and any(" running " in line for line in lines)
    steps = [line for line in lines if "  step  " in line]
    assert [line.split()[2] for line in steps] == ["2/6", "4/6", "6/6"], out.stdout
    assert all("d_loss" in line and "g_loss" in line and "img/s" in line for line in steps)
    assert "checkpoint  step 3" in out.stdout and "checkpoint  step 6" in out.stdout
    assert f"job {job_id[:8]} succeeded" in out.stdout
    assert "sagan models samples" in out.stdout
    assert f"created train job {job_id[:8]}" in out.stderr


def test_list_show_events_metrics_cancel(service: Service, trained: tuple) -> None:
    job_id, _ = trained
    listed = sagan(service, "jobs", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    jobs = {j["id"]: j for j in json.loads(listed.stdout)}
    assert jobs[job_id]["state"] == "succeeded" and jobs[job_id]["step"] == 6

    table = sagan(service, "jobs", "list", "--state", "succeeded").stdout
    assert table.splitlines()[0].split()[:4] == ["ID", "KIND", "DATASET", "STATE"]
    row = next(line for line in table.splitlines() if line.startswith(job_id[:8]))
    assert row.split()[1:6] == ["train", "digits", "succeeded", "6/6", "100%"]

    shown = sagan(service, "jobs", "show", job_id[:6])  # a prefix
    assert shown.returncode == 0, shown.stderr
    assert job_id in shown.stdout and "6/6 steps" in shown.stdout and "latest" in shown.stdout
    as_json = json.loads(sagan(service, "jobs", "show", job_id[:6], "--json").stdout)
    assert as_json["id"] == job_id and as_json["config"]["steps"] == 6

    events = sagan(service, "jobs", "events", job_id[:6]).stdout
    assert "queued" in events and "checkpoint" in events and "succeeded" in events

    metrics = sagan(service, "jobs", "metrics", job_id[:6], "--names", "d_loss,g_loss").stdout
    assert [line.split()[:2] for line in metrics.splitlines()[1:]] == [
        ["d_loss", "6"],
        ["g_loss", "6"],
    ]
    series = json.loads(sagan(service, "jobs", "metrics", job_id, "--json").stdout)["series"]
    assert [s for s, _ in series["d_loss"]] == [2, 4, 6]

    again = sagan(service, "jobs", "cancel", job_id[:6])
    assert again.returncode == 1 and again.stderr.startswith("error: ")
    assert "only queued, running or paused jobs can be cancelled" in again.stderr


def test_models_samples_writes_a_png(service: Service, trained: tuple) -> None:
    job_id, _ = trained
    models = json.loads(sagan(service, "models", "list", "--job", job_id[:8], "--json").stdout)
    assert [m["tag"] for m in models] == ["latest"] and models[0]["step"] == 6
    model = models[0]["id"]
    target = service.home / "out" / "threes.png"
    out = sagan(
        service, "models", "samples", model[:8], "--class", "3", "--n", "4", "-o", str(target)
    )
    assert out.returncode == 0, out.stderr
    assert f"wrote {target}" in out.stdout
    assert Image.open(io.BytesIO(target.read_bytes())).size == (66, 66)  # 2 x 2 of 32 px, a gap
    bad = sagan(service, "models", "samples", model[:8], "--class", "10", "-o", str(target))
    assert bad.returncode == 1 and "error: class 10 out of range" in bad.stderr


def test_models_alias_names_a_model_in_every_command(service: Service, trained: tuple) -> None:
    job_id, _ = trained
    model = json.loads(sagan(service, "models", "list", "--job", job_id[:8], "--json").stdout)[0]
    made = sagan(service, "models", "alias", model["id"][:8], "first-run")
    assert made.returncode == 0 and made.stdout.strip() == f"@first-run -> model {model['id']}"
    assert "@first-run" in sagan(service, "models", "show", "@first-run").stdout
    assert "@first-run" in sagan(service, "models", "list").stdout
    target = service.home / "out" / "aliased.png"
    out = sagan(service, "models", "samples", "@first-run", "--class", "3", "-o", str(target))
    assert out.returncode == 0 and target.stat().st_size > 0, out.stderr
    listed = sagan(service, "models", "aliases").stdout
    assert "@first-run" in listed and model["id"] in listed
    assert sagan(service, "models", "unalias", "first-run").returncode == 0
    gone = sagan(service, "models", "show", "@first-run")
    assert gone.returncode == 1 and "model '@first-run' not found" in gone.stderr


def test_continue_a_finished_job_from_its_checkpoint_and_watch_it(
    service: Service, trained: tuple
) -> None:
    job_id, _ = trained  # 6 steps, checkpoints at 3 and 6
    refused = sagan(service, "jobs", "continue", job_id[:6], "--steps", "10", "--set", "g_ch=8")
    assert refused.returncode == 1
    assert refused.stderr.startswith("error: config.g_ch: 8 would change the architecture")
    short = sagan(service, "jobs", "continue", job_id[:6], "--steps", "6")
    assert short.returncode == 1 and "more than the checkpoint's step 6" in short.stderr

    out = sagan(
        service, "jobs", "continue", job_id[:6], "--steps", "10", "--set", "checkpoint_every=2",
        "--watch", "--interval", "0.3",
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr + service.up.output()
    new_id = out.stdout.splitlines()[0]
    assert f"continues {job_id[:8]} from step 6 to 10" in out.stderr
    # The trainer goes on from the checkpoint: steps, metrics and checkpoints after step 6 only.
    steps = [line.split()[2] for line in out.stdout.splitlines() if "  step  " in line]
    assert steps == ["8/10", "10/10"], out.stdout
    assert "checkpoint  step 8" in out.stdout and "checkpoint  step 10" in out.stdout
    assert f"job {new_id[:8]} succeeded" in out.stdout

    new = json.loads(sagan(service, "jobs", "show", new_id[:8], "--json").stdout)
    assert (new["continued_from"], new["continued_from_step"]) == (job_id, 6)
    assert (new["state"], new["step"], new["total_steps"]) == ("succeeded", 10, 10)
    assert new["config"]["checkpoint_every"] == 2 and new["config"]["steps"] == 10
    series = json.loads(sagan(service, "jobs", "metrics", new_id, "--json").stdout)["series"]
    assert [s for s, _ in series["d_loss"]] == [8, 10]
    shown = sagan(service, "jobs", "show", new_id[:8]).stdout
    assert f"continues  {job_id} from step 6" in shown
    old = json.loads(sagan(service, "jobs", "show", job_id, "--json").stdout)
    assert (old["state"], old["step"], old.get("continued_from")) == ("succeeded", 6, None)

    again = sagan(service, "jobs", "continue", new_id[:8], "--steps", "12", "--json")
    assert again.returncode == 0, again.stderr
    chained = json.loads(again.stdout)
    assert (chained["continued_from"], chained["continued_from_step"]) == (new_id, 10)
    assert chained["state"] == "queued" and chained["step"] == 10
    assert sagan(service, "jobs", "cancel", chained["id"]).returncode == 0


def test_a_failing_job_ends_watch_with_exit_1_and_its_error(
    service: Service, trained: tuple
) -> None:
    empty = service.data / "datasets" / "empty"
    made = sagan(
        service, "jobs", "create", "--set", "dataset=folder", "--set", f"data_root={empty}"
    )
    assert made.returncode == 0, made.stderr
    job_id = made.stdout.strip()
    assert f"sagan jobs watch {job_id[:8]}" in made.stderr
    out = sagan(service, "jobs", "watch", job_id[:10], "--interval", "0.3")
    assert out.returncode == 1, out.stdout + out.stderr
    assert " failed " in out.stdout
    error = out.stderr.strip().splitlines()[-1]
    assert error.startswith(f"error: job {job_id[:8]} failed: ") and "0 images" in error


def test_without_a_token_the_401_says_how_to_log_in(service: Service) -> None:
    out = sagan(service, "jobs", "list", token=None)
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.startswith("error: authentication required")
    assert f"sagan login --url {service.url} --token TOKEN" in out.stderr
    assert "SAGAN_TOKEN" in out.stderr
    wrong = sagan(service, "jobs", "list", token="sgn_not-a-token-at-all-0123456789")
    assert wrong.returncode == 1 and "invalid or revoked token" in wrong.stderr
    assert "from SAGAN_TOKEN" in wrong.stderr and "sgn_not-a-token" not in wrong.stderr


def test_login_keeps_the_token_0600_then_commands_need_no_env(
    service: Service, trained: tuple
) -> None:
    store = service.home / "config" / "sagan" / "credentials.json"
    refused = sagan(service, "login", "--url", service.url, "--token", "sgn_wrong", token=None)
    assert refused.returncode == 1 and "nothing saved" in refused.stderr
    assert not store.exists()

    out = sagan(
        service, "login", "--url", service.url, "--token", "-", token=None, stdin=ADMIN_TOKEN
    )
    assert out.returncode == 0, out.stderr
    assert ADMIN_TOKEN not in out.stdout + out.stderr and ADMIN_TOKEN[:8] in out.stdout
    assert store.stat().st_mode & 0o777 == 0o600
    assert store.parent.stat().st_mode & 0o077 == 0
    saved = json.loads(store.read_text())
    assert saved["default"] == service.url and saved["hosts"][service.url]["token"] == ADMIN_TOKEN

    # neither SAGAN_URL nor SAGAN_TOKEN: both come from the store
    env_free = sagan(service, "jobs", "list", "--json", token=None, url=None)
    assert env_free.returncode == 0, env_free.stderr
    assert trained[0] in {j["id"] for j in json.loads(env_free.stdout)}
    status = sagan(service, "login", "--status", token=None)
    assert "the login store" in status.stdout and ADMIN_TOKEN not in status.stdout

    assert sagan(service, "logout", token=None).returncode == 0
    assert not store.exists()
    assert sagan(service, "jobs", "list", token=None).returncode == 1


def test_an_unreachable_service_names_its_url_and_sagan_up() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    out = sagan(None, "jobs", "list", url=url, timeout=60)
    assert out.returncode == 1
    assert out.stderr.startswith(f"error: cannot reach the SAGAN service at {url}")
    assert "connection refused" in out.stderr and "sagan up" in out.stderr


# -- no service -------------------------------------------------------------------------------


def test_credentials_env_then_login_store_then_the_embedded_token_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("SAGAN_URL", "SAGAN_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("SAGAN_DATA_DIR", str(tmp_path / "data"))
    assert resolve_credentials() == Credentials("http://127.0.0.1:8000", None, "none")

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "token").write_text("sgn_from-up\n")
    creds = resolve_credentials()
    assert (creds.token, creds.source) == ("sgn_from-up", str(tmp_path / "data" / "token"))
    monkeypatch.setenv("SAGAN_URL", "sagan.example:8000/")  # not this machine: not its token
    assert resolve_credentials() == Credentials("http://sagan.example:8000", None, "none")

    store = tmp_path / "config" / "sagan" / "credentials.json"
    store.parent.mkdir(parents=True)
    hosts = {"http://sagan.example:8000": {"token": "sgn_saved"}}
    store.write_text(json.dumps({"default": "http://sagan.example:8000", "hosts": hosts}))
    monkeypatch.delenv("SAGAN_URL")
    assert resolve_credentials().token == "sgn_saved"
    monkeypatch.setenv("SAGAN_TOKEN", "sgn_env")
    assert resolve_credentials() == Credentials(
        "http://sagan.example:8000", "sgn_env", "SAGAN_TOKEN"
    )
    assert mask("sgn_" + "x" * 40) == "sgn_xxxx..." and mask("short") == "****"


def test_job_bodies_from_a_file_and_set_values() -> None:
    body = jobs.build_job_body(
        {"dataset": "digits", "steps": 100},
        ["steps=2000", "lr_g=1e-4", "dataset=cifar10"],
        None,
        None,
    )
    assert body == {"kind": "train", "config": {"dataset": "cifar10", "steps": 2000, "lr_g": 1e-4}}
    whole = {"kind": "train", "config": {"resolution": 64}}
    assert jobs.build_job_body(whole, ["download=true"], None, None)["config"] == {
        "resolution": 64,
        "download": True,
    }
    evaluate = jobs.build_job_body(None, ["samples=1000", "classes=[3, 7]"], None, "ab12")
    assert evaluate == {"kind": "evaluate", "model_id": "ab12", "samples": 1000, "classes": [3, 7]}
    for sets, kind, model, message in [
        (["steps"], None, None, "expected KEY=VALUE"),
        ([], "evaluate", None, "needs a model"),
        ([], "train", "ab12", "--model is for evaluate"),
        ([], "trian", None, "must be train or evaluate"),
    ]:
        with pytest.raises(ClientError, match=message):
            jobs.build_job_body(None, sets, kind, model)


def test_a_yaml_config_reads_exponents_as_numbers(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text("dataset: digits\nlr_g: 1e-4\nsteps: 2000\n")
    assert jobs.load_job_file(path) == {"dataset": "digits", "lr_g": 1e-4, "steps": 2000}
    (tmp_path / "list.json").write_text("[1]")
    with pytest.raises(ClientError, match="expected a mapping"):
        jobs.load_job_file(tmp_path / "list.json")


def test_id_prefixes_resolve_to_one_id_or_say_why_not() -> None:
    ids = ["ab" + "0" * 30, "ab" + "1" * 30, "cd" + "0" * 30]
    asked = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.path)
        items = [{"id": i, "kind": "train"} for i in ids]
        return httpx.Response(200, json={"items": items, "total": 3, "limit": 200, "offset": 0})

    api = Api(Credentials("http://sagan.test", "sgn_t", "test"))
    api.http = httpx.Client(base_url="http://sagan.test", transport=httpx.MockTransport(handler))
    assert api.resolve_id("job", "CD") == ids[2]
    assert api.resolve_id("job", ids[0]) == ids[0] and asked == ["/jobs"]  # a full id: no lookup
    with pytest.raises(ClientError, match="ambiguous: ab0000, ab1111"):
        api.resolve_id("job", "ab")
    with pytest.raises(ClientError, match="no model id starts with 'ef'"):
        api.resolve_id("model", "ef")
    with pytest.raises(ClientError, match="32 hex digits"):
        api.resolve_id("job", "../x")


def test_watch_prints_notes_then_steps_and_checkpoints_by_step_then_the_end(
    capsys: pytest.CaptureFixture,
) -> None:
    watcher = watch.JobWatcher(api=None, job_id="f" * 32)  # type: ignore[arg-type]
    job = {"state": "succeeded", "finished_at": "2026-01-01T00:00:09Z", "total_steps": 4}

    def event(i: int, kind: str, to: str | None = None, message: str | None = None) -> dict:
        at = f"2026-01-01T00:00:0{i}Z"
        return {"id": i, "at": at, "kind": kind, "to_state": to, "message": message}

    events = [
        event(1, "state", "running", "claimed"),
        event(2, "checkpoint", message="step 2 [latest] k2"),
        event(3, "state", "succeeded"),
        event(4, "checkpoint", message="step 4 [final, latest] k4"),
    ]
    watcher.show(job, events, [(2, "2/4 step two"), (4, "4/4 step four")])
    labels = [line.split()[1] for line in capsys.readouterr().out.splitlines()]
    assert labels == ["running", "step", "checkpoint", "step", "checkpoint", "succeeded"]
    assert watcher.after == 4


def test_jobs_submit_is_jobs_create() -> None:
    from typer.testing import CliRunner

    from sagan_cli.main import app

    runner = CliRunner()
    submit = runner.invoke(app, ["jobs", "submit", "--help"], terminal_width=100)
    create = runner.invoke(app, ["jobs", "create", "--help"], terminal_width=100)
    assert submit.exit_code == create.exit_code == 0
    assert "--config" in submit.output and "--set" in submit.output
    assert submit.output.replace("jobs submit", "jobs create") == create.output
