"""The one training configuration: a dataclass the API validates and the worker passes through."""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass

DATASETS = ("digits", "cifar10", "cifar100", "folder", "packed", "synthetic")
RESOLUTIONS = (32, 64, 128, 256)
PRESETS = ("tiny", "paper")
PRECISIONS = ("fp32", "bf16")
# Datasets whose class count is fixed; num_classes may be left out or must match.
FIXED_CLASSES = {"digits": 10, "cifar10": 10, "cifar100": 100}
NEEDS_DATA_ROOT = ("cifar10", "cifar100", "folder", "packed")
# Integer fields must fit a 32-bit signed column (the service stores steps in INTEGER columns);
# the seed must fit numpy's seeding, which takes at most 2**32 - 1.
MAX_INT = 2**31 - 1
MAX_SEED = 2**32 - 1

# Base widths (ch) per preset and resolution; the per-block multipliers live in models.ARCH.
# "paper" is ch=64 as in SAGAN at 128px; "tiny" is sized to train digits at 32px on a 2-core CPU.
PRESET_CH = {
    "paper": {32: 64, 64: 64, 128: 64, 256: 64},
    "tiny": {32: 4, 64: 8, 128: 8, 256: 8},
}
# Training fields a preset decides when the user leaves them out (None). The tiny preset trains
# digits in minutes on a CPU, not for days: the paper's EMA (0.9999 from step 1000) would still be
# mostly the initial weights and its learning rates are too slow for ~1000 steps. Betas stay the
# paper's (0, 0.9) in both; TTUR keeps lr_d > lr_g.
PRESET_TRAINING = {
    "paper": {"batch_size": 64, "lr_g": 1e-4, "lr_d": 4e-4, "ema_decay": 0.9999, "ema_start": 1000},
    "tiny": {"batch_size": 32, "lr_g": 1e-3, "lr_d": 2e-3, "ema_decay": 0.995, "ema_start": 200},
}


# Architecture tables live here (not in models) so that validating a config never imports torch.
# Channel multipliers of ch per block, as in the SAGAN/BigGAN code. G: input and output channels
# of each up-block (4x4 -> 8 -> ... -> R); D: output channels of each down-block and whether it
# halves the size.
G_ARCH = {
    32: {"in": [4, 4, 4], "out": [4, 4, 4]},
    64: {"in": [16, 16, 8, 4], "out": [16, 8, 4, 2]},
    128: {"in": [16, 16, 8, 4, 2], "out": [16, 8, 4, 2, 1]},
    256: {"in": [16, 16, 8, 8, 4, 2], "out": [16, 8, 8, 4, 2, 1]},
}
D_ARCH = {
    32: {"out": [4, 4, 4, 4], "down": [True, True, False, False]},
    64: {"out": [1, 2, 4, 8, 16], "down": [True, True, True, True, False]},
    128: {"out": [1, 2, 4, 8, 16, 16], "down": [True, True, True, True, True, False]},
    256: {"out": [1, 2, 4, 8, 8, 16, 16], "down": [True] * 6 + [False]},
}
# Spatial size at which G attends: 64x64 at 128px and 256px, 32x32 at 64px, 16x16 at 32px.
G_ATTN_SIZE = {32: 16, 64: 32, 128: 64, 256: 64}


def attention_channels(resolution: int, g_ch: int, d_ch: int) -> tuple[int, int]:
    """Channels seen by the G and D attention layers (each must be divisible by 8)."""
    g_block = (
        G_ATTN_SIZE[resolution].bit_length() - 4
    )  # index of the block whose output is that size
    return G_ARCH[resolution]["out"][g_block] * g_ch, D_ARCH[resolution]["out"][0] * d_ch


