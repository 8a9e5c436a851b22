"""Differentiable augmentation (DiffAugment, Zhao et al. 2020) of every image D sees.

The same random transforms are applied to real and generated images, in D's steps and in G's
step, and they are differentiable, so G's gradient passes through them. D then cannot memorise a
small training set pixel by pixel (1,797 digits), which is what lets G collapse onto a few images
D still calls real. Policies, comma separated:

- `translation`: shift each image by up to 1/8 of its size in x and y (integer pixels), the
  uncovered border repeating the edge pixels (the background);
- `color`: DiffAugment's colour transforms: brightness, saturation and contrast, each by its
  own random factor per image (hue is kept: a class may be its colour);
- `cutout`: zero (mid-grey in [-1, 1]) one square of half the image size at a random place.

How often: always (p = 1, DiffAugment as published), or with ADA (Karras et al. 2020,
stylegan2-ada) each transform is applied to each image with probability p, and p follows D: the
overfitting heuristic r_t = E[sign(D(real))] is ~0 while D cannot tell real from fake and nears 1
as D memorises the training set; p rises while r_t is above the target (0.6) and falls below it.
A big data set D does not overfit keeps p near 0 (unaugmented), a small one gets what it needs.

In a run, randomness comes from the augmentation's own generator, seeded from the run's seed and
checkpointed with it (a resumed run repeats), apart from z's and the data's streams.
"""

from __future__ import annotations

import torch

from .config import AUGMENT_POLICIES as POLICIES


def parse_policy(policy: str | None) -> tuple[str, ...]:
    """'translation,cutout' -> ('translation', 'cutout'); '' or None -> ()."""
    names = tuple(p.strip() for p in (policy or "").split(",") if p.strip())
    unknown = [n for n in names if n not in POLICIES]
    if unknown:
        raise ValueError(f"unknown augmentation {unknown[0]!r}; known: {', '.join(POLICIES)}")
    return names


def _draw(rows: torch.Tensor | None, n: int, draw):  # noqa: ANN001, ANN202
    """`draw(n)` random values for a global batch of n images; this rank's rows of them."""
    values = draw(n)
    return values if rows is None else values[rows]


def translation(
    x: torch.Tensor,
    ratio: float = 0.125,
    rows: torch.Tensor | None = None,
    n: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, H, W), each image shifted by its own offset in [-r*H, r*H]."""
    B, _, H, W = x.shape
    sh, sw = int(H * ratio + 0.5), int(W * ratio + 0.5)
    dy = _draw(
        rows,
        n or B,
        lambda k: torch.randint(-sh, sh + 1, (k, 1), device=x.device, generator=generator),
    )
    dx = _draw(
        rows,
        n or B,
        lambda k: torch.randint(-sw, sw + 1, (k, 1), device=x.device, generator=generator),
    )
    ys = (torch.arange(H, device=x.device) + dy).clamp(0, H - 1)  # (B, H)
    xs = (torch.arange(W, device=x.device) + dx).clamp(0, W - 1)  # (B, W)
    x = x.gather(2, ys[:, None, :, None].expand(-1, x.shape[1], -1, W))  # rows
    return x.gather(3, xs[:, None, None, :].expand(-1, x.shape[1], H, -1))  # then columns


def cutout(
    x: torch.Tensor,
    ratio: float = 0.5,
    rows: torch.Tensor | None = None,
    n: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """(B, C, H, W) with one (r*H, r*W) square per image set to 0, its centre anywhere."""
    B, _, H, W = x.shape
    ch, cw = int(H * ratio + 0.5), int(W * ratio + 0.5)
    cy = _draw(
        rows,
        n or B,
        lambda k: torch.randint(0, H + (1 - ch % 2), (k, 1), device=x.device, generator=generator),
    )
    cx = _draw(
        rows,
        n or B,
        lambda k: torch.randint(0, W + (1 - cw % 2), (k, 1), device=x.device, generator=generator),
    )
    ys = torch.arange(H, device=x.device)  # (H,)
    xs = torch.arange(W, device=x.device)  # (W,)
    in_y = (ys >= cy - ch // 2) & (ys < cy - ch // 2 + ch)  # (B, H)
    in_x = (xs >= cx - cw // 2) & (xs < cx - cw // 2 + cw)  # (B, W)
    keep = ~(in_y[:, :, None] & in_x[:, None, :])  # (B, H, W)
    return x * keep[:, None].to(x.dtype)


def color(
    x: torch.Tensor,
    rows: torch.Tensor | None = None,
    n: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """DiffAugment's brightness (+-0.5), saturation (x0..2) and contrast (x0.5..1.5) per image."""
    # float32 draws whatever x's dtype: the random stream is the same under bf16 autocast
    r = _draw(
        rows,
        n or x.shape[0],
        lambda k: torch.rand(k, 3, 1, 1, 1, device=x.device, generator=generator),
    )
    r = r.to(x.dtype).unbind(1)  # 3 x (B, 1, 1, 1)
    x = x + (r[0] - 0.5)
    mean = x.mean(dim=1, keepdim=True)  # (B, 1, H, W): the grey of each pixel
    x = (x - mean) * (r[1] * 2) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
    return (x - mean) * (r[2] + 0.5) + mean


