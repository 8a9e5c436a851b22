"""`sagan jobs ...`: a client of a running service's jobs, shaped like `gh`: nouns then verbs, a
table for people, `--json` for scripts, and `watch` that follows a job until it ends and exits with
its outcome. Nothing here imports the service packages (api, worker, store): only httpx.
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from sagan_cli import output as fmt
from sagan_cli.client import (
    Api,
    ClientError,
)
from sagan_cli.output import Interval, JobIdArg, JsonFlag, connect, echo, handled, protocol_line
from sagan_cli.watch import TERMINAL_EXIT, JobWatcher
from sagan_core.config import parse_assignments

jobs_app = typer.Typer(
    help="Jobs on a running service: list, show, create, watch, cancel, continue, events, metrics.",
    no_args_is_help=True,
)

WATCH_AND_JSON = "--json and --watch do not mix: `sagan jobs show ID --json` afterwards"
JOB_BODY_KEYS = ("kind", "config", "model_id")  # a file with one of these is a whole job body
EXPONENT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _job_row(job: dict, owners: bool) -> list[Any]:
    row = [
        fmt.short(job["id"]),
        job["kind"],
        (job.get("config") or {}).get("dataset", "-"),
        job["state"],
        f"{job['step']}/{job['total_steps']}",
        fmt.percent(job.get("progress")),
        fmt.rate(job.get("images_per_s")),
        fmt.duration(job.get("eta_seconds")),
        fmt.age(job.get("created_at")),
    ]
    return [job.get("owner", "-"), *row] if owners else row


@jobs_app.command("list")
@handled
def jobs_list(
    state: Annotated[
        str | None,
        typer.Option(help="queued, running, cancelling, succeeded, failed or cancelled."),
    ] = None,
    kind: Annotated[str | None, typer.Option(help="train or evaluate.")] = None,
    all_owners: Annotated[
        bool, typer.Option("--all-owners", help="Everyone's jobs (an admin token only).")
    ] = False,
    limit: Annotated[int, typer.Option(help="At most this many, newest first.", min=1)] = 30,
    json_: JsonFlag = False,
) -> None:
    """Your jobs, newest first: id, kind, dataset, state, step, progress, images/s, ETA, age."""
    with connect() as api:
        items, total = [], 0
        while len(items) < limit:
            page = api.get_json(
                "/jobs",
                state=state,
                kind=kind,
                all_owners="true" if all_owners else None,
                limit=min(200, limit - len(items)),
                offset=len(items),
            )
            items += page["items"]
            total = page["total"]
            if not page["items"] or len(items) >= total:
                break
    if json_:
        echo(fmt.as_json(items))
        return
    if not items:
        echo("(no jobs)")
        return
    headers = ["ID", "KIND", "DATASET", "STATE", "STEP", "PROGRESS", "IMG/S", "ETA", "AGE"]
    if all_owners:
        headers.insert(0, "OWNER")
    right = {i for i, h in enumerate(headers) if h in ("STEP", "PROGRESS", "IMG/S", "ETA", "AGE")}
    echo(fmt.table(headers, [_job_row(j, all_owners) for j in items], right=frozenset(right)))
    if total > len(items):
        echo(f"({len(items)} of {total}; --limit {total} shows all)", err=True)


def _job_models(api: Api, job: dict) -> str:
    models = list(api.pages("/models", job_id=job["id"]))
    if not models:
        return "-"
    return "\n".join(
        f"{m['tag']:<7} {m['id']}  step {m['step']}, {m['resolution']} px, "
        f"{m['num_classes']} classes"
        for m in sorted(models, key=lambda m: m["tag"] != "latest")
    )


@jobs_app.command("show")
@handled
def jobs_show(
    job_id: JobIdArg,
    json_: JsonFlag = False,
) -> None:
    """One job: state, progress, error, models, attempts, worker and its config."""
    with connect() as api:
        job = api.get_json(f"/jobs/{api.resolve_id('job', job_id)}")
        if json_:
            echo(fmt.as_json(job))
            return
        models = _job_models(api, job)
    state = job["state"]
    if job.get("worker") and state in ("running", "cancelling"):
        state += f" on {job['worker']}"
    progress = f"{job['step']}/{job['total_steps']} steps ({fmt.percent(job.get('progress'))})"
    if job.get("images_per_s"):
        progress += f", {fmt.rate(job['images_per_s'])} images/s"
    if job.get("eta_seconds") is not None:
        progress += f", ETA {fmt.duration(job['eta_seconds'])}"
    config = job.get("config") or {}
    pairs = [
        ("id", job["id"]),
        ("kind", f"{job['kind']} (owner {job.get('owner', '-')})"),
        ("state", state),
        ("progress", progress),
        ("attempts", job.get("attempts")),
        ("error", job.get("error")),
        ("warning", job.get("warning")),
        ("defaults", job.get("defaults_note")),
        ("created", fmt.when(job.get("created_at"))),
        ("started", fmt.when(job.get("started_at"))),
        ("finished", fmt.when(job.get("finished_at"))),
        ("ran for", fmt.elapsed(job)),
        ("models", models),
    ]
    if job.get("model_id"):
        pairs.append(("evaluates", job["model_id"]))
    if job.get("continued_from"):
        pairs.append(
            ("continues", f"{job['continued_from']} from step {job.get('continued_from_step')}")
        )
    pairs.append(("config", fmt.wrap_items([f"{k}={_scalar(v)}" for k, v in config.items()])))
    echo(fmt.key_values(pairs))


def _scalar(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


# jobs create


def parse_sets(pairs: list[str]) -> dict[str, Any]:
    """`--set KEY=VALUE` options (the core's one reader), a bad one as the client's error."""
    try:
        return parse_assignments(pairs)
    except ValueError as e:
        raise ClientError(str(e)) from None


def _yaml_numbers(value: Any) -> Any:
    """PyYAML (YAML 1.1) reads `1e-4` as a string; a config means the number."""
    if isinstance(value, dict):
        return {k: _yaml_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_yaml_numbers(v) for v in value]
    if isinstance(value, str) and EXPONENT.fullmatch(value):
        return float(value)
    return value


def load_job_file(path: Path) -> dict[str, Any]:
    """A YAML or JSON file: config fields, or a whole job body (`kind`, `config`, ...)."""
    try:
        text = path.read_text()
    except OSError as e:
        raise ClientError(f"--config {path}: {e.strerror or e}") from e
    is_yaml = path.suffix.lower() in (".yaml", ".yml")
    try:
        import yaml
    except ImportError:
        yaml = None
    try:
        if yaml is not None and (is_yaml or not text.lstrip().startswith("{")):
            data = _yaml_numbers(yaml.safe_load(text))
        elif is_yaml:
            raise ClientError(
                f"--config {path}: reading YAML needs PyYAML (`pip install pyyaml`); "
                "or give the config as JSON"
            )
        else:
            data = json.loads(text)
    except ClientError:
        raise
    except Exception as e:  # json.JSONDecodeError, yaml.YAMLError
        raise ClientError(f"--config {path}: not valid {'YAML' if yaml else 'JSON'}: {e}") from e
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ClientError(f"--config {path}: expected a mapping of config fields")
    return data


def build_job_body(
    file_data: dict[str, Any] | None,
    sets: list[str],
    kind: str | None,
    model: str | None,
) -> dict[str, Any]:
    """The POST /jobs body from a file, `--set` overrides, `--kind` and `--model`."""
    body: dict[str, Any] = {}
    fields: dict[str, Any] = {}
    if file_data is not None:
        if any(k in file_data for k in JOB_BODY_KEYS):
            body = dict(file_data)
        else:
            fields = dict(file_data)
    kind = kind or body.get("kind") or ("evaluate" if model else "train")
    if kind not in ("train", "evaluate"):
        raise ClientError(f"--kind: must be train or evaluate (got {kind!r})")
    body["kind"] = kind
    overrides = parse_sets(sets)
    if kind == "train":
        if model:
            raise ClientError("--model is for evaluate jobs (--kind evaluate)")
        config = body.get("config") or {}
        if not isinstance(config, dict):
            raise ClientError("config: expected a mapping of config fields")
        body["config"] = {**config, **fields, **overrides}
    else:
        body.update(fields)
        body.update(overrides)
        if model:
            body["model_id"] = model
        if not body.get("model_id"):
            raise ClientError("an evaluate job needs a model: --model ID")
    return body


@jobs_app.command("create")
@handled
def jobs_create(
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-f",
            help="A YAML or JSON file: config fields (dataset, steps, ...), or a whole job "
            "(kind, config, model_id, samples, classes).",
        ),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            "-s",
            metavar="KEY=VALUE",
            help="A config field (evaluate: a job field); the value is read as JSON "
            "(2000, 1e-4, true, [3, 7]) or else taken as text. Repeatable; wins over the file.",
        ),
    ] = None,
    kind: Annotated[str | None, typer.Option(help="train (default) or evaluate.")] = None,
    model: Annotated[
        str | None, typer.Option(help="evaluate: the model to score (an id or a unique prefix).")
    ] = None,
    idempotency_key: Annotated[
        str | None, typer.Option(help="Retrying with the same key returns the same job.")
    ] = None,
    watch: Annotated[
        bool, typer.Option("--watch", "-w", help="Follow the job until it ends (see `watch`).")
    ] = False,
    json_: JsonFlag = False,
    interval: Interval = 1.0,
) -> None:
    """Start a job and print its id. `sagan jobs create --set steps=2000 --watch`."""
    if watch and json_:
        raise ClientError(WATCH_AND_JSON)
    file_data = load_job_file(config) if config else None
    with connect() as api:
        body = build_job_body(file_data, set_ or [], kind, model)
        if body["kind"] == "evaluate":
            body["model_id"] = api.resolve_id("model", str(body["model_id"]))
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        response = api.request("POST", "/jobs", json=body, headers=headers)
        job = response.json()
        if json_:
            echo(fmt.as_json(job))
            return
        echo(job["id"])
        again = " (the job this Idempotency-Key made before)" if response.status_code == 200 else ""
        echo(f"created {job['kind']} job {fmt.short(job['id'])}{again}, {job['state']}", err=True)
        if job.get("defaults_note"):  # what the service chose for what the config left out
            echo(f"  {job['defaults_note']}", err=True)
        follow_new_job(api, job["id"], watch, interval)


def follow_new_job(api: Api, job_id: str, watch: bool, interval: float) -> None:
    """After a job was made: follow it to its end (exiting with its outcome), or say how to."""
    if not watch:
        echo(f"  follow it: sagan jobs watch {fmt.short(job_id)}", err=True)
        return
    raise typer.Exit(JobWatcher(api, job_id, interval).run())


@jobs_app.command("watch")
@handled
def jobs_watch(
    job_id: JobIdArg,
    interval: Interval = 1.0,
) -> None:
    """Follow a job until it ends: steps, losses, images/s, ETA, state changes, checkpoints.

    Exit code: 0 succeeded, 1 failed (its error is printed), 2 cancelled. Ctrl-C stops watching
    and leaves the job running."""
    with connect() as api:
        code = JobWatcher(api, api.resolve_id("job", job_id), interval).run()
    raise typer.Exit(code)


@jobs_app.command("cancel")
@handled
def jobs_cancel(
    job_id: JobIdArg,
    json_: JsonFlag = False,
) -> None:
    """Cancel a job: a queued one at once, a running one after it saves a checkpoint."""
    with connect() as api:
        job = api.post_json(f"/jobs/{api.resolve_id('job', job_id)}/cancel")
    if json_:
        echo(fmt.as_json(job))
        return
    note = " (the worker saves a checkpoint, then stops)" if job["state"] == "cancelling" else ""
    echo(f"job {fmt.short(job['id'])} {job['state']}{note}")


@jobs_app.command("continue")
@handled
def jobs_continue(
    job_id: JobIdArg,
    steps: Annotated[
        int,
        typer.Option(
            help="The new total of steps, counted from the first job's start: training goes on "
            "from the newest checkpoint's step up to this one.",
            min=1,
        ),
    ],
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            "-s",
            metavar="KEY=VALUE",
            help="A config field to change (read as JSON, else text); fields that shape the "
            "networks, the learning rates, betas and seed stay the checkpoint's. Repeatable.",
        ),
    ] = None,
    watch: Annotated[
        bool, typer.Option("--watch", "-w", help="Follow the new job until it ends.")
    ] = False,
    json_: JsonFlag = False,
    interval: Interval = 1.0,
) -> None:
    """Start a new train job from a job's newest checkpoint, with more steps:
    `sagan jobs continue 3f2c --steps 4000 --watch`. Prints the new job's id."""
    if watch and json_:
        raise ClientError(WATCH_AND_JSON)
    body: dict[str, Any] = {"steps": steps}
    if set_:
        body["config"] = parse_sets(set_)
    with connect() as api:
        old = api.resolve_id("job", job_id)
        job = api.post_json(f"/jobs/{old}/continue", body)
        if json_:
            echo(fmt.as_json(job))
            return
        echo(job["id"])
        echo(
            f"created train job {fmt.short(job['id'])}, {job['state']}: continues "
            f"{fmt.short(old)} from step {job.get('continued_from_step')} to {steps}",
            err=True,
        )
        follow_new_job(api, job["id"], watch, interval)


@jobs_app.command("events")
@handled
def jobs_events(
    job_id: JobIdArg,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new events until the job ends.")
    ] = False,
    json_: Annotated[
        bool, typer.Option("--json", help="JSON: a list; with --follow, one event per line.")
    ] = False,
    interval: Interval = 1.0,
) -> None:
    """A job's state changes, checkpoints and notes, oldest first."""
    with connect() as api:
        jid = api.resolve_id("job", job_id)
        if follow and not json_:
            JobWatcher(api, jid, interval, steps=False, with_date=True).run()
            return
        events, after = [], 0
        while True:
            # The state first: a job seen ended has all its events written (the same commit).
            ended = not follow or api.get_json(f"/jobs/{jid}")["state"] in TERMINAL_EXIT
            while True:
                page = api.get_json(f"/jobs/{jid}/events", after=after, limit=1000)
                if follow:
                    for e in page:
                        echo(json.dumps(e))
                else:
                    events += page
                after = page[-1]["id"] if page else after
                if len(page) < 1000:
                    break
            if ended:
                break
            time.sleep(interval)
    if follow:
        return
    if json_:
        echo(fmt.as_json(events))
        return
    watcher = JobWatcher(api, jid, with_date=True)
    for e in events:
        watcher.event(e)
    if not events:
        echo("(no events)")


