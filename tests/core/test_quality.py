"""The tiny preset learns digits: samples of class c are classified as c by a digits classifier."""

import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression

from sagan_core.checkpoint import load_generator
from sagan_core.config import TrainConfig
from sagan_core.data import build_dataset
from sagan_core.sample import grid_png, sample
from sagan_core.trainer import Trainer

# Measured 0.978 (1000 steps, ~160 s on a busy 2-core CPU); the bar sits a little below it.
MIN_ACCURACY = 0.85
QUALITY_STEPS = 1000


def to_digits_features(images: torch.Tensor) -> np.ndarray:
    """uint8 (N, 3, 32, 32) -> (N, 64): grey, area-downsampled to 8x8, on sklearn's 0..16 scale."""
    grey = images.float().mean(1, keepdim=True)  # (N, 1, 32, 32)
    return (F.adaptive_avg_pool2d(grey, 8) * 16 / 255).flatten(1).numpy()  # (N, 64)


@pytest.fixture(scope="module")
def digits_classifier():
    ds = build_dataset(TrainConfig(dataset="digits", resolution=32))
    x, y = to_digits_features(ds.images), ds.labels.numpy()
    perm = np.random.default_rng(0).permutation(len(y))
    train, held_out = perm[:1400], perm[1400:]
    clf = LogisticRegression(max_iter=2000).fit(x[train], y[train])
    assert clf.score(x[held_out], y[held_out]) > 0.95
    return clf


def test_tiny_preset_samples_are_classified_as_the_requested_digit(tmp_path, digits_classifier):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # on a busy 2-core box one thread is several times faster than two
    try:
        cfg = TrainConfig(dataset="digits", resolution=32, steps=QUALITY_STEPS, device="cpu",
                          log_every=100, checkpoint_every=0, sample_every=0)  # fmt: skip
        t0 = time.perf_counter()
        result = Trainer(cfg, tmp_path).run()
        train_s = time.perf_counter() - t0
        G, _, _ = load_generator(result.last_checkpoint)
        per_class = []
        for c in range(10):
            images = sample(G, c, 50, seed=1000 + c).permute(0, 3, 1, 2)  # (50, 3, 32, 32)
            per_class.append(
                float((digits_classifier.predict(to_digits_features(images)) == c).mean())
            )
        (tmp_path / "class3.png").write_bytes(grid_png(sample(G, 3, 16, seed=0)))
    finally:
        torch.set_num_threads(threads)
    overall = float(np.mean(per_class))
    print(f"quality: {overall:.3f} overall, per class {np.round(per_class, 2).tolist()}, "
          f"{QUALITY_STEPS} steps in {train_s:.0f}s")  # fmt: skip
    assert overall >= MIN_ACCURACY, per_class
