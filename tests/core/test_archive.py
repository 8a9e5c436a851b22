"""sagan_core.archive: archives of class folders and packed files made into packed files."""

from __future__ import annotations

import hashlib
import io
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sagan_core.archive import HEAD_BYTES, detect_format, pack_source
from sagan_core.config import TrainConfig
from sagan_core.data import DatasetError, build_dataset, pack_folder


def image_folder(root: Path, counts: dict[str, int], size: int = 20) -> Path:
    """Class folders of small PNG/JPEG images in several modes (RGB, L, RGBA, P)."""
    rng = np.random.default_rng(0)
    modes = ["RGB", "L", "RGBA", "P"]
    for c, (name, n) in enumerate(counts.items()):
        (root / name).mkdir(parents=True)
        for i in range(n):
            arr = rng.integers(0, 256, (size, size + 4, 3), dtype=np.uint8)
            arr[..., c % 3] = 255  # each class has its own colour
            im = Image.fromarray(arr).convert(modes[i % len(modes)])
            suffix = ".jpg" if im.mode in ("RGB", "L") and i % 2 else ".png"
            im.save(root / name / f"{i:03d}{suffix}")
    return root


def zip_of(folder: Path, out: Path, top: str | None = None) -> Path:
    with zipfile.ZipFile(out, "w") as z:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                rel = p.relative_to(folder).as_posix()
                z.write(p, f"{top}/{rel}" if top else rel)
    return out


def tar_of(folder: Path, out: Path, mode: str = "w:gz") -> Path:
    with tarfile.open(out, mode) as t:
        t.add(folder, arcname=folder.name)  # one top folder holding the class folders
    return out


def test_formats_are_told_from_the_first_bytes(tmp_path: Path) -> None:
    folder = image_folder(tmp_path / "imgs", {"a": 1})
    assert detect_format(zip_of(folder, tmp_path / "x.zip").read_bytes()[:512]) == "zip"
    assert detect_format(tar_of(folder, tmp_path / "x.tgz").read_bytes()[:512]) == "tar.gz"
    assert detect_format(tar_of(folder, tmp_path / "x.tar", "w").read_bytes()[:512]) == "tar"
    packed = pack_folder(folder, tmp_path / "x.pack", 32)
    assert detect_format(packed.read_bytes()[:512]) == "packed"
    assert detect_format(b"%PDF-1.7 hello" + bytes(600)) is None
    assert detect_format(b"\x89PNG\r\n\x1a\n" + bytes(600)) is None


@pytest.mark.parametrize("kind", ["zip", "zip-top", "tar.gz"])
def test_an_archive_packs_like_the_folder(tmp_path: Path, kind: str) -> None:
    folder = image_folder(tmp_path / "flowers", {"rose": 5, "tulip": 3})
    if kind == "tar.gz":
        src, fmt = tar_of(folder, tmp_path / "f.tgz"), "tar.gz"
    else:
        src = zip_of(folder, tmp_path / "f.zip", "flowers" if kind == "zip-top" else None)
        fmt = "zip"
    out = tmp_path / "out"
    out.mkdir()
    seen = []
    summary = pack_source(src, fmt, [32, 64], out, lambda d, t: seen.append((d, t)))
    assert summary.class_names == ["rose", "tulip"]
    assert summary.class_counts == [5, 3] and summary.images == 8
    assert seen[-1] == (8, 8)
    reference = pack_folder(folder, tmp_path / "ref.pack", 32)
    ds = build_dataset(TrainConfig(dataset="packed", data_root=str(summary.outputs[32].path)))
    ref = build_dataset(TrainConfig(dataset="packed", data_root=str(reference)))
    assert isinstance(ds.images, np.memmap)
    order = np.argsort(ds.labels.numpy(), kind="stable")  # archive order may differ
    ref_order = np.argsort(ref.labels.numpy(), kind="stable")
    assert sorted(ds.labels.tolist()) == sorted(ref.labels.tolist())
    assert np.array_equal(
        np.sort(ds.images[order].reshape(8, -1), axis=0),
        np.sort(ref.images[ref_order].reshape(8, -1), axis=0),
    )
    big = build_dataset(
        TrainConfig(dataset="packed", data_root=str(summary.outputs[64].path), resolution=64)
    )
    assert big.images.shape == (8, 3, 64, 64)


