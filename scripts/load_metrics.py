"""Load test of the real API: downsampled metric reads, then job submissions (issue #9).

    .venv/bin/python scripts/load_metrics.py \
        --database-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres --scratch-database

1. Migrates the database (with --scratch-database: a new one on that server, dropped at the end).
2. Starts the API (uvicorn, the api.app:create_app factory) in a subprocess on a free loopback
   port, with a filesystem broker and local storage under a temporary data directory, unless
   --broker-url names a (loopback) Redis. No worker runs: submitted jobs stay queued.
3. Creates one training job through the API and writes --names x --steps metric points to it
   with store.metrics.write_metrics.
4. Reads GET /jobs/<id>/metrics?max_points=... from --clients threads, --requests each.
5. Submits --jobs jobs with POST /jobs from --post-clients threads.

With --side-channel (the default; issue #24), a process of its own (scripts/load_side_channel.py)
sends GET /jobs, GET /jobs/<id> and GET /healthz every --side-interval seconds, --side-idle
seconds alone before step 4 and then throughout it, and the report compares the two: each route's
idle and loaded p50/p99 and the p99 ratio; with --wrk it also runs beside wrk's reads (a C client:
the API's load without the Python client threads' CPU on the same machine), compared the same way.

Prints, for both phases, requests, errors, p50/p99/max latency and throughput, and the machine.
Everything is bounded: the counts by their flags (with upper limits), the run by --time-limit
(phases stop sending once it has passed), each request by --request-timeout. Only loopback
databases, brokers and the API are used.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from load_side_channel import compare, percentile_ms, side_channel
from load_side_channel import report as report_side_channel
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout: store/ and api/ beside scripts/

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
LIMITS = {  # flag: (minimum, maximum)
    "names": (1, 1000),
    "steps": (1, 1_000_000),
    "batch": (1, 10_000),
    "clients": (1, 256),
    "requests": (1, 100_000),
    "max_points": (1, 100_000),
    "jobs": (0, 100_000),
    "post_clients": (1, 256),
}
MAX_POINTS_WRITTEN = 10_000_000
TRAIN_BODY = {"kind": "train", "config": {"dataset": "digits", "steps": 100}}


# -- setup --------------------------------------------------------------------------------------


def _check_loopback(url: str, what: str) -> None:
    host = urlsplit(url).hostname  # None: SQLite, or a local PostgreSQL socket
    if host is not None and host not in LOOPBACK:
        raise SystemExit(f"{what}: only loopback hosts are allowed (got {host!r})")


@contextmanager
def _database(url: str, scratch: bool, workdir: Path) -> Iterator[str]:
    """The database to test: the URL itself, or a scratch database beside it, dropped after."""
    if not scratch:
        if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
            # The API runs in the repository root: a relative file is the caller's.
            url = f"sqlite:///{Path(url.removeprefix('sqlite:///')).resolve()}"
        yield url
        return
    if url.startswith("sqlite"):
        yield f"sqlite:///{workdir / 'load.db'}"  # the temporary directory goes at the end
        return
    name = f"sagan_load_{uuid.uuid4().hex[:10]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _token(database_url: str) -> str:
    """A real API token of user 'load' in the database, as `sagan token create` makes them."""
    from sqlalchemy.orm import Session

    from store.db import make_engine
    from store.tokens import create_token

    engine = make_engine(database_url)
    try:
        with Session(engine) as session:
            _, token = create_token(session, "load", note="scripts/load_metrics.py")
            session.commit()
    finally:
        engine.dispose()
    return token


@contextmanager
def _api(
    database_url: str, broker_url: str | None, workdir: Path, workers: int
) -> Iterator[tuple[str, int]]:
    """The real API in a subprocess on a free loopback port; its base URL and process id."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAGAN_")}
    env.update(
        SAGAN_DATA_DIR=str(workdir / "data"),
        SAGAN_DATABASE_URL=database_url,
        SAGAN_STORAGE="local",
        SAGAN_MAX_ACTIVE_JOBS="1000000",  # every submitted job stays queued: no quota here
    )
    if broker_url:
        env["SAGAN_BROKER_URL"] = broker_url
    port = _free_port()
    cmd = [
        sys.executable, "-m", "uvicorn", "--factory", "api.app:create_app",
        "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
        "--log-level", "warning", "--no-access-log",
    ]  # fmt: skip
    log = open(workdir / "api.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"the API exited ({proc.returncode}):\n{_tail(workdir)}")
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"the API did not answer within 60 s:\n{_tail(workdir)}")
            time.sleep(0.1)
        yield base, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its live children (uvicorn's workers)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(") ", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(stat.parent.name) == pid or int(fields[1]) == pid:  # fields[1]: the parent's pid
            total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


def _tail(workdir: Path) -> str:
    try:
        return (workdir / "api.log").read_text(errors="replace")[-3000:]
    except OSError:
        return ""


def _fill(database_url: str, job_id: str, names: int, steps: int, batch: int) -> float:
    """names x steps points into the job, batch rows per statement; seconds taken."""
    from sqlalchemy.orm import Session

    from store.db import make_engine
    from store.metrics import write_metrics

    engine = make_engine(database_url)
    started = time.perf_counter()
    rows = (
        (f"metric_{i:02d}", step, math.sin(step / 100) + i)
        for i in range(names)
        for step in range(steps)
    )
    with Session(engine) as session:
        while chunk := [row for _, row in zip(range(batch), rows, strict=False)]:
            write_metrics(session, job_id, chunk)
            session.commit()
    if engine.dialect.name == "postgresql":  # what autovacuum does soon after a bulk insert
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM (ANALYZE) metrics"))
    engine.dispose()
    return time.perf_counter() - started


# -- load ---------------------------------------------------------------------------------------


@dataclass
class Phase:
    name: str
    latencies: list[float] = field(default_factory=list)  # seconds, every answered request
    errors: dict[str, int] = field(default_factory=dict)  # reason: count
    wall_s: float = 0.0
    stopped_early: bool = False
    api_cpu_s: float | None = None  # the API process's CPU seconds during the phase

    def error(self, reason: str) -> None:
        self.errors[reason] = self.errors.get(reason, 0) + 1

    def summary(self) -> dict:
        lat = self.latencies
        n = len(lat) + sum(v for k, v in self.errors.items() if k.startswith("exception"))
        return {
            "phase": self.name,
            "requests": n,
            "errors": sum(self.errors.values()),
            "error_kinds": self.errors,
            "p50_ms": percentile_ms(lat, 0.50),
            "p99_ms": percentile_ms(lat, 0.99),
            "max_ms": percentile_ms(lat, 1.0),
            "throughput_rps": round(n / self.wall_s, 1) if self.wall_s else None,
            "wall_s": round(self.wall_s, 2),
            "stopped_early": self.stopped_early,
            "api_cpu_ms_per_request": (
                round(1000 * self.api_cpu_s / n, 2) if self.api_cpu_s is not None and n else None
            ),
        }


def _run_phase(
    phase: Phase,
    base: str,
    headers: dict[str, str],
    clients: int,
    total: int,
    send: Callable[[httpx.Client, int], tuple[float, str | None]],
    deadline: float,
    timeout: float,
    nice: int = 0,
) -> None:
    """total requests from `clients` threads. send() returns the request's latency (sending to
    the last byte of the answer: httpx's elapsed, not the checks after it) and None when the
    answer is right, else what is wrong with it."""
    lock = threading.Lock()
    counter = iter(range(total))
    start = threading.Barrier(clients + 1)

    def client() -> None:
        if nice:  # on Linux a thread's nice value is its own: the API and the side channel keep 0
            os.nice(nice)
        with httpx.Client(base_url=base, headers=headers, timeout=timeout) as http:
            start.wait()
            while True:
                with lock:
                    i = next(counter, None)
                    if i is not None and time.monotonic() > deadline:
                        phase.stopped_early, i = True, None
                if i is None:
                    return
                try:
                    elapsed, problem = send(http, i)
                except Exception as e:  # noqa: BLE001 - a failed request is counted, not raised
                    with lock:
                        phase.error(f"exception {type(e).__name__}")
                    continue
                with lock:
                    phase.latencies.append(elapsed)
                    if problem:
                        phase.error(problem)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    phase.wall_s = time.perf_counter() - t0


def _metrics_check(job_id: str, names: int, steps: int, max_points: int, read_names: str | None):
    expected = (
        sorted(n.strip() for n in read_names.split(",") if n.strip())
        if read_names
        else [f"metric_{i:02d}" for i in range(names)]
    )

    def send(http: httpx.Client, _i: int) -> tuple[float, str | None]:
        params: dict[str, str | int] = {"max_points": max_points}
        if read_names:
            params["names"] = read_names
        r = http.get(f"/jobs/{job_id}/metrics", params=params)
        elapsed = r.elapsed.total_seconds()
        if r.status_code != 200:
            return elapsed, f"status {r.status_code}"
        series = r.json()["series"]
        if sorted(series) != expected:
            return elapsed, "wrong series"
        for points in series.values():
            if not 0 < len(points) <= max_points or points[-1][0] != steps - 1:
                return elapsed, "wrong points"
        return elapsed, None

    return send


def _post_job(http: httpx.Client, _i: int) -> tuple[float, str | None]:
    r = http.post("/jobs", json=TRAIN_BODY)
    return r.elapsed.total_seconds(), None if r.status_code == 201 else f"status {r.status_code}"


def _header(value: str) -> dict[str, str]:
    name, sep, content = value.partition(":")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"expected 'Name: value', got {value!r}")
    return {name.strip(): content.strip()}


