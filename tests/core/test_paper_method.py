"""The SAGAN method, held by tests (issue #16): each test fails when a part of the paper changes.

Spectral norm in G and D, the attention widths, TTUR Adam, the D/G alternation, the EMA generator,
the projection discriminator, the published parameter counts and the hinge loss.
"""

from functools import lru_cache

import pytest
import torch
import torch.nn as nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import _SpectralNorm
from torch.nn.utils.spectral_norm import SpectralNorm as HookSpectralNorm

import sagan_core.trainer as trainer_module
from sagan_core.checkpoint import build_generator, load_checkpoint, load_generator
from sagan_core.config import TrainConfig
from sagan_core.ema import ema_update
from sagan_core.layers import ConditionalBatchNorm2d, SelfAttention
from sagan_core.losses import d_hinge_loss, g_hinge_loss
from sagan_core.models import Discriminator, Generator
from sagan_core.trainer import Trainer, TrainerCallbacks

# Every way the trainer can run; a new one (fused/compiled fast path, multi-GPU) joins this list
# with the config fields that select it, and the trainer tests below then hold it to the paper too.
PATHS = ["plain", "fast"]
PATH_FIELDS = {"plain": {"path": "plain"}, "fast": {"path": "fast"}}  # fast: compiled G and D
PRECISIONS = ["fp32", "bf16"]


def built_trainer(cfg: TrainConfig, run_dir, **kw) -> Trainer:
    """The one place tests build a Trainer (it builds data, networks and optimisers on creation)."""
    return Trainer(cfg, run_dir, **kw)


def tiny_config(path: str = "plain", **overrides) -> TrainConfig:
    """Smallest legal model on digits, on the CPU: a step takes well under a second."""
    fields = dict(
        dataset="digits", resolution=32, g_ch=2, d_ch=2, z_dim=8, batch_size=4, steps=4,
        log_every=1, checkpoint_every=0, sample_every=0, ema_start=1, ema_decay=0.9,
        device="cpu", seed=3,
    )  # fmt: skip
    fields.update(PATH_FIELDS[path])
    fields.update(overrides)
    return TrainConfig(**fields)


def small_models(resolution: int) -> tuple[Generator, Discriminator]:
    torch.manual_seed(0)
    return Generator(8, 5, resolution, ch=8), Discriminator(5, resolution, ch=8)


@lru_cache(maxsize=1)
def paper_models_128() -> tuple[Generator, Discriminator]:
    """The paper preset at 128px with 1,000 classes, on the meta device: shapes, no data.

    On the CPU the orthogonal inits and spectral-norm power iterations take ~20 s; meta takes ~2.
    """
    cfg = TrainConfig(
        dataset="folder", data_root="-", resolution=128, num_classes=1000, preset="paper"
    ).resolved()
    with torch.device("meta"):
        return build_generator(cfg), Discriminator(cfg.num_classes, cfg.resolution, cfg.d_ch)


def params(net: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in net.named_parameters()}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# -- 1. spectral normalisation ---------------------------------------------------------------

WEIGHTED = (nn.Conv2d, nn.Linear, nn.Embedding)


def is_spectrally_normalised(module: nn.Module) -> bool:
    """torch's spectral norm, as a parametrization (what layers.py uses) or as the older hook."""
    if parametrize.is_parametrized(module, "weight"):
        return any(isinstance(p, _SpectralNorm) for p in module.parametrizations.weight)
    return any(isinstance(h, HookSpectralNorm) for h in module._forward_pre_hooks.values())


def weighted_layers(net: nn.Module) -> dict[str, nn.Module]:
    return {name: m for name, m in net.named_modules() if isinstance(m, WEIGHTED)}


def cbn_embeddings(net: nn.Module) -> set[str]:
    """Names of the conditional batch norms' per-class gain and bias embeddings."""
    return {
        f"{name}.{part}"
        for name, m in net.named_modules()
        if isinstance(m, ConditionalBatchNorm2d)
        for part in ("gain", "bias")
    }


@pytest.mark.parametrize("resolution", [32, 128])
def test_every_discriminator_layer_is_spectrally_normalised(resolution):
    _, D = small_models(resolution)
    layers = weighted_layers(D)
    assert len(layers) > 10
    plain = [name for name, m in layers.items() if not is_spectrally_normalised(m)]
    assert plain == []


