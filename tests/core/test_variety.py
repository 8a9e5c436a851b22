"""The variety judge (sagan_core.variety): what it says about generators we know the answer for."""

import numpy as np
import pytest
import torch
import torch.nn as nn

from sagan_core.collapse import CollapseWatch
from sagan_core.config import TrainConfig
from sagan_core.data import ImageDataset, build_dataset
from sagan_core.judge_net import ImageClassifier
from sagan_core.shapes import make_shapes
from sagan_core.trainer import Trainer, TrainerCallbacks
from sagan_core.variety import VarietyJudge, judged_by_default, mean_pairwise_distance


@pytest.fixture(scope="module")
def digits():
    return build_dataset(TrainConfig(dataset="digits", resolution=32))


@pytest.fixture(scope="module")
def judge(digits):
    return VarietyJudge.for_dataset(digits)


class RealImages(nn.Module):
    """A 'generator' that returns real digits: of the class asked for, or (ignore_class) of any.

    z picks which image (its first coordinate, through the normal CDF), so different z give
    different real images; `one_per_class` returns the same image for every z of a class.
    """

    def __init__(self, ds, ignore_class=False, one_per_class=False):
        super().__init__()
        self.z_dim, self.num_classes = 8, ds.num_classes
        self.images = ds.images.float() / 127.5 - 1  # (N, 3, 32, 32) in [-1, 1]
        self.by_class = [torch.nonzero(ds.labels == c).flatten() for c in range(ds.num_classes)]
        self.all = torch.arange(len(ds))
        self.ignore_class, self.one_per_class = ignore_class, one_per_class
        self.dummy = nn.Parameter(torch.zeros(()))  # so the judge can find G's device

    def forward(self, z, y):
        u = torch.special.ndtr(z[:, 0])  # (B,) uniform in [0, 1]
        if self.one_per_class:
            u = torch.zeros_like(u)
        picks = []
        for ui, yi in zip(u, y, strict=True):
            pool = self.all if self.ignore_class else self.by_class[int(yi)]
            picks.append(pool[min(int(ui * len(pool)), len(pool) - 1)])
        return self.images[torch.stack(picks)]


def test_the_judge_classifies_held_out_real_digits_well(judge):
    assert judge.size == 8 and judge.grey  # digits: judged at their native 8x8, grey
    assert 0.95 <= judge.judge_accuracy <= 1.0
    assert len(judge.real_variety) == 10 and min(judge.real_variety) > 0.5


def test_real_images_scored_against_themselves_give_variety_one(judge, digits):
    scores = judge.score_images(digits.images, digits.labels)
    assert scores["variety"] == pytest.approx(1.0, abs=1e-6)
    assert scores["per_class_variety"] == pytest.approx([1.0] * 10, abs=1e-6)
    # Mostly the images it was fitted on: a little above its held-out accuracy.
    assert judge.judge_accuracy <= scores["class_accuracy"] <= judge.judge_accuracy + 0.05


def test_a_generator_of_real_images_scores_like_the_data(judge, digits):
    scores = judge.score(RealImages(digits), n_per_class=50, seed=0)
    assert scores["variety"] == pytest.approx(1.0, abs=0.1)
    assert scores["class_accuracy"] >= judge.judge_accuracy - 0.03


def test_identical_samples_of_a_class_give_variety_zero(judge, digits):
    scores = judge.score(RealImages(digits, one_per_class=True), n_per_class=20, seed=0)
    assert scores["variety"] == pytest.approx(0.0, abs=1e-9)
    assert scores["variety_min"] == pytest.approx(0.0, abs=1e-9)


def test_a_generator_that_ignores_the_class_gets_chance_accuracy(judge, digits):
    scores = judge.score(RealImages(digits, ignore_class=True), n_per_class=100, seed=0)
    assert scores["class_accuracy"] == pytest.approx(0.1, abs=0.05)
    assert scores["variety"] > 1.0  # all digits in one class: more varied than any one digit


def test_scoring_is_seeded_and_leaves_global_rngs_and_g_mode_alone(judge, digits):
    G = RealImages(digits).train()
    torch.manual_seed(5)
    np.random.seed(5)
    before = (torch.get_rng_state(), np.random.get_state()[1].copy())
    a = judge.score(G, n_per_class=5, seed=3)
    b = judge.score(G, n_per_class=5, seed=3)
    assert a == b and G.training
    assert torch.equal(torch.get_rng_state(), before[0])
    assert np.array_equal(np.random.get_state()[1], before[1])
    assert judge.score(G, n_per_class=5, seed=4) != a