def _bounded(name: str) -> Callable[[str], int]:
    low, high = LIMITS[name]

    def parse(value: str) -> int:
        n = int(value)
        if not low <= n <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}")
        return n

    return parse


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--database-url",
        required=True,
        help="postgresql+psycopg://...@127.0.0.1/<db> or sqlite:///<file> (loopback only)",
    )
    p.add_argument(
        "--scratch-database",
        action="store_true",
        help="create a new database on that server (or a temporary SQLite file), drop it after",
    )
    p.add_argument("--broker-url", help="e.g. redis://127.0.0.1:6379/14; default: filesystem")
    p.add_argument(
        "--auth-header",
        type=_header,
        default=None,
        help="'Name: value' (default: a new API token of user 'load', made in the database)",
    )
    p.add_argument("--names", type=_bounded("names"), default=10, help="metric series")
    p.add_argument("--steps", type=_bounded("steps"), default=10_000, help="points per series")
    p.add_argument("--batch", type=_bounded("batch"), default=5_000, help="rows per write")
    p.add_argument("--clients", type=_bounded("clients"), default=20, help="concurrent readers")
    p.add_argument("--requests", type=_bounded("requests"), default=25, help="reads per client")
    p.add_argument("--max-points", type=_bounded("max_points"), default=1000)
    p.add_argument("--read-names", help="comma-separated names= for the reads (default: all)")
    p.add_argument("--jobs", type=_bounded("jobs"), default=1000, help="POST /jobs in all")
    p.add_argument("--post-clients", type=_bounded("post_clients"), default=20)
    p.add_argument("--api-workers", type=int, choices=range(1, 33), default=1, metavar="1-32")
    p.add_argument("--request-timeout", type=float, default=60.0, help="seconds per request")
    p.add_argument("--time-limit", type=float, default=600.0, help="seconds for the whole run")
    p.add_argument("--json", action="store_true", help="also print the results as one JSON line")
    p.add_argument(
        "--side-channel",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="time GET /jobs, GET /jobs/<id>, GET /healthz alone, then beside the reads (#24)",
    )
    p.add_argument("--side-interval", type=float, default=0.1, help="seconds between requests")
    p.add_argument("--side-idle", type=float, default=10.0, help="seconds of idle side channel")
    p.add_argument(
        "--readers-nice",
        type=int,
        default=0,
        choices=range(20),
        metavar="N",
        help="the readers' threads at nice N (0-19): readers on other machines take none of the "
        "API's CPU; on one machine they take it first unless niced",
    )
    p.add_argument(
        "--wrk",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="also read for this long with wrk (C, --clients connections): the same reads "
        "without the Python client threads' own CPU on the API's machine (needs wrk)",
    )
    args = p.parse_args(argv)
    if args.names * args.steps > MAX_POINTS_WRITTEN:
        p.error(f"--names x --steps must be at most {MAX_POINTS_WRITTEN}")
    _check_loopback(args.database_url, "--database-url")
    if args.broker_url:
        _check_loopback(args.broker_url, "--broker-url")
    return args


