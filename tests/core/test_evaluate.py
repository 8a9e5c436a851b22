"""Evaluation: IS, FID, KID, per-class FID, the reference statistics cache, the generator wrapper.

No download: an InceptionV3 of torch-fidelity's architecture is randomly initialised, saved with
torch.save and loaded through the same code path as the real weights file.
"""

import math
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from random_inception import random_inception_state_dict
from torch import nn
from torch_fidelity.metric_fid import fid_statistics_to_metric

from sagan_core import evaluate
from sagan_core.evaluate import (
    INCEPTION_WEIGHTS_FILE,
    WEIGHTS_ENV,
    DirectoryStatsCache,
    EvaluationError,
    FeatureExtractor,
    Features,
    ReferenceStats,
    calc_metrics,
    evaluate_generator,
    evaluate_images,
    frechet_distance,
    generate_images,
    make_dataset_evaluator,
    make_evaluator,
    reference_key_for,
    reference_statistics,
    stats_key,
)

N = 16  # images per set: Inception on 2 CPU cores costs tens of ms per image


@pytest.fixture(scope="module", autouse=True)
def one_cpu_thread():
    """Inception on a shared 2-core box: one thread is steady, two stall behind other processes."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("inception") / "random-inception.pth"
    torch.save(random_inception_state_dict(), path)
    return path


@pytest.fixture(scope="module")
def extractor(weights_file):
    ex = FeatureExtractor(weights_file, "cpu")
    # test speed only: feed Inception 107px instead of 299px (same weights, same code otherwise)
    ex.model.INPUT_IMAGE_SIZE = 107
    return ex


def noise_images(n: int = N, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)


def flat_images(n: int = N, seed: int = 1) -> torch.Tensor:
    """One random colour per image: nothing like noise."""
    g = torch.Generator().manual_seed(seed)
    colours = torch.randint(0, 256, (n, 3, 1, 1), dtype=torch.uint8, generator=g)
    return colours.expand(n, 3, 32, 32).contiguous()


@pytest.fixture(scope="module")
def noise_features(extractor):
    return extractor.extract(noise_images(), batch_size=8)


@pytest.fixture(scope="module")
def flat_features(extractor):
    return extractor.extract(flat_images(), batch_size=8)


class TinyGenerator(nn.Module):
    """G(z, y) -> (B, 3, R, R) in [-1, 1], with the attributes the trainer's G has."""

    def __init__(self, z_dim=8, num_classes=3, resolution=16):
        super().__init__()
        self.z_dim, self.num_classes, self.resolution = z_dim, num_classes, resolution
        self.embed = nn.Embedding(max(num_classes, 1), z_dim)
        self.fc = nn.Linear(z_dim, 3 * resolution * resolution)

    def forward(self, z, y):
        h = z if y is None else z + self.embed(y)
        return torch.tanh(3 * self.fc(h)).view(-1, 3, self.resolution, self.resolution)


class LabelPainter(nn.Module):
    """Paints each image with its class index, so the drawn labels can be read back."""

    z_dim, resolution = 4, 2

    def __init__(self, num_classes):
        super().__init__()
        self.num_classes = num_classes
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, z, y):
        value = (y.float() * 10 / 127.5 - 1) * self.scale  # uint8 value 10 * y
        return value.view(-1, 1, 1, 1).expand(-1, 3, self.resolution, self.resolution)


class CountingCache(DirectoryStatsCache):
    def __init__(self, root):
        super().__init__(root)
        self.gets, self.hits, self.puts = 0, 0, []

    def get(self, key):
        self.gets += 1
        data = super().get(key)
        self.hits += data is not None
        return data

    def put(self, key, data):
        self.puts.append(key)
        super().put(key, data)


# ---------------------------------------------------------------- metrics


def test_fid_of_a_set_against_itself_is_zero(noise_features):
    reference = ReferenceStats.from_features(noise_features.pool)
    assert abs(calc_metrics(["fid"], noise_features, reference)["fid"]) < 1e-6


