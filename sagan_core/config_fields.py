"""What each config field means and may take: the one text behind the API's schema
(api/config_schema.py) and the core CLI's help. Torch-free."""

from __future__ import annotations

from .arch import Z_MODES
from .config import (
    AUGMENT_POLICIES,
    DATASETS,
    PATHS,
    PRECISIONS,
    PRESET_TRAINING,
    PRESETS,
    RESOLUTIONS,
    VARIETY_LOGS,
)

# -- what each field means: the one text behind the API's schema (api/config_schema.py) ----------


def _by_preset(name: str) -> str:
    """`null: from the preset (paper 64, tiny 32)` for a field PRESET_TRAINING fills in."""
    values = ", ".join(
        f"{preset} {'none' if v[name] == '' else v[name]}" for preset, v in PRESET_TRAINING.items()
    )
    return f"null: from the preset ({values})"


# Field -> the values it may take (validate() refuses any other; null where the field allows it).
CHOICES: dict[str, tuple] = {
    "dataset": DATASETS,
    "resolution": RESOLUTIONS,
    "preset": PRESETS,
    "z_mode": Z_MODES,
    "precision": PRECISIONS,
    "path": PATHS,
}

# Field -> what it means, for people: the API's OpenAPI schema of a job's config shows these
# beside each field's type, choices, bounds and default (tests/core/test_config.py holds every
# field to having one).
DESCRIPTIONS: dict[str, str] = {
    "dataset": "The training images: digits (scikit-learn's 1,797 handwritten 8x8 digits, "
    "upsampled), cifar10, cifar100, folder (a directory with one sub-folder of images per "
    "class, in sorted order), packed (a file made by `sagan pack`), synthetic (random images, "
    "for tests), or the id or name of one of your stored datasets (POST /datasets), which the "
    "job stores as stored with its dataset_id.",
    "dataset_id": "The stored dataset of dataset stored (filled in by the service from a "
    "dataset's id or name); workers fetch it into their local cache.",
    "data_root": "The data set's directory (folder, cifar10, cifar100) or packed file; required "
    "for those, unused by digits and synthetic. The service takes it only inside its data roots "
    "(SAGAN_DATA_ROOTS); a relative path is taken under the first.",
    "download": "Let torchvision fetch cifar10 or cifar100 into data_root when it is not there "
    "(those two only).",
    "resolution": "Image size in pixels (square).",
    "num_classes": "Number of classes; null: from the data set (digits and cifar10 10, "
    "cifar100 100, synthetic 10, folder its sub-folders). A data set with a fixed count must "
    "match it.",
    "preset": "Network widths and training defaults: paper (ch=64, as in SAGAN) or tiny (trains "
    "digits on a CPU in minutes); null: tiny for digits, else paper.",
    "g_ch": "Base channel width of G (each block's width is a multiple of it); null: from the "
    "preset and resolution (paper 64; tiny 4 at 32 px, 8 above). G's attention layer must get a "
    "multiple of 8 channels.",
    "d_ch": "Base channel width of D; null: from the preset and resolution, as g_ch. D's "
    "attention layer must get a multiple of 8 channels.",
    "z_dim": "Length of the noise vector z.",
    "batch_size": f"Real and generated images per D step. {_by_preset('batch_size')}.",
    "steps": f"Training steps (generator updates) to run. {_by_preset('steps')}.",
    "lr_g": f"Adam learning rate of G (TTUR: slower than D's). {_by_preset('lr_g')}.",
    "lr_d": f"Adam learning rate of D. {_by_preset('lr_d')}.",
    "beta1": "Adam beta1 of both networks (the paper's is 0).",
    "beta2": "Adam beta2 of both networks (the paper's is 0.9).",
    "d_steps": "D updates per G update (the paper's is 1, with TTUR).",
    "z_mode": "How z enters G: input (the paper: at G's first layer) or hierarchical (BigGAN: "
    "split across G's blocks, with a shared class embedding; z_dim must exceed the number of "
    f"blocks). {_by_preset('z_mode')}.",
    "diff_augment": "DiffAugment for every image D sees, real and generated: a comma-separated "
    f"list of {', '.join(AUGMENT_POLICIES)}, or an empty string for none. Default: "
    "translation,color,cutout with ADA for a data set under 100,000 images, else none.",
    "ada_target": "ADA (stylegan2-ada): each transform of diff_augment reaches an image with a "
    "probability p that rises while D's overfitting signal r_t = mean sign(D(real)) is above this "
    "target and falls below it (metric augment_p); 0: p = 1 always (DiffAugment). Default: 0.6 "
    "for a data set under 100,000 images, else 0.",
    "class_warmup": "Steps over which D's class projection term fades in linearly from 0 (an "
    f"unconditional start); 0: off. {_by_preset('class_warmup')}.",
    "diversity_weight": "Weight of a mode-seeking term in G's loss (MSGAN): weight / (mean "
    "|x1 - x2| / mean |z1 - z2|) over pairs of samples of one class, so that G cannot ignore z; "
    f"0: off. {_by_preset('diversity_weight')}.",
    "ema_decay": "Decay of the moving average of G's weights (G_ema: what models sample from and "
    f"evaluations score). {_by_preset('ema_decay')}.",
    "ema_start": f"Step from which G_ema averages (before it, it copies G). "
    f"{_by_preset('ema_start')}.",
    "log_every": "Steps between metric rows (losses, D outputs, attention gammas, images/s).",
    "checkpoint_every": "Steps between checkpoints (each one the job's latest model); 0: only at "
    f"the end. {_by_preset('checkpoint_every')}.",
    "sample_every": "Steps between the sample grids kept with the job; 0: none. "
    f"{_by_preset('sample_every')}.",
    "eval_every": "Steps between IS/FID/KID evaluations of G_ema (and one at the end); the "
    "checkpoint with the lowest FID is the job's best model. 0: off. Needs the Inception "
    "weights.",
    "variety_every": "Steps between class_accuracy and variety scores of G_ema (and at the end); "
    f"null: every {VARIETY_LOGS} log lines when the data set is small enough to judge cheaply "
    "(in memory, up to 100 classes and 20,000 images), else off; 0: off.",
    "eval_samples": "Generated images per evaluation (the usual FID uses 50,000).",
    "eval_reference_samples": "Real images the reference statistics use at most (a seeded "
    "subset); smaller data sets use all of theirs.",
    "seed": "Seed of the initial weights, the data order and the noise.",
    "device": "Where to train: auto (a GPU when the worker has one, else the CPU), cpu, cuda, "
    "cuda:N or mps; a device the worker lacks fails the job.",
    "precision": "fp32, or bf16 mixed precision (autocast).",
    "gpus": "Processes of one data-parallel run (DistributedDataParallel): one per GPU of a worker "
    "that has that many (cuda:0..N-1), or N processes on a CPU worker. batch_size is per process: "
    "the global batch is gpus x batch_size (scale lr_g and lr_d with it, see the README). The "
    "service runs it only on a worker pool of at least that many GPUs (SAGAN_GPU_POOLS).",
    "nodes": "Machines of one run, each running gpus processes: the global batch is nodes x gpus x "
    "batch_size. Needs a cluster launcher (SAGAN_LAUNCHER=slurm); the local launcher runs one "
    "machine.",
    "sync_bn": "With gpus > 1: G's batch norms normalise with the statistics of the whole global "
    "batch (the run is then the one-process run with the global batch); false: each process "
    "uses its own share.",
    "path": "How a step runs: plain (eager, unfused: the reference) or fast (torch.compile of G "
    "and D, channels_last, fused Adam, EMA by foreach ops, losses read back only every "
    "log_every steps; on CUDA also bf16 autocast, whatever precision says); null: fast on CUDA, "
    "plain elsewhere.",
    "cuda_graphs": "With the fast path on CUDA in one process: compile with CUDA graphs "
    "(reduce-overhead mode), one launch per compiled graph, for small images where kernel "
    "launches dominate; no effect on a CPU. Off by default (not yet measured on a GPU).",
}