def _wrk(url: str, headers: dict[str, str], clients: int, seconds: float, api_pid: int) -> dict:
    """The reads from wrk: `clients` connections on 2 threads for `seconds`; its percentiles."""
    if not shutil.which("wrk"):
        raise SystemExit("--wrk needs wrk on PATH (Debian: apt-get install wrk)")
    cmd = ["wrk", "-t", "2", "-c", str(clients), "-d", f"{seconds:g}s", "--latency"]
    for name, value in headers.items():
        cmd += ["-H", f"{name}: {value}"]
    cpu0 = _cpu_seconds(api_pid)
    out = subprocess.run(cmd + [url], capture_output=True, text=True, check=True).stdout
    return wrk_phase(out, _cpu_seconds(api_pid) - cpu0)


def wrk_phase(out: str, api_cpu_s: float) -> dict:
    """A phase's summary from wrk --latency's report (durations like 1.00m, 30.10s, 712.5ms)."""
    import re

    units = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}  # to milliseconds

    def pct(p: str) -> float | None:
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M)
        return round(float(m.group(1)) * units[m.group(2)], 1) if m else None

    done = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m),", out)
    n = int(done.group(1)) if done else 0
    wall = round(float(done.group(2)) * units[done.group(3)] / 1e3, 2) if done else 0
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: .*", out)
    return {
        "phase": "GET metrics (wrk)",
        "requests": n,
        "errors": int(bad.group(1)) if bad else 0,
        "error_kinds": {"socket": errors.group(0)} if errors else {},
        "p50_ms": pct("50"),
        "p99_ms": pct("99"),
        "max_ms": None,
        "throughput_rps": round(n / wall, 1) if wall else None,
        "wall_s": wall,
        "stopped_early": False,
        "api_cpu_ms_per_request": round(1000 * api_cpu_s / n, 2) if n else None,
    }


