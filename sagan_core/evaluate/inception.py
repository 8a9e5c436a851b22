"""torch-fidelity's InceptionV3 (`inception-v3-compat`): where its weights come from, and the
features (pool3 for FID/KID, unbiased logits for IS) of uint8 images."""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

from ..weights import INCEPTION_WEIGHTS_FILE, INCEPTION_WEIGHTS_URL, hub_weights_path
from .errors import EvaluationError

INCEPTION_NAME = "inception-v3-compat"
INCEPTION_WEIGHTS_SHA256_PREFIX = "6726825d"
WEIGHTS_ENV = "SAGAN_INCEPTION_WEIGHTS"
POOL_FEATURE, LOGITS_FEATURE = "2048", "logits_unbiased"  # torch-fidelity's for FID/KID, IS


def _missing_weights_message(reason: str) -> str:
    return (
        f"Inception weights are not available: {reason}. Set `inception_weights` (or the "
        f"environment variable {WEIGHTS_ENV}) to a local copy of torch-fidelity's "
        f"{INCEPTION_WEIGHTS_FILE} "
        f"(from {INCEPTION_WEIGHTS_URL}), or run where that URL is reachable. "
        "Training without evaluation does not need it."
    )


def _hub_weights_path() -> Path:
    return hub_weights_path()  # the rule the API checks too, so both look in one place


def _download(url: str, dest: Path, timeout: float) -> None:
    """Fetch url to dest atomically, checking the sha256 prefix that the file name carries."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=dest.name, suffix=".part")
    try:
        # timeout bounds each socket operation, so an unreachable host fails in seconds, not minutes
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            while chunk := resp.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
        if not digest.hexdigest().startswith(INCEPTION_WEIGHTS_SHA256_PREFIX):
            raise OSError(
                f"downloaded file has sha256 {digest.hexdigest()[:8]}..., expected "
                f"{INCEPTION_WEIGHTS_SHA256_PREFIX}..."
            )
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def resolve_inception_weights(
    weights_path: str | os.PathLike | None = None,
    *,
    fetch: Callable[[str], Path] | None = None,
    download: bool = True,
    timeout: float = 20.0,
) -> Path:
    """The local file of the Inception weights.

    Order: ``weights_path``, then ``$SAGAN_INCEPTION_WEIGHTS``, then torch hub's cache
    (``<hub>/checkpoints/<file>``), then a download into that cache. A configured value that is
    not a local file goes to ``fetch`` (the service fetches it from object storage), which returns
    a local copy or raises LookupError saying why not. Raises EvaluationError at once when none
    works.
    """
    configured = weights_path or os.environ.get(WEIGHTS_ENV) or None
    if configured is not None:
        path = Path(configured).expanduser()
        if path.is_file():
            return path
        reason = f"configured file {str(path)!r} does not exist"
        if fetch is not None:
            try:
                return fetch(str(configured))
            except LookupError as e:
                reason = str(e.args[0]) if e.args else reason
        raise EvaluationError(_missing_weights_message(reason))
    cached = _hub_weights_path()
    if cached.is_file():
        return cached
    if not download:
        raise EvaluationError(
            _missing_weights_message("no path configured and download is disabled")
        )
    try:
        _download(INCEPTION_WEIGHTS_URL, cached, timeout)
    except (OSError, ValueError) as e:  # URLError, timeouts, refused connections are OSErrors
        raise EvaluationError(_missing_weights_message(f"download failed ({e})")) from e
    return cached


def _file_fingerprint(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()[:16]


@dataclass
class Features:
    pool: torch.Tensor  # (N, 2048) float32, FID and KID
    logits: torch.Tensor  # (N, 1008) float32, IS

    def __len__(self) -> int:
        return len(self.pool)


def _check_images(batch: torch.Tensor) -> torch.Tensor:
    if not (torch.is_tensor(batch) and batch.dtype == torch.uint8 and batch.dim() == 4):
        got = (
            f"{batch.dtype} {tuple(batch.shape)}"
            if torch.is_tensor(batch)
            else type(batch).__name__
        )
        raise EvaluationError(f"images must be a uint8 tensor (N, 3, H, W); got {got}")
    if batch.shape[1] != 3:
        raise EvaluationError(
            f"images must have 3 channels first (N, 3, H, W); got {tuple(batch.shape)}"
        )
    return batch


def iter_batches(
    images: torch.Tensor | Iterable[torch.Tensor], batch_size: int
) -> Iterator[torch.Tensor]:
    """Batches of uint8 (B, 3, H, W) from a tensor or an iterable of batches."""
    if torch.is_tensor(images):
        _check_images(images)
        yield from images.split(batch_size)
    else:
        for batch in images:
            yield _check_images(batch)


class FeatureExtractor:
    """torch-fidelity's InceptionV3 (``inception-v3-compat``) on one device.

    Takes uint8 images (N, 3, H, W) of any size (resized to 299 inside, as TF1 did) and returns
    pool3 features and unbiased logits.
    """

    name = INCEPTION_NAME

    def __init__(
        self,
        weights_path: str | os.PathLike | None = None,
        device: str | torch.device = "cpu",
        *,
        download: bool = True,
    ):
        path = resolve_inception_weights(weights_path, download=download)
        try:
            model = FeatureExtractorInceptionV3(
                INCEPTION_NAME,
                [POOL_FEATURE, LOGITS_FEATURE],
                feature_extractor_weights_path=str(path),
            )
        except Exception as e:  # unpickling or state-dict mismatch: the file is not the weights
            first_line = (str(e).strip().splitlines() or [""])[0][:200]
            raise EvaluationError(
                f"Inception weights {str(path)!r} could not be loaded ({type(e).__name__}: "
                f"{first_line}); expected torch-fidelity's {INCEPTION_WEIGHTS_FILE}"
            ) from e
        self.weights_path = path
        self.fingerprint = _file_fingerprint(path)  # stored with cached statistics
        self.device = torch.device(device)
        self.model = model.to(self.device)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> Features:
        pool, logits = self.model(_check_images(images).to(self.device, non_blocking=True))
        return Features(pool, logits)  # (B, 2048), (B, 1008)

    def extract(
        self, images: torch.Tensor | Iterable[torch.Tensor], batch_size: int = 64
    ) -> Features:
        parts = [self(batch) for batch in iter_batches(images, batch_size)]
        if not parts:
            raise EvaluationError("no images to evaluate")
        return Features(torch.cat([p.pool for p in parts]), torch.cat([p.logits for p in parts]))
