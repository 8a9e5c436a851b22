"""`sagan jobs ...`, `sagan models ...`, `sagan login`, `sagan logout`: a client of a running
service, shaped like `gh`: nouns then verbs, a table for people, `--json` for scripts, and
`watch` commands that follow a job until it ends and exit with its outcome.

Nothing here imports the service packages (api, worker, store): the client needs only httpx.
"""

from __future__ import annotations

import functools
import json
import os
import re
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from sagan_cli import output as fmt
from sagan_cli.client import (
    DEFAULT_URL,
    Api,
    ClientError,
    Credentials,
    load_store,
    mask,
    normalize_url,
    parse_time,
    resolve_credentials,
    save_store,
    store_path,
)

jobs_app = typer.Typer(
    help="Jobs on a running service: list, show, create, watch, cancel, continue, events, metrics.",
    no_args_is_help=True,
)
models_app = typer.Typer(
    help="Trained generators on a running service: list, show, samples, download.",
    no_args_is_help=True,
)

TERMINAL_EXIT = {"succeeded": 0, "failed": 1, "cancelled": 2}
STEP_METRICS = ("d_loss", "g_loss", "images_per_s", "fid", "is")
JOB_BODY_KEYS = ("kind", "config", "model_id")  # a file with one of these is a whole job body
EXPONENT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")

JsonFlag = Annotated[bool, typer.Option("--json", help="Print the API's JSON, for scripts.")]
Interval = Annotated[
    float, typer.Option(help="Seconds between polls of the service.", min=0.1, hidden=True)
]


def echo(text: str = "", err: bool = False) -> None:
    typer.echo(text, err=err)


def handled(fn: Callable) -> Callable:
    """Expected failures as `error: ...` on stderr and exit code 1 (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ClientError as e:
            echo(f"error: {e.message}", err=True)
            if e.hint:
                echo(f"  {e.hint}", err=True)
            raise typer.Exit(e.code) from None
        except KeyboardInterrupt:
            echo("interrupted", err=True)
            raise typer.Exit(130) from None
        except BrokenPipeError:  # `sagan jobs list | head`: the reader has gone; so do we
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(0) from None

    return wrapper


def _api(timeout: float = 30.0) -> Api:
    return Api(resolve_credentials(), timeout=timeout)


# -- jobs -------------------------------------------------------------------------------------


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
    with _api() as api:
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


def _elapsed(job: dict) -> str:
    start = parse_time(job.get("started_at"))
    if start is None:
        return "-"
    end = parse_time(job.get("finished_at")) or datetime.now(UTC)
    return fmt.duration((end - start).total_seconds())


def _when(value: str | None) -> str:
    return "-" if not value else f"{fmt.local_time(value, with_date=True)} ({fmt.age(value)} ago)"


@jobs_app.command("show")
@handled
def jobs_show(
    job_id: Annotated[str, typer.Argument(help="A job id, or a unique prefix of one.")],
    json_: JsonFlag = False,
) -> None:
    """One job: state, progress, error, models, attempts, worker and its config."""
    with _api() as api:
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
        ("created", _when(job.get("created_at"))),
        ("started", _when(job.get("started_at"))),
        ("finished", _when(job.get("finished_at"))),
        ("ran for", _elapsed(job)),
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


def _parse_value(text: str) -> Any:
    """A JSON value (`2000`, `1e-4`, `true`, `null`, `[3, 7]`), else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _parse_sets(pairs: list[str]) -> dict[str, Any]:
    values = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key.strip():
            raise ClientError(f"--set {pair!r}: expected KEY=VALUE, e.g. --set steps=2000")
        values[key.strip()] = _parse_value(value)
    return values


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
    overrides = _parse_sets(sets)
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
        raise ClientError("--json and --watch do not mix: `sagan jobs show ID --json` afterwards")
    file_data = load_job_file(config) if config else None
    with _api() as api:
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
        if not watch:
            echo(f"  follow it: sagan jobs watch {fmt.short(job['id'])}", err=True)
            return
        code = JobWatcher(api, job["id"], interval).run()
    raise typer.Exit(code)


# jobs watch