def test_fid_against_a_clearly_different_set_is_large(noise_features, flat_features):
    reference = ReferenceStats.from_features(flat_features.pool)
    assert calc_metrics(["fid"], noise_features, reference)["fid"] > 10


def test_kid_is_near_zero_against_itself_and_large_against_a_different_set(
    noise_features, flat_features
):
    same = calc_metrics(["kid"], noise_features, ReferenceStats.from_features(noise_features.pool))
    other = calc_metrics(["kid"], noise_features, ReferenceStats.from_features(flat_features.pool))
    assert abs(same["kid"]) < 1e-3
    assert other["kid"] > 100 * abs(same["kid"])
    assert other["kid"] > 1e-2


def _inception_score_by_hand(logits: torch.Tensor) -> float:
    """exp(E_x[KL(p(y|x) || p(y))]) in float64 numpy, over one split."""
    z = logits.double().numpy()
    log_p = z - z.max(axis=1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(axis=1, keepdims=True))  # log p(y|x)
    p = np.exp(log_p)
    log_marginal = np.log(p.mean(axis=0))  # log p(y)
    return float(np.exp((p * (log_p - log_marginal)).sum(axis=1).mean()))


def test_inception_score_is_the_closed_form_on_fixed_logits(noise_features, flat_features):
    # Three images are one split, so the score is exactly the closed form (no shuffle, no mean).
    spread = 4.0 * torch.randn(3, 1008, generator=torch.Generator().manual_seed(3))
    for logits in (spread, noise_features.logits[:3], flat_features.logits[:3]):
        result = calc_metrics(["is"], Features(pool=torch.zeros(3, 2048), logits=logits))
        assert result["is"] == pytest.approx(_inception_score_by_hand(logits), rel=1e-9)
        assert result["is_std"] == 0.0
    assert _inception_score_by_hand(spread) > 2.0  # a value far from the trivial 1


def _confident(classes: list[int], margin: float = 60.0) -> Features:
    """Features whose IS logits put (all but) the whole probability on one class each."""
    logits = torch.zeros(len(classes), 1008)
    logits[torch.arange(len(classes)), torch.tensor(classes)] = margin
    return Features(pool=torch.zeros(len(classes), 2048), logits=logits)


def test_inception_score_has_its_known_values():
    # exp(E[KL(p(y|x) || p(y))]): K classes, each image sure of one, evenly spread -> K;
    # every image sure of the same class -> 1; the closed form for two even halves -> 2.
    assert calc_metrics(["is"], _confident([0] * 400))["is"] == pytest.approx(1.0, abs=1e-6)
    four = calc_metrics(["is"], _confident([0, 1, 2, 3] * 250))
    assert four["is"] == pytest.approx(4.0, rel=0.02)
    two = calc_metrics(["is"], _confident([5, 9] * 300))
    assert two["is"] == pytest.approx(2.0, rel=0.02) and two["is_std"] < 0.05


@pytest.mark.parametrize("n", [20, 200])  # N <= D and N > D take different routes
def test_frechet_distance_matches_torch_fidelity(n):
    g = torch.Generator().manual_seed(n)
    fake = torch.randn(n, 64, generator=g)
    real = 1.5 * torch.randn(300, 64, generator=g) + 0.3
    ref = ReferenceStats.from_features(real)
    fake_stats = ReferenceStats.from_features(fake)
    expected = fid_statistics_to_metric(
        {"mu": fake_stats.mu, "sigma": fake_stats.sigma},
        {"mu": ref.mu, "sigma": ref.sigma},
        verbose=False,
    )["frechet_inception_distance"]
    assert frechet_distance(fake, ref.mu, ref.sigma) == pytest.approx(expected, rel=1e-6)


