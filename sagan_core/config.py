"""The one training configuration: a dataclass the API validates and the worker passes through."""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import typing
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .arch import COARSE_NATIVE, G_ARCH, PRESET_CH, TINY_COARSE_CH, Z_MODES, attention_channels
from .limits import LIMITED_FIELDS, MAX_INT, Limits, setting_name

# "stored": a dataset kept by the service (POST /datasets), named by dataset_id.
DATASETS = (
    "digits",
    "color_shapes",
    "cifar10",
    "cifar100",
    "folder",
    "packed",
    "synthetic",
    "stored",
)
RESOLUTIONS = (32, 64, 128, 256)
# Generated images per evaluation: an evaluate job's default (the usual FID count), and a training
# run's periodic one (cheaper; its FID reads higher than a 50,000-sample one, so compare like with
# like).
EVAL_SAMPLES = 50_000
TRAINING_EVAL_SAMPLES = 5_000
PRESETS = ("tiny", "paper")
PRECISIONS = ("fp32", "bf16")
# Training paths (issue #14): "plain" is the eager fp32 unfused reference; "fast" compiles G and
# D, fuses Adam and the EMA and syncs with the host only every log_every steps. None: fast on CUDA.
PATHS = ("plain", "fast")
# DiffAugment transforms (sagan_core.augment) for every image D sees, comma separated.
AUGMENT_POLICIES = ("translation", "color", "cutout")
# Datasets whose class count is fixed; num_classes may be left out or must match.
FIXED_CLASSES = {"digits": 10, "color_shapes": 6, "cifar10": 10, "cifar100": 100}
# The detail of built-in data sets stored at a larger resolution (digits are 8x8, upsampled).
NATIVE_RESOLUTION = {"digits": 8}
NEEDS_DATA_ROOT = ("cifar10", "cifar100", "folder", "packed")
# Datasets that can fetch themselves (torchvision) into data_root when download=true.
DOWNLOADABLE = ("cifar10", "cifar100")
# Integer fields must fit a 32-bit signed column (MAX_INT, sagan_core.limits); the seed must fit
# numpy's seeding, which takes at most 2**32 - 1.
MAX_SEED = 2**32 - 1
# The string fields other than data_root name one of a few choices; nothing longer is needed.
MAX_NAME_CHARS = 64
# Values echoed in an error message are cut to this many characters (a 50 MB string is not sent
# back).
SHOWN_CHARS = 200

# Training fields a preset decides when the user leaves them out (None). The tiny preset trains
# digits in minutes on a CPU, not for days: the paper's EMA (0.9999 from step 1000) would still be
# mostly the initial weights and its learning rates are too slow for ~1000 steps. Betas stay the
# paper's (0, 0.9) in both; TTUR keeps lr_d > lr_g.
PRESET_TRAINING = {
    "paper": {
        "batch_size": 64,
        "lr_g": 1e-4,
        "lr_d": 4e-4,
        "ema_decay": 0.9999,
        "ema_start": 1000,
        "steps": 10000,
        "checkpoint_every": 1000,
        "sample_every": 1000,
        "z_mode": "input",
        "class_warmup": 0,
        "diversity_weight": 0.0,
    },
    "tiny": {
        "batch_size": 32,
        "lr_g": 1e-3,
        "lr_d": 2e-3,
        "ema_decay": 0.995,
        "ema_start": 200,
        "steps": 2000,
        "checkpoint_every": 250,
        "sample_every": 250,
        "z_mode": "input",
        "class_warmup": 0,
        "diversity_weight": 0.07,
    },
}
# variety_every left out on a small data set: every this many log lines (log_every steps each).
VARIETY_LOGS = 4


