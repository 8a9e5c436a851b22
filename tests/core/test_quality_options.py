"""The options that issue #11 measured (hierarchical z, DiffAugment, class warm-up, the diversity
term) and the presets that choose them: the paper preset keeps the paper's method exactly."""

import pytest
import torch
import torch.nn as nn
from torch.nn.utils import parametrize

from sagan_core.augment import cutout, diff_augment, parse_policy, translation
from sagan_core.checkpoint import build_generator, load_generator, save_checkpoint
from sagan_core.config import ConfigError, TrainConfig
from sagan_core.layers import ConditionalBatchNorm2d, LinearConditionalBatchNorm2d
from sagan_core.losses import mode_seeking_ratio
from sagan_core.models import Generator, z_chunks
from sagan_core.trainer import Trainer


def small(**overrides) -> TrainConfig:
    fields = dict(
        dataset="digits", resolution=32, g_ch=2, d_ch=2, z_dim=8, batch_size=4, steps=2,
        log_every=1, checkpoint_every=0, sample_every=0, variety_every=0, device="cpu", seed=3,
    )  # fmt: skip
    return TrainConfig(**{**fields, **overrides})


# -- presets -------------------------------------------------------------------------------------


def test_digits_defaults_fill_steps_intervals_and_the_diversity_term_from_the_tiny_preset():
    cfg = TrainConfig.from_dict({"dataset": "digits"}).validate()
    assert (cfg.steps, cfg.checkpoint_every, cfg.sample_every) == (None, None, None)
    r = cfg.resolved().validate()
    assert (r.preset, r.g_ch, r.batch_size, r.lr_g, r.lr_d) == ("tiny", 4, 32, 1e-3, 2e-3)
    assert (r.steps, r.checkpoint_every, r.sample_every) == (2000, 250, 250)
    assert (r.z_mode, r.class_warmup, r.diversity_weight) == ("input", 0, 0.07)
    # the data set's size decides (sagan_core.recipe), in the API or in the trainer
    assert (r.diff_augment, r.ada_target, r.variety_every) == (None, None, None)


def test_paper_preset_keeps_the_papers_method_and_run_length():
    r = TrainConfig(dataset="synthetic", preset="paper").resolved()
    assert (r.steps, r.checkpoint_every, r.sample_every) == (10000, 1000, 1000)
    assert (r.z_mode, r.class_warmup, r.diversity_weight) == ("input", 0, 0.0)
    assert (r.diff_augment, r.ada_target) == (None, None)  # the data set's size decides


def test_user_values_beat_the_preset():
    r = TrainConfig(steps=7, checkpoint_every=0, sample_every=3, diversity_weight=0.0).resolved()
    assert (r.steps, r.checkpoint_every, r.sample_every, r.diversity_weight) == (7, 0, 3, 0.0)


@pytest.mark.parametrize(
    "field, value",
    [
        ("z_mode", "everywhere"),
        ("diff_augment", "translation,flip"),
        ("class_warmup", -1),
        ("diversity_weight", -0.1),
        ("variety_every", -1),
        ("ada_target", 1.0),
        ("ada_target", -0.1),
    ],
)
def test_bad_option_values_name_their_field(field, value):
    with pytest.raises(ConfigError) as e:
        TrainConfig.from_dict({field: value}).validate()
    assert e.value.field == field


def test_hierarchical_z_needs_a_z_for_every_block():
    with pytest.raises(ConfigError) as e:
        TrainConfig(z_mode="hierarchical", z_dim=3).validate()  # 32px: 3 blocks + the input
    assert e.value.field == "z_dim"
    assert z_chunks(130, 3) == [34, 32, 32, 32]


# -- hierarchical z ------------------------------------------------------------------------------


