"""The `sagan` command: the embedded service (`up`), its parts (`api`, `worker`, `db`, `reap`),
and the core's local commands (`train`, `sample`, `pack`) passed through unchanged."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    help="SAGAN training service. `sagan up` runs everything on this machine.",
    no_args_is_help=True,
    add_completion=False,
)
db_app = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True)
app.add_typer(db_app, name="db")

log = logging.getLogger("sagan")
FORWARD = {"allow_extra_args": True, "ignore_unknown_options": True}


def _logging() -> None:
    logging.basicConfig(
        level=logging.INFO, format="[%(asctime)s %(levelname)s %(name)s] %(message)s"
    )


def _settings():  # noqa: ANN202
    """Settings as the environment says now (commands may have changed it)."""
    from store import reset_caches
    from store.settings import get_settings

    reset_caches()
    return get_settings()


def _migrate(settings) -> None:  # noqa: ANN001
    from store.migrate import upgrade

    url = settings.resolved_database_url()
    log.info("migrating %s to head", url.split("@")[-1])
    upgrade(url)


def _uvicorn(host: str, port: int) -> None:
    import uvicorn

    uvicorn.run("api.app:create_app", factory=True, host=host, port=port, log_level="info")


# -- the embedded service ---------------------------------------------------------------------


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: SIGTERM the worker if `sagan up` dies without stopping it (kill -9)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _start_worker(queue: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "celery", "-A", "worker.celery_app", "worker"]
    cmd += ["-c", "1", "--pool", "solo", "-Q", queue, "--loglevel", "INFO"]
    cmd += ["--hostname", f"embedded-{os.getpid()}@%h"]
    # Its own session: a terminal's Ctrl-C reaches `sagan up` only, which then stops the worker
    # in order (the running job checkpoints and goes back to the queue).
    return subprocess.Popen(
        cmd, env=os.environ.copy(), start_new_session=True, preexec_fn=_die_with_parent
    )


def _watch_worker(proc: subprocess.Popen, stopping: threading.Event) -> None:
    code = proc.wait()
    if not stopping.is_set():
        log.error(
            "the Celery worker (pid %d) exited with code %s: jobs stay queued until it runs; "
            "restart `sagan up`",
            proc.pid,
            code,
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


@app.command()
def up(
    host: Annotated[str, typer.Option(help="Address the API listens on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port the API listens on.")] = 8000,
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Where everything lives (default $SAGAN_DATA_DIR or ./data)."),
    ] = None,
    reap_every: Annotated[float, typer.Option(help="Seconds between reaper passes.")] = 60.0,
    stop_timeout: Annotated[
        float, typer.Option(help="Seconds the worker gets to checkpoint and stop.")
    ] = 60.0,
) -> None:
    """Run the embedded service: migrations, one Celery worker subprocess, the API, a reaper."""
    _logging()
    root = data_dir or Path(os.environ.get("SAGAN_DATA_DIR") or "data")
    os.environ["SAGAN_DATA_DIR"] = str(root.resolve())
    settings = _settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    _migrate(settings)

    import uvicorn

    from worker.reaper import start_reaper_thread

    worker_proc = _start_worker(settings.train_queue)
    stopping = threading.Event()
    threading.Thread(target=_watch_worker, args=(worker_proc, stopping), daemon=True).start()
    _, stop_reaper = start_reaper_thread(settings, reap_every)
    log.info("worker pid %d; data in %s; API on http://%s:%d", worker_proc.pid, root, host, port)

    # uvicorn re-raises the signal that stopped it once it is done; these handlers absorb that,
    # so the worker below is always stopped in order.
    signal.signal(signal.SIGINT, lambda *_: None)
    signal.signal(signal.SIGTERM, lambda *_: None)
    config = uvicorn.Config(
        "api.app:create_app", factory=True, host=host, port=port, log_level="info"
    )
    try:
        uvicorn.Server(config).run()
    finally:
        stopping.set()
        stop_reaper.set()
        code = _stop_worker(worker_proc, stop_timeout)
        log.info("worker exited with code %s; bye", code)


# -- the distributed parts --------------------------------------------------------------------


@app.command()
def api(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    migrate: Annotated[bool, typer.Option(help="Run migrations before serving.")] = True,
    reap_every: Annotated[
        float, typer.Option(help="Seconds between reaper passes; 0 turns the reaper off.")
    ] = 60.0,
) -> None:
    """Run the API alone (the distributed API container); workers run elsewhere."""
    _logging()
    settings = _settings()
    if migrate:
        _migrate(settings)
    if reap_every > 0:  # guarded transitions: several API replicas reaping at once is harmless
        from worker.reaper import start_reaper_thread

        start_reaper_thread(settings, reap_every)
    _uvicorn(host, port)


@app.command()
def worker(
    concurrency: Annotated[
        int, typer.Option("--concurrency", "-c", help="Tasks at once; 1 per GPU.")
    ] = 1,
    queue: Annotated[str | None, typer.Option("--queue", "-Q", help="Default: settings.")] = None,
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
    argv += ["-Q", queue or settings.train_queue, "--loglevel", loglevel]
    celery_app.worker_main(argv)


@app.command()
def reap() -> None:
    """Requeue jobs whose worker stopped heartbeating (`sagan up` does it every minute)."""
    _logging()
    from worker.reaper import reap_stale

    requeued = reap_stale(_settings())
    typer.echo(f"requeued {len(requeued)} job(s)" + "".join(f"\n  {j}" for j in requeued))


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

    code = main([command, *ctx.args])
    raise typer.Exit(code or 0)


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


if __name__ == "__main__":
    app()
