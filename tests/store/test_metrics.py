"""Metric rows: a resumed run overwrites repeated steps; reads filter and downsample."""

import importlib
import itertools
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from store import jobs
from store.metrics import downsample, read_metrics, write_metrics
from store.models import Metric


@pytest.fixture
def session_and_job(session: Session):
    job, _ = jobs.create_job(session, owner="ann", kind="train", config={}, total_steps=10)
    session.commit()
    return session, job.id


def test_repeated_step_overwrites_instead_of_duplicating(session_and_job):
    session, job_id = session_and_job
    write_metrics(session, job_id, [("d_loss", 10, 1.0), ("d_loss", 20, 2.0)])
    write_metrics(session, job_id, [("d_loss", 20, 5.0), ("d_loss", 20, 6.0)])
    session.commit()
    count = session.execute(select(func.count()).select_from(Metric)).scalar_one()
    assert count == 2
    assert read_metrics(session, job_id)["d_loss"] == [(10, 1.0), (20, 6.0)]


def test_values_that_are_not_finite_numbers_are_not_recorded(session_and_job):
    session, job_id = session_and_job
    rows = [("kid", 1, float("nan")), ("fid", 1, float("inf")), ("is", 1, 2.5)]
    assert write_metrics(session, job_id, rows) == 1
    session.commit()
    assert read_metrics(session, job_id) == {"is": [(1, 2.5)]}


def test_read_filters_by_name_and_step_range(session_and_job):
    session, job_id = session_and_job
    rows = [(name, step, float(step)) for name in ("d_loss", "g_loss", "fid") for step in range(10)]
    write_metrics(session, job_id, rows)
    session.commit()
    series = read_metrics(session, job_id, names=["fid", "g_loss"], since_step=3, until_step=5)
    assert set(series) == {"fid", "g_loss"}
    assert [s for s, _ in series["fid"]] == [3, 4, 5]


def test_downsampling_keeps_at_most_max_points_with_first_and_last():
    points = [(i, float(i)) for i in range(1000)]
    kept = downsample(points, 7)
    assert len(kept) == 7
    assert kept[0] == (0, 0.0) and kept[-1] == (999, 999.0)
    assert downsample(points[:5], 7) == points[:5]


def _write(session: Session, job_id: str, rows: list[tuple[str, int, float]]) -> None:
    for start in range(0, len(rows), 2000):  # under SQLite's bound-parameter limit
        write_metrics(session, job_id, rows[start : start + 2000])
    session.commit()


class _RowCounting:
    """A session that counts the rows its queries return."""

    def __init__(self, session: Session):
        self.session, self.rows = session, 0

    def execute(self, statement):
        rows = self.session.execute(statement).all()
        self.rows += len(rows)
        return rows


def test_long_series_are_downsampled_in_the_database(session_and_job):
    session, job_id = session_and_job
    steps = [3 * i + (i % 2) for i in range(10_000)]  # uneven gaps: 3 and 4 steps apart by turns
    written = {name: [(s, s / 7 + k) for s in steps] for k, name in enumerate(("d_loss", "g_loss"))}
    written["fid"] = [(s, 300.0 / (1 + s)) for s in (0, 9000, 18000, 29998)]
    _write(session, job_id, [(n, s, v) for n, points in written.items() for s, v in points])

    counting = _RowCounting(session)
    series = read_metrics(counting, job_id, max_points=100)
    assert counting.rows <= 2 * 100 + 4  # the database downsampled: not all 20,004 rows came back
    assert set(series) == {"d_loss", "g_loss", "fid"}
    assert series["fid"] == written["fid"]  # no more points than max_points: kept whole
    for name in ("d_loss", "g_loss"):
        points = series[name]
        assert len(points) <= 100
        assert points[0] == written[name][0] and points[-1] == written[name][-1]
        kept = [s for s, _ in points]
        assert kept == sorted(set(kept))
        values = dict(written[name])
        assert all(value == values[step] for step, value in points)  # real rows
        # Spread over the whole series: no gap much wider than 1/99 of it.
        assert max(b - a for a, b in itertools.pairwise(kept)) <= 2 * steps[-1] / 99
        assert points == downsample(written[name], 100)  # the SQL applies the same rule

    # The filters apply before downsampling: the range is downsampled on its own.
    ranged = read_metrics(
        session, job_id, names=["g_loss", "kid"], since_step=6000, until_step=12000, max_points=50
    )
    assert set(ranged) == {"g_loss"}
    in_range = [(s, v) for s, v in written["g_loss"] if 6000 <= s <= 12000]
    assert ranged["g_loss"] == downsample(in_range, 50)
    assert len(ranged["g_loss"]) == 50
    assert ranged["g_loss"][0] == in_range[0] and ranged["g_loss"][-1] == in_range[-1]

    assert read_metrics(session, job_id, names=["d_loss"], max_points=1) == {
        "d_loss": [written["d_loss"][-1]]
    }
    assert read_metrics(session, job_id, names=["d_loss"])["d_loss"] == written["d_loss"]


