"""The `sagan` command: the embedded service (`up`), its parts (`api`, `worker`, `db`, `reap`),
a client of a running service (`jobs`, `models`, `login`, `logout`, `datasets`), and
the core's local commands (`train`, `sample`, `pack`) passed through unchanged."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Annotated

import typer

from sagan_cli import datasets, jobs, login, models, sweeps, tokens
from sagan_cli.tokens import current_settings
from store.log_format import configure_logging

app = typer.Typer(
    help="SAGAN training service. `sagan up` runs everything on this machine.",
    no_args_is_help=True,
    add_completion=False,
)
db_app = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(tokens.token_app, name="token")

log = logging.getLogger("sagan")
FORWARD = {"allow_extra_args": True, "ignore_unknown_options": True}


def _logging() -> str:
    """This process's log lines as SAGAN_LOG_FORMAT says (text or json); returns the format."""
    fmt = _settings().log_format
    configure_logging(fmt)
    return fmt


def _uvicorn_log_config(fmt: str) -> dict | None:
    """uvicorn's own handlers for text (its usual lines); none under json, so that its loggers
    (uvicorn.error, uvicorn.access) reach the root logger's JSON handler."""
    from uvicorn.config import LOGGING_CONFIG

    return LOGGING_CONFIG if fmt == "text" else None


def _settings():  # noqa: ANN202
    return current_settings()


def _migrate(settings) -> None:  # noqa: ANN001
    from store.migrate import upgrade

    url = settings.resolved_database_url()
    log.info("migrating %s to head", url.split("@")[-1])
    upgrade(url)


LOOPBACK = ("127.0.0.1", "localhost", "::1")
TOKEN_FILE = "token"  # <data_dir>/token: the embedded service's first admin token, mode 0600


def _check_auth(settings, host: str) -> None:  # noqa: ANN001
    """Without auth every caller is user 'local': allowed only on the loopback address."""
    if settings.auth:
        return
    if host not in LOOPBACK:
        log.error(
            "refusing to listen on %s with SAGAN_AUTH=false: anyone who reaches it would be "
            "user 'local'. Turn auth on, or bind to 127.0.0.1",
            host,
        )
        raise typer.Exit(2)
    log.warning("authentication is OFF (SAGAN_AUTH=false): every caller on this machine is 'local'")


def _first_token(settings) -> None:  # noqa: ANN001
    """A fresh embedded service has no tokens: make an admin token for 'local' and show it once."""
    from store.db import session_scope
    from store.tokens import any_tokens, create_token

    if not settings.auth or settings.admin_token:
        return
    with session_scope(settings) as session:
        if any_tokens(session):
            return
        _, token = create_token(session, "local", admin=True, note="first token of sagan up")
    path = settings.data_dir / TOKEN_FILE
    path.touch(mode=0o600)
    path.write_text(token + "\n")
    log.warning(
        "created the first API token (user 'local', admin); it is shown only now and kept in %s:"
        "\n\n    %s\n\n  curl -H 'Authorization: Bearer %s' ...  (the dashboard asks for it once)",
        path,
        token,
        token,
    )


def _uvicorn(host: str, port: int, fmt: str) -> None:
    import uvicorn

    uvicorn.run(
        "api.app:create_app",
        factory=True,
        host=host,
        port=port,
        log_level="info",
        log_config=_uvicorn_log_config(fmt),
    )


# -- the embedded service ---------------------------------------------------------------------


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: SIGTERM the worker if `sagan up` dies without stopping it (kill -9)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _served_queues(settings, pack: bool = True) -> str:  # noqa: ANN001
    """The queues a worker of this machine consumes: jobs of 1..SAGAN_WORKER_GPUS GPUs, and the
    pack queue (CPU work any worker can do) unless a worker of its own takes it."""
    from worker.training import worker_gpus

    queues = settings.queues_served(worker_gpus(settings))
    return ",".join([*queues, settings.pack_queue] if pack else queues)