def test_evaluate_images_compares_two_image_sets(extractor):
    noise, flat = noise_images(8, seed=5), flat_images(8, seed=6)
    same = evaluate_images(noise, noise, extractor=extractor, metrics=("fid",))
    other = evaluate_images(noise, flat, extractor=extractor, metrics=("fid", "is"))
    assert abs(same["fid"]) < 1e-6
    assert other["fid"] > 10
    alone = calc_metrics(["is"], extractor.extract(noise, 64))  # the fake set's own score
    assert other["is"] == pytest.approx(alone["is"], rel=1e-6)


def test_unknown_metric_is_refused(noise_features):
    with pytest.raises(EvaluationError, match="unknown metrics.*available"):
        calc_metrics(["fidd"], noise_features)


# ---------------------------------------------------------------- reference statistics cache


def test_second_evaluation_reuses_the_cached_reference_statistics(extractor, tmp_path):
    G = TinyGenerator()
    cache = CountingCache(tmp_path)
    key = reference_key_for("noise", 32, "train")
    kwargs = dict(metrics=("is", "fid", "kid"), extractor=extractor, batch_size=8, cache=cache)

    first = evaluate_generator(G, noise_images(), key, 8, **kwargs)
    assert not first.reference_cache_hit
    assert cache.puts == ["fid-stats/noise-r32-train-inception-v3-compat-n16.npz"]
    assert (tmp_path / cache.puts[0]).is_file()

    second = evaluate_generator(G, noise_images(), key, 8, **kwargs)
    assert second.reference_cache_hit
    assert len(cache.puts) == 1 and cache.hits == 1
    assert second == first
    assert set(first) == {"is", "is_std", "fid", "kid", "kid_std"}


def test_make_evaluator_reuses_statistics_between_calls(extractor, tmp_path):
    cache = CountingCache(tmp_path)
    evaluator = make_evaluator(
        flat_images(8), "flat-r32-train", n_samples=8, metrics=("fid",), cache=cache,
        extractor=extractor, batch_size=8,
    )  # fmt: skip
    G = TinyGenerator()
    first = evaluator(100, G)
    second = evaluator(200, G)
    assert isinstance(first, dict) and math.isfinite(first["fid"]) and first.protocol
    assert len(cache.puts) == 1 and cache.hits == 1
    assert second == first


def test_dataset_evaluator_keys_statistics_by_dataset_resolution_and_split(extractor, tmp_path):
    dataset = SimpleNamespace(
        name="flat", resolution=32, images=flat_images(8), labels=torch.zeros(8, dtype=torch.long)
    )
    cache = CountingCache(tmp_path)
    evaluator = make_dataset_evaluator(
        dataset, split="test", n_samples=4, metrics=("fid",), cache=cache, extractor=extractor
    )
    assert math.isfinite(evaluator(1, TinyGenerator())["fid"])
    assert cache.puts == ["fid-stats/flat-r32-test-inception-v3-compat-n8.npz"]


def test_statistics_from_other_inception_weights_are_recomputed(extractor, tmp_path):
    images = flat_images(8)
    key = stats_key("flat-r32-train", extractor.name, len(images))
    stale = ReferenceStats.from_features(torch.randn(8, 2048)).to_bytes("other-weights")
    cache = CountingCache(tmp_path)
    cache.put(key, stale)

    stats, _, hit = reference_statistics(extractor, images, "flat-r32-train", cache=cache)
    assert not hit and cache.puts == [key, key]
    assert ReferenceStats.from_bytes(cache.get(key))[1] == extractor.fingerprint
    assert np.allclose(stats.mu, extractor.extract(images).pool.double().mean(0).numpy())


def test_reference_key_keeps_unsafe_dataset_names_apart():
    a, b = reference_key_for("folder:/data/a_b", 64), reference_key_for("folder:/data/a/b", 64)
    assert a != b and "/" not in a and a.endswith("-r64-train")
    assert reference_key_for("digits", 32, "train") == "digits-r32-train"


# ---------------------------------------------------------------- per-class FID