class ConfigError(ValueError):
    """An impossible configuration value; `field` names it, str(e) is "field: message"."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def shown(value: typing.Any, chars: int = SHOWN_CHARS) -> str:
    """`value` for an error message, cut to `chars` characters: a string quoted ('ten'),
    anything else as JSON (null, true, 32.0, [1], {"name": "digits"}), never Python's None,
    True or ['a'] (the people reading it wrote JSON)."""
    if isinstance(value, str):
        text = repr(value)
    else:
        try:
            text = json.dumps(value, ensure_ascii=False, default=str)
        except (TypeError, ValueError):  # a circular structure: no caller's JSON looks like it
            text = str(value)
    if len(text) <= chars:
        return text
    return f"{text[:chars]}... ({len(text)} characters)"


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """`did you mean 'batch_size'?` for the known name closest to a misspelt one, else ''."""
    close = difflib.get_close_matches(name, list(known), n=1)
    return f"did you mean '{close[0]}'?" if close else ""


def unknown_keys_message(unknown: list[str], known: list[str]) -> str:
    """The message for unknown config keys: each with its closest known key (difflib), as in
    `unknown config key 'batchsize'; did you mean 'batch_size'?`, and the known keys when one
    has none close (unless it is too long to be a typo of one)."""
    shown_keys, lost = [], False
    for key in unknown[:5]:
        hint = did_you_mean(key[:64].lower(), known)
        lost = lost or (not hint and len(key) <= 64)
        shown_keys.append((shown(key, 40), hint))
    if len(unknown) == 1:
        key, hint = shown_keys[0]
        text = f"unknown config key {key}" + (f"; {hint}" if hint else "")
    else:
        listed = ", ".join(f"{key} ({hint})" if hint else key for key, hint in shown_keys)
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        text = f"unknown config keys {listed}{more}"
    return text + (f"; the keys are: {', '.join(known)}" if lost else "")


@dataclass
class TrainConfig:
    dataset: str = "digits"
    data_root: str | None = None
    # The stored dataset (POST /datasets) of dataset "stored"; the API fills it in from
    # `"dataset": "<id or name>"`, and the worker fetches its packed file into a local cache.
    dataset_id: str | None = None
    download: bool = False
    resolution: int = 32
    num_classes: int | None = None
    preset: str | None = None
    g_ch: int | None = None
    d_ch: int | None = None
    z_dim: int = 128
    batch_size: int | None = None  # None: from the preset (paper 64, tiny 32)
    steps: int | None = None  # None: from the preset (paper 10000, tiny see PRESET_TRAINING)
    lr_g: float | None = None  # paper 1e-4 (TTUR), tiny 1e-3
    lr_d: float | None = None  # paper 4e-4 (TTUR), tiny 2e-3
    beta1: float = 0.0
    beta2: float = 0.9
    d_steps: int = 1
    # How z enters G (Z_MODES): "input" is the paper's; "hierarchical" is BigGAN's. None: preset.
    z_mode: str | None = None
    # DiffAugment for every image D sees: "translation,color,cutout", or "" for none. None: the
    # data set's size decides (sagan_core.recipe: ADA's policy under 100,000 images, else none).
    diff_augment: str | None = None
    # ADA (sagan_core.augment): the target of D's overfitting signal r_t; each transform of
    # diff_augment reaches an image with a probability p that follows it. 0: p = 1 (DiffAugment
    # as published). None: the data set's size decides (0.6 under 100,000 images).
    ada_target: float | None = None
    # Steps over which D's class projection term fades in linearly from 0 (an unconditional
    # start), after which D is the paper's projection D; 0: off. None: preset.
    class_warmup: int | None = None
    # Weight of a mode-seeking term in G's loss (MSGAN, Mao et al. 2019): w / (mean |x1 - x2| /
    # mean |z1 - z2|) over pairs of samples of one class; 0: off. None: preset.
    diversity_weight: float | None = None
    ema_decay: float | None = None  # paper 0.9999, tiny 0.995
    ema_start: int | None = None  # paper 1000, tiny 200
    log_every: int = 50
    checkpoint_every: int | None = None  # None: from the preset (paper 1000); 0: only the last
    sample_every: int | None = None  # None: from the preset (paper 1000); 0: off
    eval_every: int = 0
    # class_accuracy and variety (sagan_core.variety) of G_ema every this many steps and at the
    # end; None: every VARIETY_LOGS log lines when the data set is small enough to judge cheaply
    # (sagan_core.variety.judged_by_default: <= 100 classes, 20,000 images, 64 MB of pixels), else
    # off; 0: off.
    variety_every: int | None = None
    eval_samples: int = TRAINING_EVAL_SAMPLES
    # Reference statistics use at most this many real images (a seeded subset), as the usual
    # 50k-image ImageNet statistics do; small data sets use all of theirs.
    eval_reference_samples: int = 50000
    seed: int = 0
    device: str = "auto"
    precision: str = "fp32"
    # "plain" or "fast" (PATHS); None: fast on CUDA, plain elsewhere (the trainer fills it in).
    path: str | None = None
    # The fast path on CUDA in one process: compile's reduce-overhead mode, CUDA graphs (one
    # launch per compiled graph, for small images where launches dominate). Off until measured
    # on a GPU (issue #14); no effect on a CPU.
    cuda_graphs: bool = False
    # Processes of one data-parallel run (sagan_core.distributed): one per GPU (cuda:0..N-1), or
    # N CPU processes; batch_size is per process, so the global batch is gpus * batch_size.
    gpus: int = 1
    # Machines of one run (issue #25): `gpus` processes on each of `nodes`, so the global batch is
    # nodes * gpus * batch_size. A cluster launcher starts them (torchrun on each node, or the
    # service's slurm launcher); one process never starts a run of nodes > 1 itself.
    nodes: int = 1
    # With gpus > 1: G's batch norms use the statistics of the whole global batch (so the run is
    # the one-process run with the global batch); False: each process normalises its own.
    sync_bn: bool = True

    # -- (de)serialisation -------------------------------------------------------------------

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, d: typing.Mapping[str, typing.Any]) -> TrainConfig:
        if not isinstance(d, typing.Mapping):
            raise ConfigError("config", f"expected a mapping, got {type(d).__name__}")
        names = cls.field_names()
        unknown = sorted(str(k) for k in d if k not in names)
        if unknown:
            raise ConfigError(unknown[0][:SHOWN_CHARS], unknown_keys_message(unknown, names))
        hints = typing.get_type_hints(cls)
        kwargs = {}
        for key, value in d.items():
            kwargs[key] = _coerce(key, value, hints[key])
        return cls(**kwargs)

    def to_dict(self) -> dict[str, typing.Any]:
        return {name: getattr(self, name) for name in self.field_names()}

    # -- checks and defaults -----------------------------------------------------------------

    def validate(self, limits: Limits | None = None) -> TrainConfig:
        """Raise ConfigError naming the first impossible field; return self so calls can chain.

        `limits` are the operator's bounds (None: the defaults of `Limits`); a value over one is
        refused naming the field, the value, the limit and the setting that sets it.
        """
        limits = limits if limits is not None else Limits()
        hints = typing.get_type_hints(type(self))
        for name in self.field_names():
            value = _coerce(name, getattr(self, name), hints[name])  # type check only
            if isinstance(value, int) and not isinstance(value, bool):
                limit = MAX_SEED if name == "seed" else MAX_INT
                if value > limit:
                    raise ConfigError(name, f"must be <= {limit} (got {shown(value)})")
            elif isinstance(value, str):
                data_root = name == "data_root"
                limit = limits.data_root_chars if data_root else MAX_NAME_CHARS
                if len(value) > limit:
                    setting = setting_name("data_root_chars") if data_root else None
                    raise ConfigError(
                        name,
                        f"must be at most {limit} characters (got {len(value)} characters)"
                        + (f"; the operator's limit is {setting}" if setting else ""),
                    )
        for name in LIMITED_FIELDS:
            value = getattr(self, name)
            limit, setting = limits.bound(name)
            if value is not None and value > limit:
                raise ConfigError(
                    name,
                    f"must be <= {limit} (got {value!r}); the operator's limit is {setting}",
                )

        def need(ok: bool, name: str, message: str) -> None:
            if not ok:
                raise ConfigError(name, f"{message} (got {shown(getattr(self, name))})")

        need(self.dataset in DATASETS, "dataset", f"must be one of {', '.join(DATASETS)}")
        if self.dataset in NEEDS_DATA_ROOT:
            need(bool(self.data_root), "data_root", f"is required for dataset '{self.dataset}'")
        if self.dataset == "stored":
            need(bool(self.dataset_id), "dataset_id", "is required for dataset 'stored'")
        need(
            not self.download or self.dataset in DOWNLOADABLE,
            "download",
            f"only {' and '.join(DOWNLOADABLE)} can be downloaded, not dataset '{self.dataset}'",
        )
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
        need(self.steps is None or self.steps >= 1, "steps", "must be >= 1")
        for name in ("lr_g", "lr_d"):
            v = getattr(self, name)
            need(v is None or (math.isfinite(v) and v > 0), name, "must be a finite number > 0")
        for name in ("beta1", "beta2"):
            need(0.0 <= getattr(self, name) < 1.0, name, "must be in [0, 1)")
        need(self.d_steps >= 1, "d_steps", "must be >= 1")
        need(self.class_warmup is None or self.class_warmup >= 0, "class_warmup", "must be >= 0")
        w = self.diversity_weight
        need(w is None or (math.isfinite(w) and w >= 0), "diversity_weight", "must be >= 0")
        need(
            self.z_mode is None or self.z_mode in Z_MODES,
            "z_mode",
            f"must be one of {', '.join(Z_MODES)}",
        )
        policy = [p.strip() for p in (self.diff_augment or "").split(",") if p.strip()]
        need(
            all(p in AUGMENT_POLICIES for p in policy),
            "diff_augment",
            f"must be a comma-separated list of {', '.join(AUGMENT_POLICIES)}, or empty",
        )
        a = self.ada_target
        need(a is None or (math.isfinite(a) and 0 <= a < 1), "ada_target", "must be in [0, 1)")
        if self.resolution in G_ARCH and self.z_mode == "hierarchical":
            blocks = len(G_ARCH[self.resolution]["in"])
            need(self.z_dim > blocks, "z_dim", f"must be > {blocks} to split z across G's blocks")
        decay, start = self.ema_decay, self.ema_start
        need(decay is None or 0.0 <= decay <= 1.0, "ema_decay", "must be in [0, 1]")
        need(start is None or start >= 0, "ema_start", "must be >= 0")
        need(self.log_every >= 1, "log_every", "must be >= 1")
        for name in ("checkpoint_every", "sample_every", "eval_every", "variety_every"):
            v = getattr(self, name)
            need(v is None or v >= 0, name, "must be >= 0 (0 turns it off)")
        need(self.eval_samples >= 1, "eval_samples", "must be >= 1")
        need(self.eval_reference_samples >= 2, "eval_reference_samples", "must be >= 2")
        need(self.seed >= 0, "seed", "must be >= 0")
        dev = self.device
        need(
            dev in ("auto", "cpu", "cuda", "mps")
            or (dev.startswith("cuda:") and dev[5:].isascii() and dev[5:].isdigit()),
            "device",
            "must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'",
        )
        need(self.precision in PRECISIONS, "precision", "must be 'fp32' or 'bf16'")
        need(self.path is None or self.path in PATHS, "path", "must be 'plain' or 'fast'")
        need(self.gpus >= 1, "gpus", "must be >= 1")
        need(self.nodes >= 1, "nodes", "must be >= 1")
        need(
            not self.cuda_graphs or self.path != "plain",
            "cuda_graphs",
            "needs path fast (or null): the plain path is eager",
        )
        need(
            not self.cuda_graphs or self.gpus * self.nodes == 1,
            "cuda_graphs",
            f"needs one process (got gpus {self.gpus} x nodes {self.nodes}): DDP's gradient hooks "
            "run outside the graphs",
        )
        self._check_records(limits, need)
        if self.gpus > 1:
            need(
                not dev.startswith("cuda:"),
                "device",
                f"a run of gpus={self.gpus} uses cuda:0..{self.gpus - 1}; leave device auto or "
                "cuda (pin the worker's GPUs with CUDA_VISIBLE_DEVICES)",
            )
        return self

    def _check_records(self, limits: Limits, need) -> None:  # noqa: ANN001
        """Sample grids and log lines the run would store, within the operator's limits."""
        steps = self.steps
        if steps is None:
            return  # the preset's: checked again once resolved
        every = self.sample_every
        if every:
            grids = -(-steps // every)
            need(
                grids <= limits.sample_grids,
                "sample_every",
                f"{steps:,} steps with a sample grid every {every:,} would store {grids:,} grids; "
                f"at most {limits.sample_grids:,} ({setting_name('sample_grids')}): use "
                f"sample_every >= {-(-steps // limits.sample_grids):,}, or 0 for none",
            )
        lines = steps // self.log_every
        need(
            lines <= limits.log_lines,
            "log_every",
            f"{steps:,} steps with a log line every {self.log_every:,} would store {lines:,} lines "
            f"of metrics; at most {limits.log_lines:,} ({setting_name('log_lines')}): use "
            f"log_every >= {-(-steps // limits.log_lines):,}",
        )

    def resolved(self) -> TrainConfig:
        """A copy with preset, widths, class count (when fixed) and preset EMA defaults filled."""
        out = dataclasses.replace(self)
        if out.preset is None:
            out.preset = "tiny" if out.dataset == "digits" else "paper"
        ch = PRESET_CH[out.preset].get(out.resolution, 64)
        if out.preset == "tiny" and NATIVE_RESOLUTION.get(out.dataset, 32) <= COARSE_NATIVE:
            ch = min(ch, TINY_COARSE_CH)  # digits: 8x8 upsampled, ch 4 is enough and faster
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
        try:
            return float(value)
        except OverflowError:  # an integer of 400 digits is valid JSON
            raise ConfigError(name, f"must be a finite number (got {shown(value)})") from None
    if not ok:
        raise ConfigError(name, f"must be {_SCALARS[base]} (got {shown(value)})")
    return value


def parse_assignments(pairs: list[str], flag: str = "--set") -> dict[str, Any]:
    """`KEY=VALUE` pairs (a command line's `--set steps=2000 --set preset=paper`) as a dict; each
    value is read as JSON (`2000`, `1e-4`, `true`, `null`, `[3, 7]`), else kept as text. A pair with
    no `=` or no key raises ValueError naming it."""
    values: dict[str, Any] = {}
    for pair in pairs:
        key, eq, text = pair.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"{flag} {pair!r}: expected KEY=VALUE, e.g. {flag} steps=2000")
        try:
            values[key.strip()] = json.loads(text)
        except ValueError:
            values[key.strip()] = text
    return values
