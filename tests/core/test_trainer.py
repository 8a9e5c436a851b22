import math

import pytest
import torch

from sagan_core.checkpoint import load_checkpoint, load_generator
from sagan_core.config import TrainConfig
from sagan_core.run_dir import RunDirectoryWriter
from sagan_core.trainer import DivergedError, Trainer, TrainerCallbacks


def tiny_config(**overrides) -> TrainConfig:
    """Smallest legal model on digits: a few steps take well under a second each."""
    fields = dict(
        dataset="digits", resolution=32, g_ch=2, d_ch=2, z_dim=8, batch_size=4, steps=4,
        log_every=2, checkpoint_every=2, sample_every=0, ema_start=1, ema_decay=0.9,
        device="cpu", seed=3,
    )  # fmt: skip
    fields.update(overrides)
    return TrainConfig(**fields)


class Recorder(TrainerCallbacks):
    def __init__(self, stop_at=None):
        self.metrics, self.checkpoints, self.samples, self.stop_at = [], [], [], stop_at

    def on_metrics(self, step, metrics):
        self.metrics.append((step, metrics))

    def on_checkpoint(self, step, path, tags):
        self.checkpoints.append((step, path, tags))

    def on_samples(self, step, png):
        self.samples.append((step, png))

    def should_stop(self, step):
        return self.stop_at is not None and step >= self.stop_at


def _weights(path):
    ckpt = load_checkpoint(path)
    return {f"{net}.{k}": v for net in ("G", "D", "G_ema") for k, v in ckpt[net].items()}


def test_resumed_run_matches_uninterrupted_run(tmp_path):
    torch.use_deterministic_algorithms(True)
    try:
        full = Trainer(tiny_config(steps=4), tmp_path / "full").run()
        half = Trainer(tiny_config(steps=2), tmp_path / "half").run()
        resumed = Trainer(tiny_config(steps=4), tmp_path / "resumed").run(
            resume_from=half.last_checkpoint
        )
    finally:
        torch.use_deterministic_algorithms(False)
    assert (full.step, resumed.step) == (4, 4)
    a, b = _weights(full.last_checkpoint), _weights(resumed.last_checkpoint)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    opt_a, opt_b = load_checkpoint(full.last_checkpoint), load_checkpoint(resumed.last_checkpoint)
    assert torch.equal(opt_a["opt_d"]["state"][0]["exp_avg"], opt_b["opt_d"]["state"][0]["exp_avg"])


def test_callbacks_get_metrics_checkpoints_and_samples(tmp_path):
    rec = Recorder()
    run_files = RunDirectoryWriter(tmp_path)  # metrics.jsonl and sample PNGs, as the CLI keeps them
    result = Trainer(tiny_config(sample_every=4), tmp_path, callbacks=[rec, run_files]).run()
    assert result.step == 4 and not result.stopped
    steps = [s for s, _ in rec.metrics]
    assert steps == [2, 4]
    m = rec.metrics[-1][1]
    for key in ("d_loss", "g_loss", "d_real", "d_fake", "gamma_g", "gamma_d", "images_per_s",
                "lr_g", "lr_d", "tflops"):  # fmt: skip
        assert math.isfinite(m[key]), key
    assert m["tflops"] > 0 and m["images_per_s"] > 0
    assert [(s, t) for s, _, t in rec.checkpoints] == [(2, {"latest"}), (4, {"latest", "final"})]
    assert result.last_checkpoint == rec.checkpoints[-1][1] and result.last_checkpoint.exists()
    assert rec.samples[0][1].startswith(b"\x89PNG")
    assert (tmp_path / "samples" / "step-0000004.png").read_bytes() == rec.samples[0][1]
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 2
    G, cfg, names = load_generator(result.last_checkpoint)
    assert not G.training and cfg.num_classes == 10 and names[3] == "3"


def test_should_stop_saves_a_checkpoint_and_returns_stopped(tmp_path):
    rec = Recorder(stop_at=3)
    result = Trainer(tiny_config(steps=10, checkpoint_every=0), tmp_path, callbacks=rec).run()
    assert result.stopped and result.step == 3
    assert rec.checkpoints == [(3, result.last_checkpoint, {"latest"})]
    assert load_checkpoint(result.last_checkpoint)["step"] == 3


class PoisonAt(TrainerCallbacks):
    """Poisons a D weight with NaN just before the given step runs."""

    def __init__(self, trainer, step):
        self.trainer, self.step = trainer, step

    def should_stop(self, step):
        if step == self.step - 1:
            with torch.no_grad():
                self.trainer.D.linear.parametrizations.weight.original.fill_(float("nan"))
        return False


def test_nan_loss_raises_diverged_error_and_keeps_earlier_checkpoint(tmp_path):
    trainer = Trainer(tiny_config(steps=6), tmp_path)
    trainer.callbacks = PoisonAt(trainer, step=3)
    with pytest.raises(DivergedError, match="step 3") as e:
        trainer.run()
    assert e.value.step == 3
    ckpts = sorted((tmp_path / "checkpoints").glob("*.pt"))
    assert [p.name for p in ckpts] == ["step-0000002.pt"]
    G, _, _ = load_generator(ckpts[0])
    assert all(torch.isfinite(p).all() for p in G.parameters())


def test_evaluator_results_are_reported_and_best_fid_is_tagged(tmp_path):
    fids = iter([5.0, 7.0])
    rec = Recorder()
    trainer = Trainer(
        tiny_config(eval_every=2, checkpoint_every=0), tmp_path, callbacks=rec,
        evaluator=lambda step, G: {"fid": next(fids)},
    )  # fmt: skip
    trainer.run()
    assert [(s, m) for s, m in rec.metrics if "fid" in m] == [(2, {"fid": 5.0}), (4, {"fid": 7.0})]
    assert [(s, t) for s, _, t in rec.checkpoints] == [
        (2, {"latest", "best"}), (4, {"latest", "final"}),
    ]  # fmt: skip
    assert rec.checkpoints[0][1].exists()  # the best checkpoint is kept beside the latest
