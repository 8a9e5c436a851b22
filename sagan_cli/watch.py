"""`sagan jobs watch`'s follower: a job's steps, losses, speed, ETA and events until it ends, and
the exit code of its outcome."""

from __future__ import annotations

import re
import time
from collections import defaultdict
from datetime import datetime

from sagan_cli import output as fmt
from sagan_cli.client import (
    Api,
    ClientError,
)
from sagan_cli.output import echo

TERMINAL_EXIT = {"succeeded": 0, "failed": 1, "cancelled": 2, "pruned": 3}
STEP_METRICS = ("d_loss", "g_loss", "images_per_s", "fid", "is")


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
        when = fmt.local_time(at, self.with_date) if at else now(self.with_date)
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
            took = fmt.elapsed(job)
            echo(f"job {short} succeeded in {took} ({job['step']}/{job['total_steps']})")
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


def now(with_date: bool = False) -> str:
    return datetime.now().strftime("%Y-%m-%d %H:%M:%S" if with_date else "%H:%M:%S")
