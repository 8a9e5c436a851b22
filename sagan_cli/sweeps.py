"""`sagan sweeps ...`: hyperparameter searches on a running service: create (from a YAML or JSON
spec, and watch it), list, show (with its trials), watch, cancel."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from sagan_cli import output as fmt
from sagan_cli.jobs import load_job_file
from sagan_cli.output import JsonFlag, connect, echo, handled

sweeps_app = typer.Typer(
    help="Hyperparameter sweeps on a running service: create, list, show, watch, cancel.",
    no_args_is_help=True,
)
EXIT = {"succeeded": 0, "failed": 1, "cancelled": 2}
SweepArg = Annotated[str, typer.Argument(help="A sweep id or a unique prefix of one.")]


def summary(sweep: dict[str, Any]) -> str:
    states = ", ".join(f"{n} {s}" for s, n in sorted(sweep["trial_states"].items())) or "none yet"
    best = (
        f"; best trial {sweep['best_trial']}: {sweep['metric']} {fmt.number(sweep['best_value'])}"
        if sweep["best_trial"] is not None
        else ""
    )
    note = f" ({sweep['note']})" if sweep.get("note") else ""
    return f"sweep {fmt.short(sweep['id'])} {sweep['state']}: trials {states}{best}{note}"


def trial_rows(trials: dict[str, Any], best: int | None) -> str:
    items = trials["items"]
    names = sorted({k for t in items for k in t["params"]})
    rows = [
        [
            f"{t['number']}{' *' if t['number'] == best else ''}",
            fmt.short(t["job_id"]),
            t["state"],
            f"{t['step']}/{t['total_steps']}",
            fmt.number(t["objective"]),
            *(fmt.number(t["params"].get(n)) if not isinstance(t["params"].get(n), str)
              else repr(t["params"][n]) for n in names),
        ]
        for t in items
    ]  # fmt: skip
    headers = ["trial", "job", "state", "step", trials["metric"], *names]
    return fmt.table(headers, rows, right=frozenset({3, 4}))


@sweeps_app.command("create")
@handled
def sweeps_create(
    config: Annotated[Path, typer.Option(help="The sweep spec (YAML or JSON).")],
    watch: Annotated[bool, typer.Option(help="Follow it to its end; exit 0 if it succeeds.")] = (
        False
    ),
    json_: JsonFlag = False,
) -> None:
    """Start a sweep: `base`, `space`, `sampler`, `trials`, `parallel`, `objective`, `prune`,
    `promote` (README: "Sweeps")."""
    body = load_job_file(config)
    with connect() as api:
        sweep = api.post_json("/sweeps", body)
        if json_ and not watch:
            echo(fmt.as_json(sweep))
            return
        echo(summary(sweep))
        if watch:
            raise typer.Exit(follow(api, sweep["id"]))


def follow(api, sweep_id: str, every: float = 2.0) -> int:  # noqa: ANN001
    """Print the sweep whenever it changes, and its trials at the end; the exit code."""
    last = None
    while True:
        sweep = api.get_json(f"/sweeps/{sweep_id}")
        line = summary(sweep)
        if line != last:
            echo(line)
            last = line
        if sweep["state"] in EXIT:
            echo(trial_rows(api.get_json(f"/sweeps/{sweep_id}/trials"), sweep["best_trial"]))
            if sweep["error"]:
                echo(f"error: {sweep['error']}")
            return EXIT[sweep["state"]]
        time.sleep(every)


@sweeps_app.command("list")
@handled
def sweeps_list(json_: JsonFlag = False) -> None:
    """Your sweeps, newest first."""
    with connect() as api:
        items = list(api.pages("/sweeps"))
    if json_:
        echo(fmt.as_json(items))
        return
    if not items:
        echo("(no sweeps)")
        return
    rows = [
        [
            fmt.short(s["id"]),
            s["name"] or "",
            s["state"],
            f"{sum(s['trial_states'].values())}/{s['trials']}",
            s["metric"],
            fmt.number(s["best_value"]),
            f"@{s['promote']}" if s["promote"] else "",
            fmt.age(s["created_at"]),
        ]
        for s in items
    ]
    echo(fmt.table(["id", "name", "state", "trials", "metric", "best", "promote", "age"], rows))


@sweeps_app.command("show")
@handled
def sweeps_show(sweep: SweepArg, json_: JsonFlag = False) -> None:
    """A sweep and its trials."""
    with connect() as api:
        sweep_id = api.resolve_id("sweep", sweep)
        row = api.get_json(f"/sweeps/{sweep_id}")
        trials = api.get_json(f"/sweeps/{sweep_id}/trials")
    if json_:
        echo(fmt.as_json({**row, "trial_list": trials["items"]}))
        return
    echo(summary(row))
    if row["error"]:
        echo(f"error: {row['error']}")
    echo(trial_rows(trials, row["best_trial"]))


@sweeps_app.command("watch")
@handled
def sweeps_watch(sweep: SweepArg) -> None:
    """Follow a sweep to its end; exit 0 if it succeeds, 1 if it failed, 2 if cancelled."""
    with connect() as api:
        raise typer.Exit(follow(api, api.resolve_id("sweep", sweep)))


@sweeps_app.command("cancel")
@handled
def sweeps_cancel(sweep: SweepArg) -> None:
    """No new trials; its queued and running trials are cancelled (checkpoints kept)."""
    with connect() as api:
        row = api.post_json(f"/sweeps/{api.resolve_id('sweep', sweep)}/cancel")
    echo(summary(row))
