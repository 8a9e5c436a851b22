"""Sampling: (seed, class) is the address of an image; grids as deterministic PNG bytes.

`latents(seed, n, z_dim)` is the one draw of z: the i-th image of seed s and class c is G(z_i, c)
wherever it is drawn: `/samples`, the IS/FID generator (sagan_core.evaluate) and the variety judge.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Iterator, Sequence

import torch
from PIL import Image, ImageDraw, ImageFont


def truncated_normal(
    shape: tuple[int, ...], truncation: float | None, generator: torch.Generator
) -> torch.Tensor:
    """N(0, 1) conditioned on |z| <= truncation, drawn exactly by inverse CDF in float64.

    This is BigGAN's truncation trick (resampling values outside [-t, t]) in one pass, so the draw
    is a pure function of the generator state. t = 1.0 keeps the central 68% of the normal: images
    closer to the typical one, at the cost of variety (it hides a collapsing generator, so it is
    off by default); None (or t >= 10) is no truncation.
    """
    if truncation is not None and not truncation > 0:
        raise ValueError(f"truncation must be > 0 (got {truncation})")
    u = torch.rand(shape, generator=generator, dtype=torch.float64)
    t = torch.tensor(min(float(truncation or 30.0), 30.0), dtype=torch.float64)
    lo = torch.special.ndtr(-t)
    p = (lo + u * (1.0 - 2.0 * lo)).clamp(1e-300, 1.0 - 1e-16)
    return torch.special.ndtri(p).clamp(-t, t).float()


def latents(seed: int, n: int, z_dim: int, truncation: float | None = None) -> torch.Tensor:
    """The z of images 0..n-1 of `seed`: (n, z_dim) float32 on the CPU, from a local generator
    (the global RNGs are not touched), so the same seed gives the same z on any device."""
    if n < 1:
        raise ValueError(f"n must be >= 1 (got {n})")
    rng = torch.Generator().manual_seed(int(seed))
    return truncated_normal((n, z_dim), truncation, rng)


@contextlib.contextmanager
def eval_mode(module: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """The module in eval mode for the block, then back in the mode it was in."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


def _class_tensor(classes, n: int, num_classes: int) -> torch.Tensor:
    if isinstance(classes, int):
        y = torch.full((n,), classes, dtype=torch.long)
    else:
        y = torch.as_tensor(classes, dtype=torch.long).flatten()
        if y.numel() == 0:
            raise ValueError("classes is empty")
        y = y.repeat(math.ceil(n / y.numel()))[:n]  # a shorter list is cycled
    if y.numel() and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"class out of range: the model has classes 0..{num_classes - 1}")
    return y


