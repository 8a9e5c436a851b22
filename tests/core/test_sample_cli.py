import io

import numpy as np
import pytest
import torch
from PIL import Image

from sagan_core.cli import main
from sagan_core.models import Generator
from sagan_core.sample import grid_png, sample, truncated_normal


@pytest.fixture(scope="module")
def generator():
    torch.manual_seed(0)
    G = Generator(z_dim=8, num_classes=4, resolution=32, ch=2).eval()
    with torch.no_grad():  # untrained class gains are all 1: make the classes differ
        for name, p in G.named_parameters():
            if name.endswith("gain.weight"):
                p.normal_(1.0, 0.3)
    return G


def test_same_arguments_give_identical_png_bytes(generator):
    a = grid_png(sample(generator, 2, 6, seed=11, truncation=0.8))
    b = grid_png(sample(generator, 2, 6, seed=11, truncation=0.8))
    assert a == b


def test_different_seed_or_class_gives_different_images(generator):
    base = sample(generator, 2, 4, seed=11)
    assert base.shape == (4, 32, 32, 3) and base.dtype == torch.uint8
    assert not torch.equal(base, sample(generator, 2, 4, seed=12))
    assert not torch.equal(base, sample(generator, 1, 4, seed=11))


def test_truncation_bounds_latents_and_rejects_non_positive_values():
    z = truncated_normal((10000,), 0.5, torch.Generator().manual_seed(0))
    assert z.abs().max() <= 0.5 and z.std() > 0.2
    wide = truncated_normal((10000,), 10.0, torch.Generator().manual_seed(0))
    assert 0.95 < float(wide.std()) < 1.05
    with pytest.raises(ValueError, match="truncation"):
        truncated_normal((3,), 0.0, torch.Generator())


def test_grid_png_has_expected_size(generator):
    png = grid_png(sample(generator, [0, 1, 2], 6, seed=0), nrow=3, padding=0)
    assert Image.open(io.BytesIO(png)).size == (3 * 32, 2 * 32)


def test_grid_tiles_are_apart_and_rows_can_carry_their_class_names(generator):
    images = sample(generator, [0, 1, 2], 6, seed=0)
    plain = np.asarray(Image.open(io.BytesIO(grid_png(images, nrow=3))))
    assert plain.shape == (2 * 32 + 2, 3 * 32 + 2 * 2, 3)  # a 2-pixel grey line between tiles
    assert (plain[32:34] == 200).all() and (plain[:, 32:34] == 200).all()
    assert np.array_equal(plain[34:, 34:66], images[4].numpy())  # tile 4 is row 1, column 1
    labelled = grid_png(images, nrow=3, row_labels=["zero", "a long class name"])
    again = grid_png(images, nrow=3, row_labels=["zero", "a long class name"])
    page = np.asarray(Image.open(io.BytesIO(labelled)))
    margin = page.shape[1] - plain.shape[1]
    assert labelled == again and margin > 40  # room for the longest name, the same bytes
    assert np.array_equal(page[:, margin:], plain)  # the grid itself is unchanged
    assert (page[:32, :margin] < 128).any() and (page[34:, :margin] < 128).any()  # ink per row


def test_cli_trains_then_samples_a_png_by_class_name(tmp_path):
    run = tmp_path / "run"
    argv = ["train", "--dataset", "digits", "--resolution", "32", "--steps", "2", "--batch-size",
            "4", "--g-ch", "2", "--d-ch", "2", "--z-dim", "8", "--log-every", "1",
            "--sample-every", "0", "--device", "cpu", "--run-dir", str(run)]  # fmt: skip
    assert main(argv) == 0
    assert main(argv[:6] + ["4"] + argv[7:] + ["--resume"]) == 0  # continue the run to step 4
    ckpt = run / "checkpoints" / "step-0000004.pt"
    assert ckpt.exists() and not (run / "checkpoints" / "step-0000002.pt").exists()
    out = tmp_path / "grid.png"
    assert main(["sample", "--checkpoint", str(ckpt), "--class", "3", "--n", "6", "--nrow", "3",
                 "-o", str(out)]) == 0  # fmt: skip
    assert Image.open(out).size == (3 * 32 + 2 * 2, 2 * 32 + 2)  # 3 x 2 tiles, 2-pixel gaps


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--resolution", "100"], "resolution: must be one of 32, 64, 128, 256"),
        (["train", "--steps", "many"], "invalid int value"),
        (
            ["train", "--dataset", "folder", "--data-root", "/nonexistent/x"],
            "folder:/nonexistent/x",
        ),
        (["sample", "--checkpoint", "/nonexistent.pt"], "checkpoint not found"),
    ],
)
def test_cli_errors_exit_2_with_a_one_line_message(argv, message, capsys, tmp_path):
    assert main(argv + (["--run-dir", str(tmp_path)] if argv[0] == "train" else [])) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "Traceback" not in err
    assert len(err.splitlines()) == 1


def test_attention_map_of_a_query_matches_a_hand_computed_softmax_and_keeps_the_images():
    import torch.nn.functional as F

    from sagan_core.layers import SelfAttention
    from sagan_core.models import Generator
    from sagan_core.sample import attention_map

    torch.manual_seed(0)
    G = Generator(z_dim=16, num_classes=10, resolution=32, ch=4).eval()
    attn = next(m for m in G.modules() if isinstance(m, SelfAttention))
    with torch.no_grad():
        attn.gamma.fill_(0.5)  # the map shapes the image only when gamma != 0
    inputs = []
    handle = attn.register_forward_hook(lambda m, args, out: inputs.append(args[0]))
    plain = sample(G, 3, 2, seed=7)
    handle.remove()

    images, maps = attention_map(G, 3, 2, seed=7, query=(20, 5))

    assert torch.equal(images, plain)  # the same images sample() gives
    assert maps.shape == (2, 8, 8)  # G attends at 16x16; keys are 2x2-max-pooled
    assert torch.allclose(maps.sum(dim=(1, 2)), torch.ones(2), atol=1e-5)
    x = inputs[0]  # (2, C, 16, 16): the attention layer's input
    q = attn.f(x)[:, :, 5 * 16 // 32, 20 * 16 // 32]  # query pixel (20, 5) -> position (10, 2)
    k = F.max_pool2d(attn.g(x), 2).flatten(2)  # (2, C/8, 64)
    expected = torch.softmax(torch.einsum("bc,bcn->bn", q, k), dim=-1).reshape(2, 8, 8)
    assert torch.allclose(maps, expected, atol=1e-5)
    other = attention_map(G, 3, 2, seed=7, query=(2, 30))[1]
    assert not torch.allclose(maps, other)
