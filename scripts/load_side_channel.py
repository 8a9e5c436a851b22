"""The side channel of scripts/load_metrics.py (issue #24): light requests to other routes at a
steady rate, timed alone first (the idle figures) and then while the metric readers run.

It runs in a process of its own, so the reader threads of the load generator (their JSON parsing
holds that process's GIL) do not add to its timings; it still shares the machine's cores with the
API, the database and the readers, as a dashboard user's browser would not.

    python scripts/load_side_channel.py --base http://127.0.0.1:PORT \
        --route 'GET /jobs=/jobs' --route 'GET /healthz=/healthz' --interval 0.1

takes the request headers as a JSON object on its first stdin line, opens one client thread per
route, sends one untimed request on each, prints `ready`, then sends one request per route every
--interval seconds (the next one at once when an answer came later than that, never a burst to
catch up) until its stdin ends, and prints {label: {"latencies": [s, ...], "errors": {...}}}.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

HERE = Path(__file__).resolve()


@dataclass
class Sample:
    """What a side-channel run measured, by route label (filled when its block ends)."""

    routes: dict[str, dict] = field(default_factory=dict)
    wall_s: float = 0.0
    cpu_busy: float | None = None  # the machine's share of non-idle CPU time over the block


def _cpu_times() -> tuple[int, int] | None:
    """(busy, total) jiffies of all the machine's CPUs, from /proc/stat (None elsewhere)."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


@contextmanager
def side_channel(
    base: str, headers: dict[str, str], routes: dict[str, str], interval: float, timeout: float
) -> Iterator[Sample]:
    """The side channel runs in a child process for the duration of the block."""
    cmd = [sys.executable, str(HERE), "--base", base, "--interval", str(interval)]
    cmd += ["--timeout", str(timeout)]
    for label, path in routes.items():
        cmd += ["--route", f"{label}={path}"]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    sample = Sample()
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(json.dumps(headers) + "\n")  # not in argv: the token stays out of ps
        proc.stdin.flush()
        if proc.stdout.readline().strip() != "ready":
            raise SystemExit(f"the side channel did not start (exit {proc.wait(timeout=30)})")
        t0, cpu0 = time.perf_counter(), _cpu_times()
        yield sample
        sample.wall_s, cpu1 = time.perf_counter() - t0, _cpu_times()
        if cpu0 and cpu1 and cpu1[1] > cpu0[1]:
            sample.cpu_busy = (cpu1[0] - cpu0[0]) / (cpu1[1] - cpu0[1])
        out, _ = proc.communicate(timeout=timeout + 30)  # closes stdin: the child stops
        sample.routes = json.loads(out.strip().splitlines()[-1])
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def percentile_ms(latencies: list[float], p: float) -> float | None:
    """Nearest rank (p=1: the largest), in ms; load_metrics' phases and the side channel."""
    lat = sorted(latencies)
    return round(1000 * lat[max(0, math.ceil(p * len(lat)) - 1)], 1) if lat else None


def compare(idle: Sample, loaded: Sample) -> list[dict]:
    """One row per route: its idle and loaded p50/p99 and the p99 ratio (loaded / idle)."""
    rows = []
    for label, quiet in idle.routes.items():
        busy = loaded.routes.get(label, {"latencies": [], "errors": {}})
        row = {"route": label}
        for name, part in (("idle", quiet), ("loaded", busy)):
            row[f"{name}_n"] = len(part["latencies"])
            row[f"{name}_errors"] = sum(part["errors"].values())
            row[f"{name}_p50_ms"] = percentile_ms(part["latencies"], 0.50)
            row[f"{name}_p99_ms"] = percentile_ms(part["latencies"], 0.99)
            row[f"{name}_max_ms"] = percentile_ms(part["latencies"], 1.0)
        a, b = row["idle_p99_ms"], row["loaded_p99_ms"]
        row["p99_ratio"] = round(b / a, 2) if a and b is not None else None
        rows.append(row)
    return rows


def _pct(share: float | None) -> str:
    return "?" if share is None else f"{100 * share:.0f}%"


def report(side: dict, beside: str) -> None:
    """The side channel's figures as load_metrics keeps them (result["side_channel"], or
    "side_channel_wrk" beside --wrk's reads)."""
    rows = side["routes"]
    print(
        f"side channel (own process, one request per route every {side['interval_s']:g} s; "
        f"idle {side['idle_s']:.1f} s, machine CPU busy {_pct(side['idle_cpu_busy'])}; then "
        f"{side['loaded_s']:.1f} s beside {beside}, busy {_pct(side['loaded_cpu_busy'])}):"
    )
    print(f"  {'route':<16} {'idle n':>6} {'p50':>7} {'p99':>7} | {'loaded n':>8} "
          f"{'p50':>7} {'p99':>7} {'max':>7} | p99 ratio  errors")  # fmt: skip
    for r in rows:
        print(
            f"  {r['route']:<16} {r['idle_n']:>6} {r['idle_p50_ms']!s:>7} "
            f"{r['idle_p99_ms']!s:>7} | {r['loaded_n']:>8} {r['loaded_p50_ms']!s:>7} "
            f"{r['loaded_p99_ms']!s:>7} {r['loaded_max_ms']!s:>7} | {r['p99_ratio']!s:>9}  "
            f"{r['idle_errors']}/{r['loaded_errors']}",
            flush=True,
        )


# -- the child process --------------------------------------------------------------------------


def _route(value: str) -> tuple[str, str]:
    label, sep, path = value.partition("=")
    if not sep or not path.startswith("/"):
        raise argparse.ArgumentTypeError(f"expected 'LABEL=/path', got {value!r}")
    return label, path


def _child(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", required=True)
    p.add_argument("--route", type=_route, action="append", required=True)
    p.add_argument("--interval", type=float, default=0.1)
    p.add_argument("--timeout", type=float, default=60.0)
    args = p.parse_args(argv)
    headers = json.loads(sys.stdin.readline())
    stop = threading.Event()
    ready = threading.Barrier(len(args.route) + 1)
    found = {label: {"latencies": [], "errors": {}} for label, _ in args.route}

    def run(label: str, path: str, offset: float) -> None:
        got = found[label]

        def once(http: httpx.Client, timed: bool) -> None:
            try:
                r = http.get(path)
            except Exception as e:  # noqa: BLE001 - a failed request is counted, not raised
                problem = f"exception {type(e).__name__}"
            else:
                problem = None if r.status_code == 200 else f"status {r.status_code}"
                if timed:
                    got["latencies"].append(r.elapsed.total_seconds())
            if problem:
                got["errors"][problem] = got["errors"].get(problem, 0) + 1

        with httpx.Client(base_url=args.base, headers=headers, timeout=args.timeout) as http:
            once(http, timed=False)  # the connection, and a check that the route answers
            ready.wait()
            tick = time.monotonic() + offset  # the routes' requests spread over the interval
            while not stop.wait(max(0.0, tick - time.monotonic())):
                once(http, timed=True)
                tick = max(tick + args.interval, time.monotonic())

    step = args.interval / len(args.route)
    threads = [
        threading.Thread(target=run, args=(label, path, i * step), daemon=True)
        for i, (label, path) in enumerate(args.route)
    ]
    for t in threads:
        t.start()
    ready.wait()
    print("ready", flush=True)
    sys.stdin.read()  # until the parent closes it
    stop.set()
    for t in threads:
        t.join()
    print(json.dumps(found), flush=True)


if __name__ == "__main__":
    _child()