class JobWatcher:
    """Polls a job, its events and its metrics; prints each new thing once, in order.

    One line per logged step (losses, images/s, and the ETA on the newest), one per event (state
    changes, checkpoints, notes). Returns the exit code of the job's end: 0 succeeded, 1 failed,
    2 cancelled; 130 when Ctrl-C stops the watching (the job goes on)."""

    LABEL = 11
    QUIET_PROGRESS_S = 30.0  # a progress line from the job when no step was logged for this long

    def __init__(
        self,
        api: Api,
        job_id: str,
        interval: float = 1.0,
        steps: bool = True,
        max_outage_s: float = 300.0,
        with_date: bool = False,
    ):
        self.api, self.job_id, self.interval = api, job_id, interval
        self.steps, self.max_outage_s, self.with_date = steps, max_outage_s, with_date
        self.after = 0  # last event id shown
        self.metric_step = -1  # last metric step shown
        self.first = True
        self.last_step_line = time.monotonic()
        self.step_shown = -1

    def line(self, label: str, text: str, at: str | None = None) -> None:
        when = fmt.local_time(at, self.with_date) if at else _now(self.with_date)
        echo(f"{when}  {label:<{self.LABEL}} {text}".rstrip())

    def run(self) -> int:
        outage: float | None = None
        try:
            while True:
                try:
                    job = self.poll()
                except ClientError as e:
                    if not e.transient:
                        raise
                    now = time.monotonic()
                    if outage is None:
                        outage = now
                        echo(f"warning: {e.message}; retrying", err=True)
                    elif now - outage > self.max_outage_s:
                        raise
                    time.sleep(self.interval)
                    continue
                if outage is not None:
                    echo(f"reconnected to {self.api.creds.url}", err=True)
                    outage = None
                if job["state"] in TERMINAL_EXIT:
                    return self.finish(job)
                time.sleep(self.interval)
        except KeyboardInterrupt:
            short = fmt.short(self.job_id)
            echo(
                f"stopped watching; job {short} goes on (`sagan jobs cancel {short}` stops it)",
                err=True,
            )
            return 130

    def poll(self) -> dict:
        job = self.api.get_json(f"/jobs/{self.job_id}")
        events = self.api.get_json(f"/jobs/{self.job_id}/events", after=self.after, limit=1000)
        step_lines = self.step_lines(job) if self.steps else []
        self.first = False
        self.show(job, events, step_lines)
        return job

    def step_lines(self, job: dict) -> list[tuple[int, str]]:
        if job["kind"] != "train" or job["step"] <= max(self.metric_step, 0):
            return self.progress_line(job)
        # Joining a run: its latest point only (a continued job starts at its checkpoint's step).
        newest_only = self.first and job["step"] > (job.get("continued_from_step") or 0)
        params = {"max_points": 1} if newest_only else {"since_step": self.metric_step + 1}
        series = self.api.get_json(
            f"/jobs/{self.job_id}/metrics", names=",".join(STEP_METRICS), **params
        )["series"]
        by_step: dict[int, dict[str, float | None]] = defaultdict(dict)
        for name, points in series.items():
            for step, value in points:
                by_step[int(step)][name] = value
        steps = sorted(s for s in by_step if s > self.metric_step)
        if newest_only:
            steps = steps[-1:]
        if not steps:
            return self.progress_line(job)
        self.metric_step = steps[-1]
        self.last_step_line = time.monotonic()
        self.step_shown = max(self.step_shown, steps[-1])
        return [(s, self.step_text(job, s, by_step[s], s == steps[-1])) for s in steps]

    def progress_line(self, job: dict) -> list[tuple[int, str]]:
        """Nothing logged for a while, but the job moved: say where it is."""
        if (
            job["kind"] != "train"
            or job["state"] != "running"
            or job["step"] <= self.step_shown
            or time.monotonic() - self.last_step_line < self.QUIET_PROGRESS_S
        ):
            return []
        self.last_step_line = time.monotonic()
        self.step_shown = job["step"]
        return [(job["step"], self.step_text(job, job["step"], {}, True))]

    @staticmethod
    def step_text(job: dict, step: int, values: dict[str, float | None], newest: bool) -> str:
        total = job["total_steps"]
        pct = f"{100 * step / total:.0f}%" if total else ""
        parts = [f"{step:>{len(str(total))}}/{total}", f"{pct:>4}"]
        for name in ("d_loss", "g_loss"):
            if values.get(name) is not None:
                parts.append(f"{name} {values[name]:.4f}")
        for name in ("fid", "is"):
            if values.get(name) is not None:
                parts.append(f"{name} {values[name]:.2f}")
        ips = values.get("images_per_s")
        if ips is None and newest:
            ips = job.get("images_per_s")
        if ips:
            parts.append(f"{fmt.rate(ips)} img/s")
        if newest and job["state"] == "running" and job.get("eta_seconds") is not None:
            parts.append(f"ETA {fmt.duration(job['eta_seconds'])}")
        return "  ".join(parts)

    def show(self, job: dict, events: list[dict], step_lines: list[tuple[int, str]]) -> None:
        """Notes and non-final states first, then steps and checkpoints by step, then the end."""
        if events:
            self.after = events[-1]["id"]
        early, by_step, final = [], [], []
        for e in events:
            if e["kind"] == "checkpoint" and (m := re.search(r"step (\d+)", e["message"] or "")):
                by_step.append((int(m.group(1)), 1, e))
            elif e["kind"] == "state" and e.get("to_state") in TERMINAL_EXIT:
                final.append(e)
            else:
                early.append(e)
        by_step += [(step, 0, text) for step, text in step_lines]
        for e in early:
            self.event(e)
        # A step line is stamped when it is seen; one of a run that has ended, when it ended.
        at = job.get("finished_at")
        for _, order, item in sorted(by_step, key=lambda x: (x[0], x[1])):
            if order == 0:
                self.line("step", item, at)
            else:
                self.event(item)
        for e in final:
            self.event(e)

    def event(self, e: dict) -> None:
        if e["kind"] == "state":
            label = e.get("to_state") or "state"
            frm = e.get("from_state")
            text = e.get("message") or (f"(from {frm})" if frm else "")
        else:
            label, text = e["kind"], e.get("message") or ""
        self.line(label, text, e.get("at"))

    def finish(self, job: dict) -> int:
        short, state = fmt.short(job["id"]), job["state"]
        if state == "failed":
            echo(f"error: job {short} failed: {job.get('error') or 'no reason given'}", err=True)
            return TERMINAL_EXIT[state]
        if not self.steps:
            return 0
        if state == "succeeded":
            echo(f"job {short} succeeded in {_elapsed(job)} ({job['step']}/{job['total_steps']})")
        else:
            echo(f"job {short} cancelled at step {job['step']}/{job['total_steps']}")
        if job["kind"] == "evaluate" and state == "succeeded":
            series = self.api.get_json(f"/jobs/{job['id']}/metrics", max_points=1)["series"]
            scores = [f"{k} {pts[-1][1]:.4g}" for k, pts in sorted(series.items()) if pts]
            echo("scores  " + ("  ".join(scores) or "-"))
        elif model := job.get("latest_model_id"):
            m = fmt.short(model)
            echo(f"model {m} (latest): sagan models samples {m} --class 0 -o samples.png")
        return TERMINAL_EXIT[state]


