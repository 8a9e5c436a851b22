"""What successive halving saves: one sweep's trials run with each of the sweep's halving modes,
beside the same trials run to their end, in one run (issue #23's goal: at most half the steps,
and the same best trial or one within 5% of it).

    python -m sweeps.bench --trials 8 --steps 1000 --every 100 --min-steps 400 --curves c.json
    python -m sweeps.bench --replay c.json --every 100 --min-steps 200   # no training

The trials are drawn once (the spec's sampler, its seed) and trained in this process by the core's
Trainer on digits, in the same order in every arm:
- "to the end": every trial runs its steps.
- "async": one after another, each asking Optuna's asynchronous pruner (mode async) at every
  evaluation, as a trial's worker does.
- "sync" (the service's default): every trial runs to the first rung and stops at a checkpoint;
  the best 1/reduction (sweeps.halving, the rule the sweep's driver applies) resume from theirs
  to the next rung, and so on; the last survivors run to the end.
Training is deterministic per config and a checkpoint carries the RNG, so a halving trial's curve
is a prefix of its full one (the bench checks it); a replay on recorded curves is exact.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import optuna

from sweeps import halving
from sweeps import spec as specs
from sweeps import study as studies


def trial_run(config: dict[str, Any], on_value, metric: str = "class_accuracy",  # noqa: ANN001, ANN201
              run_dir: str | None = None, resume: Path | None = None):  # fmt: skip
    """Train `config` (from `resume`); `on_value(step, value)` True stops it at a checkpoint.
    Returns its curve (of `metric`), the step it stopped at, and its last checkpoint."""
    from sagan_core.config import TrainConfig
    from sagan_core.trainer import Trainer, TrainerCallbacks

    curve: list[tuple[int, float]] = []
    stop = {"now": False}

    class Callbacks(TrainerCallbacks):
        def on_metrics(self, step: int, metrics: dict[str, float]) -> None:
            if metric in metrics:
                curve.append((step, metrics[metric]))
                stop["now"] = bool(on_value(step, metrics[metric]))

        def should_stop(self, step: int) -> bool:
            return stop["now"]

    cfg = TrainConfig.from_dict({**config, "device": "cpu"})
    if run_dir is not None:
        result = Trainer(cfg, run_dir, [Callbacks()]).run(resume_from=resume)
        return curve, result.step, result.last_checkpoint
    with tempfile.TemporaryDirectory() as temporary:
        result = Trainer(cfg, temporary, [Callbacks()]).run(resume_from=resume)
    return curve, result.step, None


METRIC = "class_accuracy"
ARMS = ("to the end", "async", "sync")


def sync_halving(points: int, advance, spec: specs.SweepSpec, steps: int) -> tuple[dict, dict]:  # noqa: ANN001
    """Synchronous halving over `points` trials; `advance(i, step)` runs trial i on to `step`
    and returns its objective there. Returns each trial's last step and last value."""
    prune = spec.prune
    reached, values = {}, {}
    alive = list(range(points))
    for stop in [*prune.rungs(steps), steps]:
        for i in alive:
            values[i], reached[i] = advance(i, stop), stop
        if stop < steps:
            at = {i: values[i] for i in alive}
            alive = sorted(halving.winners(at, prune.reduction, spec.direction))
    return reached, values


