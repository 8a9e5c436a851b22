"""What successive halving saves: one sweep's trials run with the sweep's pruner, beside the same
trials run to their end, in one run (issue #23's goal: at most half the steps, and the same best
trial or one within 5% of it).

    python -m sweeps.bench --trials 8 --steps 1000 --every 100 --min-steps 400 --curves c.json
    python -m sweeps.bench --replay c.json --every 100 --min-steps 200   # no training

The trials are drawn once (the spec's sampler, its seed) and trained in this process by the core's
Trainer on digits, one after another, in the same order in both arms; the halving arm asks the
same pruner a sweep builds (sweeps.study.pruner) at each evaluation, as a trial's worker does.
Training is deterministic per config, so a pruned trial's curve is a prefix of its full one.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import optuna

from sweeps import spec as specs
from sweeps import study as studies


def trial_run(config: dict[str, Any], on_value, metric: str = "class_accuracy"):  # noqa: ANN001, ANN201
    """Train `config`; `on_value(step, value)` True stops it. Returns its curve (of `metric`) and
    the steps run."""
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
    with tempfile.TemporaryDirectory() as run_dir:
        result = Trainer(cfg, run_dir, [Callbacks()]).run()
    return curve, result.step


METRIC = "class_accuracy"


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
        "gives the halving arm)",
    )
    parser.add_argument(
        "--replay",
        help="no training: halving replayed on the curves a --curves run wrote (exact: training "
        "is deterministic per config, and a pruned trial's curve is a prefix of its full one)",
    )
    args = parser.parse_args(argv)
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

    arms: dict[str, dict] = {}
    curves: dict[str, list] = {}
    for arm, pruner in (("to the end", optuna.pruners.NopPruner()), ("halving", None)):
        if arm == "halving" and args.full_only:
            break
        study = optuna.create_study(direction=spec.direction, pruner=pruner or studies.pruner(spec))
        rows, spent, started = [], 0, time.perf_counter()
        for params in points:
            study.enqueue_trial(params)
            trial = study.ask(studies.distributions(spec))

            def on_value(step: int, value: float, trial=trial) -> bool:  # noqa: ANN001
                trial.report(value, step)
                return trial.should_prune()

            curve, steps = trial_run(spec.trial_config(params), on_value, spec.metric)
            curves.setdefault(arm, []).append({"params": params, "curve": curve})
            spent += steps
            pruned = steps < spec.base["steps"]
            if pruned:
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            else:
                study.tell(trial, curve[-1][1])
            rows.append((trial.number, params, steps, curve[-1][1], pruned))
            print(f"  {arm}: trial {trial.number} {params} -> {steps} steps, {spec.metric} "
                  f"{curve[-1][1]:.4f}{' (pruned)' if pruned else ''}", flush=True)  # fmt: skip
        best = study.best_trial
        arms[arm] = {"rows": rows, "spent": spent, "best": best.number, "value": best.value,
                     "seconds": time.perf_counter() - started}  # fmt: skip

    if args.curves:
        Path(args.curves).write_text(json.dumps({"steps": spec.base["steps"], **curves}))
    if args.full_only:
        return
    prefixes = all(
        h["curve"] == f["curve"][: len(h["curve"])]
        for h, f in zip(curves["halving"], curves["to the end"], strict=True)
    )
    print(f"each halving trial's curve is a prefix of its full run's: {prefixes}")
    report(arms, spec, args.every, spec.trials)


def report(arms: dict[str, dict], spec: specs.SweepSpec, every: int, trials: int) -> None:
    full, halving = arms["to the end"], arms["halving"]
    print(f"\n{trials} trials of {spec.base['steps']} steps on digits (tiny), objective "
          f"{spec.metric} ({spec.direction}), successive halving every {every} from step "
          f"{spec.prune.min_steps}, reduction {spec.prune.reduction}\n")  # fmt: skip
    print(f"{'arm':<12} {'steps spent':>12} {'share':>7} {'seconds':>8} {'best trial':>11} "
          f"{spec.metric:>15}")  # fmt: skip
    for name, arm in arms.items():
        share = arm["spent"] / full["spent"]
        print(f"{name:<12} {arm['spent']:>12,} {share:>7.0%} {arm['seconds']:>8.0f} "
              f"{arm['best']:>11} {arm['value']:>15.4f}")  # fmt: skip
    gap = abs(halving["value"] - full["value"]) / max(abs(full["value"]), 1e-12)
    same = halving["best"] == full["best"]
    saved = "HOLDS" if halving["spent"] <= full["spent"] / 2 else "FAILS"
    found = "the same trial" if same else f"trial {halving['best']}, not {full['best']}"
    print(f"\nsteps: {halving['spent'] / full['spent']:.0%} of running every trial to the end "
          f"(goal <= 50%: {saved}); best: {found}, {gap:.1%} from the full runs' best "
          f"(goal <= 5%: {'HOLDS' if same or gap <= 0.05 else 'FAILS'})")  # fmt: skip


def replay(args: argparse.Namespace) -> None:
    """Halving with --min-steps and --reduction on recorded full curves, beside the full runs."""
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
    for arm, pruner in (("to the end", optuna.pruners.NopPruner()), ("halving", None)):
        study = optuna.create_study(direction=spec.direction, pruner=pruner or studies.pruner(spec))
        spent = 0
        for t in trials:
            trial = study.ask()
            last = None
            for step, value in t["curve"]:
                trial.report(value, step)
                last = (step, value)
                if trial.should_prune():
                    break
            spent += last[0]
            if last[0] < steps:
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            else:
                study.tell(trial, last[1])
        best = study.best_trial
        arms[arm] = {"spent": spent, "best": best.number, "value": best.value, "seconds": 0.0}
    print(f"replayed on {args.replay}:")
    report(arms, spec, args.every, len(trials))


if __name__ == "__main__":
    main()