def test_hierarchical_z_reaches_every_block_and_keeps_spectral_norm():
    torch.manual_seed(0)
    G = Generator(16, 5, 32, ch=2, z_mode="hierarchical").eval()
    cbns = [m for m in G.modules() if isinstance(m, LinearConditionalBatchNorm2d)]
    assert len(cbns) == 6 and not any(isinstance(m, ConditionalBatchNorm2d) for m in G.modules())
    plain = [
        name
        for name, m in G.named_modules()
        if isinstance(m, nn.Conv2d | nn.Linear) and not parametrize.is_parametrized(m, "weight")
    ]
    assert plain == []  # every conv and linear, the new gain/bias linears too
    z, y = torch.randn(2, 16), torch.tensor([1, 1])
    with torch.no_grad():
        base = G(z, y)
        late = z.clone()
        late[:, -4:] += 1.0  # only the last block's chunk
        assert not torch.allclose(G(late, y), base)
    assert G(z, y).shape == (2, 3, 32, 32)


def test_an_old_checkpoint_without_z_mode_loads_as_the_papers_g(tmp_path):
    cfg = small().resolved()
    cfg.num_classes = 10
    G = build_generator(cfg)
    old = {k: v for k, v in cfg.to_dict().items() if k != "z_mode"}
    save_checkpoint(tmp_path / "old.pt", G_ema=G.state_dict(), config=old, class_names=["0"] * 10)
    loaded, _, _ = load_generator(tmp_path / "old.pt")
    assert loaded.z_mode == "input"


def test_resuming_with_another_z_mode_is_refused(tmp_path):
    first = Trainer(small(z_mode="input"), tmp_path / "a").run()
    with pytest.raises(ConfigError) as e:
        Trainer(small(z_mode="hierarchical", steps=3), tmp_path / "b").run(first.last_checkpoint)
    assert e.value.field == "z_mode"


# -- DiffAugment ---------------------------------------------------------------------------------


def test_augmentations_keep_shapes_move_content_and_pass_gradients():
    torch.manual_seed(0)
    x = torch.randn(16, 3, 32, 32, requires_grad=True)
    for fn in (translation, cutout):
        out = fn(x)
        assert out.shape == x.shape and not torch.equal(out, x)
        out.sum().backward()
        assert x.grad is not None and x.grad.abs().sum() > 0
        x.grad = None
    assert diff_augment(x, ()) is x
    assert parse_policy(" translation, cutout ") == ("translation", "cutout")
    with pytest.raises(ValueError):
        parse_policy("flip")


def test_cutout_zeroes_a_half_size_square():
    torch.manual_seed(1)
    out = cutout(torch.ones(8, 1, 32, 32))
    zeros = (out == 0).flatten(1).sum(1)
    assert (zeros > 0).all() and (zeros <= 16 * 16).all()


def test_d_sees_augmented_real_and_fake_images(tmp_path, monkeypatch):
    t = Trainer(small(diff_augment="translation,cutout"), tmp_path)
    seen = []
    real_forward = t.D.forward
    monkeypatch.setattr(t.D, "forward", lambda x, y: seen.append(x.detach()) or real_forward(x, y))
    torch.manual_seed(0)
    t.train_step()
    d_batch = seen[0]  # (2B, ...): real then fake
    cut = (d_batch == 0).flatten(1).sum(1)
    assert (cut >= 16).all()  # every image D saw has a cut-out square, real and fake


# -- class warm-up and the diversity term --------------------------------------------------------


def test_class_warmup_fades_the_projection_term_in(tmp_path):
    t = Trainer(small(class_warmup=4, steps=5), tmp_path)
    weights = []
    for _ in range(5):
        t.train_step()
        weights.append(float(t.D.class_weight))
        t.step += 1
    assert weights == [0.25, 0.5, 0.75, 1.0, 1.0]


def test_diversity_term_pairs_samples_of_one_class(tmp_path, monkeypatch):
    t = Trainer(small(diversity_weight=0.1, batch_size=6), tmp_path)
    classes = []
    real_forward = t.G.forward
    monkeypatch.setattr(t.G, "forward", lambda z, y: classes.append(y) or real_forward(z, y))
    stats = t.train_step()
    y = classes[-1]  # the G step's batch
    assert torch.equal(y[:3], y[3:6])
    assert stats["g_spread"] > 0


def test_mode_seeking_ratio_is_image_distance_over_z_distance():
    x = torch.zeros(4, 1, 2, 2)
    x[2:] = 1.0
    z = torch.zeros(4, 3)
    z[2:] = 2.0
    assert float(mode_seeking_ratio(x, z, 2)) == pytest.approx(0.5)