def _start_worker(queue: str, name: str = "embedded") -> subprocess.Popen:
    cmd = [sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker"]
    cmd += ["-c", "1", "--pool", "solo", "-Q", queue, "--loglevel", "INFO"]
    cmd += ["--hostname", f"{name}-{os.getpid()}@%h"]
    # Its own session: a terminal's Ctrl-C reaches `sagan up` only, which then stops the worker
    # in order (the running job checkpoints and goes back to the queue).
    return subprocess.Popen(
        cmd, env=os.environ.copy(), start_new_session=True, preexec_fn=_die_with_parent
    )


def _stop_worker(proc: subprocess.Popen, timeout: float) -> int:
    """SIGTERM (warm shutdown: a running job saves a checkpoint and is requeued), then SIGKILL."""
    if proc.poll() is not None:
        return proc.returncode
    log.info("stopping the worker (pid %d); Ctrl-C again to kill it", proc.pid)
    signal.signal(signal.SIGINT, lambda *_: proc.kill())
    signal.signal(signal.SIGTERM, lambda *_: proc.kill())
    proc.terminate()
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        log.warning("the worker did not stop in %.0f s; killing it", timeout)
        proc.kill()
        return proc.wait()


class WorkerSupervisor:
    """Keeps one embedded worker running: a worker that dies is restarted with backoff, and the
    job it was running goes back to the queue at once (not after the stale window)."""

    HEALTHY_AFTER_S = 60.0  # a worker that lived this long resets the backoff
    MAX_BACKOFF_S = 30.0

    def __init__(self, settings, queue: str, name: str = "embedded"):  # noqa: ANN001
        self.settings, self.queue, self.name = settings, queue, name
        self.stopping = threading.Event()
        self.proc = _start_worker(queue, name)
        self.restarts = 0
        self._thread = threading.Thread(target=self._watch, name="worker-supervisor", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        from worker.reaper import requeue_jobs_of

        backoff = 1.0
        while True:
            started = time.monotonic()
            code = self.proc.wait()
            if self.stopping.is_set():
                return
            dead = f"{socket.gethostname()}:{self.proc.pid}"  # worker.job_life.worker_name of it
            log.error(
                "the worker (pid %d) exited with code %s; restarting it in %.0f s",
                self.proc.pid,
                code,
                backoff,
            )
            try:
                requeued = requeue_jobs_of(
                    self.settings, dead, f"worker {dead} exited with code {code}"
                )
                if requeued:
                    log.warning("requeued its job(s): %s", ", ".join(requeued))
            except Exception as e:  # the reaper gets them after the stale window instead
                log.warning("could not requeue the dead worker's jobs now: %s", e)
            if time.monotonic() - started > self.HEALTHY_AFTER_S:
                backoff = 1.0
            if self.stopping.wait(backoff):
                return
            backoff = min(backoff * 2, self.MAX_BACKOFF_S)
            self.proc = _start_worker(self.queue, self.name)
            self.restarts += 1
            log.info("worker restarted (pid %d, restart %d)", self.proc.pid, self.restarts)

    def stop(self, timeout: float) -> int:
        self.stopping.set()
        return _stop_worker(self.proc, timeout)


@app.command()
def up(
    host: Annotated[str, typer.Option(help="Address the API listens on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port the API listens on.")] = 8000,
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Where everything lives (default $SAGAN_DATA_DIR or ./data)."),
    ] = None,
    reap_every: Annotated[
        float | None,
        typer.Option(help="Seconds between reaper passes (default SAGAN_REAP_EVERY_SECONDS)."),
    ] = None,
    stop_timeout: Annotated[
        float, typer.Option(help="Seconds the worker gets to checkpoint and stop.")
    ] = 60.0,
    progress_every: Annotated[
        float,
        typer.Option(
            help="Seconds between the progress lines of running jobs; 0: none.",
            envvar="SAGAN_UP_PROGRESS_SECONDS",
            min=0,
        ),
    ] = 30.0,
    access_log: Annotated[
        bool,
        typer.Option(
            "--access-log/--no-access-log",
            help="Log every HTTP request (off: the dashboard's and the CLI's polling would bury "
            "the progress lines).",
        ),
    ] = False,
) -> None:
    """Run the embedded service: migrations, a supervised Celery worker, the API, a reaper.

    Once the API listens it prints where to go (dashboard, API docs, the token), then every
    --progress-every seconds a line per running job: step, losses, FID, images/s, ETA.
    Its worker processes inherit the environment, SAGAN_LOG_FORMAT included."""
    fmt = _logging()
    root = data_dir or Path(os.environ.get("SAGAN_DATA_DIR") or "data")
    os.environ["SAGAN_DATA_DIR"] = str(root.resolve())
    settings = _settings()
    _check_auth(settings, host)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    _migrate(settings)
    _first_token(settings)

    import uvicorn

    from worker.reaper import start_reaper_thread

    supervisor = WorkerSupervisor(settings, _served_queues(settings, pack=False))
    packer = WorkerSupervisor(
        settings, settings.pack_queue, "embedded-pack"
    )  # never behind training
    _, stop_reaper = start_reaper_thread(settings, reap_every)
    log.info(
        "worker pid %d (training; pack worker pid %d); data in %s; API on http://%s:%d",
        supervisor.proc.pid,
        packer.proc.pid,
        root,
        host,
        port,
    )

    # uvicorn re-raises the signal that stopped it once it is done; these handlers absorb that,
    # so the worker below is always stopped in order.
    signal.signal(signal.SIGINT, lambda *_: None)
    signal.signal(signal.SIGTERM, lambda *_: None)
    config = uvicorn.Config(
        "api.app:create_app",
        factory=True,
        host=host,
        port=port,
        log_level="info",
        access_log=access_log,
        log_config=_uvicorn_log_config(fmt),
    )
    server = uvicorn.Server(config)
    from sagan_cli.progress import ProgressReporter, where_to_go

    banner = where_to_go(settings, host, port, TOKEN_FILE)
    reporter = ProgressReporter(settings, banner, progress_every, lambda: server.started).start()
    try:
        server.run()
    finally:
        reporter.stop.set()
        stop_reaper.set()
        code = supervisor.stop(stop_timeout)
        packer.stop(stop_timeout)
        log.info("worker exited with code %s; bye", code)


# -- the distributed parts --------------------------------------------------------------------


@app.command()
def api(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    migrate: Annotated[bool, typer.Option(help="Run migrations before serving.")] = True,
    reap_every: Annotated[
        float | None,
        typer.Option(
            help="Seconds between reaper passes (default SAGAN_REAP_EVERY_SECONDS); 0 turns "
            "the reaper and dispatcher off."
        ),
    ] = None,
) -> None:
    """Run the API alone (the distributed API container); workers run elsewhere."""
    fmt = _logging()
    settings = _settings()
    _check_auth(settings, host)
    if migrate:
        _migrate(settings)
    if reap_every != 0:  # guarded transitions: several API replicas reaping at once is harmless
        from worker.reaper import start_reaper_thread

        start_reaper_thread(settings, reap_every)
    _uvicorn(host, port, fmt)


@app.command()
def worker(
    concurrency: Annotated[
        int, typer.Option("--concurrency", "-c", help="Tasks at once; 1 per GPU.")
    ] = 1,
    queue: Annotated[
        str | None,
        typer.Option(
            "--queue", "-Q", help="Default: the queues of jobs of 1..SAGAN_WORKER_GPUS GPUs."
        ),
    ] = None,
    pool: Annotated[
        str | None, typer.Option("--pool", "-P", help="Default: solo for 1, prefork above.")
    ] = None,
    loglevel: Annotated[str, typer.Option(help="Celery log level.")] = "INFO",
) -> None:
    """Run a Celery worker for training and evaluation jobs (one per GPU)."""
    _logging()
    settings = _settings()
    from worker.celery_app import app as celery_app

    argv = [
        "worker",
        "-c",
        str(concurrency),
        "-P",
        pool or ("solo" if concurrency == 1 else "prefork"),
    ]
    argv += ["-Q", queue or _served_queues(settings), "--loglevel", loglevel]
    celery_app.worker_main(argv)


@app.command()
def reap() -> None:
    """One pass of the reaper and dispatcher (`sagan up` and `sagan api` run them continually):
    requeue jobs whose worker stopped heartbeating, send again queued jobs nobody claimed."""
    _logging()
    from worker.reaper import dispatch_unclaimed, reap_stale

    settings = _settings()
    requeued = reap_stale(settings)
    typer.echo(f"requeued {len(requeued)} job(s)" + "".join(f"\n  {j}" for j in requeued))
    sent = dispatch_unclaimed(settings)
    typer.echo(f"sent again {len(sent)} queued job(s)" + "".join(f"\n  {j}" for j in sent))


@app.command("worker-health")
def worker_health(
    host: Annotated[
        str | None, typer.Option(help="The worker's host name (default: this machine's).")
    ] = None,
    within: Annotated[
        float | None,
        typer.Option(help="Seconds since its last beat (default: 3 x SAGAN_HEARTBEAT_SECONDS)."),
    ] = None,
) -> None:
    """Exit 0 if a worker process on this host beat its row lately, else 1 (the compose worker
    healthcheck). Its beat comes from a thread, so a worker busy training is healthy."""
    from datetime import timedelta

    from store.db import session_scope
    from store.workers import live_workers

    settings = _settings()
    host = host or socket.gethostname()
    window = within if within is not None else 3 * settings.heartbeat_seconds
    try:
        with session_scope(settings) as session:
            rows = live_workers(session, timedelta(seconds=window))
            alive = [w.name for w in rows if w.name.rpartition(":")[0] == host]
    except Exception as e:  # the database is away: not healthy, and say why
        typer.echo(f"unhealthy: cannot read the workers ({type(e).__name__}: {e})", err=True)
        raise typer.Exit(1) from None
    if not alive:
        typer.echo(f"unhealthy: no worker on {host} beat in the last {window:g} s", err=True)
        raise typer.Exit(1)
    typer.echo(f"healthy: {', '.join(alive)}")


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument()] = "head") -> None:
    """Migrate the database (SAGAN_DATABASE_URL, or the embedded SQLite file) up to REVISION."""
    _logging()
    from store.migrate import upgrade

    upgrade(_settings().resolved_database_url(), revision)