def _now(with_date: bool = False) -> str:
    return datetime.now().strftime("%Y-%m-%d %H:%M:%S" if with_date else "%H:%M:%S")


@jobs_app.command("watch")
@handled
def jobs_watch(
    job_id: Annotated[str, typer.Argument(help="A job id, or a unique prefix of one.")],
    interval: Interval = 1.0,
) -> None:
    """Follow a job until it ends: steps, losses, images/s, ETA, state changes, checkpoints.

    Exit code: 0 succeeded, 1 failed (its error is printed), 2 cancelled. Ctrl-C stops watching
    and leaves the job running."""
    with _api() as api:
        code = JobWatcher(api, api.resolve_id("job", job_id), interval).run()
    raise typer.Exit(code)


@jobs_app.command("cancel")
@handled
def jobs_cancel(
    job_id: Annotated[str, typer.Argument(help="A job id, or a unique prefix of one.")],
    json_: JsonFlag = False,
) -> None:
    """Cancel a job: a queued one at once, a running one after it saves a checkpoint."""
    with _api() as api:
        job = api.post_json(f"/jobs/{api.resolve_id('job', job_id)}/cancel")
    if json_:
        echo(fmt.as_json(job))
        return
    note = " (the worker saves a checkpoint, then stops)" if job["state"] == "cancelling" else ""
    echo(f"job {fmt.short(job['id'])} {job['state']}{note}")