def arm_result(spec: specs.SweepSpec, reached: dict, values: dict, steps: int) -> dict:
    """Steps spent and the best of the trials that ran to the end."""
    done = {i: v for i, v in values.items() if reached[i] >= steps}
    best = halving.ranked(done, spec.direction)[0]
    return {"spent": sum(reached.values()), "best": best, "value": done[best]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--every", type=int, default=50, help="steps between evaluations")
    parser.add_argument("--min-steps", type=int, default=None, help="first rung (default every)")
    parser.add_argument("--reduction", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--metric",
        default=METRIC,
        choices=("class_accuracy", "variety"),
        help="the objective (maximised)",
    )
    parser.add_argument("--curves", help="write every trial's full curve here (JSON)")
    parser.add_argument(
        "--full-only",
        action="store_true",
        help="train only the arm that runs every trial to its end (with --curves; then --replay "
        "gives the halving arms)",
    )
    parser.add_argument(
        "--replay",
        help="no training: halving replayed on the curves a --curves run wrote (exact: training "
        "is deterministic per config, and a halving trial's curve is a prefix of its full one)",
    )
    parser.add_argument(
        "--arms",
        default=",".join(ARMS),
        help=f"the halving arms to train beside the full runs (of {', '.join(ARMS[1:])})",
    )
    args = parser.parse_args(argv)
    wanted = {"to the end", *args.arms.split(",")}
    if args.replay:
        replay(args)
        return

    spec = specs.parse(
        {
            "base": {"dataset": "digits", "preset": "tiny", "steps": args.steps,
                     "sample_every": 0, "checkpoint_every": 0, "log_every": args.every},
            "space": {"lr_g": {"log_uniform": [1e-4, 3e-3]},  # issue #23's example space
                      "diversity_weight": {"choice": [0, 0.03, 0.07, 0.15]}},
            "sampler": "random",
            "trials": args.trials,
            "objective": {"metric": args.metric},
            "prune": {"every": args.every, "min_steps": args.min_steps or args.every,
                      "reduction": args.reduction},
            "seed": args.seed,
        },
        max_trials=1000,
    )  # fmt: skip
    draws = optuna.create_study(direction=spec.direction, sampler=studies.sampler(spec, 0))
    points = [draws.ask(studies.distributions(spec)).params for _ in range(spec.trials)]
    steps = spec.base["steps"]
    configs = [spec.trial_config(p) for p in points]

    arms: dict[str, dict] = {}
    curves: dict[str, list] = {arm: [{"params": p, "curve": []} for p in points] for arm in ARMS}
    for arm in ("to the end", "async"):
        if arm == "async" and (args.full_only or arm not in wanted):
            break
        pruner = optuna.pruners.NopPruner() if arm == "to the end" else _async_pruner(spec)
        study = optuna.create_study(direction=spec.direction, pruner=pruner)
        reached, values, started = {}, {}, time.perf_counter()
        for i, params in enumerate(points):
            study.enqueue_trial(params)
            trial = study.ask(studies.distributions(spec))

            def on_value(step: int, value: float, trial=trial) -> bool:  # noqa: ANN001
                trial.report(value, step)
                return trial.should_prune()

            curve, reached[i], _ = trial_run(configs[i], on_value, spec.metric)
            curves[arm][i]["curve"], values[i] = curve, curve[-1][1]
            if reached[i] < steps:
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            else:
                study.tell(trial, values[i])
            _print_trial(arm, i, params, reached[i], values[i], steps, spec.metric)
        arms[arm] = {**arm_result(spec, reached, values, steps),
                     "seconds": time.perf_counter() - started}  # fmt: skip

    if args.curves:
        full = {"steps": steps, "to the end": curves["to the end"]}
        Path(args.curves).write_text(json.dumps(full))
    if args.full_only or "sync" not in wanted:
        report(arms, spec, args.every, spec.trials)
        return

    with tempfile.TemporaryDirectory() as root:
        checkpoints: dict[int, Path | None] = dict.fromkeys(range(len(points)))
        started = time.perf_counter()

        def advance(i: int, stop: int) -> float:
            curve, _, checkpoints[i] = trial_run(
                configs[i], lambda step, value: step >= stop, spec.metric,
                run_dir=f"{root}/{i}", resume=checkpoints[i],
            )  # fmt: skip
            curves["sync"][i]["curve"] += curve
            _print_trial("sync", i, points[i], stop, curve[-1][1], steps, spec.metric)
            return curve[-1][1]

        reached, values = sync_halving(len(points), advance, spec, steps)
        arms["sync"] = {**arm_result(spec, reached, values, steps),
                        "seconds": time.perf_counter() - started}  # fmt: skip
    for arm in [a for a in ("async", "sync") if a in arms]:
        prefixes = all(
            h["curve"] == f["curve"][: len(h["curve"])]
            for h, f in zip(curves[arm], curves["to the end"], strict=True)
        )
        print(f"each {arm} trial's curve is a prefix of its full run's: {prefixes}")
    report(arms, spec, args.every, spec.trials)


def _async_pruner(spec: specs.SweepSpec) -> optuna.pruners.BasePruner:
    return studies.pruner(dataclasses.replace(
        spec, prune=dataclasses.replace(spec.prune, mode="async")))  # fmt: skip


def _print_trial(arm, i, params, reached, value, steps, metric) -> None:  # noqa: ANN001
    stopped = " (stopped)" if reached < steps else ""
    print(f"  {arm}: trial {i} {params} -> step {reached}, {metric} {value:.4f}{stopped}",
          flush=True)  # fmt: skip


def report(arms: dict[str, dict], spec: specs.SweepSpec, every: int, trials: int) -> None:
    full = arms["to the end"]
    print(f"\n{trials} trials of {spec.base['steps']} steps on digits (tiny), objective "
          f"{spec.metric} ({spec.direction}), successive halving every {every} from step "
          f"{spec.prune.min_steps}, reduction {spec.prune.reduction}\n")  # fmt: skip
    print(f"{'arm':<12} {'steps spent':>12} {'share':>7} {'seconds':>8} {'best trial':>11} "
          f"{spec.metric:>15}")  # fmt: skip
    for name, arm in arms.items():
        share = arm["spent"] / full["spent"]
        print(f"{name:<12} {arm['spent']:>12,} {share:>7.0%} {arm['seconds']:>8.0f} "
              f"{arm['best']:>11} {arm['value']:>15.4f}")  # fmt: skip
    for name in [a for a in ("async", "sync") if a in arms]:
        arm = arms[name]
        gap = abs(arm["value"] - full["value"]) / max(abs(full["value"]), 1e-12)
        same = arm["best"] == full["best"]
        saved = "HOLDS" if arm["spent"] <= full["spent"] / 2 else "FAILS"
        found = "the same trial" if same else f"trial {arm['best']}, not {full['best']}"
        print(f"{name}: steps {arm['spent'] / full['spent']:.0%} of running every trial to the "
              f"end (goal <= 50%: {saved}); best: {found}, {gap:.1%} from the full runs' best "
              f"(goal <= 5%: {'HOLDS' if same or gap <= 0.05 else 'FAILS'})")  # fmt: skip


def replay(args: argparse.Namespace) -> None:
    """Both halving modes with --min-steps and --reduction on recorded full curves, beside the
    full runs."""
    recorded = json.loads(Path(args.replay).read_text())
    steps, trials = recorded["steps"], recorded["to the end"]
    min_steps = args.min_steps or args.every
    spec = specs.parse(
        {"base": {"steps": steps}, "space": {"lr_g": {"choice": [1e-3]}},
         "objective": {"metric": args.metric},
         "prune": {"every": args.every, "min_steps": min_steps, "reduction": args.reduction}},
        max_trials=1000,
    )  # fmt: skip
    arms = {}
    for arm in ("to the end", "async"):
        pruner = optuna.pruners.NopPruner() if arm == "to the end" else _async_pruner(spec)
        study = optuna.create_study(direction=spec.direction, pruner=pruner)
        reached, values = {}, {}
        for i, t in enumerate(trials):
            trial = study.ask()
            for step, value in t["curve"]:
                trial.report(value, step)
                reached[i], values[i] = step, value
                if trial.should_prune():
                    break
            if reached[i] < steps:
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            else:
                study.tell(trial, values[i])
        arms[arm] = {**arm_result(spec, reached, values, steps), "seconds": 0.0}
    at = [dict(t["curve"]) for t in trials]
    reached, values = sync_halving(len(trials), lambda i, stop: at[i][stop], spec, steps)
    arms["sync"] = {**arm_result(spec, reached, values, steps), "seconds": 0.0}
    print(f"replayed on {args.replay}:")
    report(arms, spec, args.every, len(trials))


if __name__ == "__main__":
    main()