def test_per_class_fid_reports_each_requested_class(extractor, tmp_path):
    images = torch.cat([noise_images(6, seed=7), flat_images(6, seed=8)])
    labels = torch.tensor([0] * 6 + [2] * 6)
    result = evaluate_generator(
        TinyGenerator(), images, "mixed-r32-train", 4, metrics=("fid",), extractor=extractor,
        batch_size=8, cache=DirectoryStatsCache(tmp_path), reference_labels=labels,
        classes=[0, 2], class_samples=4,
    )  # fmt: skip
    assert {"fid", "fid_class_0", "fid_class_2", "intra_fid"} <= set(result)
    assert "fid_class_1" not in result  # only the requested classes
    assert all(math.isfinite(v) for v in result.values())
    # intra-FID is the mean of the per-class FIDs
    mean = (result["fid_class_0"] + result["fid_class_2"]) / 2
    assert result["intra_fid"] == pytest.approx(mean)
    assert (tmp_path / "fid-stats/mixed-r32-train-class2-inception-v3-compat-n6.npz").is_file()


# ---------------------------------------------------------------- the generator wrapper


def test_generator_wrapper_draws_classes_uniformly():
    G = LabelPainter(num_classes=10).train()
    n = 5000
    images = torch.cat(list(generate_images(G, n, batch_size=512, seed=3)))
    assert images.dtype == torch.uint8 and images.shape == (n, 3, 2, 2)
    labels = images[:, 0, 0, 0].long() // 10
    counts = torch.bincount(labels, minlength=10)
    assert counts.sum() == n and len(counts) == 10
    chi2 = float(((counts - n / 10) ** 2 / (n / 10)).sum())
    assert chi2 < 30  # 9 degrees of freedom: p < 1e-3 above 27.9
    again = torch.cat(list(generate_images(G, n, batch_size=100, seed=3)))
    assert torch.equal(images, again)  # seed, not batch size, decides the draws
    assert G.training  # mode restored after sampling


def test_generator_wrapper_fixes_the_class_when_asked():
    images = torch.cat(list(generate_images(LabelPainter(10), 20, batch_size=8, class_index=7)))
    assert (images == 70).all()


# ---------------------------------------------------------------- weights


@pytest.fixture
def no_weights_anywhere(monkeypatch, tmp_path):
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))  # empty hub cache
    # nothing listens on port 9 here: the download fails as it does without internet
    monkeypatch.setattr(
        evaluate.inception, "INCEPTION_WEIGHTS_URL", f"http://127.0.0.1:9/{INCEPTION_WEIGHTS_FILE}"
    )


def test_missing_weights_without_internet_fail_fast_naming_setting_and_file(no_weights_anywhere):
    start = time.monotonic()
    with pytest.raises(EvaluationError) as err:
        FeatureExtractor(None)
    assert time.monotonic() - start < 5
    message = str(err.value)
    assert "inception_weights" in message and WEIGHTS_ENV in message
    assert INCEPTION_WEIGHTS_FILE in message


def test_evaluator_without_weights_fails_before_training_starts(no_weights_anywhere):
    with pytest.raises(EvaluationError, match=INCEPTION_WEIGHTS_FILE):
        make_evaluator(flat_images(4), "flat-r32-train")


def test_configured_weights_path_that_does_not_exist_is_named(no_weights_anywhere, tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(EvaluationError, match="nope.pth.*does not exist"):
        FeatureExtractor(missing)


def test_weights_path_from_environment_is_used(no_weights_anywhere, monkeypatch, weights_file):
    monkeypatch.setenv(WEIGHTS_ENV, str(weights_file))
    assert evaluate.resolve_inception_weights() == weights_file


def test_a_file_that_is_not_the_weights_is_refused(tmp_path):
    bad = tmp_path / "bad.pth"
    torch.save({"fc.weight": torch.zeros(3)}, bad)
    with pytest.raises(EvaluationError, match=f"bad.pth.*{INCEPTION_WEIGHTS_FILE}"):
        FeatureExtractor(bad)
