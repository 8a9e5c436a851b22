"""Real service processes for the end-to-end tests: start, wait until healthy, stop, clean up."""

from __future__ import annotations

import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

SAGAN = str(Path(sys.executable).with_name("sagan"))
# The bootstrap admin token the service processes of a test run accept (SAGAN_ADMIN_TOKEN).
ADMIN_TOKEN = "sgn_test-admin-" + secrets.token_urlsafe(16)
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

# A digits run sized for a shared 2-core CPU: a handful of tiny steps, two checkpoints.
TINY_TRAIN = {
    "dataset": "digits",
    "resolution": 32,
    "preset": "tiny",
    "steps": 6,
    "batch_size": 8,
    "log_every": 2,
    "checkpoint_every": 3,
    "sample_every": 0,
}


class ServiceProcess:
    """A `sagan ...` subprocess with its output in a log file (shown when a test fails)."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path):
        self.log = log
        self._out = log.open("wb")
        self.proc = subprocess.Popen(
            argv, env=env, stdout=self._out, stderr=subprocess.STDOUT, start_new_session=True
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_for(self, pattern: str, timeout: float) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if m := re.search(pattern, self.output()):
                return m
            assert self.alive(), f"process exited ({self.proc.returncode}):\n{self.output()}"
            time.sleep(0.2)
        raise AssertionError(f"no {pattern!r} in {timeout} s:\n{self.output()}")

    def stop(self, sig: int = signal.SIGINT, timeout: float = 60) -> int:
        if self.alive():
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._out.close()
        return self.proc.returncode


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead too (its parent has not reaped it yet).
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(") ")[-1].startswith("Z"))


def service_env(**overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAGAN_")}
    env.update(
        SAGAN_WORKER_DEVICE="cpu",
        SAGAN_HEARTBEAT_SECONDS="1",
        SAGAN_ADMIN_TOKEN=ADMIN_TOKEN,
        # One OpenMP thread: `make test` runs its two halves side by side on 2 cores, and two
        # OpenMP threads beside other work wait for each other (a training step 10x slower,
        # measured in #22), which made the 300-step fault tests miss their 400 s.
        OMP_NUM_THREADS="1",
        PYTHONUNBUFFERED="1",
    )
    env.update(overrides)
    return env


class ProcessGroup:
    """`with ProcessGroup(dir) as group:` starts `sagan <args>`; all are stopped on the way out."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.started: list[ServiceProcess] = []

    def start(self, args: list[str], env: dict[str, str], name: str) -> ServiceProcess:
        p = ServiceProcess([SAGAN, *args], env, self.log_dir / f"{name}.log")
        self.started.append(p)
        return p

    def __enter__(self) -> ProcessGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        for p in reversed(self.started):
            p.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(base: str, proc: ServiceProcess, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.alive(), f"API exited ({proc.proc.returncode}):\n{proc.output()}"
        try:
            if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"{base}/healthz not up in {timeout} s:\n{proc.output()}")


def wait_job(
    client: httpx.Client,
    job_id: str,
    states: tuple[str, ...],
    timeout: float,
    *logs: ServiceProcess,
) -> dict:
    deadline = time.monotonic() + timeout
    job: dict = {}
    while time.monotonic() < deadline:
        job = client.get(f"/jobs/{job_id}").json()
        if job["state"] in states:
            return job
        time.sleep(0.5)
    output = "\n".join(p.output() for p in logs)
    raise AssertionError(f"job {job_id} not in {states} after {timeout} s: {job}\n{output}")


class RedisServer:
    """A Redis of the test's own on its own port, without persistence: it can be stopped and
    started again (losing every message) without disturbing the shared one."""

    def __init__(self, port: int, workdir: Path):
        self.port, self.workdir = port, workdir
        self.proc: subprocess.Popen | None = None
        self.url = f"redis://127.0.0.1:{port}/0"

    def start(self) -> RedisServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            time.sleep(0.05)
        raise AssertionError(f"redis-server did not listen on {self.port}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()  # no shutdown save: whatever it held is gone
            self.proc.wait()
        self.proc = None

    def llen(self, key: str) -> int:
        import redis

        client = redis.Redis(port=self.port)
        try:
            return int(client.llen(key))
        finally:
            client.close()


def wait_until(predicate, timeout: float, what: str, *logs: ServiceProcess, poll: float = 0.3):  # noqa: ANN001, ANN201
    """predicate()'s first truthy value within timeout seconds, else a failure with the logs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(poll)
    output = "\n".join(p.output() for p in logs)
    raise AssertionError(f"not {what} after {timeout} s\n{output}")
