"""sagan_core.bench_loader: the sampler's images/s from a packed memmap, against a training rate."""

from __future__ import annotations

from sagan_core.bench_loader import main


def test_the_loader_benchmark_prints_its_rate_and_the_ratio(capsys) -> None:  # noqa: ANN001
    out = main(["--resolution", "32", "--images", "64", "--batch-size", "8", "--seconds", "0.2",
                "--device", "cpu", "--train-images-per-s", "10"])  # fmt: skip
    printed = capsys.readouterr().out
    assert out["loader_images_per_s"] > 0
    assert abs(out["ratio"] - out["loader_images_per_s"] / 10) < 0.1
    assert "images/s from a" in printed and "goal >= 20x" in printed
