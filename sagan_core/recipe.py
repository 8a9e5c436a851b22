"""What a job gets when it leaves the recipe out: a preset that fits the machines that will train it
and augmentation that fits the size of its data. Torch-free: the API decides with it at submit
(where it knows the workers and the stored data set's image count), the trainer fills in what is
still open when it has the data in hand.

- **Preset.** `paper` (ch 64, batch 64, 10,000 steps, the paper's learning rates) is a day on a
  CPU; `tiny` (ch 4 at 32 px) trains a small data set in minutes there. CPU workers get `tiny`,
  GPU workers `paper`.
- **Augmentation.** A data set under `SMALL_DATA` images gets DiffAugment's transforms with ADA's
  adaptive probability (sagan_core.augment): D overfits a few thousand images within a few hundred
  steps, and G then collapses onto what D still calls real. ADA keeps p near 0 when D does not
  overfit, so the rule errs on the side of turning it on. A larger (or unknown-size) data set
  gets none, as in the paper.

An explicit field always wins: a preset given, a `diff_augment` given (then p = 1 unless
`ada_target` is given too).
"""

from __future__ import annotations

from dataclasses import dataclass

SMALL_DATA = 100_000  # images: below this, ADA is on by default
ADA_TARGET = 0.6  # stylegan2-ada's target for r_t = E[sign(D(real))]
ADA_POLICY = "translation,color,cutout"
# Image counts of the built-in data sets (a stored one's is in its row; a folder's is unknown
# until a worker reads it).
BUILTIN_IMAGES = {"digits": 1797, "color_shapes": 1200, "cifar10": 50_000, "cifar100": 50_000}


@dataclass(frozen=True)
class PresetChoice:
    preset: str
    reason: str  # "CPU workers, 1,200 images at 32 px"


def choose_preset(gpu: bool, images: int | None, resolution: int) -> PresetChoice:
    """The preset for a job that names none, on GPU or CPU workers."""
    size = f"{images:,} images at {resolution} px" if images else f"{resolution} px"
    if gpu:
        return PresetChoice("paper", f"GPU workers, {size}")
    return PresetChoice("tiny", f"CPU workers, {size} (paper would take about a day)")


def augmentation_for(images: int | None, policy: str | None) -> tuple[str, float]:
    """(diff_augment, ada_target) for a data set of `images` (None: unknown) when the config
    leaves them out; `policy` is the config's diff_augment (None: not given)."""
    if policy is not None:  # the user's augmentation: always applied unless they ask for ADA
        return policy, 0.0
    if images is not None and images < SMALL_DATA:
        return ADA_POLICY, ADA_TARGET
    return "", 0.0


def fill_augmentation(cfg, images: int | None) -> str | None:  # noqa: ANN001  (a TrainConfig)
    """Fill cfg.diff_augment and cfg.ada_target where None; a line saying what was chosen when
    the recipe chose it, else None."""
    if cfg.ada_target is not None and cfg.diff_augment is not None:
        return None
    policy, target = augmentation_for(images, cfg.diff_augment)
    if cfg.ada_target is not None:  # ADA asked for without a policy: ADA's default transforms
        policy, target = policy or ADA_POLICY, cfg.ada_target
    chose = cfg.diff_augment is None
    cfg.diff_augment, cfg.ada_target = policy, target
    if not chose:
        return None
    if target:
        return f"augmentation {policy} with ADA (target {target}): under {SMALL_DATA:,} images"
    return "no augmentation: " + ("a large data set" if images else "data set size unknown")