TRANSFORMS = {"translation": translation, "color": color, "cutout": cutout}


def diff_augment(
    x: torch.Tensor,
    policy: tuple[str, ...],
    p: torch.Tensor | None = None,
    rows: torch.Tensor | None = None,
    n: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Apply the policy's transforms in order; an empty policy returns x itself. With `p` (a
    0-d tensor), each transform reaches each image with probability p (the others pass as they
    are); None: every image, every transform. With `rows`, x is those rows of a global batch of
    `n` images (one rank's share): the random draws are the global batch's, so N ranks augment
    exactly as one process of the whole batch does. Draws come from `generator` (None: torch's
    global RNG)."""
    device, count = x.device, n or x.shape[0]
    for name in policy:
        moved = TRANSFORMS[name](x, rows=rows, n=n, generator=generator)
        if p is None:
            x = moved
        else:
            u = _draw(
                rows, count, lambda k: torch.rand(k, 1, 1, 1, device=device, generator=generator)
            )
            x = torch.where(u < p, moved, x)  # (B, 1, 1, 1) mask
    return x


# How fast ADA's p moves: from 0 to 1 in this many real images seen while r_t stays above the
# target (stylegan2-ada: 500k, sized for runs of millions of images; ours of 64k-640k need p to
# arrive within a tenth of the run).
ADA_IMAGES = 10_000
AUGMENT_SEED = 0x5A6A  # added to the run's seed: the augmentation stream differs from z's


class AdaptiveAugment:
    """The augmentation D sees and, with ADA on (`target` > 0), its probability p.

    p lives on the training device as a 0-d tensor and is moved every step from that step's
    mean sign of D's real logits (averaged over the ranks by the trainer), so the loop never
    waits for the host. `state_dict` goes into checkpoints: a resumed run goes on with its p.
    """

    def __init__(self, policy: tuple[str, ...], target: float, device: torch.device, seed: int = 0):
        self.policy, self.target = policy, float(target)
        self.adaptive = bool(policy) and self.target > 0
        self.p = torch.zeros((), device=device)
        # Its own random stream: turning augmentation on does not move z's or the data's, so a
        # run whose p stays 0 trains as it would without ADA.
        self.generator = torch.Generator(device=device).manual_seed(seed + AUGMENT_SEED)

    def __call__(
        self, x: torch.Tensor, rows: torch.Tensor | None = None, n: int | None = None
    ) -> torch.Tensor:
        """x augmented; with `rows`, x is those rows of a global batch of n (see diff_augment)."""
        p = self.p if self.adaptive else None
        return diff_augment(x, self.policy, p, rows, n, self.generator)

    @torch.no_grad()
    def update(self, real_sign: torch.Tensor, images: int) -> None:
        """One step of ADA: real_sign = mean sign(D(real)) of the step, `images` its real images."""
        if self.adaptive:
            move = torch.sign(real_sign.float() - self.target) * (images / ADA_IMAGES)
            self.p = (self.p + move).clamp(0.0, 1.0)

    def state_dict(self) -> dict:
        return {"p": float(self.p), "rng": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.p = torch.full((), float(state.get("p", 0.0)), device=self.p.device)
        if "rng" in state:
            self.generator.set_state(state["rng"].cpu())  # a CPU ByteTensor, for CUDA too