@pytest.mark.parametrize("resolution", [32, 128])
def test_every_generator_layer_but_the_batch_norm_embeddings_is_spectrally_normalised(resolution):
    G, _ = small_models(resolution)
    layers = weighted_layers(G)
    exempt = cbn_embeddings(G)
    assert exempt and exempt <= layers.keys()
    plain = [n for n, m in layers.items() if n not in exempt and not is_spectrally_normalised(m)]
    assert plain == []
    # The class gains and biases stay plain embeddings, so every gain starts at exactly 1.
    assert not any(is_spectrally_normalised(layers[n]) for n in exempt)


# -- 2. self-attention widths --------------------------------------------------------------------


def conv_shape(conv: nn.Conv2d) -> tuple[int, int, tuple[int, int]]:
    return conv.in_channels, conv.out_channels, conv.kernel_size


@pytest.mark.parametrize("resolution", [32, 128])
@pytest.mark.parametrize("net", ["G", "D"])
def test_attention_has_the_papers_widths_and_starts_with_zero_gamma(resolution, net):
    G, D = small_models(resolution)
    blocks = [m for m in {"G": G, "D": D}[net].modules() if isinstance(m, SelfAttention)]
    assert len(blocks) == 1
    for attn in blocks:
        C = attn.channels
        assert conv_shape(attn.f) == (C, C // 8, (1, 1))  # query
        assert conv_shape(attn.g) == (C, C // 8, (1, 1))  # key
        assert conv_shape(attn.h) == (C, C // 2, (1, 1))  # value
        assert conv_shape(attn.o) == (C // 2, C, (1, 1))  # back to C
        assert attn.gamma.shape == ()
        assert float(attn.gamma.detach()) == 0.0  # attention starts switched off


# -- 3. TTUR -------------------------------------------------------------------------------------


def adam_settings(opt: torch.optim.Optimizer) -> list[tuple]:
    assert isinstance(opt, torch.optim.Adam)
    return [(g["lr"], tuple(g["betas"]), g["weight_decay"]) for g in opt.param_groups]


def param_ids(params) -> list[int]:
    return sorted(id(p) for p in params)


@pytest.mark.parametrize("path", PATHS)
def test_paper_preset_gives_g_and_d_their_ttur_learning_rates(tmp_path, path):
    t = built_trainer(tiny_config(path, preset="paper"), tmp_path)
    assert (t.config.lr_g, t.config.lr_d) == (1e-4, 4e-4)
    assert adam_settings(t.opt_g) == [(1e-4, (0.0, 0.9), 0.0)]
    assert adam_settings(t.opt_d) == [(4e-4, (0.0, 0.9), 0.0)]


@pytest.mark.parametrize("path", PATHS)
def test_custom_learning_rates_reach_their_own_optimisers(tmp_path, path):
    t = built_trainer(tiny_config(path, preset="paper", lr_g=3e-4, lr_d=5e-5), tmp_path)
    assert adam_settings(t.opt_g) == [(3e-4, (0.0, 0.9), 0.0)]
    assert adam_settings(t.opt_d) == [(5e-5, (0.0, 0.9), 0.0)]


@pytest.mark.parametrize("path", PATHS)
def test_each_optimiser_holds_exactly_its_own_networks_parameters(tmp_path, path):
    t = built_trainer(tiny_config(path), tmp_path)
    for opt, net in ((t.opt_g, t.G), (t.opt_d, t.D)):
        held = [p for group in opt.param_groups for p in group["params"]]
        assert param_ids(held) == param_ids(net.parameters())


# -- 4. one training step ------------------------------------------------------------------------


def record_optimiser_steps(t: Trainer) -> list[dict]:
    """Wrap opt_d.step and opt_g.step; each call appends the networks' state around it."""
    calls = []

    def spy(name, opt):
        step = opt.step

        def wrapped(*args, **kwargs):
            call = {"opt": name, "G_before": params(t.G), "D_before": params(t.D)}
            call["D_grads"] = [None if p.grad is None else p.grad.clone() for p in t.D.parameters()]
            out = step(*args, **kwargs)
            calls.append(call | {"G_after": params(t.G), "D_after": params(t.D)})
            return out

        opt.step = wrapped

    spy("d", t.opt_d)
    spy("g", t.opt_g)
    return calls


def same_grads(a: list, b: list) -> bool:
    return all(
        (x is None and y is None) or (x is not None and y is not None and torch.equal(x, y))
        for x, y in zip(a, b, strict=True)
    )


# bf16 on a CPU runs eager convolutions through torch's slow fallback kernel, and compiling them
# took minutes: the fast path is checked in bf16 where it runs bf16, on CUDA.
PATH_PRECISIONS = [
    (path, precision)
    for path in PATHS
    for precision in PRECISIONS
    if not (path == "fast" and precision == "bf16" and not torch.cuda.is_available())
]


@pytest.mark.parametrize(("path", "precision"), PATH_PRECISIONS)
@pytest.mark.parametrize("d_steps", [1, 2])
def test_train_step_updates_d_only_in_d_steps_and_g_only_in_the_g_step(
    tmp_path, path, precision, d_steps
):
    t = built_trainer(tiny_config(path, precision=precision, d_steps=d_steps), tmp_path)
    G0 = params(t.G)
    calls = record_optimiser_steps(t)
    t.train_step()

    assert [c["opt"] for c in calls] == ["d"] * d_steps + ["g"]
    *d_calls, g_call = calls
    for c in d_calls:  # D moves, G is held
        assert not same(c["D_before"], c["D_after"])
        assert same(c["G_before"], G0) and same(c["G_after"], G0)
    assert same(g_call["G_before"], G0)  # G moves only in its own step
    assert not same(g_call["G_after"], G0)
    last_d = d_calls[-1]["D_after"]
    assert same(g_call["D_before"], last_d) and same(g_call["D_after"], last_d)
    assert same(params(t.D), last_d) and same(params(t.G), g_call["G_after"])
    # The G step's backward leaves D's gradients as the last D step left them.
    assert same_grads(g_call["D_grads"], d_calls[-1]["D_grads"])
    assert all(p.requires_grad for p in t.D.parameters())


# -- 5. EMA of G ---------------------------------------------------------------------------------


def test_ema_update_gives_decay_times_ema_plus_one_minus_decay_times_model():
    ema, model = (nn.Sequential(nn.Linear(2, 1), nn.BatchNorm1d(1)) for _ in range(2))
    with torch.no_grad():
        ema[0].weight.copy_(torch.tensor([[1.0, 2.0]]))
        model[0].weight.copy_(torch.tensor([[3.0, 6.0]]))
        model[1].running_mean.fill_(5.0)
    ema_update(ema, model, decay=0.75)
    assert ema[0].weight.tolist() == [[1.5, 3.0]]  # 0.75 * [1, 2] + 0.25 * [3, 6]
    assert ema[1].running_mean.tolist() == [5.0]  # buffers are copied


class Snapshots(TrainerCallbacks):
    """After each step's EMA update (metrics come after it): copies of G and G_ema."""

    def __init__(self):
        self.trainer, self.at = None, {}

    def on_metrics(self, step, metrics):
        self.at[step] = (params(self.trainer.G), params(self.trainer.G_ema))


@pytest.mark.parametrize("path", PATHS)
def test_g_ema_copies_g_until_ema_start_then_moves_by_the_decay(tmp_path, path):
    snaps = Snapshots()
    cfg = tiny_config(path, steps=4, ema_start=2, ema_decay=0.9)
    t = snaps.trainer = built_trainer(cfg, tmp_path, callbacks=snaps)
    t.run()
    assert sorted(snaps.at) == [1, 2, 3, 4]
    for step in (1, 2):
        G, ema = snaps.at[step]
        assert same(ema, G), f"step {step}: G_ema is not a copy of G before ema_start"
    for step in (3, 4):
        (G, ema), (_, prev) = snaps.at[step], snaps.at[step - 1]
        assert not same(ema, G), f"step {step}: G_ema still copies G after ema_start"
        for k in ema:
            torch.testing.assert_close(ema[k], 0.9 * prev[k] + 0.1 * G[k], atol=1e-7, rtol=1e-6)


@pytest.mark.parametrize("path", PATHS)
def test_evaluation_and_training_samples_use_the_ema_generator(tmp_path, path, monkeypatch):
    seen = []

    def note(kind, module):
        seen.append((kind, params(module), params(t.G), params(t.G_ema)))

    def evaluator(step, G):
        note("eval", G)
        return {"fid": 1.0}

    def spy_grid(G, *args, **kwargs):  # the training run's sample grid
        note("sample", G)
        return real_grid(G, *args, **kwargs)

    real_grid = trainer_module.class_rows_png
    monkeypatch.setattr(trainer_module, "class_rows_png", spy_grid)
    cfg = tiny_config(path, steps=3, eval_every=2, sample_every=2)
    t = built_trainer(cfg, tmp_path, evaluator=evaluator)
    t.run()
    assert [kind for kind, *_ in seen] == ["sample", "eval"] * 2  # steps 2 and 3 (final)
    for kind, received, G, G_ema in seen:
        assert same(received, G_ema) and not same(received, G), kind


@pytest.mark.parametrize("path", PATHS)
def test_load_generator_returns_the_checkpoints_ema_weights(tmp_path, path):
    result = built_trainer(tiny_config(path, steps=3), tmp_path).run()
    ckpt = load_checkpoint(result.last_checkpoint)
    G, _, _ = load_generator(result.last_checkpoint)
    loaded = G.state_dict()
    assert loaded.keys() == ckpt["G_ema"].keys()
    assert all(torch.equal(loaded[k], ckpt["G_ema"][k]) for k in loaded), "not G_ema's weights"
    assert not all(torch.equal(loaded[k], ckpt["G"][k]) for k in loaded), "G's weights"


# -- 6. projection discriminator -------------------------------------------------------------


def small_discriminator() -> Discriminator:
    torch.manual_seed(0)
    return Discriminator(num_classes=5, resolution=32, ch=2).eval()  # eval: SN weights fixed


def test_discriminator_logit_depends_on_the_class():
    D = small_discriminator()
    x = torch.randn(1, 3, 32, 32).expand(2, -1, -1, -1)  # one image, twice
    with torch.no_grad():
        logits = D(x, torch.tensor([0, 3]))
    assert abs(float(logits[0] - logits[1])) > 1e-4


def test_discriminator_logit_is_linear_plus_class_embedding_inner_product():
    D = small_discriminator()
    features = []
    D.linear.register_forward_pre_hook(lambda m, args: features.append(args[0]))
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 3, 4])
    with torch.no_grad():
        logits = D(x, y)
        (h,) = features  # (B, C): pooled features entering the final linear
        unconditional = D.linear(h).squeeze(1)
        projection = (D.embed.weight[y] * h).sum(dim=1)  # <embed(y), h>
    assert projection.abs().max() > 1e-3
    torch.testing.assert_close(logits, unconditional + projection, atol=1e-5, rtol=1e-5)


# -- 7. parameter counts -------------------------------------------------------------------------


def count(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())  # spectral norm: its `original` weights


def test_paper_preset_at_128px_has_the_published_parameter_counts():
    G, D = paper_models_128()
    n_g, n_d = count(G), count(D)
    print(f"SAGAN 128px, 1000 classes: G {n_g:,} + D {n_d:,} = {n_g + n_d:,} parameters")
    assert (n_g, n_d) == (42_017_412, 39_448_258)  # a width change must change these on purpose
    assert n_g == pytest.approx(42.0e6, rel=0.01)  # the published 42.0M + 39.5M = 81.5M
    assert n_d == pytest.approx(39.5e6, rel=0.01)


# -- 8. hinge loss -------------------------------------------------------------------------------
# Hand-computed loss values: tests/core/test_layers_models.py::test_hinge_losses_give_known_values.


def test_raising_fake_logits_lowers_the_generator_loss():
    logits = torch.tensor([-2.0, 0.0, 0.5, 3.0], requires_grad=True)
    g_hinge_loss(logits).backward()
    assert logits.grad.tolist() == [-0.25] * 4  # d(-mean)/dlogit: no margin, never saturates


def test_discriminator_hinge_gradient_vanishes_beyond_the_margins():
    real = torch.tensor([2.0, 0.5, -1.0, 1.5], requires_grad=True)  # beyond +1: no gradient
    fake = torch.tensor([-2.0, 0.0, 1.0, -1.5], requires_grad=True)  # beyond -1: no gradient
    loss = d_hinge_loss(real, fake)
    loss.backward()
    assert float(loss.detach()) == pytest.approx((0.5 + 2.0) / 4 + (1.0 + 2.0) / 4)
    assert real.grad.tolist() == [0.0, -0.25, -0.25, 0.0]
    assert fake.grad.tolist() == [0.0, 0.25, 0.25, 0.0]
