"""A torch-fidelity InceptionV3 with random weights, saved like the real weights file.

Tests load it through the same code path as weights-inception-2015-12-05-6726825d.pth, which
cannot be downloaded here.
"""

from pathlib import Path
from unittest import mock

import torch
import torch_fidelity.feature_extractor_inceptionv3 as tf_inception
from torch import nn


def random_inception_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """torch-fidelity's InceptionV3 with random weights (its constructor insists on loading)."""
    torch.manual_seed(seed)
    with (
        mock.patch.object(tf_inception, "load_state_dict_from_url", lambda *a, **k: None),
        mock.patch.object(
            tf_inception.FeatureExtractorInceptionV3, "load_state_dict", lambda *a, **k: None
        ),
    ):
        model = tf_inception.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    # default init shrinks activations to ~1e-8 over 90 layers; He init keeps features informative
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    nn.init.normal_(model.fc.weight, std=1.0)
    return model.state_dict()


def save_random_inception(path: Path, seed: int = 0) -> Path:
    torch.save(random_inception_state_dict(seed), path)
    return path
