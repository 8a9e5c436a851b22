"""The packed dataset format, its one writer and one reader.

A file is MAGIC, a uint32 (little-endian) header length, a JSON header {resolution, count,
class_names}, int64 labels (count), then uint8 images (count, 3, R, R), which training reads as a
memmap: no image is decoded in the loop. The standard library is all it costs to import (the API
tells a packed upload by its MAGIC); numpy comes when images are read.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import Any

MAGIC = b"SAGANPK1"
MAX_HEADER_BYTES = 1 << 26


class PackedFormatError(ValueError):
    """Not a packed file, or a truncated or corrupt one; the message says which."""


class PackedWriter:
    """A packed file written front to back (header and labels first, then each image's bytes),
    hashed as it goes."""

    def __init__(self, path: str | Path, resolution: int, class_names: list[str], labels):  # noqa: ANN001
        labels = [int(v) for v in labels]
        self.path, self.resolution = Path(path), resolution
        self.sha = hashlib.sha256()
        self.size = 0
        self.file = open(self.path, "wb")  # noqa: SIM115 (closed in close())
        header = json.dumps(
            {"resolution": resolution, "count": len(labels), "class_names": list(class_names)}
        ).encode()
        self.write(MAGIC + struct.pack("<I", len(header)) + header)
        self.write(struct.pack(f"<{len(labels)}q", *labels))

    def write(self, images: bytes) -> None:
        self.file.write(images)
        self.sha.update(images)
        self.size += len(images)

    def close(self) -> tuple[int, str]:
        """(size in bytes, SHA-256) of the file written."""
        self.file.close()
        return self.size, self.sha.hexdigest()

    def __enter__(self) -> PackedWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.file.closed:
            self.file.close()


def read_header(path: str | Path) -> tuple[dict[str, Any], int]:
    """(header, byte offset of the labels); PackedFormatError unless the file is whole."""
    path = Path(path)
    with open(path, "rb") as f:
        if f.read(len(MAGIC)) != MAGIC:
            raise PackedFormatError("not a packed dataset file (wrong magic)")
        raw = f.read(4)
        if len(raw) < 4:
            raise PackedFormatError("packed file is truncated (no header)")
        (n,) = struct.unpack("<I", raw)
        if n > MAX_HEADER_BYTES:
            raise PackedFormatError(f"packed file header of {n} bytes is not plausible")
        try:
            header = json.loads(f.read(n))
            r, count, classes = header["resolution"], header["count"], header["class_names"]
        except (ValueError, KeyError, TypeError) as e:
            raise PackedFormatError(f"packed file header is corrupt: {e}") from e
    offset = len(MAGIC) + 4 + n
    ok = isinstance(r, int) and r > 0 and isinstance(count, int) and count >= 0
    if not ok or not isinstance(classes, list):
        raise PackedFormatError("packed file header is corrupt: resolution, count or class_names")
    expected = offset + 8 * count + count * 3 * r * r
    actual = path.stat().st_size
    if actual != expected:
        raise PackedFormatError(
            f"packed file is {actual} bytes but its header says {count} images at {r} px "
            f"({expected} bytes): truncated or corrupt"
        )
    return header, offset


def read(path: str | Path):  # noqa: ANN201
    """(header, labels as an int64 array, images as a read-only (count, 3, R, R) uint8 memmap)."""
    import numpy as np

    header, offset = read_header(path)
    count, r = header["count"], header["resolution"]
    labels = np.fromfile(path, dtype="<i8", count=count, offset=offset).astype(np.int64)
    images = np.memmap(
        path, dtype=np.uint8, mode="r", offset=offset + 8 * count, shape=(count, 3, r, r)
    )
    return header, labels, images
