"""`python -m sweeps.bench --replay`: the sweeps' own pruner replayed on recorded curves (no
training), beside the same trials run to their end."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from sweeps import bench


def test_a_replay_stops_the_trials_that_trail_early_and_keeps_the_best(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    steps = [100, 200, 300, 400]
    curve = lambda *v: [[s, x] for s, x in zip(steps, v, strict=True)]  # noqa: E731
    recorded = {
        "steps": 400,
        "to the end": [
            {"params": {}, "curve": curve(0.2, 0.3, 0.4, 0.5)},
            {"params": {}, "curve": curve(0.1, 0.1, 0.1, 0.1)},  # behind at every step
            {"params": {}, "curve": curve(0.3, 0.5, 0.7, 0.9)},  # the best throughout
            {"params": {}, "curve": curve(0.1, 0.2, 0.2, 0.2)},
        ],
    }
    path = tmp_path / "curves.json"
    path.write_text(json.dumps(recorded))
    bench.main(["--replay", str(path), "--every", "100", "--min-steps", "100", "--reduction", "2"])
    out = capsys.readouterr().out
    # Asynchronous: trial 0 is first at every rung (Optuna's ASHA promotes the first to arrive);
    # 1 and 3 trail at step 100; 2 leads: 400 + 100 + 400 + 100 of 1,600 steps.
    assert re.search(r"^async +1,000 +62%", out, re.M), out
    # Synchronous: all four wait at 100, 2 and 0 go on; at 200 only 2 does: 200 + 100 + 400 +
    # 100 steps.
    assert re.search(r"^sync +800 +50%", out, re.M), out
    assert (
        "async: steps 62% of running every trial to the end (goal <= 50%: FAILS); best: the "
        "same trial, 0.0% from the full runs' best (goal <= 5%: HOLDS)" in out
    )
    assert (
        "sync: steps 50% of running every trial to the end (goal <= 50%: HOLDS); best: the "
        "same trial, 0.0% from the full runs' best (goal <= 5%: HOLDS)" in out
    )


def test_synchronous_halving_keeps_the_best_of_each_rung_and_never_the_rest() -> None:
    from sweeps import spec as specs

    spec = specs.parse(
        {"base": {"steps": 900}, "space": {"lr_g": {"choice": [1e-3]}},
         "objective": {"metric": "fid"}, "prune": {"every": 100, "min_steps": 100}},
        max_trials=100,
    )  # fmt: skip
    # fid (lower is better) of 9 trials, the same at every step except trial 8, which starts
    # worst and ends best; trial 4 is not a number (diverged) and is never kept.
    fid = {i: 50.0 - i for i in range(9)}
    fid[4] = float("nan")
    calls: list[tuple[int, int]] = []

    def advance(i: int, stop: int) -> float:
        calls.append((i, stop))
        return 99.0 if (i == 8 and stop == 100) else fid[i]

    reached, values = bench.sync_halving(9, advance, spec, 900)
    # Rungs at 100 and 300 (reduction 3): 9 -> 3 -> 1; trial 8 was cut at 100.
    assert reached == {0: 100, 1: 100, 2: 100, 3: 100, 4: 100, 5: 300, 6: 300, 7: 900, 8: 100}
    assert [c for c in calls if c[1] > 100] == [(5, 300), (6, 300), (7, 300), (7, 900)]
    assert bench.arm_result(spec, reached, values, 900) == {"spent": 2100, "best": 7, "value": 43.0}
