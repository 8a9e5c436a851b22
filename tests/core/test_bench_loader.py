"""sagan_core.bench.loader: the sampler's images/s from a packed memmap, against a training
rate."""

from __future__ import annotations

import numpy as np
import torch

from sagan_core.bench.loader import main, write_random_packed
from sagan_core.data import BatchSampler, build_dataset
from sagan_core.distributed import Ranks
from sagan_core.packed import read


def test_the_loader_benchmark_prints_its_rate_and_the_ratio(capsys) -> None:  # noqa: ANN001
    out = main(["--resolution", "32", "--images", "64", "--batch-size", "8", "--seconds", "0.2",
                "--device", "cpu", "--train-images-per-s", "10"])  # fmt: skip
    printed = capsys.readouterr().out
    assert out["loader_images_per_s"] > 0
    assert abs(out["ratio"] - out["loader_images_per_s"] / 10) < 0.1
    assert "images/s from a" in printed and "goal >= 20x" in printed


def test_what_the_loader_times_is_the_packed_images_with_their_labels(tmp_path) -> None:
    path = write_random_packed(tmp_path / "r.pack", count=40, resolution=8, classes=3)
    _, labels, images = read(path)
    ds = build_dataset(dataset="packed", data_root=str(path), resolution=8)
    sampler = BatchSampler(ds, 16, torch.device("cpu"), torch.Generator().manual_seed(0))
    x, y = sampler.next()
    assert x.shape == (16, 3, 8, 8) and x.min() >= -1 and x.max() <= 1
    pixels = np.asarray(images).reshape(40, -1).astype(np.float32) / 127.5 - 1
    for image, label in zip(x.reshape(16, -1).numpy(), y.tolist(), strict=True):
        match = np.flatnonzero(np.abs(pixels - image).max(axis=1) < 1e-5)
        assert len(match) >= 1 and labels[match[0]] == label  # a real image, with its label


def test_the_sampler_delivers_the_drawn_images_in_order_and_each_rank_its_slice(tmp_path) -> None:
    path = write_random_packed(tmp_path / "r.pack", count=40, resolution=8, classes=3)
    _, labels, images = read(path)
    ds = build_dataset(dataset="packed", data_root=str(path), resolution=8)
    # What a run of 2 ranks of batch 4 must see: the 8 indices one process of batch 8 draws.
    drawn = torch.randint(0, 40, (8,), generator=torch.Generator().manual_seed(3)).numpy()
    seen = []
    for rank in (0, 1):
        sampler = BatchSampler(
            ds, 4, torch.device("cpu"), torch.Generator().manual_seed(3), ranks=Ranks(rank, 2)
        )
        x, y = sampler.next()
        assert x.shape == (4, 3, 8, 8)
        seen.append((x, y))
    x = torch.cat([x for x, _ in seen]).numpy()
    y = torch.cat([y for _, y in seen]).numpy()
    assert np.array_equal(y, labels[drawn])
    assert np.allclose(x, images[drawn].astype(np.float32) / 127.5 - 1, atol=1e-6)
