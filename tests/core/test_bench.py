"""The benchmark scripts keep working: each path runs and is compared with the plain reference."""

import argparse
import re

import torch

from sagan_core import bench
from sagan_core.bench.sizes import parse_sizes
from sagan_core.bench.train import PathResult, report


def test_training_benchmark_reports_every_path_against_plain(capsys):
    # The fast path compiles (tens of seconds here): tests/core/test_fast_path.py holds it.
    args = ["--preset", "tiny", "--batch-size", "4", "--iters", "1", "--warmup", "0"]
    args += ["--paths", "plain,bf16"]
    assert bench.main(args + ["--device", "cpu"]) == 0
    out = capsys.readouterr().out
    rows = {line.split("|")[1].strip(): line for line in out.splitlines() if line.startswith("| ")}
    assert {"plain", "bf16"} <= set(rows)
    plain = [c.strip() for c in rows["plain"].split("|")[1:-1]]
    # The reference compares equal to itself: ratio x1.00, zero loss and gradient error.
    assert plain[6] == "x1.00" and plain[7:10] == ["0.00e+00"] * 3
    assert plain[10] == "-" and plain[11].startswith("HOLDS")  # not compiled; equal to itself
    bf16 = [c.strip() for c in rows["bf16"].split("|")[1:-1]]
    assert float(bf16[4]) > 0  # GFLOP per image-iteration counted
    # bf16 is close to fp32, not equal: a loss error above zero and below a few percent.
    assert 0 < float(bf16[7]) < 0.05
    assert re.fullmatch(r"x\d+\.\d\d", bf16[6])
    # Judged against bf16's tolerance (at batch 4 G's gradient can be ~6% off: it may fail).
    errors = [float(e) for e in bf16[7:10]]
    assert bf16[11] == ("HOLDS (< 0.05)" if max(errors) < 0.05 else "FAILS (< 0.05)")
    # The figures agree, within the table's rounding (images/s to 0.1, it/s and GFLOP to 0.01,
    # TFLOP/s to 0.001): images/s = it/s x batch, TFLOP/s = GFLOP per image x images/s.
    for row in (plain, bf16):
        images_per_s, iters_per_s = float(row[1].replace(",", "")), float(row[2])
        gflop, tflops = float(row[4]), float(row[5])
        assert abs(images_per_s - 4 * iters_per_s) <= 0.05 + 4 * 0.005 + 1e-9
        slack = 0.0005 + (0.005 * images_per_s + 0.05 * gflop) / 1e3 + 1e-9
        assert abs(tflops - gflop * images_per_s / 1e3) <= slack
    # "vs plain" is the ratio of the images/s (printed to 0.1: bounds from the rounding)
    b, p = float(bf16[1].replace(",", "")), float(plain[1].replace(",", ""))
    assert (b - 0.05) / (p + 0.05) - 0.005 <= float(bf16[6][1:]) <= (b + 0.05) / (p - 0.05) + 0.005


def _result(name: str, g_scale: float = 1.0, d_loss: float = 1.0) -> PathResult:
    grads = {"G.w": torch.ones(10) * g_scale, "D.w": torch.ones(10)}
    return PathResult(name, 64.0, 1.0, None, 1.0, 0.1, {"d_loss": d_loss, "g_loss": 0.5}, grads)


def test_a_path_whose_step_differs_from_plain_fails_the_check(capsys):
    args = argparse.Namespace(device="cpu", resolution=32, batch_size=64, num_classes=10)
    args.preset = "paper"
    report(args, [_result("plain"), _result("same"), _result("off", g_scale=1.01)])
    report(args, [_result("plain"), _result("loss", d_loss=1.002)])
    out = capsys.readouterr().out.splitlines()
    rows = {line.split("|")[1].strip(): line for line in out if line.startswith("| ")}
    assert rows["same"].rstrip().endswith("| HOLDS (< 0.001) |")
    assert rows["off"].rstrip().endswith("| FAILS (< 0.001) |")  # G's gradient 1% off
    assert "1.00e-02" in rows["off"]
    assert rows["loss"].rstrip().endswith("| FAILS (< 0.001) |")  # d_loss 0.2% off


def test_sizes_are_read_one_way():
    assert parse_sizes("32x64, 128x256,64x8x5") == [(32, 64, 10), (128, 256, 1000), (64, 8, 5)]
