"""`color_shapes`: a colour data set drawn on the spot, for tests and benchmarks that need more
than grey digits. Six classes, each a shape in a colour; classes come in pairs of one colour (a red
disc and a red square), so a generator must draw the shape, not only the colour, to draw the class
asked for. Each image has its own size, place, turn, shade and background; the same seed draws the
same images. numpy and PIL only, no download."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

# (name, shape, hue in degrees): three colours, each worn by two shapes
CLASSES = (
    ("red disc", "disc", 0),
    ("red square", "square", 0),
    ("green triangle", "triangle", 120),
    ("green ring", "ring", 120),
    ("blue cross", "cross", 235),
    ("blue star", "star", 235),
)
PER_CLASS = 200
SUPERSAMPLE = 4  # drawn at 4x, then downsampled with a box filter: smooth edges


def _rgb(hue: float, saturation: float, value: float) -> tuple[int, int, int]:
    h = (hue % 360) / 60.0
    c = value * saturation
    x = c * (1 - abs(h % 2 - 1))
    r, g, b = [(c, x, 0), (x, c, 0), (0, c, x), (0, x, c), (x, 0, c), (c, 0, x)][int(h) % 6]
    m = value - c
    return tuple(int(round(255 * (v + m))) for v in (r, g, b))


def _polygon(cx: float, cy: float, radius: float, turn: float, points: list[tuple[float, float]]):
    """Unit-circle points (radius factor, angle) scaled, turned and moved."""
    return [
        (cx + radius * f * math.cos(a + turn), cy + radius * f * math.sin(a + turn))
        for f, a in points
    ]


def _outline(shape: str) -> list[tuple[float, float]]:
    if shape == "square":
        return [(1.0, math.pi / 4 + k * math.pi / 2) for k in range(4)]
    if shape == "triangle":
        return [(1.0, -math.pi / 2 + k * 2 * math.pi / 3) for k in range(3)]
    if shape == "star":
        return [(1.0 if k % 2 == 0 else 0.45, -math.pi / 2 + k * math.pi / 5) for k in range(10)]
    if shape == "cross":
        w = 0.36  # half the arm's width, as a share of the radius
        corners = [(w, 1), (w, w), (1, w), (1, -w), (w, -w), (w, -1)]
        corners += [(-w, -1), (-w, -w), (-1, -w), (-1, w), (-w, w), (-w, 1)]
        return [(math.hypot(x, y), math.atan2(y, x)) for x, y in corners]
    raise ValueError(shape)


def draw(class_index: int, rng: np.random.Generator, resolution: int = 32) -> np.ndarray:
    """One image of a class: (resolution, resolution, 3) uint8."""
    _, shape, hue = CLASSES[class_index]
    size = resolution * SUPERSAMPLE
    # background: a soft two-colour vertical gradient of low saturation
    top = np.array(_rgb(rng.uniform(0, 360), rng.uniform(0, 0.3), rng.uniform(0.1, 0.45)))
    bottom = np.array(_rgb(rng.uniform(0, 360), rng.uniform(0, 0.3), rng.uniform(0.1, 0.45)))
    t = np.linspace(0, 1, size)[:, None, None]
    background = (top * (1 - t) + bottom * t).repeat(size, axis=1)
    image = Image.fromarray(background.astype(np.uint8))
    pen = ImageDraw.Draw(image)
    radius = size * rng.uniform(0.2, 0.36)
    cx, cy = (size / 2 + rng.uniform(-1, 1) * (size / 2 - radius) for _ in range(2))
    turn = rng.uniform(0, 2 * math.pi)
    colour = _rgb(hue + rng.uniform(-12, 12), rng.uniform(0.7, 1.0), rng.uniform(0.75, 1.0))
    box = [cx - radius, cy - radius, cx + radius, cy + radius]
    if shape == "disc":
        pen.ellipse(box, fill=colour)
    elif shape == "ring":
        pen.ellipse(box, outline=colour, width=max(2, int(radius * rng.uniform(0.25, 0.4))))
    else:
        pen.polygon(_polygon(cx, cy, radius, turn, _outline(shape)), fill=colour)
    small = image.resize((resolution, resolution), Image.Resampling.BOX)
    noise = rng.normal(0, 4, (resolution, resolution, 3))  # a little grain: no two flat fills alike
    return np.clip(np.asarray(small, dtype=np.float64) + noise, 0, 255).astype(np.uint8)


def make_shapes(
    resolution: int = 32, per_class: int = PER_CLASS, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(images (N, R, R, 3) uint8, labels (N,), class names), classes interleaved."""
    rng = np.random.default_rng(seed)
    labels = np.tile(np.arange(len(CLASSES)), per_class)
    images = np.stack([draw(int(c), rng, resolution) for c in labels])
    return images, labels, [name for name, _, _ in CLASSES]
