"""Image archives (zip, tar, tar.gz of class folders) and packed files made into packed files.

What a stored dataset's pack job runs: `detect_format` tells an archive from anything else by its
first bytes; `pack_source` validates every image (decodable, RGB or convertible to it, at least
one class) and writes one packed file (sagan_core.packed's format, read as a memmap) per resolution,
streaming: one image in memory at a time, whatever the archive's size. Importing it costs only
the standard library (the API detects formats with it); numpy, PIL and torch come when packing.
"""

from __future__ import annotations

import hashlib
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from .errors import DatasetError
from .packed import MAGIC, PackedFormatError, PackedWriter, read_header
from .packed import read as read_packed

FORMATS = ("zip", "tar", "tar.gz", "packed")
# Bytes `detect_format` needs to see (a tar header's "ustar" magic sits at offset 257).
HEAD_BYTES = 512
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}  # what a class folder's images are named (data reads it)


def _error(message: str) -> Exception:
    return DatasetError(message)


def detect_format(head: bytes) -> str | None:
    """The source format from its first bytes (HEAD_BYTES of them for tar), or None."""
    if head.startswith(MAGIC):
        return "packed"
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "zip"
    if head.startswith(b"\x1f\x8b"):
        return "tar.gz"
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "tar"
    return None


@dataclass
class PackedOutput:
    """One packed file written: its resolution, path, size and SHA-256."""

    resolution: int
    path: Path
    size: int
    sha256: str


@dataclass
class PackSummary:
    class_names: list[str]
    class_counts: list[int]
    images: int
    outputs: dict[int, PackedOutput] = field(default_factory=dict)


def _is_image(name: str) -> bool:
    p = PurePosixPath(name)
    hidden = any(part.startswith(".") or part == "__MACOSX" for part in p.parts)
    return not hidden and p.suffix.lower() in IMAGE_SUFFIXES


def _classes_of(names: list[str]) -> tuple[list[str], list[int]]:
    """Class names (sorted) and each file's label: the folder the file lies in under the root.

    `flowers/rose/1.png` and `rose/1.png` both give class `rose` (one top folder holding every
    class folder is stripped, as `tar -C .. flowers` or a zip of the folder make).
    """
    for name in names:  # `tar -P` keeps a leading `/`, which would become a class named "/"
        path = PurePosixPath(name)
        if path.is_absolute() or ".." in path.parts:
            raise _error(
                f"image {name[:200]!r} has an absolute path or a '..' in it; an archive's paths "
                "are relative: one folder of images per class (tar -C <folder> ., not tar -P)"
            )
    parts = [PurePosixPath(n).parts for n in names]
    if len({p[0] for p in parts}) == 1 and all(len(p) >= 3 for p in parts):
        parts = [p[1:] for p in parts]
    loose = [n for n, p in zip(names, parts, strict=True) if len(p) < 2]
    if loose:
        raise _error(
            f"image {loose[0]!r} is not in a class folder; the archive must hold one folder of "
            "images per class"
        )
    labels_by_name = [p[0] for p in parts]
    classes = sorted(set(labels_by_name))
    index = {c: i for i, c in enumerate(classes)}
    return classes, [index[c] for c in labels_by_name]


def _decode(data: BinaryIO, name: str, resolutions: list[int]) -> dict[int, bytes]:
    """Decode one image, convert to RGB, resize the shorter side and center-crop per resolution."""
    from PIL import Image

    try:
        with Image.open(data) as im:
            im.load()
            rgb = im.convert("RGB")
    except Exception as e:  # PIL raises several types for bad files
        raise _error(f"image {name!r} cannot be decoded as RGB: {e}") from e
    from .images import square_crop

    return {r: square_crop(rgb, r).tobytes() for r in resolutions}


def read_packed_header(path: str | Path) -> tuple[dict, int]:
    """(header, offset of the labels) of a whole packed file; DatasetError when it is not one."""
    try:
        return read_header(path)
    except PackedFormatError as e:
        raise _error(str(e)) from e


def _archive_members(path: Path, fmt: str) -> Iterator[tuple[str, Callable[[], BinaryIO]]]:
    """(name, opener) of every regular file, in archive order."""
    if fmt == "zip":
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                if not info.is_dir():
                    yield info.filename, lambda info=info, z=z: z.open(info)
        return
    mode = "r:gz" if fmt == "tar.gz" else "r:"
    with tarfile.open(path, mode) as t:
        for member in t:
            if member.isfile():
                yield member.name, lambda m=member, t=t: t.extractfile(m)


