"""Datasets as uint8 image tensors (or a packed memmap) with labels, their registry, a sampler."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .archive import IMAGE_SUFFIXES
from .config import NATIVE_RESOLUTION, TrainConfig
from .distributed import Ranks, shard
from .errors import DatasetError
from .packed import PackedFormatError, PackedWriter
from .packed import read as read_packed
from .shapes import make_shapes


@dataclass
class ImageDataset:
    name: str
    images: torch.Tensor | np.ndarray  # uint8 (N, 3, R, R); a read-only np.memmap for packed files
    labels: torch.Tensor  # int64 (N,)
    class_names: list[str]
    # The size the images were made at before resizing (digits: 8); None: `resolution`.
    native_resolution: int | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def resolution(self) -> int:
        return int(self.images.shape[-1])

    def __len__(self) -> int:
        return int(self.labels.shape[0])


DATASETS: dict[str, Callable[[TrainConfig], ImageDataset]] = {}


def register_dataset(name: str):
    def wrap(fn: Callable[[TrainConfig], ImageDataset]):
        DATASETS[name] = fn
        return fn

    return wrap


def build_dataset(cfg: TrainConfig | Mapping[str, Any] | None = None, **fields) -> ImageDataset:
    """Build the dataset from a TrainConfig, a config dict, or config fields as kwargs."""
    if cfg is None:
        cfg = TrainConfig.from_dict(fields)
    elif isinstance(cfg, Mapping):
        cfg = TrainConfig.from_dict({**cfg, **fields})
    if cfg.dataset not in DATASETS:
        raise DatasetError(f"unknown dataset '{cfg.dataset}'; known: {', '.join(sorted(DATASETS))}")
    ds = DATASETS[cfg.dataset](cfg)
    if len(ds) == 0:
        raise DatasetError(f"dataset '{ds.name}' has 0 images")
    if cfg.num_classes is not None and cfg.num_classes != ds.num_classes:
        raise DatasetError(
            f"dataset '{ds.name}' has {ds.num_classes} classes but num_classes={cfg.num_classes}"
        )
    return ds


def _resize_uint8(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """(N, C, h, w) uint8 -> (N, C, R, R) uint8, bilinear (antialiased when shrinking)."""
    if images.shape[-1] == resolution and images.shape[-2] == resolution:
        return images
    out = []
    for chunk in images.split(1024):
        x = F.interpolate(
            chunk.float(),
            size=(resolution, resolution),
            mode="bilinear",
            align_corners=False,
            antialias=chunk.shape[-1] > resolution,
        )
        out.append(x.round().clamp(0, 255).to(torch.uint8))
    return torch.cat(out)


@register_dataset("digits")
def _digits(cfg: TrainConfig) -> ImageDataset:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.from_numpy(digits.images).float()[:, None] * (255.0 / 16.0)  # (N, 1, 8, 8) in 0..255
    x = _resize_uint8(x.round().to(torch.uint8), cfg.resolution).expand(-1, 3, -1, -1)
    return ImageDataset(
        name="digits",
        images=x.contiguous(),
        labels=torch.from_numpy(digits.target).long(),
        class_names=[str(i) for i in range(10)],
        native_resolution=NATIVE_RESOLUTION["digits"],
    )


def _cifar(cfg: TrainConfig, cls_name: str) -> ImageDataset:
    import torchvision

    cls = getattr(torchvision.datasets, cls_name)
    try:
        ds = cls(root=cfg.data_root, train=True, download=cfg.download)
    except RuntimeError as e:
        raise DatasetError(
            f"dataset '{cfg.dataset}' not found under {cfg.data_root!r} ({e}); "
            "set download=true or point data_root at an extracted copy"
        ) from e
    x = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()  # (N, 3, 32, 32)
    return ImageDataset(
        name=cfg.dataset,
        images=_resize_uint8(x, cfg.resolution),
        labels=torch.tensor(ds.targets, dtype=torch.long),
        class_names=list(ds.classes),
    )


@register_dataset("cifar10")
def _cifar10(cfg: TrainConfig) -> ImageDataset:
    return _cifar(cfg, "CIFAR10")


@register_dataset("cifar100")
def _cifar100(cfg: TrainConfig) -> ImageDataset:
    return _cifar(cfg, "CIFAR100")


def _scan_folder(root: str | Path) -> tuple[list[tuple[Path, int]], list[str]]:
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset 'folder:{root}' does not exist or is not a directory")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    files = [
        (f, label)
        for label, name in enumerate(classes)
        for f in sorted((root / name).rglob("*"))
        if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file()
    ]
    if not files:
        raise DatasetError(
            f"dataset 'folder:{root}' has 0 images; expected class sub-folders of PNG/JPEG files"
        )
    return files, classes


def _load_image(path: Path, resolution: int) -> np.ndarray:
    """Decode, resize the shorter side to R and center-crop: (3, R, R) uint8."""
    from PIL import Image

    from .images import square_crop

    try:
        with Image.open(path) as im:
            return square_crop(im.convert("RGB"), resolution)
    except Exception as e:  # PIL raises several types for bad files
        raise DatasetError(f"cannot read image {path}: {e}") from e


@register_dataset("folder")
def _folder(cfg: TrainConfig) -> ImageDataset:
    files, classes = _scan_folder(cfg.data_root)
    images = np.stack([_load_image(f, cfg.resolution) for f, _ in files])
    return ImageDataset(
        name=f"folder:{cfg.data_root}",
        images=torch.from_numpy(images),
        labels=torch.tensor([label for _, label in files], dtype=torch.long),
        class_names=classes,
    )


def pack_folder(folder: str | Path, out_path: str | Path, resolution: int) -> Path:
    """Decode an ImageFolder tree once into a packed file that training memory-maps."""
    files, classes = _scan_folder(folder)
    out_path = Path(out_path)
    tmp = out_path.with_name(out_path.name + ".tmp")
    with PackedWriter(tmp, resolution, classes, [label for _, label in files]) as writer:
        for path, _ in files:
            writer.write(_load_image(path, resolution).tobytes())
        writer.close()
    tmp.replace(out_path)
    return out_path


@register_dataset("packed")
def _packed(cfg: TrainConfig) -> ImageDataset:
    path = Path(cfg.data_root)
    name = f"packed:{path}"
    if not path.is_file():
        raise DatasetError(
            f"dataset '{name}' not found; create it with `sagan pack FOLDER -o FILE`"
        )
    try:
        header, labels, images = read_packed(path)
    except PackedFormatError as e:
        raise DatasetError(f"dataset '{name}': {e}") from e
    if header["resolution"] != cfg.resolution:
        raise DatasetError(
            f"dataset '{name}' was packed at resolution {header['resolution']} but the config asks "
            f"for resolution {cfg.resolution}; repack it or change resolution"
        )
    return ImageDataset(
        name, images, torch.from_numpy(labels.astype(np.int64)), header["class_names"]
    )


@register_dataset("color_shapes")
def _shapes(cfg: TrainConfig) -> ImageDataset:
    images, labels, names = make_shapes(cfg.resolution, seed=0)  # the same set for every run
    return ImageDataset(
        name="color_shapes",
        images=torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
        labels=torch.from_numpy(labels).long(),
        class_names=names,
    )


@register_dataset("synthetic")
def _synthetic(cfg: TrainConfig) -> ImageDataset:
    num_classes = cfg.num_classes or 10
    g = torch.Generator().manual_seed(cfg.seed)
    n = 1024
    r = cfg.resolution
    return ImageDataset(
        name="synthetic",
        images=torch.randint(0, 256, (n, 3, r, r), generator=g, dtype=torch.uint8),
        labels=torch.randint(0, num_classes, (n,), generator=g),
        class_names=[str(i) for i in range(num_classes)],
    )


class BatchSampler:
    """Random batches (with replacement) as float images in [-1, 1] on `device`.

    Tensors that fit (< `device_bytes`) are kept on the device as uint8 so a batch is one gather;
    memmaps are gathered on the host. Indices come from `generator` (CPU), which checkpoints keep.
    """

    def __init__(
        self,
        dataset: ImageDataset,
        batch_size: int,
        device: torch.device,
        generator: torch.Generator,
        device_bytes: int = 4 << 30,
        ranks: Ranks | None = None,  # this rank's slice of the batch
    ):
        self.batch_size, self.device, self.generator = batch_size, device, generator
        # Several processes: every rank draws the global batch's indices from the same generator
        # state and gathers only its slice, so each reads different images and all stay in step.
        self.world = ranks.world_size if ranks is not None else 1
        self.part = shard(batch_size, ranks)
        self.n = len(dataset)
        images = dataset.images
        if isinstance(images, torch.Tensor) and images.numel() <= device_bytes:
            self.images = images.to(device)
        else:
            self.images = images
        self.labels = dataset.labels.to(device)

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randint(0, self.n, (self.batch_size * self.world,), generator=self.generator)
        idx = idx[self.part]  # (B,)
        if isinstance(self.images, torch.Tensor) and self.images.device == self.device:
            x = self.images[idx.to(self.device)]
        elif isinstance(self.images, torch.Tensor):
            x = self.images[idx].to(self.device, non_blocking=True)
        else:
            x = torch.from_numpy(np.ascontiguousarray(self.images[idx.numpy()]))
            x = x.to(self.device, non_blocking=True)
        y = self.labels[idx.to(self.device)]
        return x.float().div_(127.5).sub_(1.0), y  # (B, 3, R, R) in [-1, 1], (B,)