class ConfigError(ValueError):
    """An impossible configuration value; `field` names it, str(e) is "field: message"."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass
class TrainConfig:
    dataset: str = "digits"
    data_root: str | None = None
    download: bool = False
    resolution: int = 32
    num_classes: int | None = None
    preset: str | None = None
    g_ch: int | None = None
    d_ch: int | None = None
    z_dim: int = 128
    batch_size: int | None = None  # None: from the preset (paper 64, tiny 32)
    steps: int = 10000
    lr_g: float | None = None  # paper 1e-4 (TTUR), tiny 1e-3
    lr_d: float | None = None  # paper 4e-4 (TTUR), tiny 2e-3
    beta1: float = 0.0
    beta2: float = 0.9
    d_steps: int = 1
    ema_decay: float | None = None  # paper 0.9999, tiny 0.995
    ema_start: int | None = None  # paper 1000, tiny 200
    log_every: int = 50
    checkpoint_every: int = 1000
    sample_every: int = 1000
    eval_every: int = 0
    eval_samples: int = 5000
    # Reference statistics use at most this many real images (a seeded subset), as the usual
    # 50k-image ImageNet statistics do; small data sets use all of theirs.
    eval_reference_samples: int = 50000
    seed: int = 0
    device: str = "auto"
    precision: str = "fp32"

    # -- (de)serialisation -------------------------------------------------------------------

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, d: typing.Mapping[str, typing.Any]) -> TrainConfig:
        if not isinstance(d, typing.Mapping):
            raise ConfigError("config", f"expected a mapping, got {type(d).__name__}")
        names = cls.field_names()
        unknown = sorted(k for k in d if k not in names)
        if unknown:
            raise ConfigError(unknown[0], f"unknown config key(s): {', '.join(map(str, unknown))}")
        hints = typing.get_type_hints(cls)
        kwargs = {}
        for key, value in d.items():
            kwargs[key] = _coerce(key, value, hints[key])
        return cls(**kwargs)

    def to_dict(self) -> dict[str, typing.Any]:
        return {name: getattr(self, name) for name in self.field_names()}

    # -- checks and defaults -----------------------------------------------------------------

    def validate(self) -> TrainConfig:
        """Raise ConfigError naming the first impossible field; return self so calls can chain."""
        hints = typing.get_type_hints(type(self))
        for name in self.field_names():
            value = _coerce(name, getattr(self, name), hints[name])  # type check only
            if isinstance(value, int) and not isinstance(value, bool):
                limit = MAX_SEED if name == "seed" else MAX_INT
                if value > limit:
                    raise ConfigError(name, f"must be <= {limit} (got {value!r})")

        def need(ok: bool, name: str, message: str) -> None:
            if not ok:
                raise ConfigError(name, f"{message} (got {getattr(self, name)!r})")

        need(self.dataset in DATASETS, "dataset", f"must be one of {', '.join(DATASETS)}")
        if self.dataset in NEEDS_DATA_ROOT:
            need(bool(self.data_root), "data_root", f"is required for dataset '{self.dataset}'")
        need(
            self.resolution in RESOLUTIONS,
            "resolution",
            f"must be one of {', '.join(map(str, RESOLUTIONS))}",
        )
        if self.num_classes is not None:
            need(self.num_classes >= 1, "num_classes", "must be >= 1")
            fixed = FIXED_CLASSES.get(self.dataset)
            need(
                fixed is None or self.num_classes == fixed,
                "num_classes",
                f"dataset '{self.dataset}' has {fixed} classes",
            )
        need(self.preset is None or self.preset in PRESETS, "preset", "must be 'tiny' or 'paper'")
        for name in ("g_ch", "d_ch"):
            v = getattr(self, name)
            need(v is None or v >= 1, name, "must be >= 1")
        if self.resolution in RESOLUTIONS:
            r = self.resolved()
            g_attn, d_attn = attention_channels(r.resolution, r.g_ch, r.d_ch)
            need(g_attn % 8 == 0, "g_ch", f"gives {g_attn} attention channels, not divisible by 8")
            need(d_attn % 8 == 0, "d_ch", f"gives {d_attn} attention channels, not divisible by 8")
        need(self.z_dim >= 1, "z_dim", "must be >= 1")
        need(self.batch_size is None or self.batch_size >= 1, "batch_size", "must be >= 1")
        need(self.steps >= 1, "steps", "must be >= 1")
        for name in ("lr_g", "lr_d"):
            v = getattr(self, name)
            need(v is None or (math.isfinite(v) and v > 0), name, "must be a finite number > 0")
        for name in ("beta1", "beta2"):
            need(0.0 <= getattr(self, name) < 1.0, name, "must be in [0, 1)")
        need(self.d_steps >= 1, "d_steps", "must be >= 1")
        decay, start = self.ema_decay, self.ema_start
        need(decay is None or 0.0 <= decay <= 1.0, "ema_decay", "must be in [0, 1]")
        need(start is None or start >= 0, "ema_start", "must be >= 0")
        need(self.log_every >= 1, "log_every", "must be >= 1")
        for name in ("checkpoint_every", "sample_every", "eval_every"):
            need(getattr(self, name) >= 0, name, "must be >= 0 (0 turns it off)")
        need(self.eval_samples >= 1, "eval_samples", "must be >= 1")
        need(self.eval_reference_samples >= 2, "eval_reference_samples", "must be >= 2")
        need(self.seed >= 0, "seed", "must be >= 0")
        dev = self.device
        need(
            dev in ("auto", "cpu", "cuda", "mps")
            or (dev.startswith("cuda:") and dev[5:].isdigit()),
            "device",
            "must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'",
        )
        need(self.precision in PRECISIONS, "precision", "must be 'fp32' or 'bf16'")
        return self

    def resolved(self) -> TrainConfig:
        """A copy with preset, widths, class count (when fixed) and preset EMA defaults filled."""
        out = dataclasses.replace(self)
        if out.preset is None:
            out.preset = "tiny" if out.dataset == "digits" else "paper"
        ch = PRESET_CH[out.preset].get(out.resolution, 64)
        out.g_ch = out.g_ch if out.g_ch is not None else ch
        out.d_ch = out.d_ch if out.d_ch is not None else ch
        if out.num_classes is None:
            out.num_classes = FIXED_CLASSES.get(out.dataset)
            if out.dataset == "synthetic":
                out.num_classes = 10
        for name, value in PRESET_TRAINING[out.preset].items():
            if getattr(out, name) is None:
                setattr(out, name, value)
        return out

    def reference_data(
        self, dataset: str | None = None, data_root: str | None = None
    ) -> TrainConfig:
        """The config of the real images a model trained with this config is scored against.

        By default its own training data; another `dataset` does not inherit the training
        `data_root` (nor its class count), only the one given with it.
        """
        out = dataclasses.replace(self)
        if dataset is not None and dataset != self.dataset:
            out.dataset, out.data_root, out.num_classes = dataset, data_root, None
        elif data_root is not None:
            out.data_root = data_root
        return out


_SCALARS = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def _coerce(name: str, value: typing.Any, hint: typing.Any) -> typing.Any:
    """Check `value` against a field's type; ints are accepted for float fields (and widened)."""
    args = typing.get_args(hint)
    optional = type(None) in args
    base = next((a for a in args if a is not type(None)), hint) if args else hint
    if value is None:
        if optional:
            return None
        raise ConfigError(name, f"must be {_SCALARS[base]}, not null")
    ok = isinstance(value, base) and not (base is not bool and isinstance(value, bool))
    if base is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not ok:
        raise ConfigError(name, f"must be {_SCALARS[base]} (got {value!r})")
    return value
