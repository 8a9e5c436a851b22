"""`sagan train --eval-every` evaluates through the real Inception loading code and caches stats."""

import json
import math
from pathlib import Path

from random_inception import save_random_inception

from sagan_core.cli import main


def test_cli_training_with_eval_every_logs_is_fid_kid_and_caches_statistics(tmp_path: Path):
    weights = save_random_inception(tmp_path / "random-inception.pth")
    run_dir = tmp_path / "runs" / "digits"
    args = ["train", "--dataset", "digits", "--steps", "4", "--batch-size", "4"]
    args += ["--log-every", "2", "--sample-every", "0", "--run-dir", str(run_dir)]
    args += ["--eval-every", "2", "--eval-samples", "8", "--eval-reference-samples", "8"]
    args += ["--inception-weights", str(weights)]

    assert main(args) == 0

    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evaluated = [r for r in rows if "fid" in r]
    assert [r["step"] for r in evaluated] == [2, 4]
    assert all(math.isfinite(r[k]) for r in evaluated for k in ("is", "fid", "kid"))
    cached = sorted(p.name for p in (tmp_path / "runs" / ".stats-cache").rglob("*.npz"))
    assert cached == ["digits-r32-train-inception-v3-compat-n8.npz"]


def test_cli_training_with_eval_every_and_missing_weights_fails_before_training(
    tmp_path: Path, capsys
):
    run_dir = tmp_path / "run"
    args = ["train", "--steps", "2", "--eval-every", "1", "--run-dir", str(run_dir)]
    args += ["--inception-weights", str(tmp_path / "nope.pth")]

    assert main(args) == 2

    err = capsys.readouterr().err
    assert "nope.pth" in err and "weights-inception-2015-12-05-6726825d.pth" in err
    assert not (run_dir / "checkpoints").exists()