def _machine(database_url: str) -> dict:
    cpuinfo = Path("/proc/cpuinfo")
    models = [
        line.split(":", 1)[1].strip()
        for line in (cpuinfo.read_text().splitlines() if cpuinfo.exists() else [])
        if line.startswith("model name")
    ]
    info = {
        "cpus": os.cpu_count(),
        "cpu_model": models[0] if models else platform.processor(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_avg": [round(x, 2) for x in os.getloadavg()],
    }
    engine = create_engine(database_url)
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            info["database"] = conn.execute(text("SHOW server_version")).scalar_one()
            info["database"] = f"PostgreSQL {info['database']}"
        else:
            info["database"] = f"SQLite {conn.execute(text('SELECT sqlite_version()')).scalar()}"
    engine.dispose()
    return info


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    deadline = time.monotonic() + args.time_limit
    workdir = Path(tempfile.mkdtemp(prefix="sagan-load-"))
    try:
        with _database(args.database_url, args.scratch_database, workdir) as url:
            from store.migrate import upgrade

            upgrade(url)
            if args.auth_header is None:
                args.auth_header = {"Authorization": f"Bearer {_token(url)}"}
            with _api(url, args.broker_url, workdir, args.api_workers) as (base, api_pid):
                with httpx.Client(base_url=base, headers=args.auth_header, timeout=30) as http:
                    r = http.post("/jobs", json=TRAIN_BODY)
                    if r.status_code != 201:
                        raise SystemExit(f"POST /jobs: {r.status_code} {r.text[:300]}")
                    job_id = r.json()["id"]
                fill_s = _fill(url, job_id, args.names, args.steps, args.batch)
                print(
                    f"job {job_id}: {args.names * args.steps} points "
                    f"({args.names} x {args.steps}) written in {fill_s:.1f} s",
                    flush=True,
                )
                reads = Phase(f"GET metrics max_points={args.max_points}")
                check = _metrics_check(
                    job_id, args.names, args.steps, args.max_points, args.read_names
                )
                with httpx.Client(base_url=base, headers=args.auth_header, timeout=60) as http:
                    _, warm = check(http, 0)  # an untimed read: connections, caches, a check
                if warm:
                    raise SystemExit(f"the first metrics read failed: {warm}\n{_tail(workdir)}")
                side = {"GET /jobs": "/jobs", "GET /jobs/{id}": f"/jobs/{job_id}"}
                side["GET /healthz"] = "/healthz"
                side_args = (base, args.auth_header, side, args.side_interval, args.request_timeout)
                idle = None
                if args.side_channel:
                    with side_channel(*side_args) as idle:
                        time.sleep(args.side_idle)
                cpu0 = _cpu_seconds(api_pid)
                with side_channel(*side_args) if args.side_channel else nullcontext() as loaded:
                    _run_phase(
                        reads, base, args.auth_header, args.clients,
                        args.clients * args.requests, check, deadline, args.request_timeout,
                        args.readers_nice,
                    )  # fmt: skip
                # The API's own CPU per request: what latency costs on a machine the load
                # generator does not share.
                reads.api_cpu_s = _cpu_seconds(api_pid) - cpu0
                wrk = loaded_wrk = None
                if args.wrk:
                    params = {"max_points": args.max_points}
                    if args.read_names:
                        params["names"] = args.read_names
                    reads_url = httpx.URL(f"{base}/jobs/{job_id}/metrics", params=params)
                    side_wrk = side_channel(*side_args) if args.side_channel else nullcontext()
                    with side_wrk as loaded_wrk:
                        wrk = _wrk(
                            str(reads_url), args.auth_header, args.clients, args.wrk, api_pid
                        )
                posts = Phase("POST /jobs")
                if args.jobs:
                    _run_phase(
                        posts, base, args.auth_header, args.post_clients, args.jobs,
                        _post_job, deadline, args.request_timeout,
                    )  # fmt: skip
            result = {
                "machine": _machine(url),
                "points": args.names * args.steps,
                "clients": args.clients,
                "post_clients": args.post_clients,
                "api_workers": args.api_workers,
                "readers_nice": args.readers_nice,
                "phases": [reads.summary(), posts.summary()] + ([wrk] if wrk else []),
            }
            for key, busy in (("side_channel", loaded), ("side_channel_wrk", loaded_wrk)):
                if idle and busy:
                    result[key] = {
                        "interval_s": args.side_interval,
                        "idle_s": round(idle.wall_s, 2),
                        "loaded_s": round(busy.wall_s, 2),
                        "idle_cpu_busy": idle.cpu_busy,
                        "loaded_cpu_busy": busy.cpu_busy,
                        "routes": compare(idle, busy),
                    }
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    _report(result)
    if args.json:
        print(json.dumps(result), flush=True)
    return result


def _report(result: dict) -> None:
    m = result["machine"]
    print(
        f"machine: {m['cpus']} CPUs ({m['cpu_model']}), {m['platform']}, Python {m['python']}, "
        f"{m['database']}, "
        f"load average {m['load_avg']}; API: {result['api_workers']} uvicorn process(es); "
        f"readers at nice {result['readers_nice']}"
    )
    for ph in result["phases"]:
        if not ph["requests"]:
            continue
        clients = result["clients"] if ph["phase"].startswith("GET") else result["post_clients"]
        print(
            f"{ph['phase']}: {ph['requests']} requests from {clients} clients in "
            f"{ph['wall_s']} s ({ph['throughput_rps']}/s), errors {ph['errors']}"
            f"{' ' + json.dumps(ph['error_kinds']) if ph['errors'] else ''}, "
            f"p50 {ph['p50_ms']} ms, p99 {ph['p99_ms']} ms, max {ph['max_ms']} ms"
            + (
                f", API CPU {ph['api_cpu_ms_per_request']} ms/request"
                if ph.get("api_cpu_ms_per_request") is not None
                else ""
            )
            + f"{' (stopped at --time-limit)' if ph['stopped_early'] else ''}",
            flush=True,
        )
    if side := result.get("side_channel"):
        report_side_channel(side, "the readers")
    if side := result.get("side_channel_wrk"):
        report_side_channel(side, "wrk's reads")


if __name__ == "__main__":
    main()