@jobs_app.command("metrics")
@handled
def jobs_metrics(
    job_id: JobIdArg,
    names: Annotated[
        list[str] | None,
        typer.Option(help="Metric names, comma-separated or repeated (default: all)."),
    ] = None,
    since_step: Annotated[int | None, typer.Option(min=0)] = None,
    until_step: Annotated[int | None, typer.Option(min=0)] = None,
    max_points: Annotated[
        int, typer.Option(help="Evenly spaced points per series (--csv, --json).", min=1)
    ] = 1000,
    csv: Annotated[bool, typer.Option("--csv", help="The series as CSV: name,step,value.")] = False,
    json_: Annotated[
        bool, typer.Option("--json", help="The series as JSON: {name: [[step, value], ...]}.")
    ] = False,
) -> None:
    """A job's metrics: the last value of each (d_loss, g_loss, fid, ...), or the series."""
    if csv and json_:
        raise ClientError("--csv and --json: choose one")
    wanted = ",".join(n.strip() for arg in names or [] for n in arg.split(",") if n.strip())
    query = {"names": wanted or None, "since_step": since_step, "until_step": until_step}
    with connect() as api:
        path = f"/jobs/{api.resolve_id('job', job_id)}/metrics"
        if csv:
            params = {k: v for k, v in query.items() if v is not None}
            params.update(format="csv", max_points=max_points)
            sys.stdout.write(api.request("GET", path, params=params).text)
            return
        if json_:
            echo(fmt.as_json(api.get_json(path, max_points=max_points, **query)))
            return
        body = api.get_json(path, max_points=1, **query)
    series = body["series"]
    rows = [
        [name, points[-1][0], fmt.number(points[-1][1])] if points else [name, "-", "-"]
        for name, points in sorted(series.items())
    ]
    echo(fmt.table(["METRIC", "STEP", "LAST"], rows, right=frozenset({1, 2})) if rows else "(none)")
    if body.get("protocols"):  # how the last scores were measured: compare FIDs only when equal
        last = body["protocols"][-1]
        echo(f"scores of step {last['step']} measured with: {protocol_line(last['protocol'])}")


# `submit` is what MLflow and Determined users type; it is `create` (gh's word), unlisted.
jobs_app.command("submit", hidden=True)(jobs_create)