@jobs_app.command("continue")
@handled
def jobs_continue(
    job_id: Annotated[str, typer.Argument(help="A job id, or a unique prefix of one.")],
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
        raise ClientError("--json and --watch do not mix: `sagan jobs show ID --json` afterwards")
    body: dict[str, Any] = {"steps": steps}
    if set_:
        body["config"] = _parse_sets(set_)
    with _api() as api:
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
        if not watch:
            echo(f"  follow it: sagan jobs watch {fmt.short(job['id'])}", err=True)
            return
        code = JobWatcher(api, job["id"], interval).run()
    raise typer.Exit(code)


@jobs_app.command("events")
@handled
def jobs_events(
    job_id: Annotated[str, typer.Argument(help="A job id, or a unique prefix of one.")],
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new events until the job ends.")
    ] = False,
    json_: Annotated[
        bool, typer.Option("--json", help="JSON: a list; with --follow, one event per line.")
    ] = False,
    interval: Interval = 1.0,
) -> None:
    """A job's state changes, checkpoints and notes, oldest first."""
    with _api() as api:
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
    job_id: Annotated[str, typer.Argument(help="A job id, or a unique prefix of one.")],
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
    with _api() as api:
        path = f"/jobs/{api.resolve_id('job', job_id)}/metrics"
        if csv:
            params = {k: v for k, v in query.items() if v is not None}
            params.update(format="csv", max_points=max_points)
            sys.stdout.write(api.request("GET", path, params=params).text)
            return
        if json_:
            echo(fmt.as_json(api.get_json(path, max_points=max_points, **query)))
            return
        series = api.get_json(path, max_points=1, **query)["series"]
    rows = [
        [name, points[-1][0], fmt.number(points[-1][1])] if points else [name, "-", "-"]
        for name, points in sorted(series.items())
    ]
    echo(fmt.table(["METRIC", "STEP", "LAST"], rows, right=frozenset({1, 2})) if rows else "(none)")


# -- models -----------------------------------------------------------------------------------


@models_app.command("list")
@handled
def models_list(
    job: Annotated[
        str | None, typer.Option(help="Only this job's (an id or a unique prefix).")
    ] = None,
    tag: Annotated[str | None, typer.Option(help="latest or best.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many.", min=1)] = 30,
    json_: JsonFlag = False,
) -> None:
    """Your models (each job's latest and best generator), most recently updated first."""
    with _api() as api:
        job_id = api.resolve_id("job", job) if job else None
        items = []
        for m in api.pages("/models", job_id=job_id, tag=tag):
            items.append(m)
            if len(items) >= limit:
                break
    if json_:
        echo(fmt.as_json(items))
        return
    if not items:
        echo("(no models)")
        return
    rows = [
        [
            fmt.short(m["id"]),
            fmt.short(m["job_id"]),
            m["tag"],
            m["step"],
            m["resolution"],
            m["num_classes"],
            fmt.age(m.get("updated_at")),
        ]
        for m in items
    ]
    headers = ["ID", "JOB", "TAG", "STEP", "RES", "CLASSES", "UPDATED"]
    echo(fmt.table(headers, rows, right=frozenset({3, 4, 5, 6})))


@models_app.command("show")
@handled
def models_show(
    model_id: Annotated[str, typer.Argument(help="A model id, or a unique prefix of one.")],
    json_: JsonFlag = False,
) -> None:
    """One model: its job, tag, step, resolution and class names."""
    with _api() as api:
        m = api.get_json(f"/models/{api.resolve_id('model', model_id)}")
    if json_:
        echo(fmt.as_json(m))
        return
    names = m.get("class_names") or []
    classes = fmt.wrap_items([f"{i}:{n}" if n != str(i) else n for i, n in enumerate(names)])
    echo(
        fmt.key_values(
            [
                ("id", m["id"]),
                ("job", m["job_id"]),
                ("tag", m["tag"]),
                ("step", m["step"]),
                ("resolution", f"{m['resolution']} px"),
                ("classes", f"{m['num_classes']}\n{classes}" if classes else m["num_classes"]),
                ("checkpoint", m.get("checkpoint_id")),
                ("updated", _when(m.get("updated_at"))),
            ]
        )
    )


def _write(output: Path, data: bytes) -> None:
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_bytes(data)
    except OSError as e:
        raise ClientError(f"cannot write {output}: {e.strerror or e}") from e