def test_a_packed_file_is_its_own_packed_file_and_resized_for_others(tmp_path: Path) -> None:
    folder = image_folder(tmp_path / "imgs", {"a": 2, "b": 2})
    packed = pack_folder(folder, tmp_path / "x.pack", 64)
    out = tmp_path / "out"
    out.mkdir()
    summary = pack_source(packed, "packed", [32, 64], out)
    assert summary.outputs[64].path == packed
    assert summary.class_counts == [2, 2]
    ds = build_dataset(TrainConfig(dataset="packed", data_root=str(summary.outputs[32].path)))
    assert ds.images.shape == (4, 3, 32, 32)


def test_bad_sources_fail_with_one_line(tmp_path: Path) -> None:
    folder = image_folder(tmp_path / "imgs", {"a": 4})
    packed = pack_folder(folder, tmp_path / "x.pack", 32).read_bytes()
    good = zip_of(folder, tmp_path / "good.zip").read_bytes()
    (tmp_path / "cut.zip").write_bytes(good[: len(good) // 2])
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(DatasetError, match="corrupt or truncated"):
        pack_source(tmp_path / "cut.zip", "zip", [32], out)
    tgz = tar_of(folder, tmp_path / "f.tgz").read_bytes()
    (tmp_path / "cut.tgz").write_bytes(tgz[: len(tgz) // 2])
    with pytest.raises(DatasetError, match="corrupt or truncated"):
        pack_source(tmp_path / "cut.tgz", "tar.gz", [32], out)

    (folder / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(DatasetError, match="broken.png.*cannot be decoded"):
        pack_source(zip_of(folder, tmp_path / "bad.zip"), "zip", [32], out)

    loose = tmp_path / "loose.zip"
    with zipfile.ZipFile(loose, "w") as z:
        buf = io.BytesIO()
        Image.new("RGB", (8, 8)).save(buf, "PNG")
        z.writestr("alone.png", buf.getvalue())
    with pytest.raises(DatasetError, match="not in a class folder"):
        pack_source(loose, "zip", [32], out)

    empty = tmp_path / "empty.zip"
    with zipfile.ZipFile(empty, "w") as z:
        z.writestr("a/readme.txt", "no images")
    with pytest.raises(DatasetError, match="no images"):
        pack_source(empty, "zip", [32], out)

    (tmp_path / "cut.pack").write_bytes(packed[:-10])
    with pytest.raises(DatasetError, match="truncated or corrupt"):
        pack_source(tmp_path / "cut.pack", "packed", [32], out)


def test_format_detection_imports_no_torch_and_agrees_with_the_core() -> None:
    import subprocess
    import sys

    code = "import sys, sagan_core.archive; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"  # the API detects formats without loading torch


def test_a_packed_file_reads_back_what_was_written(tmp_path) -> None:
    import numpy as np

    from sagan_core import packed
    from sagan_core.data import build_dataset

    images = np.random.default_rng(0).integers(0, 256, (5, 3, 8, 8), dtype=np.uint8)
    with packed.PackedWriter(tmp_path / "x.pack", 8, ["a", "b"], [0, 1, 1, 0, 1]) as writer:
        for image in images:
            writer.write(image.tobytes())
        size, sha = writer.close()
    data = (tmp_path / "x.pack").read_bytes()
    assert size == len(data) and sha == hashlib.sha256(data).hexdigest()
    assert detect_format(data[:HEAD_BYTES]) == "packed"
    header, labels, read = packed.read(tmp_path / "x.pack")
    assert header == {"resolution": 8, "count": 5, "class_names": ["a", "b"]}
    assert labels.tolist() == [0, 1, 1, 0, 1] and np.array_equal(read, images)
    ds = build_dataset(dataset="packed", data_root=str(tmp_path / "x.pack"), resolution=8)
    assert ds.class_names == ["a", "b"] and np.array_equal(np.asarray(ds.images), images)
    (tmp_path / "cut.pack").write_bytes(data[:-1])
    with pytest.raises(packed.PackedFormatError, match="truncated or corrupt"):
        packed.read_header(tmp_path / "cut.pack")


@pytest.mark.parametrize("name", ["/rose/1.png", "/data/flowers/rose/1.png"])
def test_an_absolute_path_in_a_tar_is_refused_not_a_class(tmp_path: Path, name: str) -> None:
    """#24: `tar -P` keeps a leading `/`, which became a class named '/'. (A `..` part is
    skipped with the hidden files, as `.`-names are.)"""
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "PNG")
    archive = tmp_path / "p.tar"
    with tarfile.open(archive, "w") as t:
        for member in (name, "tulip/1.png"):
            info = tarfile.TarInfo(member)
            info.size = len(buf.getvalue())
            t.addfile(info, io.BytesIO(buf.getvalue()))
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(DatasetError, match="absolute path or a '..'"):
        pack_source(archive, "tar", [32], out)