@pytest.mark.parametrize("n", [1, 2, 99, 100, 101, 1000])
def test_downsampling_in_the_database_matches_the_rule(session_and_job, n: int):
    session, job_id = session_and_job
    points = [(10 * i, float(i)) for i in range(n)]
    _write(session, job_id, [("loss", s, v) for s, v in points])
    for max_points in (1, 2, 3, 100):
        got = read_metrics(session, job_id, max_points=max_points)["loss"]
        assert got == downsample(points, max_points)
        assert len(got) == min(n, max_points)


def test_load_script_smoke(empty_postgres_url: str):
    """scripts/load_metrics.py at a tiny size against the real API and PostgreSQL: no errors."""
    root = Path(__file__).resolve().parents[2]
    command = [
        sys.executable,
        str(root / "scripts" / "load_metrics.py"),
        "--database-url", empty_postgres_url,
        "--names", "2", "--steps", "1000", "--max-points", "100",
        "--clients", "2", "--requests", "5",
        "--jobs", "20", "--post-clients", "2",
        "--time-limit", "60", "--json", "--side-idle", "2",
    ]  # fmt: skip
    wrk = shutil.which("wrk") is not None  # scripts/ensure-services.sh installs it where it can
    done = subprocess.run(
        command + (["--wrk", "2"] if wrk else []),
        capture_output=True, text=True, timeout=120, cwd=root,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    reads, posts = result["phases"][:2]
    assert (reads["requests"], reads["errors"]) == (10, 0), reads
    assert (posts["requests"], posts["errors"]) == (20, 0), posts
    sides = ["side_channel"] + (["side_channel_wrk"] if wrk else [])
    for side in sides:  # each route timed idle and beside the reads, none failing
        for route in result[side]["routes"]:
            assert route["idle_n"] > 0 and route["idle_errors"] == route["loaded_errors"] == 0
    if wrk:  # two seconds of wrk's reads, a side request every 0.1 s beside them
        (by_wrk,) = result["phases"][2:]
        assert by_wrk["requests"] > 0 and by_wrk["errors"] == 0, by_wrk
        assert 1.5 < by_wrk["wall_s"] < 3, by_wrk
        assert all(route["loaded_n"] >= 10 for route in result["side_channel_wrk"]["routes"])
    assert result["points"] == 2000 and result["machine"]["cpus"] >= 1


# wrk 4.1's --latency report of a one-minute run (as Debian's wrk prints it, figures made up)
WRK_REPORT = """Running 1m test @ http://127.0.0.1:8765/jobs/x/metrics
  2 threads and 20 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    33.43ms    3.64ms    1.02s    65.51%
    Req/Sec   385.52     99.87   660.00     62.50%
  Latency Distribution
     50%   33.70ms
     75%   36.00ms
     90%  812.00us
     99%    1.20s
  23451 requests in 1.00m, 4.50GB read
  Non-2xx or 3xx responses: 3
Requests/sec:    390.80
Transfer/sec:     76.80MB
"""


def test_load_script_reads_wrk_reports():
    """The --wrk phase's figures from wrk's own report: a run of a minute is 60 s, not 1 ms."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
    try:
        load_metrics = importlib.import_module("load_metrics")
    finally:
        sys.path.pop(0)
    phase = load_metrics.wrk_phase(WRK_REPORT, api_cpu_s=23.451)
    assert (phase["requests"], phase["wall_s"], phase["throughput_rps"]) == (23451, 60.0, 390.9)
    assert (phase["p50_ms"], phase["p99_ms"], phase["errors"]) == (33.7, 1200.0, 3)
    assert phase["api_cpu_ms_per_request"] == 1.0
    empty = load_metrics.wrk_phase("unable to connect to 127.0.0.1:1", api_cpu_s=0)
    assert (empty["requests"], empty["throughput_rps"], empty["p99_ms"]) == (0, None, None)