def test_truncation_draws_from_the_truncated_normal(judge, digits):
    wide = judge.score(RealImages(digits), n_per_class=50, seed=0, truncation=None)
    narrow = judge.score(RealImages(digits), n_per_class=50, seed=0, truncation=0.01)
    assert narrow["variety"] < 0.5 * wide["variety"]  # |z| <= 0.01: 1 or 2 images per class


def test_the_judge_is_fitted_once_per_dataset(digits):
    again = build_dataset(TrainConfig(dataset="digits", resolution=32))
    assert VarietyJudge.for_dataset(again) is VarietyJudge.for_dataset(digits)


def test_mean_pairwise_distance():
    x = torch.tensor([[0.0, 0.0], [3.0, 4.0], [0.0, 0.0]])
    assert mean_pairwise_distance(x) == pytest.approx((5 + 0 + 5) / 3)
    with pytest.raises(ValueError):
        mean_pairwise_distance(x[:1])


def _dataset(n, classes, images=None):
    images = images if images is not None else torch.zeros((n, 3, 8, 8), dtype=torch.uint8)
    labels = torch.arange(n) % classes
    return ImageDataset("x", images, labels, [str(c) for c in range(classes)])


def test_which_datasets_are_judged_by_default(digits):
    assert judged_by_default(digits)  # 1,797 images, 10 classes
    assert judged_by_default(_dataset(200, 100))
    assert not judged_by_default(_dataset(202, 101))  # too many classes
    assert not judged_by_default(_dataset(20_001, 10))  # too many images (CIFAR-10 has 50,000)
    packed = np.zeros((20, 3, 8, 8), dtype=np.uint8)  # a stored data set's memmap
    assert judged_by_default(_dataset(20, 2, images=packed))  # small: judged like a built-in one
    big = np.lib.stride_tricks.as_strided(np.zeros(1, np.uint8), (600, 3, 256, 256), (0,) * 4)
    assert not judged_by_default(_dataset(600, 2, images=big))  # 118 MB of pixels to hold


class Metrics(TrainerCallbacks):
    def __init__(self):
        self.seen = []

    def on_metrics(self, step, metrics):
        self.seen.append((step, metrics))


def small(**overrides):
    fields = dict(
        dataset="digits", resolution=32, g_ch=2, d_ch=2, z_dim=8, batch_size=4, steps=6,
        log_every=2, checkpoint_every=0, sample_every=0, device="cpu", seed=3,
    )  # fmt: skip
    return TrainConfig(**{**fields, **overrides})


def test_trainer_logs_variety_of_g_ema_on_its_schedule_and_at_the_end(tmp_path):
    rec = Metrics()
    trainer = Trainer(small(steps=7, variety_every=4), tmp_path, callbacks=rec)
    trainer.run()
    with_variety = [(s, m) for s, m in rec.seen if "variety" in m]
    assert [s for s, _ in with_variety] == [4, 7]
    step4 = dict(with_variety[0][1])
    assert "d_loss" in step4  # on the log line of the same step, not a line of its own
    for _, m in with_variety:
        assert 0.0 <= m["class_accuracy"] <= 1.0 and m["variety"] >= 0.0
        assert m["variety_min"] <= m["variety"]
    expected = trainer.judge.score(trainer.G_ema, seed=0)
    assert with_variety[-1][1]["variety"] == pytest.approx(expected["variety"])


def test_variety_is_on_by_default_for_digits_and_off_when_asked(tmp_path):
    default = Trainer(small(), tmp_path / "a")
    assert default.config.variety_every == 4 * default.config.log_every
    assert default.judge is not None
    off = Trainer(small(variety_every=0), tmp_path / "b", callbacks=(rec := Metrics()))
    off.run()
    assert off.judge is None and not any("variety" in m for _, m in rec.seen)