def _latents(generator, classes, n: int, seed: int, truncation: float | None):
    z = latents(seed, n, generator.z_dim, truncation)
    y = _class_tensor(classes, n, generator.num_classes)
    device = next(generator.parameters()).device
    return z.to(device), y.to(device)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Generator output in [-1, 1] (N, C, H, W) to uint8 [0, 255], same layout and device."""
    return ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def _to_hwc(x: torch.Tensor) -> torch.Tensor:
    return to_uint8(x).permute(0, 2, 3, 1).contiguous().cpu()  # (n, H, W, 3)


@torch.no_grad()
def sample(
    generator: torch.nn.Module,
    classes: int | list[int] | torch.Tensor,
    n: int,
    seed: int,
    truncation: float | None = None,
) -> torch.Tensor:
    """n images as uint8 (n, H, W, 3); z comes from a local CPU generator seeded with `seed`.

    `classes` is one class for all, or a list/tensor cycled to length n. Runs G in eval mode.
    """
    z, y = _latents(generator, classes, n, seed, truncation)
    with eval_mode(generator):
        x = generator(z, y)  # (n, 3, H, W) in [-1, 1]
    return _to_hwc(x)


@torch.no_grad()
def attention_map(
    generator: torch.nn.Module,
    classes: int | list[int] | torch.Tensor,
    n: int,
    seed: int,
    query: tuple[int, int],
    truncation: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Where G's attention looks from one image position: the images `sample` gives for the same
    arguments, and for each the softmax weights of query pixel `query` = (x, y) (in image pixels)
    over the key positions, as (n, Hk, Wk) maps that sum to 1 (Hk = attention size / 2, max-pooled).
    """
    from .layers import SelfAttention

    layers = [m for m in generator.modules() if isinstance(m, SelfAttention)]
    if len(layers) != 1:
        raise ValueError(f"expected one attention layer in the generator, found {len(layers)}")
    z, y = _latents(generator, classes, n, seed, truncation)
    captured: dict[str, torch.Tensor] = {}

    def with_map(module: SelfAttention, args: tuple, output: torch.Tensor) -> torch.Tensor:
        out, captured["map"] = module.forward_with_map(args[0])  # (B, N, N/4)
        captured["size"] = torch.tensor(args[0].shape[-2:])
        return out

    handle = layers[0].register_forward_hook(with_map)
    try:
        with eval_mode(generator):
            images = _to_hwc(generator(z, y))  # (n, H, W, 3)
    finally:
        handle.remove()
    size = images.shape[1]
    qx, qy = query
    if not (0 <= qx < size and 0 <= qy < size):
        raise ValueError(f"query {query} outside the {size}x{size} image")
    h, w = (int(v) for v in captured["size"])
    row = (qy * h // size) * w + (qx * w // size)  # the query's position at attention resolution
    maps = captured["map"][:, row].reshape(n, h // 2, w // 2)  # (n, Hk, Wk)
    return images, maps.float().cpu()


GRID_GAP = 2  # pixels between tiles: dark digits on dark ground would merge into one another
GAP_COLOUR = 200  # a light grey line, seen against dark and light images alike
LABEL_HEIGHT = 10  # the row labels' font size in pixels


def grid_png(
    images: torch.Tensor,
    nrow: int | None = None,
    padding: int = GRID_GAP,
    row_labels: Sequence[str] | None = None,
) -> bytes:
    """(n, H, W, 3) uint8 -> PNG bytes of a grid, `nrow` images per row (default ceil(sqrt(n))),
    `padding` pixels of grey between tiles, and with `row_labels` each row's name on its left
    (a class name). The same images give the same bytes."""
    n, h, w, c = images.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / nrow)
    grid = torch.full(
        (rows * h + (rows - 1) * padding, nrow * w + (nrow - 1) * padding, c),
        GAP_COLOUR,
        dtype=torch.uint8,
    )
    for i in range(n):
        r, col = divmod(i, nrow)
        top, left = r * (h + padding), col * (w + padding)
        grid[top : top + h, left : left + w] = images[i]
    image = Image.fromarray(grid.numpy())
    if row_labels:
        image = _with_row_labels(image, list(row_labels)[:rows], h + padding)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _with_row_labels(grid: Image.Image, labels: list[str], row_height: int) -> Image.Image:
    font = ImageFont.load_default(size=LABEL_HEIGHT)
    pen = ImageDraw.Draw(grid)
    width = max(int(pen.textlength(text, font=font)) for text in labels) + 6
    out = Image.new("RGB", (grid.width + width, grid.height), (255, 255, 255))
    out.paste(grid, (width, 0))
    pen = ImageDraw.Draw(out)
    for r, text in enumerate(labels):
        middle = r * row_height + (row_height - LABEL_HEIGHT) // 2
        pen.text((3, middle), text, fill=(0, 0, 0), font=font)
    return out


def attention_png(image: torch.Tensor, amap: torch.Tensor, query: tuple[int, int]) -> bytes:
    """The image with its query pixel marked, beside where that pixel attends (a heat map).

    image (H, W, 3) uint8, amap (Hk, Wk) summing to 1; small images are scaled up (nearest) to at
    least 128 px so a person can see them. Deterministic bytes.
    """
    h, w, _ = image.shape
    scale = max(1, -(-128 // h))
    big = image.repeat_interleave(scale, 0).repeat_interleave(scale, 1).clone()  # (sH, sW, 3)
    qx, qy = query
    top, left = qy * scale, qx * scale
    big[top : top + scale, left : left + scale] = torch.tensor([255, 0, 0], dtype=torch.uint8)
    heat = amap / amap.max().clamp_min(1e-12)  # (Hk, Wk) in [0, 1]
    heat = heat.repeat_interleave(h * scale // amap.shape[0], 0)
    heat = heat.repeat_interleave(w * scale // amap.shape[1], 1)  # (sH, sW)
    grey = big.float().mean(dim=-1) * 0.35  # the image, dimmed, under the heat
    overlay = torch.stack([grey + heat * 255 * 0.65, grey + heat * 120 * 0.65, grey], dim=-1)
    panel = torch.cat([big, overlay.round().clamp(0, 255).to(torch.uint8)], dim=1)
    buf = io.BytesIO()
    Image.fromarray(panel.numpy()).save(buf, format="PNG")
    return buf.getvalue()


def class_rows_png(G: torch.nn.Module, class_names: list, per_row: int = 8) -> bytes:
    """A training run's sample grid: up to ten classes (rows, spread over the range, named),
    `per_row` samples each from seed 0."""
    n = len(class_names)
    rows = sorted({round(i * (n - 1) / 9) for i in range(10)}) if n > 10 else range(n)
    classes = [c for c in rows for _ in range(per_row)]
    names = [str(class_names[c]) for c in rows]
    return grid_png(sample(G, classes, len(classes), seed=0), per_row, row_labels=names)