def _png(api: Api, path: str, params: dict, output: Path, what: str) -> None:
    response = api.request("GET", path, params={k: v for k, v in params.items() if v is not None})
    step = response.headers.get("x-checkpoint-step")
    at = f" at step {step}" if step else ""
    if str(output) == "-":
        sys.stdout.buffer.write(response.content)
        sys.stdout.buffer.flush()
        echo(f"{what}{at}: {len(response.content)} bytes of PNG", err=True)
        return
    _write(output, response.content)
    echo(f"wrote {output} ({what}{at})")


@models_app.command("samples")
@handled
def models_samples(
    model_id: Annotated[str, typer.Argument(help="A model id, or a unique prefix of one.")],
    cls: Annotated[
        str, typer.Option("--class", "-c", help="A class index (0-based) or class name.")
    ],
    n: Annotated[int, typer.Option("--n", "-n", help="Images in the grid.")] = 16,
    seed: Annotated[int, typer.Option(help="Same seed, same images.")] = 0,
    truncation: Annotated[
        float | None,
        typer.Option(help="Keep |z| <= T (1.0: more typical, less variety); default: none."),
    ] = None,
    output: Annotated[
        Path, typer.Option("--output", "-o", help="The PNG to write; - for stdout.")
    ] = Path("samples.png"),
) -> None:
    """A PNG grid of one class from a model: `sagan models samples ID --class 3 -o threes.png`."""
    with _api(timeout=300) as api:
        mid = api.resolve_id("model", model_id)
        params = {"class": cls, "n": n, "seed": seed, "truncation": truncation}
        what = f"{n} images of class {cls}, seed {seed}, model {fmt.short(mid)}"
        _png(api, f"/models/{mid}/samples", params, output, what)


@models_app.command("attention")
@handled
def models_attention(
    model_id: Annotated[str, typer.Argument(help="A model id, or a unique prefix of one.")],
    cls: Annotated[
        str, typer.Option("--class", "-c", help="A class index (0-based) or class name.")
    ],
    x: Annotated[int, typer.Option(help="Pixel column, 0-based.")],
    y: Annotated[int, typer.Option(help="Pixel row, 0-based.")],
    seed: Annotated[int, typer.Option(help="The image: the first of `samples` at this seed.")] = 0,
    truncation: Annotated[float | None, typer.Option(help="As for samples.")] = None,
    output: Annotated[
        Path, typer.Option("--output", "-o", help="The PNG to write; - for stdout.")
    ] = Path("attention.png"),
) -> None:
    """Where the generator's self-attention looks from pixel (x, y), beside the image."""
    with _api(timeout=300) as api:
        mid = api.resolve_id("model", model_id)
        params = {"class": cls, "x": x, "y": y, "seed": seed, "truncation": truncation}
        what = f"class {cls}, seed {seed}, pixel ({x}, {y}), model {fmt.short(mid)}"
        _png(api, f"/models/{mid}/attention", params, output, what)


def _filename(disposition: str | None) -> str | None:
    m = re.search(r'filename="?([^";]+)"?', disposition or "")
    return Path(m.group(1)).name if m else None


@models_app.command("download")
@handled
def models_download(
    model_id: Annotated[str, typer.Argument(help="A model id, or a unique prefix of one.")],
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Where to write (default: the service's file name)."),
    ] = None,
) -> None:
    """Download a model's checkpoint (loadable with `sagan sample --checkpoint FILE`)."""
    import httpx

    with _api(timeout=300) as api:
        mid = api.resolve_id("model", model_id)
        with api.stream(f"/models/{mid}/checkpoint", redirect="false") as response:
            if response.headers.get("content-type", "").startswith("application/json"):
                response.read()
                url = response.json()["url"]  # S3: a presigned URL, fetched without our token
                try:
                    with httpx.stream("GET", url, timeout=300, follow_redirects=True) as r:
                        if r.status_code >= 400:
                            r.read()
                            raise ClientError(f"storage answered {r.status_code}: {r.text[:200]}")
                        target = output or Path(f"sagan-{mid}.pt")
                        size = _save_stream(r, target)
                except httpx.HTTPError as e:
                    raise ClientError(f"downloading the checkpoint from storage: {e}") from e
            else:
                name = _filename(response.headers.get("content-disposition"))
                target = output or Path(name or f"sagan-{mid}.pt")
                size = _save_stream(response, target)
    echo(f"wrote {target} ({size / 1e6:.1f} MB)")