def test_bench_quality_trains_scores_and_rescores_a_checkpoint(tmp_path, capsys):
    import json

    from sagan_core.bench import quality as bench_quality

    sets = ["g_ch=2", "d_ch=2", "z_dim=8", "batch_size=4", "steps=4", "log_every=2",
            "variety_every=2", "checkpoint_every=0", "sample_every=0"]  # fmt: skip
    argv = [a for s in sets for a in ("--set", s)] + ["--per-class", "3", "--quiet"]
    grid = tmp_path / "grid.png"
    run_dir = tmp_path / "run"
    assert bench_quality.main(argv + ["--run-dir", str(run_dir), "--grid", str(grid)]) == 0
    out = capsys.readouterr().out
    row = json.loads(out.split("JSON ", 1)[1])
    assert row["steps"] == 4 and row["variety_checks"] == 2  # steps 2 and 4
    assert [s for s, _, _ in row["curve"]] == [2, 4]
    for key in ("class_accuracy", "variety", "nearest_real", "train_s", "load_start"):
        assert row[key] >= 0, key
    assert grid.read_bytes().startswith(b"\x89PNG")
    checkpoint = sorted((run_dir / "checkpoints").glob("*.pt"))[-1]
    assert bench_quality.main(["--score", str(checkpoint), "--per-class", "3"]) == 0
    rescored = json.loads(capsys.readouterr().out.split("JSON ", 1)[1])
    assert rescored["class_accuracy"] >= 0 and "blocks.0" in rescored["z_share"]


# -- where pixels do not tell classes apart: the CNN judge ---------------------------------------


def test_coloured_shapes_are_judged_by_a_cnn_that_reads_the_shape():
    shapes = build_dataset(TrainConfig(dataset="color_shapes"))
    judge = VarietyJudge.fit(shapes.images, shapes.labels, shapes.num_classes)
    assert isinstance(judge.classifier, ImageClassifier)  # pixels read them at ~0.71
    assert judge.judge_accuracy >= 0.95
    # A red square asked for and a red disc drawn: the same colour, read as the wrong class.
    discs = shapes.images[shapes.labels == 0][:40]
    scores = judge.score_images(discs, torch.full((40,), 1))
    assert scores["class_accuracy"] <= 0.1


# -- telling the user a run is not learning (sagan_core.collapse) ---------------------------------


def test_collapse_watch_warns_once_per_class_after_the_first_quarter(judge, digits):
    collapsed = judge.score(RealImages(digits, one_per_class=True), n_per_class=20, seed=0)
    watch = CollapseWatch(digits.class_names, steps=1000, per_class=20)
    assert watch.check(100, collapsed) == [] and watch.check(200, collapsed) == []  # too early
    warnings = watch.check(300, collapsed)
    assert len(warnings) == 10  # every class is one image
    assert warnings[3].startswith(
        "not learning: class 3 ('3'): 20 near-identical samples (variety 0.00 of real) "
        "since step 100; try: diff_augment"
    )
    assert watch.check(400, collapsed) == []  # said once


def test_collapse_watch_warns_when_samples_ignore_their_class_and_not_when_healthy(judge, digits):
    ignoring = judge.score(RealImages(digits, ignore_class=True), n_per_class=20, seed=0)
    healthy = judge.score(RealImages(digits), n_per_class=20, seed=0)
    watch = CollapseWatch(digits.class_names, steps=1000, per_class=20)
    assert watch.check(500, ignoring) == []
    assert watch.check(600, healthy) == []  # the streak is broken: it starts again
    assert watch.check(700, ignoring) == []
    (warning,) = watch.check(800, ignoring)
    assert "samples do not follow the class asked for" in warning and "since step 700" in warning
    quiet = CollapseWatch(digits.class_names, steps=1000, per_class=20)
    assert all(quiet.check(s, healthy) == [] for s in range(100, 1100, 100))


def test_fitting_a_cnn_judge_leaves_the_trainers_random_state_alone(tmp_path):
    images, labels, names = make_shapes(per_class=30, seed=99)  # a set no other test judged
    shapes = ImageDataset(
        "shapes-99", torch.from_numpy(images).permute(0, 3, 1, 2), torch.from_numpy(labels), names
    )
    fitted = Trainer(small(dataset="color_shapes"), tmp_path / "a", dataset=shapes)
    assert isinstance(fitted.judge.classifier, ImageClassifier)  # fitted here: a CNN
    cached = Trainer(small(dataset="color_shapes"), tmp_path / "b", dataset=shapes)
    assert cached.judge is fitted.judge
    b = cached.G.state_dict()
    for name, a in fitted.G.state_dict().items():
        assert torch.equal(a, b[name]), name
