"""(seed, class) is the address of an image: sampling (what /samples serves), the IS/FID generator
and the variety judge draw the same picture for it (tests/api/test_api_image_address.py holds the
served bytes to the same)."""

import pytest
import torch

from sagan_core.config import TrainConfig
from sagan_core.data import build_dataset
from sagan_core.evaluate import generate_images
from sagan_core.models import Generator
from sagan_core.sample import latents, sample
from sagan_core.variety import VarietyJudge


@pytest.fixture(scope="module")
def G():
    torch.manual_seed(0)
    return Generator(z_dim=16, num_classes=10, resolution=32, ch=4)  # left in training mode


@pytest.fixture(scope="module")
def judge():
    return VarietyJudge.for_dataset(build_dataset(TrainConfig(dataset="digits", resolution=32)))


def test_a_seed_and_class_is_one_image_in_sampling_evaluation_and_the_variety_judge(G, judge):
    n = 4
    drawn = sample(G, 3, n, seed=7).permute(0, 3, 1, 2)  # (n, 3, R, R) uint8
    evaluated = torch.cat(list(generate_images(G, n, seed=7, class_index=3, batch_size=3)))
    judged, classes = judge.samples(G, n, seed=7, batch_size=5)
    assert torch.equal(evaluated, drawn)
    assert torch.equal(judged[classes == 3], drawn)
    assert not torch.equal(sample(G, 3, n, seed=8).permute(0, 3, 1, 2), drawn)
    assert G.training  # each drew in eval mode and put G back


def test_truncated_draws_agree_between_sampling_and_the_variety_judge(G, judge):
    drawn = sample(G, 5, 3, seed=2, truncation=0.5).permute(0, 3, 1, 2)
    judged, classes = judge.samples(G, 3, seed=2, truncation=0.5)
    assert torch.equal(judged[classes == 5], drawn)
    assert latents(2, 3, 16, 0.5).abs().max() <= 0.5


def test_the_first_images_of_a_seed_do_not_depend_on_how_many_are_drawn():
    assert torch.equal(latents(11, 3, 16), latents(11, 8, 16)[:3])
