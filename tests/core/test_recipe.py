"""The recipe a job gets when it leaves fields out (sagan_core.recipe), and ADA's augmentation
probability (sagan_core.augment.AdaptiveAugment) in the trainer."""

import pytest
import torch

from sagan_core.augment import ADA_IMAGES, AdaptiveAugment, color, diff_augment
from sagan_core.checkpoint import load_checkpoint
from sagan_core.config import TrainConfig
from sagan_core.recipe import (
    ADA_POLICY,
    SMALL_DATA,
    augmentation_for,
    choose_preset,
    fill_augmentation,
)
from sagan_core.trainer import Trainer


def test_cpu_workers_get_tiny_and_gpu_workers_paper_with_the_reason():
    cpu = choose_preset(gpu=False, images=1200, resolution=32)
    assert cpu.preset == "tiny" and cpu.reason.startswith("CPU workers, 1,200 images at 32 px")
    gpu = choose_preset(gpu=True, images=None, resolution=64)
    assert (gpu.preset, gpu.reason) == ("paper", "GPU workers, 64 px")


def test_augmentation_follows_the_data_sets_size_and_a_given_policy_wins():
    assert augmentation_for(1797, None) == (ADA_POLICY, 0.6)
    assert augmentation_for(SMALL_DATA, None) == ("", 0.0)  # a large set: the paper's method
    assert augmentation_for(None, None) == ("", 0.0)  # unknown: the trainer decides later
    assert augmentation_for(1797, "translation") == ("translation", 0.0)  # yours, always on
    assert augmentation_for(1797, "") == ("", 0.0)


def test_fill_augmentation_fills_only_what_is_left_out_and_says_so():
    cfg = TrainConfig()
    assert "with ADA (target 0.6)" in fill_augmentation(cfg, 500)
    assert (cfg.diff_augment, cfg.ada_target) == (ADA_POLICY, 0.6)
    mine = TrainConfig(diff_augment="cutout")
    assert fill_augmentation(mine, 500) is None  # nothing chosen for the user: no line
    assert (mine.diff_augment, mine.ada_target) == ("cutout", 0.0)
    ada_only = TrainConfig(ada_target=0.7)  # ADA asked for on a large set: ADA's transforms
    fill_augmentation(ada_only, 10**6)
    assert (ada_only.diff_augment, ada_only.ada_target) == (ADA_POLICY, 0.7)


def test_augmentation_probability_applies_each_transform_to_that_share_of_images():
    x = torch.randn(4000, 3, 8, 8)
    assert torch.equal(diff_augment(x, ("color",), torch.tensor(0.0)), x)
    out = diff_augment(x, ("color",), torch.tensor(0.25))
    changed = (out != x).flatten(1).any(1).float().mean()
    assert 0.2 < float(changed) < 0.3
    torch.manual_seed(5)
    always = diff_augment(x, ("color",))
    torch.manual_seed(5)
    assert torch.equal(always, color(x))  # no p: every image, as DiffAugment published


def test_ada_raises_p_while_d_overfits_and_lowers_it_when_it_does_not():
    ada = AdaptiveAugment(("translation",), 0.6, torch.device("cpu"))
    for _ in range(3):
        ada.update(torch.tensor(1.0), 1000)  # D calls every real image real: overfitting
    assert float(ada.p) == pytest.approx(3000 / ADA_IMAGES)
    ada.update(torch.tensor(0.2), 1000)
    assert float(ada.p) == pytest.approx(2000 / ADA_IMAGES)
    for _ in range(50):
        ada.update(torch.tensor(-1.0), 1000)
    assert float(ada.p) == 0.0  # clamped
    off = AdaptiveAugment(("translation",), 0.0, torch.device("cpu"))
    off.update(torch.tensor(1.0), 10**6)
    assert not off.adaptive and float(off.p) == 0.0


def _config(**overrides) -> TrainConfig:
    fields = dict(
        dataset="digits", resolution=32, g_ch=2, d_ch=2, z_dim=8, batch_size=4, steps=6,
        log_every=2, checkpoint_every=3, sample_every=0, ema_start=1, ema_decay=0.9,
        device="cpu", seed=3, variety_every=0,
    )  # fmt: skip
    fields.update(overrides)
    return TrainConfig(**fields)


class _Metrics:
    def __init__(self):
        self.rows, self.notes = [], []

    def on_metrics(self, step, metrics):
        self.rows.append((step, metrics))

    def on_note(self, step, message):
        self.notes.append(message)

    def __getattr__(self, name):  # the other callbacks: nothing to record
        return lambda *a, **k: False if name == "should_stop" else None


def test_trainer_fills_the_recipe_from_the_data_and_resumes_with_its_p(tmp_path):
    rec = _Metrics()
    trainer = Trainer(_config(), tmp_path / "full", callbacks=[rec])
    assert (trainer.config.diff_augment, trainer.config.ada_target) == (ADA_POLICY, 0.6)
    full = trainer.run()
    assert rec.notes[0].startswith("augmentation translation,color,cutout with ADA")
    ps = [m["augment_p"] for _, m in rec.rows]
    assert len(ps) == 3 and max(ps) > 0  # p follows D from the first steps
    assert all(-1 <= m["d_real_sign"] <= 1 for _, m in rec.rows)
    saved = load_checkpoint(full.last_checkpoint)["augment"]["p"]
    assert saved == pytest.approx(ps[-1])

    torch.use_deterministic_algorithms(True)
    try:
        straight = Trainer(_config(), tmp_path / "a").run()
        half = Trainer(_config(steps=3), tmp_path / "b").run()
        resumed = Trainer(_config(), tmp_path / "c").run(resume_from=half.last_checkpoint)
    finally:
        torch.use_deterministic_algorithms(False)
    a, b = load_checkpoint(straight.last_checkpoint), load_checkpoint(resumed.last_checkpoint)
    assert a["augment"]["p"] == b["augment"]["p"]
    assert torch.equal(a["augment"]["rng"], b["augment"]["rng"])  # its own stream, resumed
    for k in a["G"]:
        assert torch.equal(a["G"][k], b["G"][k]), k


def test_augmentation_draws_from_its_own_stream_not_z_s(tmp_path):
    """Turning ADA on moves neither z's nor the data's random streams: while p stays 0 the run
    takes the steps it would take without augmentation."""
    a = Trainer(_config(diff_augment="", ada_target=0.0), tmp_path / "a").train_step()
    ada = Trainer(_config(), tmp_path / "b")  # (a trainer seeds torch's RNG: one at a time)
    assert ada.augment.adaptive and float(ada.augment.p) == 0.0
    b = ada.train_step()  # p is 0 during the first step
    assert float(a["d_loss"]) == float(b["d_loss"]) and float(a["g_loss"]) == float(b["g_loss"])
