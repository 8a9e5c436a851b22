import pytest
import torch
from PIL import Image

from sagan_core.config import TrainConfig
from sagan_core.data import BatchSampler, DatasetError, build_dataset, pack_folder


def _make_folder(root, classes=("cat", "ant"), per_class=2, size=(40, 30)):
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", size, (50 * c, 10 * i, 200)).save(root / name / f"{i}.png")
    return root


def test_digits_has_1797_images_of_10_classes_at_the_requested_resolution():
    ds = build_dataset(TrainConfig(dataset="digits", resolution=32))
    assert ds.images.shape == (1797, 3, 32, 32) and ds.images.dtype == torch.uint8
    assert ds.labels.shape == (1797,) and ds.labels.dtype == torch.int64
    assert ds.num_classes == 10 and ds.class_names == [str(i) for i in range(10)]
    assert int(ds.images.max()) == 255 and int(ds.images.min()) == 0


def test_folder_classes_are_sorted_subfolders_and_images_are_resized(tmp_path):
    root = _make_folder(tmp_path / "imgs")
    ds = build_dataset(dataset="folder", data_root=str(root), resolution=32)
    assert ds.class_names == ["ant", "cat"]
    assert ds.images.shape == (4, 3, 32, 32)
    assert ds.labels.tolist() == [0, 0, 1, 1]


def test_folder_with_no_images_says_it_expects_class_subfolders(tmp_path):
    (tmp_path / "empty" / "a").mkdir(parents=True)
    with pytest.raises(DatasetError, match=r"has 0 images; expected class sub-folders"):
        build_dataset(dataset="folder", data_root=str(tmp_path / "empty"))


def test_corrupt_image_error_names_the_file(tmp_path):
    root = _make_folder(tmp_path / "imgs")
    (root / "cat" / "broken.png").write_bytes(b"not a png at all")
    with pytest.raises(DatasetError, match="broken.png"):
        build_dataset(dataset="folder", data_root=str(root))


def test_packed_dataset_round_trips_and_rejects_another_resolution(tmp_path):
    root = _make_folder(tmp_path / "imgs")
    packed = pack_folder(root, tmp_path / "imgs.sgpk", 32)
    ds = build_dataset(dataset="packed", data_root=str(packed), resolution=32)
    direct = build_dataset(dataset="folder", data_root=str(root), resolution=32)
    assert ds.class_names == direct.class_names
    assert torch.equal(torch.from_numpy(ds.images[:].copy()), direct.images)
    assert torch.equal(ds.labels, direct.labels)
    with pytest.raises(DatasetError, match=r"resolution 32.*resolution 64"):
        build_dataset(dataset="packed", data_root=str(packed), resolution=64)


def test_batch_sampler_returns_floats_in_range_and_is_seeded():
    ds = build_dataset(dataset="synthetic", num_classes=3, resolution=32)
    batches = []
    for _ in range(2):
        s = BatchSampler(ds, 8, torch.device("cpu"), torch.Generator().manual_seed(1))
        batches.append(s.next())
    x, y = batches[0]
    assert x.shape == (8, 3, 32, 32) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1 and y.max() < 3
    assert torch.equal(batches[0][0], batches[1][0])
    assert y.min() >= 0
    other = BatchSampler(ds, 8, torch.device("cpu"), torch.Generator().manual_seed(2)).next()
    assert not torch.equal(other[0], x)  # the seed, not a fixed order, decides the batch


def test_color_shapes_is_a_colour_data_set_drawn_the_same_every_time():
    a = build_dataset(TrainConfig(dataset="color_shapes", resolution=32))
    b = build_dataset(TrainConfig(dataset="color_shapes", resolution=32, seed=9))
    assert a.images.shape == (1200, 3, 32, 32) and a.images.dtype == torch.uint8
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)  # not the run's seed
    assert a.class_names[:2] == ["red disc", "red square"] and a.num_classes == 6
    assert a.labels.bincount().tolist() == [200] * 6
    colour = a.images.float().std(dim=1).mean()  # channels differ: not grey digits
    assert colour > 10
    same = a.images[a.labels == 0]
    assert not torch.equal(same[0], same[1])  # each image its own size, place and background