@db_app.command("downgrade")
def db_downgrade(revision: Annotated[str, typer.Argument(help="e.g. -1 or base")]) -> None:
    """Migrate the database down to REVISION."""
    _logging()
    from store.migrate import downgrade

    downgrade(_settings().resolved_database_url(), revision)


# -- the core's local commands ----------------------------------------------------------------


def _core(command: str, ctx: typer.Context) -> None:
    from sagan_core.cli import main

    # Its usage and error lines say `sagan train`, like the rest of this command.
    raise typer.Exit(main([command, *ctx.args], prog="sagan") or 0)


@app.command(context_settings=FORWARD, add_help_option=False)
def train(ctx: typer.Context) -> None:
    """Train locally, no service (sagan_core; `sagan train --help`)."""
    _core("train", ctx)


@app.command(context_settings=FORWARD, add_help_option=False)
def sample(ctx: typer.Context) -> None:
    """Sample a checkpoint to a PNG grid (sagan_core; `sagan sample --help`)."""
    _core("sample", ctx)


@app.command(context_settings=FORWARD, add_help_option=False)
def pack(ctx: typer.Context) -> None:
    """Pack an image folder into the uint8 training format (sagan_core; `sagan pack --help`)."""
    _core("pack", ctx)


@app.command(context_settings=FORWARD, add_help_option=False)
def bench(ctx: typer.Context) -> None:
    """The benchmarks: train (the default: every path against plain), ddp, eval, loader, quality."""
    from sagan_core.bench import main

    raise typer.Exit(main(list(ctx.args), prog="sagan bench") or 0)


# A client of a running service (SAGAN_URL, SAGAN_TOKEN or `sagan login`).
CLIENT_PANEL = "Client of a running service (SAGAN_URL, SAGAN_TOKEN or `sagan login`)"
app.add_typer(jobs.jobs_app, name="jobs", rich_help_panel=CLIENT_PANEL)
app.add_typer(models.models_app, name="models", rich_help_panel=CLIENT_PANEL)
app.add_typer(sweeps.sweeps_app, name="sweeps", rich_help_panel=CLIENT_PANEL)
app.command("login", rich_help_panel=CLIENT_PANEL)(login.login)
app.command("logout", rich_help_panel=CLIENT_PANEL)(login.logout)
datasets.register(app)  # datasets upload|list|show|delete

if __name__ == "__main__":
    app()
