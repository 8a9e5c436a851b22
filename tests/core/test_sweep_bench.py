"""`python -m sweeps.bench --replay`: the sweeps' own pruner replayed on recorded curves (no
training), beside the same trials run to their end."""

from __future__ import annotations

import json
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
    # Trial 0 is first at every rung (asynchronous halving promotes the first to arrive); 1 and 3
    # trail at step 100; 2 leads: 400 + 100 + 400 + 100 of 1,600 steps.
    assert "halving             1,000     62%" in out, out
    assert "best: the same trial, 0.0% from the full runs' best (goal <= 5%: HOLDS)" in out
    assert "(goal <= 50%: FAILS)" in out
