"""sagan_core.metric_names is what the trainer and the scores really write (the API accepts a
requested metric name by it before the name has rows)."""

from __future__ import annotations

from sagan_core import metric_names
from sagan_core.config import TrainConfig
from sagan_core.trainer import Trainer, TrainerCallbacks


class Names(TrainerCallbacks):
    def __init__(self) -> None:
        self.names: set[str] = set()

    def on_metrics(self, step: int, metrics: dict[str, float]) -> None:
        self.names |= set(metrics)


def test_every_name_a_short_training_run_writes_is_known(tmp_path):
    cfg = TrainConfig(
        dataset="digits", resolution=32, g_ch=2, d_ch=2, z_dim=8, batch_size=4, steps=2,
        log_every=1, checkpoint_every=0, sample_every=0, ema_start=1, ema_decay=0.9,
        diversity_weight=0.1, variety_every=2, device="cpu", seed=0,
    )  # fmt: skip
    names = Names()
    Trainer(cfg, tmp_path, callbacks=[names]).run()
    assert {"d_loss", "g_loss", "images_per_s"} <= names.names
    unknown = sorted(n for n in names.names if not metric_names.can_write("train", n))
    assert not unknown, f"add these to sagan_core.metric_names: {unknown}"


def test_every_score_is_known_to_both_kinds():
    from sagan_core.evaluate.scores import METRICS

    for name in METRICS:
        assert metric_names.can_write("train", name) and metric_names.can_write("evaluate", name)


def test_names_by_kind_and_pattern():
    assert metric_names.can_write("train", "gamma_g/blocks.2.attn")
    assert metric_names.can_write("evaluate", "fid_class_12")
    assert not metric_names.can_write("evaluate", "fid_class_x")
    assert not metric_names.can_write("evaluate", "d_loss")
    assert not metric_names.can_write("train", "d_los")
    assert not metric_names.can_write("other", "d_loss")
    assert "fid_class_<k>" in metric_names.listed("evaluate")
