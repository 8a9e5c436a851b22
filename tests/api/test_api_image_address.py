"""(seed, class) is the address of an image: the same picture in /samples, in the IS/FID generator
and on the variety curve (issue #21: three draws used to give three pictures)."""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

from sagan_core.checkpoint import load_generator
from sagan_core.data import build_dataset
from sagan_core.evaluate import generate_images
from sagan_core.sample import sample
from sagan_core.variety import VarietyJudge


def test_a_seed_and_class_draw_one_image_everywhere(embedded, make_model, tiny_checkpoint):
    model = make_model(tiny_checkpoint)
    answer = embedded.client.get(
        f"/models/{model['model_id']}/samples", params={"class": 3, "n": 1, "seed": 7}
    )
    assert answer.status_code == 200
    served = np.asarray(Image.open(io.BytesIO(answer.content)).convert("RGB"))  # (R, R, 3)

    G, cfg, _ = load_generator(tiny_checkpoint)
    assert np.array_equal(sample(G, 3, 1, seed=7).numpy()[0], served)
    n = 5
    drawn = sample(G, 3, n, seed=7).permute(0, 3, 1, 2)  # (n, 3, R, R) uint8
    evaluated = torch.cat(list(generate_images(G, n, seed=7, class_index=3, batch_size=2)))
    judge = VarietyJudge.for_dataset(build_dataset(cfg))
    judged, classes = judge.samples(G, n, seed=7)
    assert torch.equal(evaluated, drawn)
    assert torch.equal(judged[classes == 3], drawn)
    other = torch.cat(list(generate_images(G, n, seed=8, class_index=3)))
    assert not torch.equal(other, drawn)  # and the seed does
