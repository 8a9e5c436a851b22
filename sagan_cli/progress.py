"""What `sagan up` tells the person at its console: where to go once the API listens, and every
so often one line per running job (step, losses, FID, images/s, ETA), read from the database."""

from __future__ import annotations

import logging
import shutil
import sys
import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from sagan_cli import output as fmt
from store import jobs as job_states
from store.db import session_scope
from store.job_eta import eta_seconds
from store.metrics import latest_values
from store.models import Job, utcnow

log = logging.getLogger("sagan")

SHOWN_METRICS = ("d_loss", "g_loss", "fid", "is")
WILDCARD_HOSTS = ("0.0.0.0", "::", "")


def base_url(host: str, port: int) -> str:
    """The address a browser on this machine uses (a wildcard listen address is 127.0.0.1)."""
    host = "127.0.0.1" if host in WILDCARD_HOSTS else host
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def where_to_go(settings, host: str, port: int, token_file: str) -> str:  # noqa: ANN001
    """The lines `sagan up` prints once the API listens: dashboard, API docs, the token."""
    url = base_url(host, port)
    path = settings.data_dir / token_file
    if not settings.auth:
        token = "none needed (SAGAN_AUTH=false)"
    elif path.is_file():
        token = f"{path} (the dashboard asks for it once; the client reads it by itself)"
    elif settings.admin_token:
        token = "SAGAN_ADMIN_TOKEN from the environment (user 'admin')"
    else:
        token = "make one: sagan token create --user NAME"
    client = "" if url == "http://127.0.0.1:8000" else f"SAGAN_URL={url} "
    sagan = sagan_command()
    pairs = [
        ("dashboard", f"{url}/"),
        ("API docs", f"{url}/docs (ReDoc: {url}/redoc)"),
        ("token", token),
        ("client", f"{client}{sagan} jobs list; {client}{sagan} jobs watch ID"),
    ]
    if sagan != "sagan":  # `make up` installs into a venv that is not on PATH
        pairs.append(("", f"(or put it on PATH: source {Path(sagan).parent}/activate)"))
    return "SAGAN is up:\n" + "\n".join(f"  {line}" for line in fmt.key_values(pairs).split("\n"))


def sagan_command() -> str:
    """How this shell reaches the `sagan` that is running: `sagan` when PATH finds it, else its
    path (relative to here when it is below)."""
    here = Path(sys.argv[0]).resolve() if Path(sys.argv[0]).name == "sagan" else None
    mine = here or Path(sys.executable).with_name("sagan")
    found = shutil.which("sagan")
    if found and Path(found).resolve() == mine.resolve():
        return "sagan"
    try:
        return str(mine.relative_to(Path.cwd()))
    except ValueError:
        return str(mine)


def job_line(job: Job, latest: dict[str, tuple[int, float]]) -> str:
    """`job 3f2c1a2b running  step 120/2000 (6%)  d_loss 1.2345  g_loss 0.5678  fid 45.21
    310 img/s  ETA 2m10s`: what is known of it, nothing made up."""
    total = job.total_steps
    pct = f" ({100 * job.step / total:.0f}%)" if total else ""
    parts = [f"job {fmt.short(job.id)} {job.state}", f"{job.kind} step {job.step}/{total}{pct}"]
    for name in SHOWN_METRICS:
        if name in latest:
            value = latest[name][1]
            parts.append(f"{name} {value:.4f}" if name.endswith("loss") else f"{name} {value:.2f}")
    if job.images_per_s:
        parts.append(f"{fmt.rate(job.images_per_s)} img/s")
    eta = eta_seconds(job)
    if eta is not None:
        parts.append(f"ETA {fmt.duration(eta)}")
    return "  ".join(parts)


def progress_lines(settings) -> list[str]:  # noqa: ANN001
    """One line per running (or cancelling) job, oldest first."""
    with session_scope(settings) as session:
        running = (
            session.query(Job)
            .filter(Job.state.in_((job_states.RUNNING, job_states.CANCELLING)))
            .order_by(Job.created_at)
            .all()
        )
        return [job_line(job, latest_values(session, job.id, SHOWN_METRICS)) for job in running]


class ProgressReporter:
    """A daemon thread: once `ready()` says the API listens, the where-to-go lines; then, every
    `every_s` seconds (0: never), a line per running job. A database hiccup skips a round."""

    def __init__(
        self,
        settings,  # noqa: ANN001
        banner: str,
        every_s: float,
        ready: Callable[[], bool],
        emit: Callable[[str], None] = log.info,
    ):
        self.settings, self.banner, self.every_s = settings, banner, every_s
        self.ready, self.emit = ready, emit
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="sagan-progress", daemon=True)

    def start(self) -> ProgressReporter:
        self.thread.start()
        return self

    def _run(self) -> None:
        deadline = utcnow() + timedelta(seconds=60)
        while not self.ready() and utcnow() < deadline:
            if self.stop.wait(0.1):
                return
        self.emit(self.banner)
        if self.every_s <= 0:
            return
        while not self.stop.wait(self.every_s):
            try:
                lines = progress_lines(self.settings)
            except Exception as e:  # the next round tries again
                log.warning("progress: could not read the jobs (%s)", e)
                continue
            for line in lines:
                self.emit(line)