def _corrupt(e: Exception) -> Exception:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return _error(f"archive is corrupt or truncated: {text}")


def pack_source(
    source: str | Path,
    fmt: str,
    resolutions: list[int],
    out_dir: str | Path,
    progress: Callable[[int, int], None] | None = None,
) -> PackSummary:
    """Validate a source (zip/tar/tar.gz of class folders, or a packed file) and write
    `out_dir/r<R>.pack` for each resolution. `progress(done, total)` is called as images pass.
    Raises DatasetError with a one-line reason for anything unusable."""
    source, out_dir = Path(source), Path(out_dir)
    resolutions = sorted(set(resolutions))
    if not resolutions:
        raise _error("no resolution asked for")
    if fmt == "packed":
        return _repack(source, resolutions, out_dir, progress)
    if fmt not in FORMATS:
        raise _error(f"unknown source format {fmt!r}; known: {', '.join(FORMATS)}")
    try:
        names = [name for name, _ in _archive_members(source, fmt) if _is_image(name)]
    except (zipfile.BadZipFile, tarfile.TarError, OSError, EOFError, ValueError) as e:
        raise _corrupt(e) from e
    if not names:
        raise _error(
            "the archive holds no images (PNG/JPEG) in class folders; at least one class is needed"
        )
    classes, labels = _classes_of(names)
    writers = {r: PackedWriter(out_dir / f"r{r}.pack", r, classes, labels) for r in resolutions}
    done = 0
    try:
        for name, opener in _archive_members(source, fmt):
            if not _is_image(name):
                continue
            if done >= len(names):
                raise _error("the archive changed while it was read")
            with opener() as f:
                for r, data in _decode(f, name, resolutions).items():
                    writers[r].write(data)
            done += 1
            if progress is not None:
                progress(done, len(names))
    except DatasetError:
        raise
    except (zipfile.BadZipFile, tarfile.TarError, OSError, EOFError, ValueError) as e:
        raise _corrupt(e) from e
    finally:
        outputs = {r: PackedOutput(r, w.path, *w.close()) for r, w in writers.items()}
    counts = [labels.count(i) for i in range(len(classes))]
    return PackSummary(classes, counts, len(labels), outputs)


def _repack(
    source: Path,
    resolutions: list[int],
    out_dir: Path,
    progress: Callable[[int, int], None] | None,
) -> PackSummary:
    """A packed file: checked whole; other resolutions are resized from it (its own is itself)."""
    import numpy as np
    from PIL import Image

    try:
        header, labels, images = read_packed(source)
    except PackedFormatError as e:
        raise _error(str(e)) from e
    r0, count, classes = header["resolution"], header["count"], list(header["class_names"])
    if count == 0 or not classes:
        raise _error("the packed file holds no images; at least one class is needed")
    if labels.min() < 0 or labels.max() >= len(classes):
        raise _error("packed file labels are out of range of its class names: corrupt")
    others = [r for r in resolutions if r != r0]
    writers = {r: PackedWriter(out_dir / f"r{r}.pack", r, classes, labels.tolist()) for r in others}
    try:
        for i in range(count):
            if others:
                im = Image.fromarray(np.ascontiguousarray(images[i].transpose(1, 2, 0)))
                for r in others:
                    small = im.resize((r, r), Image.Resampling.BICUBIC)
                    writers[r].write(np.asarray(small, np.uint8).transpose(2, 0, 1).tobytes())
            if progress is not None and (i + 1 == count or (i + 1) % 256 == 0):
                progress(i + 1, count)
    finally:
        outputs = {r: PackedOutput(r, w.path, *w.close()) for r, w in writers.items()}
    if r0 in resolutions:
        sha = hashlib.sha256()
        with open(source, "rb") as f:
            while chunk := f.read(1 << 20):
                sha.update(chunk)
        outputs[r0] = PackedOutput(r0, source, source.stat().st_size, sha.hexdigest())
    counts = np.bincount(labels, minlength=len(classes)).tolist()
    return PackSummary(classes, counts, count, outputs)