def _save_stream(response: Any, target: Path) -> int:
    """Chunks to `target.part`, renamed once complete: no half file under the real name."""
    part = target.with_name(target.name + ".part")
    size = 0
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with part.open("wb") as f:
            for chunk in response.iter_bytes():
                f.write(chunk)
                size += len(chunk)
        os.replace(part, target)
    except OSError as e:
        part.unlink(missing_ok=True)
        raise ClientError(f"cannot write {target}: {e.strerror or e}") from e
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return size


# -- login ------------------------------------------------------------------------------------


def _read_token(token: str | None) -> str:
    if token == "-" or (token is None and not sys.stdin.isatty()):
        token = sys.stdin.readline()
    elif token is None:
        token = typer.prompt("token", hide_input=True)
    token = token.strip()
    if not token:
        raise ClientError("no token given: --token TOKEN, --token - (stdin), or type it")
    return token


@handled
def login(
    url: Annotated[
        str | None,
        typer.Option(help=f"The service (default: $SAGAN_URL, else {DEFAULT_URL})."),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(help="The API token; - reads it from stdin; left out: asked for."),
    ] = None,
    verify: Annotated[
        bool, typer.Option(help="Check that the service accepts the token before saving it.")
    ] = True,
    status: Annotated[
        bool,
        typer.Option(
            "--status", help="Show which service and token commands use now; save nothing."
        ),
    ] = False,
) -> None:
    """Save a service URL and token for the other commands (in ~/.config/sagan, mode 0600)."""
    if status:
        _login_status()
        return
    url = normalize_url(url or os.environ.get("SAGAN_URL") or DEFAULT_URL)
    token = _read_token(token)
    if verify:
        with Api(Credentials(url, token, "--token")) as api:
            try:
                api.get_json("/jobs", limit=1)
            except ClientError as e:
                if e.status != 401:
                    raise
                raise ClientError(
                    f"{url} refused the token ({e.message}); nothing saved",
                    hint="a token from `sagan token create --user NAME` on the service, or its "
                    "first token in <data dir>/token",
                ) from e
    store = load_store()
    store["hosts"][url] = {"token": token, "saved_at": datetime.now(UTC).isoformat()}
    store["default"] = url
    path = save_store(store)
    checked = "" if verify else " (not checked)"
    echo(f"logged in to {url} with {mask(token)}{checked}; saved in {path}")
    if os.environ.get("SAGAN_TOKEN"):
        echo("note: SAGAN_TOKEN is set and goes first while it is", err=True)


def _login_status() -> None:
    creds = resolve_credentials()
    echo(f"service  {creds.url}")
    echo(f"token    {mask(creds.token)} (from {creds.source})")
    with Api(creds, timeout=10) as api:
        api.get_json("/jobs", limit=1)
    echo("status   the service accepts it")


@handled
def logout(
    url: Annotated[
        str | None, typer.Option(help="The service to forget (default: the logged-in one).")
    ] = None,
) -> None:
    """Forget a saved service and token (the login store only; SAGAN_TOKEN is yours)."""
    path = store_path()
    store = load_store()
    target = normalize_url(url) if url else store.get("default")
    if not target or target not in store["hosts"]:
        raise ClientError(f"not logged in to {target or 'any service'} (store: {path})")
    del store["hosts"][target]
    if store.get("default") == target:
        store.pop("default")
        if store["hosts"]:
            store["default"] = next(iter(store["hosts"]))
    if store["hosts"]:
        save_store(store)
    else:
        path.unlink(missing_ok=True)
    echo(f"logged out of {target}")


def register(app: typer.Typer) -> None:
    """Add the client commands to the `sagan` command."""
    # `submit` is what MLflow and Determined users type; it is `create` (gh's word), unlisted.
    jobs_app.command("submit", hidden=True)(jobs_create)
    panel = "Client of a running service (SAGAN_URL, SAGAN_TOKEN or `sagan login`)"
    app.add_typer(jobs_app, name="jobs", rich_help_panel=panel)
    app.add_typer(models_app, name="models", rich_help_panel=panel)
    app.command("login", rich_help_panel=panel)(login)
    app.command("logout", rich_help_panel=panel)(logout)
