"""GET /models/<id>/attention: a sample beside where one of its pixels attends."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from sagan_core.checkpoint import load_generator
from sagan_core.sample import attention_map


def _set_gamma(checkpoint, tmp_path, value: float):
    """The tiny checkpoint with attention gamma set in G_ema (0, as at init, hides the map)."""
    ckpt = torch.load(checkpoint, weights_only=True)
    gammas = [k for k in ckpt["G_ema"] if k.endswith("gamma")]
    assert len(gammas) == 1
    ckpt["G_ema"][gammas[0]] = torch.tensor(value)
    path = tmp_path / "attending.pt"
    torch.save(ckpt, path)
    return path


def test_attention_view_shows_the_sample_and_the_map_of_the_query(
    embedded, tiny_checkpoint, make_model, tmp_path
):
    checkpoint = _set_gamma(tiny_checkpoint, tmp_path, 0.5)
    model = make_model(checkpoint)["model_id"]
    params = {"class": "three", "seed": 4, "x": 20, "y": 5}

    r = embedded.client.get(f"/models/{model}/attention", params=params)

    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    panel = torch.from_numpy(np.array(Image.open(io.BytesIO(r.content))))
    assert panel.shape == (128, 256, 3)  # 32px scaled x4: the image beside its heat map
    G, _, _ = load_generator(checkpoint)
    images, maps = attention_map(G, 3, 1, seed=4, query=(20, 5))
    # Left: the same image as /samples (seed 4, class 3), with the query pixel painted red.
    left = panel[:, :128]
    expected = images[0].repeat_interleave(4, 0).repeat_interleave(4, 1)
    assert torch.equal(left[20:24, 80:84], torch.tensor([255, 0, 0]).expand(4, 4, 3).byte())
    assert torch.equal(left[:20], expected[:20])
    # Right: brightest (reddest) where the map is largest.
    red = panel[:, 128:, 0].float()
    peak = divmod(int(maps[0].argmax()), maps[0].shape[1])  # (row, col) in 8x8 key positions
    block = red[peak[0] * 16 : (peak[0] + 1) * 16, peak[1] * 16 : (peak[1] + 1) * 16]
    assert block.mean() >= red.mean()
    # Another query pixel gives another map; the same query gives the same bytes and ETag.
    again = embedded.client.get(f"/models/{model}/attention", params=params)
    assert again.content == r.content and again.headers["etag"] == r.headers["etag"]
    other = embedded.client.get(f"/models/{model}/attention", params={**params, "x": 2, "y": 30})
    assert other.content != r.content
    cached = embedded.client.get(
        f"/models/{model}/attention", params=params, headers={"If-None-Match": r.headers["etag"]}
    )
    assert cached.status_code == 304


@pytest.mark.parametrize(
    "params, message",
    [
        ({"class": 3, "x": 32, "y": 0}, "x: must be between 0 and 31 for a 32px model (got 32)"),
        ({"class": 3, "x": 0, "y": -1}, "y: must be between 0 and 31 for a 32px model (got -1)"),
        ({"class": 10, "x": 0, "y": 0}, "class 10 out of range: model has 10 classes (0-9)"),
    ],
)
def test_attention_queries_out_of_range_are_400_naming_the_problem(
    embedded, make_model, params, message
):
    model = make_model(None)["model_id"]
    r = embedded.client.get(f"/models/{model}/attention", params=params)
    assert r.status_code == 400 and r.json()["detail"] == message


def test_attention_image_is_the_first_image_of_samples_for_the_same_query(
    embedded, tiny_checkpoint, make_model
):
    model = make_model(tiny_checkpoint)["model_id"]
    query = {"class": 3, "seed": 9}
    grid = embedded.client.get(f"/models/{model}/samples", params={**query, "n": 16})
    view = embedded.client.get(f"/models/{model}/attention", params={**query, "x": 0, "y": 31})
    first = np.array(Image.open(io.BytesIO(grid.content)))[:32, :32]  # top-left of the 4x4 grid
    left = np.array(Image.open(io.BytesIO(view.content)))[:, :128]
    shown = left[::4, ::4].copy()  # undo the x4 nearest scaling
    shown[31, 0] = first[31, 0]  # the query pixel is painted red
    assert (shown == first).all()


def test_dashboard_page_is_served_and_uses_the_public_routes(embedded):
    r = embedded.client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    for route in ("/jobs?limit=", "/metrics?max_points=", "/samples?", "/attention?", "Bearer"):
        assert route in r.text, route
