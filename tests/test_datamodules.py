"""Data modules on tiny data written in each data set's real on-disk format (IDX, CIFAR pickles, JPEG, PNG).

Contract: loaders yield (uint8 [B, C, H, W], int64 labels), `on_after_batch_transfer` maps the images to
float32 in [-1, 1], and user mistakes raise a one-line GanforgeError that names the fix.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import pickle
import re
import struct
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torchvision.datasets.celeba
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset, TensorDataset
from torchvision.datasets import CIFAR10, MNIST

from ganforge.datamodules import files
from ganforge.datamodules.base import ImageDataModule
from ganforge.datamodules.celeba import CelebADataModule
from ganforge.datamodules.cifar10 import CIFAR10DataModule
from ganforge.datamodules.digits import DigitsDataModule
from ganforge.datamodules.files import ImageFiles
from ganforge.datamodules.image_folder import ImageFolderDataModule
from ganforge.datamodules.mnist import FashionMNISTDataModule, MNISTDataModule
from ganforge.errors import GanforgeError

RED, BLUE = (255, 0, 0), (0, 0, 255)


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every download fails as it does offline (URLError), so no test can fetch anything."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(torchvision.datasets.celeba, "download_file_from_google_drive", refuse)


@contextmanager
def user_error(match: str) -> Iterator[pytest.ExceptionInfo[GanforgeError]]:
    """A GanforgeError matching `match`, on one line (entry scripts print it as `error: <message>`)."""
    with pytest.raises(GanforgeError, match=match) as info:
        yield info
    assert "\n" not in str(info.value), str(info.value)


def check_batch(dm: ImageDataModule, batch: tuple[Tensor, Tensor], channels: int, size: int) -> Tensor:
    """Assert the batch contract; return the images as `on_after_batch_transfer` hands them to the model."""
    images, labels = batch
    assert images.dtype == torch.uint8 and labels.dtype == torch.int64
    assert images.shape[1:] == (channels, size, size) and labels.shape == images.shape[:1]
    signed, labels_after = dm.on_after_batch_transfer((images, labels), 0)
    assert signed.dtype == torch.float32 and torch.equal(labels_after, labels)
    assert signed.min() >= -1 and signed.max() <= 1
    torch.testing.assert_close((signed + 1) * 127.5, images.float())
    return signed


def first_batch(dm: ImageDataModule) -> tuple[Tensor, Tensor]:
    """What training would see first: through the real loader, collate included."""
    return next(iter(dm.train_dataloader()))


def split_sizes(dm: ImageDataModule) -> tuple[int, int, int]:
    """(train, val, test) lengths after setup."""
    return len(dm.data_train), len(dm.data_val), len(dm.data_test)


def md5(path: Path) -> str:
    """What torchvision's integrity check compares against its table."""
    return hashlib.md5(path.read_bytes()).hexdigest()


# --- digits (scikit-learn, bundled) --------------------------------------------------------------------


def digits(**kwargs: Any) -> DigitsDataModule:
    """A set-up digits module (bundled data: no files to write)."""
    dm = DigitsDataModule(**kwargs)
    dm.setup()
    return dm


def items(dataset: TensorDataset) -> list[tuple[bytes, int]]:
    """Each (image bytes, label): comparable across splits, which hold copies rather than indices."""
    images, labels = dataset.tensors
    return [(image.numpy().tobytes(), int(label)) for image, label in zip(images, labels, strict=True)]


def test_digits_splits_partition_all_1797_images() -> None:
    dm = digits()
    assert split_sizes(dm) == (1437, 180, 180)
    everything = digits(val_fraction=0.0, test_fraction=0.0).data_train
    assert len(everything) == 1797
    split_items = items(dm.data_train) + items(dm.data_val) + items(dm.data_test)
    assert Counter(split_items) == Counter(items(everything))  # disjoint, and nothing lost or duplicated


def test_digits_split_is_seeded() -> None:
    a, b, other = digits(split_seed=0), digits(split_seed=0), digits(split_seed=1)
    for name in ("data_train", "data_val", "data_test"):
        assert torch.equal(getattr(a, name).tensors[0], getattr(b, name).tensors[0])
    assert not torch.equal(a.data_val.tensors[0], other.data_val.tensors[0])


@pytest.mark.parametrize("image_size, channels", [(32, 1), (16, 1), (16, 3)])
def test_digits_batches(image_size: int, channels: int) -> None:
    dm = digits(image_size=image_size, channels=channels, batch_size=256)
    images, labels = first_batch(dm)
    signed = check_batch(dm, (images, labels), channels, image_size)
    assert signed.min() < -0.9 and signed.max() > 0.9  # black background and white strokes both present
    assert set(dm.data_train.tensors[1].tolist()) == set(range(10))
    if channels == 3:  # grayscale copied into every channel
        assert torch.equal(images[:, 0], images[:, 1]) and torch.equal(images[:, 0], images[:, 2])


# --- loaders and batch size ----------------------------------------------------------------------------


def test_train_loader_shuffles_and_drops_the_partial_batch() -> None:
    dm = digits(batch_size=64)
    torch.manual_seed(0)
    batches = list(dm.train_dataloader())
    assert len(batches) == 1437 // 64 and all(len(labels) == 64 for _, labels in batches)
    seen = torch.cat([images for images, _ in batches])
    assert not torch.equal(seen, dm.data_train.tensors[0][: len(seen)])


def test_val_loader_keeps_every_item_in_order() -> None:
    dm = digits(batch_size=64)
    batches = list(dm.val_dataloader())
    assert [len(labels) for _, labels in batches] == [64, 64, 52]
    assert torch.equal(torch.cat([images for images, _ in batches]), dm.data_val.tensors[0])
    assert torch.equal(torch.cat([labels for _, labels in batches]), dm.data_val.tensors[1])


def test_batch_size_larger_than_training_set() -> None:
    dm = digits(batch_size=1438)
    with user_error(
        r"data\.batch_size=1438 is larger than the 1437 digits training images; lower it, e\.g\. "
        r"data\.batch_size=1024"
    ):
        dm.train_dataloader()


def test_loader_before_setup() -> None:
    with user_error(r"call setup\(\) first"):
        DigitsDataModule().train_dataloader()


# --- MNIST and Fashion-MNIST (IDX files) ---------------------------------------------------------------


def idx_bytes(array: np.ndarray) -> bytes:
    """IDX as in the MNIST files: big-endian magic (2051 images, 2049 labels), each dimension, uint8 data."""
    magic = {3: 2051, 1: 2049}[array.ndim]
    return struct.pack(f">{array.ndim + 1}i", magic, *array.shape) + array.astype(np.uint8).tobytes()


def mnist_images(n: int) -> np.ndarray:
    """Image i: top half at 255 - 4i, bottom half black: a pixel tells which image it is and which way up."""
    images = np.zeros((n, 28, 28), np.uint8)
    images[:, :14] = (255 - 4 * np.arange(n))[:, None, None]
    return images


def mnist_index(images: Tensor) -> Tensor:
    """Which written image each of these is (inverse of `mnist_images`)."""
    return (255 - images[:, 0, 0, 0].long()) // 4


def write_mnist(root: Path, folder: str, gz: bool = False, n_train: int = 60, n_test: int = 20) -> Path:
    """The four IDX files in root/<folder>/raw (image i has label i % 10); `gz`: as the original archives."""
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        for kind, array in (("images-idx3", mnist_images(n)), ("labels-idx1", np.arange(n) % 10)):
            data = idx_bytes(array)
            name = f"{prefix}-{kind}-ubyte"
            (raw / (name + ".gz" if gz else name)).write_bytes(gzip.compress(data) if gz else data)
    return raw


def check_mnist_split(dataset: TensorDataset) -> Tensor:
    """Pixels, orientation and labels of each image survived; returns which written images the split holds."""
    images, labels = dataset.tensors
    assert images.shape[1:] == (1, 32, 32)  # resized from 28
    index = mnist_index(images)
    assert torch.equal(labels, index % 10)
    assert torch.equal(images[:, 0, 0, :], (255 - 4 * index)[:, None].expand(-1, 32).to(torch.uint8))
    assert (images[:, 0, -1, :] == 0).all()
    return index


@pytest.mark.parametrize("download", [True, False])
@pytest.mark.parametrize(
    "module, folder", [(MNISTDataModule, "MNIST"), (FashionMNISTDataModule, "FashionMNIST")]
)
def test_mnist_family_reads_idx_files(
    tmp_path: Path, module: type[MNISTDataModule], folder: str, download: bool
) -> None:
    write_mnist(tmp_path, folder)
    dm = module(data_dir=str(tmp_path), val_size=10, download=download, batch_size=8)
    dm.prepare_data()  # with download=True: the files exist, so nothing is fetched (the network is off)
    dm.setup()
    assert split_sizes(dm) == (50, 10, 20)
    held = torch.cat([check_mnist_split(dm.data_train), check_mnist_split(dm.data_val)])
    assert sorted(held.tolist()) == list(range(60))
    assert torch.equal(check_mnist_split(dm.data_test), torch.arange(20))  # test files, in file order
    check_batch(dm, first_batch(dm), channels=1, size=32)


def test_mnist_extracts_verified_archives_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The .gz files as downloaded: torchvision checks their md5 and extracts them without the network."""
    raw = write_mnist(tmp_path, "MNIST", gz=True)
    monkeypatch.setattr(MNIST, "resources", [(p.name, md5(p)) for p in sorted(raw.glob("*.gz"))])
    dm = MNISTDataModule(data_dir=str(tmp_path), val_size=10)
    dm.prepare_data()
    dm.setup()
    assert split_sizes(dm) == (50, 10, 20)
    assert torch.equal(check_mnist_split(dm.data_test), torch.arange(20))


def test_mnist_val_size_must_leave_training_images(tmp_path: Path) -> None:
    write_mnist(tmp_path, "MNIST")
    with user_error(r"data\.val_size=60 must be in \[0, 60\)"):
        MNISTDataModule(data_dir=str(tmp_path), val_size=60, download=False).setup()


def test_mnist_missing_names_folder_and_files(tmp_path: Path) -> None:
    dm = MNISTDataModule(data_dir=str(tmp_path), download=False)
    dm.prepare_data()
    folder = re.escape(str(tmp_path / "MNIST" / "raw"))
    with user_error(
        rf"MNIST not found in {folder} .*train-images-idx3-ubyte.*t10k-labels-idx1-ubyte"
    ) as info:
        dm.setup()
    assert ".gz" not in str(info.value)  # without data.download, torchvision would not extract archives


def test_mnist_download_offline(tmp_path: Path) -> None:
    folder = re.escape(str(tmp_path / "MNIST" / "raw"))
    with user_error(
        rf"MNIST not found in {folder} \(download failed: .*network disabled in tests.*data\.download"
    ):
        MNISTDataModule(data_dir=str(tmp_path), download=True).prepare_data()


# --- CIFAR-10 (python pickle batches) ------------------------------------------------------------------


def cifar_batch(first: int, n: int) -> dict[str, Any]:
    """Images first..first+n-1, CHW-planar: red 255, green 10 * index, blue 8 * column; label index % 10."""
    index = np.arange(first, first + n)
    planes = np.empty((n, 3, 32, 32), np.uint8)
    planes[:, 0] = 255
    planes[:, 1] = (10 * index)[:, None, None]
    planes[:, 2] = 8 * np.arange(32)
    return {"data": planes.reshape(n, 3072), "labels": (index % 10).tolist()}


def write_cifar(root: Path, per_batch: int = 4, n_test: int = 6) -> dict[str, str]:
    """cifar-10-batches-py as distributed; returns the md5 of each file (torchvision checks them)."""
    folder = root / CIFAR10.base_folder
    folder.mkdir(parents=True)
    contents = {f"data_batch_{k + 1}": cifar_batch(k * per_batch, per_batch) for k in range(5)}
    contents["test_batch"] = cifar_batch(0, n_test)
    contents["batches.meta"] = {"label_names": [f"class{c}" for c in range(10)]}
    for name, content in contents.items():
        (folder / name).write_bytes(pickle.dumps(content))
    return {name: md5(folder / name) for name in contents}


@pytest.fixture
def cifar_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Tiny CIFAR-10 files whose md5s torchvision expects, so its integrity check stays in the loop."""
    md5s = write_cifar(tmp_path)
    monkeypatch.setattr(
        CIFAR10, "train_list", [[f"data_batch_{k}", md5s[f"data_batch_{k}"]] for k in range(1, 6)]
    )
    monkeypatch.setattr(CIFAR10, "test_list", [["test_batch", md5s["test_batch"]]])
    monkeypatch.setattr(CIFAR10, "meta", {**CIFAR10.meta, "md5": md5s["batches.meta"]})
    return tmp_path


def check_cifar_split(dataset: TensorDataset) -> Tensor:
    """Channel order, orientation and labels survived; returns which written images the split holds."""
    images, labels = dataset.tensors
    assert images.shape[1:] == (3, 32, 32)
    index = images[:, 1, 0, 0].long() // 10
    assert (images[:, 0] == 255).all()
    assert torch.equal(images[:, 1], (10 * index)[:, None, None].expand(-1, 32, 32).to(torch.uint8))
    assert torch.equal(images[:, 2], (8 * torch.arange(32)).expand(len(images), 32, 32).to(torch.uint8))
    assert torch.equal(labels, index % 10)
    return index


def test_cifar10_reads_pickle_batches(cifar_root: Path) -> None:
    dm = CIFAR10DataModule(data_dir=str(cifar_root), val_size=4, batch_size=4)
    dm.prepare_data()  # download=True, files verified: nothing fetched
    dm.setup()
    assert split_sizes(dm) == (16, 4, 6)
    held = torch.cat([check_cifar_split(dm.data_train), check_cifar_split(dm.data_val)])
    assert sorted(held.tolist()) == list(range(20))
    assert torch.equal(check_cifar_split(dm.data_test), torch.arange(6))
    signed = check_batch(dm, first_batch(dm), channels=3, size=32)
    assert (signed[:, 0] == 1).all()  # red stays red


def test_cifar10_checksum_mismatch(tmp_path: Path) -> None:
    write_cifar(tmp_path)  # md5s differ from the real files torchvision expects
    with user_error(r"CIFAR10 not found in .*cifar-10-batches-py \(Dataset not found or corrupted"):
        CIFAR10DataModule(data_dir=str(tmp_path), download=False).setup()


@pytest.mark.parametrize("download", [False, True])
def test_cifar10_missing(tmp_path: Path, download: bool) -> None:
    dm = CIFAR10DataModule(data_dir=str(tmp_path), download=download)
    folder = re.escape(str(tmp_path / "cifar-10-batches-py"))
    reason = "download failed: URLError" if download else "Dataset not found or corrupted"
    with user_error(rf"CIFAR10 not found in {folder} \({reason}.*data_batch_1, .*test_batch, batches\.meta"):
        dm.prepare_data()
        dm.setup()


# --- CelebA (aligned JPEGs) ----------------------------------------------------------------------------


def write_image(path: Path, pixels: np.ndarray) -> None:
    """JPEG or PNG by suffix; JPEG at quality 95, no chroma subsampling, so solid 8x8 blocks stay exact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, quality=95, subsampling=0)


def face(seed: int) -> np.ndarray:
    """A 178x218 stand-in for an aligned face: seeded noise around a solid red block that covers the
    140x140 centre crop (rows 39-178, columns 19-158) with 8x8-block-aligned margins."""
    pixels = np.random.default_rng(seed).integers(0, 256, (218, 178, 3), dtype=np.uint8)
    pixels[32:184, 16:160] = RED
    return pixels


def write_celeba(root: Path, n: int, codes: list[int] | None = None) -> Path:
    """000001.jpg.. in root/img_align_celeba; with `codes`, list_eval_partition.txt beside it (first ones)."""
    images = root / "img_align_celeba"
    for i in range(n):
        write_image(images / f"{i + 1:06d}.jpg", face(i))
    if codes is not None:
        lines = [f"{i + 1:06d}.jpg {code}\n" for i, code in enumerate(codes)]
        (root / "list_eval_partition.txt").write_text("".join(lines))
    return images


def names(dataset: Dataset) -> list[str]:
    """File names of a split kept as files (in_memory=False), to check which images went where."""
    assert isinstance(dataset, ImageFiles)
    return [path.name for path in dataset.files]


def jpgs(numbers: range) -> list[str]:
    """CelebA's file names for these image numbers."""
    return [f"{i:06d}.jpg" for i in numbers]


def all_items(dataset: Dataset) -> tuple[Tensor, Tensor]:
    """(images, labels) of a whole data set, decoding file-backed ones item by item."""
    images, labels = zip(*(dataset[i] for i in range(len(dataset))), strict=True)
    return torch.stack(images), torch.tensor([int(label) for label in labels])


@pytest.mark.parametrize("point_at", ["root", "image folder"])
def test_celeba_splits_follow_the_partition_file(tmp_path: Path, point_at: str) -> None:
    images = write_celeba(tmp_path, 10, codes=[0, 0, 0, 0, 1, 1, 2, 2, 2])  # 000010.jpg unlisted: training
    data_dir = tmp_path if point_at == "root" else images
    dm = CelebADataModule(data_dir=str(data_dir), in_memory=False, batch_size=2, num_workers=0)
    dm.setup()
    assert names(dm.data_train) == [*jpgs(range(1, 5)), "000010.jpg"]
    assert names(dm.data_val) == jpgs(range(5, 7))
    assert names(dm.data_test) == jpgs(range(7, 10))
    check_batch(dm, first_batch(dm), channels=3, size=64)


def test_celeba_without_partition_file_splits_by_fraction(tmp_path: Path) -> None:
    write_celeba(tmp_path, 20)
    dm = CelebADataModule(data_dir=str(tmp_path), in_memory=False, val_fraction=0.1, test_fraction=0.2)
    dm.setup()
    splits = [names(dm.data_train), names(dm.data_val), names(dm.data_test)]
    assert [len(split) for split in splits] == [14, 2, 4]
    assert sorted(name for split in splits for name in split) == jpgs(range(1, 21))


def test_a_part_of_celeba_whose_partition_holds_no_val_or_test_images_gets_a_seeded_split(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The first images of CelebA are all in the official train partition: a 20-image part with the
    full partition file would give empty val and test splits (and a notebook with nothing held out)."""
    write_celeba(tmp_path, 20, codes=[0] * 20)
    dm = CelebADataModule(data_dir=str(tmp_path), in_memory=False, val_fraction=0.1, test_fraction=0.2)
    with caplog.at_level(logging.WARNING):
        dm.setup()
    assert [len(split) for split in (dm.data_train, dm.data_val, dm.data_test)] == [14, 2, 4]
    assert caplog.messages == [
        "list_eval_partition.txt gives these 20 images no val or test images: using a seeded split instead "
        "(data.val_fraction=0.1, data.test_fraction=0.2)"
    ]


@pytest.mark.parametrize("crop_size", [140, None])
def test_celeba_centre_crop(tmp_path: Path, crop_size: int | None) -> None:
    write_celeba(tmp_path, 1, codes=[0])
    dm = CelebADataModule(data_dir=str(tmp_path), crop_size=crop_size, in_memory=True, num_workers=0)
    dm.setup()
    image = dm.data_train.tensors[0][0].int()
    assert image.shape == (3, 64, 64)
    red = (image[0] > 230) & (image[1] < 25) & (image[2] < 25)
    assert red[16:48, 16:48].all()
    assert red.all() == (crop_size == 140)  # only the crop cuts the noisy border away


def test_celeba_in_memory_modes_give_the_same_pixels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_celeba(tmp_path, 4, codes=[0, 0, 1, 2])

    def build(in_memory: bool | str) -> CelebADataModule:
        dm = CelebADataModule(data_dir=str(tmp_path), crop_size=None, in_memory=in_memory, num_workers=0)
        dm.setup()
        return dm

    eager, lazy, auto = build(True), build(False), build("auto")
    assert isinstance(eager.data_train, TensorDataset) and isinstance(auto.data_train, TensorDataset)
    assert isinstance(lazy.data_train, ImageFiles)
    for split in ("data_train", "data_val", "data_test"):
        expected = getattr(eager, split).tensors
        for dm in (lazy, auto):
            images, labels = all_items(getattr(dm, split))
            assert torch.equal(images, expected[0]) and torch.equal(labels, expected[1])
    monkeypatch.setattr(files, "in_memory_limit", lambda world_size: 4 * 3 * 64 * 64 - 1)  # 1 byte short
    assert isinstance(build("auto").data_train, ImageFiles)


@pytest.mark.parametrize("state", ["absent", "empty"])
def test_celeba_missing(tmp_path: Path, state: str) -> None:
    data_dir = tmp_path / "celeba"
    if state == "empty":
        data_dir.mkdir()
    expected = re.escape(str(data_dir / "img_align_celeba"))
    with user_error(rf"CelebA not found \(no \.jpg files in .*\): .*000001\.jpg .* in {expected} "):
        CelebADataModule(data_dir=str(data_dir)).setup()


GDRIVE_OVER_QUOTA = (
    "Failed to retrieve file url:\n\n\tToo many users have viewed or downloaded this file recently.\n\n"
    "You may still be able to access the file from the browser:\n\n\thttps://drive.google.com/uc?id=0"
)


@pytest.mark.parametrize("failure", [None, RuntimeError(GDRIVE_OVER_QUOTA)], ids=["offline", "over quota"])
def test_celeba_download_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: Exception | None
) -> None:
    """Offline (the autouse URLError), or Google Drive over quota: a multi-line error made one line."""
    if failure is not None:

        def fail(*args: Any, **kwargs: Any) -> None:
            raise failure

        monkeypatch.setattr(torchvision.datasets.celeba, "download_file_from_google_drive", fail)
    with user_error(r"CelebA not found \(download failed: .*img_align_celeba.*data\.download"):
        CelebADataModule(data_dir=str(tmp_path), download=True).prepare_data()


# --- any image folder ----------------------------------------------------------------------------------


def solid(colour: tuple[int, int, int]) -> np.ndarray:
    """A 30x40 image of one colour (not square: resize and centre crop both matter)."""
    return np.broadcast_to(np.array(colour, np.uint8), (30, 40, 3)).copy()


def folder_module(data_dir: Path, **kwargs: Any) -> ImageFolderDataModule:
    """Small images, batches of 4, no workers; everything in training unless kwargs say otherwise."""
    settings: dict[str, Any] = {"image_size": 16, "val_fraction": 0.0, "batch_size": 4, "num_workers": 0}
    dm = ImageFolderDataModule(data_dir=str(data_dir), **(settings | kwargs))
    dm.setup()
    return dm


def test_image_folder_class_subfolders_become_labels(tmp_path: Path) -> None:
    for i in range(5):
        write_image(tmp_path / "cat" / f"{i}.png", solid(RED))
        write_image(tmp_path / "dog" / f"{i}.png", solid(BLUE))
    dm = folder_module(tmp_path, val_fraction=0.2)
    assert dm.classes == ["cat", "dog"] and dm.num_classes == 2
    assert split_sizes(dm) == (8, 2, 0)
    images = torch.cat([dm.data_train.tensors[0], dm.data_val.tensors[0]])
    labels = torch.cat([dm.data_train.tensors[1], dm.data_val.tensors[1]])
    assert sorted(labels.tolist()) == [0] * 5 + [1] * 5
    assert torch.equal(labels, (images[:, 2, 0, 0] == 255).long())  # the dogs are the blue ones
    check_batch(dm, first_batch(dm), channels=3, size=16)


def test_image_folder_flat_folder_is_one_class(tmp_path: Path) -> None:
    for i in range(4):
        write_image(tmp_path / f"{i}.jpg", solid((60 * i, 60 * i, 60 * i)))
    (tmp_path / "notes.txt").write_text("not an image")
    dm = folder_module(tmp_path, val_fraction=0.25)
    assert dm.classes == [] and dm.num_classes == 1
    assert split_sizes(dm) == (3, 1, 0)
    assert dm.data_train.tensors[1].tolist() == [0, 0, 0] and dm.data_val.tensors[1].tolist() == [0]


def test_image_folder_resizes_the_shorter_side_and_crops_the_centre(tmp_path: Path) -> None:
    """A wide image keeps its aspect ratio: only the red middle third survives, not squashed blue sides."""
    pixels = solid(BLUE).repeat(3, axis=1)  # 30x120
    pixels[:, 36:84] = RED  # the centre 30x30 (columns 45-75) with margins
    write_image(tmp_path / "wide.png", pixels)
    image = folder_module(tmp_path).data_train.tensors[0][0]
    assert image.shape == (3, 16, 16)
    assert (image[0] == 255).all() and (image[2] == 0).all()


@pytest.mark.parametrize("in_memory", [True, False])
def test_image_folder_grayscale(tmp_path: Path, in_memory: bool) -> None:
    for i in range(4):
        write_image(tmp_path / f"{i}.png", solid(RED))
    dm = folder_module(tmp_path, channels=1, in_memory=in_memory)
    images, labels = first_batch(dm)
    check_batch(dm, (images, labels), channels=1, size=16)
    assert (images == 76).all()  # PIL's luma of pure red: 255 * 299 / 1000


def test_image_folder_missing(tmp_path: Path) -> None:
    data_dir = tmp_path / "nope"
    with user_error(rf"image folder {re.escape(str(data_dir))} does not exist; set data\.data_dir"):
        folder_module(data_dir)
    a_file = tmp_path / "a_file.jpg"
    a_file.write_bytes(b"")
    with user_error(rf"image folder {re.escape(str(a_file))} is a file, not a folder; set data\.data_dir"):
        folder_module(a_file)


def test_image_folder_without_images(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "empty_class").mkdir()
    with user_error(
        rf"no images found in {re.escape(str(tmp_path))} or its sub-folders \(.*\.png.*data\.data_dir"
    ):
        folder_module(tmp_path)


@pytest.mark.parametrize("value", ["yes", None])
def test_invalid_in_memory(tmp_path: Path, value: object) -> None:
    with user_error(rf"data\.in_memory must be true, false or auto, got {value!r}"):
        ImageFolderDataModule(data_dir=str(tmp_path), in_memory=value)


def test_unsupported_channels(tmp_path: Path) -> None:
    with user_error(r"data\.channels=4.*use 1 or 3"):
        DigitsDataModule(channels=4).setup()
    with user_error(r"data\.channels=4.*use 1 or 3"):  # file modules would silently decode RGB
        ImageFolderDataModule(data_dir=str(tmp_path), channels=4)


# --- unreadable image files ----------------------------------------------------------------------------


@pytest.fixture(params=["garbage", "truncated"])
def bad_image(tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    """A folder of 7 good JPEGs and one bad one (returned): not an image at all, or a JPEG cut short."""
    for i in range(7):
        write_image(tmp_path / f"{i}.jpg", face(i))
    bad = tmp_path / "bad.jpg"
    good_bytes = (tmp_path / "0.jpg").read_bytes()
    bad.write_bytes(b"not a jpeg " * 50 if request.param == "garbage" else good_bytes[:2000])
    return bad


def test_unreadable_image_names_the_file(bad_image: Path) -> None:
    fix = (
        rf"cannot read image {re.escape(str(bad_image))} \(.*\); remove it or set data\.skip_unreadable=true"
    )
    with user_error(fix):
        folder_module(bad_image.parent, in_memory=True)
    dm = folder_module(bad_image.parent, in_memory=False)
    with user_error(fix):
        list(dm.train_dataloader())


def test_skip_unreadable_in_memory(bad_image: Path, caplog: pytest.LogCaptureFixture) -> None:
    dm = folder_module(bad_image.parent, in_memory=True, skip_unreadable=True)
    assert len(dm.data_train) == 7
    assert f"skipping unreadable image {bad_image}" in caplog.text


def test_skip_unreadable_from_files(bad_image: Path) -> None:
    dm = folder_module(bad_image.parent, in_memory=False, skip_unreadable=True)
    assert len(dm.data_train) == 8
    batches = list(dm.train_dataloader())
    assert [len(labels) for _, labels in batches] == [4, 4]  # full batches: the bad file's slot is refilled
    for batch in batches:
        check_batch(dm, batch, channels=3, size=16)
    bad = dm.data_train.files.index(bad_image)
    image, _ = dm.data_train[bad]
    assert torch.equal(image, dm.data_train[(bad + 1) % 8][0])  # replaced by the next readable file


def test_skip_unreadable_batch_of_one_bad_file(bad_image: Path) -> None:
    """A batch that would hold only the bad file still yields an image (no empty batch)."""
    dm = folder_module(bad_image.parent, in_memory=False, skip_unreadable=True, batch_size=1)
    assert all(len(labels) == 1 for _, labels in dm.train_dataloader())


def test_nothing_readable(tmp_path: Path) -> None:
    for i in range(3):
        (tmp_path / f"{i}.jpg").write_bytes(b"garbage")
    dm = folder_module(tmp_path, in_memory=False, skip_unreadable=True)
    with user_error(r"none of the 3 images .* is readable"):
        dm.data_train[0]


# --- data.train_fraction: the scarce-data setting -----------------------------------------------------


def test_train_fraction_keeps_equally_many_of_every_class_from_the_train_split() -> None:
    full = DigitsDataModule()
    full.setup()
    scarce = DigitsDataModule(train_fraction=0.1)
    scarce.setup()
    # 10% of the 1,618 training images (train + val splits) over 10 classes: 16 per class
    assert scarce.data_train.tensors[1].bincount().tolist() == [16] * 10
    kept = {tuple(x.flatten().tolist()) for x in scarce.data_train.tensors[0]}
    assert kept <= {tuple(x.flatten().tolist()) for x in full.data_train.tensors[0]}
    assert len(scarce.data_val) == len(full.data_val) and len(scarce.data_test) == len(full.data_test)

    again, other = (
        DigitsDataModule(train_fraction=0.1),
        DigitsDataModule(train_fraction=0.1, train_fraction_seed=1),
    )
    again.setup(), other.setup()
    assert torch.equal(again.data_train.tensors[0], scarce.data_train.tensors[0])  # seeded
    assert not torch.equal(other.data_train.tensors[0], scarce.data_train.tensors[0])


@pytest.mark.parametrize("in_memory", [True, False])
def test_train_fraction_on_files_and_unlabelled_folders(tmp_path: Path, in_memory: bool) -> None:
    for i in range(10):
        write_image(tmp_path / "labelled" / "cat" / f"{i}.png", solid(RED))
        write_image(tmp_path / "labelled" / "dog" / f"{i}.png", solid(BLUE))
        write_image(tmp_path / "flat" / f"{i}.png", solid((20 * i, 0, 0)))
    labelled = folder_module(tmp_path / "labelled", train_fraction=0.3, in_memory=in_memory)
    labels = [labelled.data_train[i][1] for i in range(len(labelled.data_train))]
    assert sorted(labels) == [0, 0, 0, 1, 1, 1]
    flat = folder_module(tmp_path / "flat", train_fraction=0.3, in_memory=in_memory, val_fraction=0.2)
    assert len(flat.data_train) == 3 and len(flat.data_val) == 2


@pytest.mark.parametrize(
    ("fraction", "message"),
    [
        (0.0, r"data.train_fraction must be in \(0, 1\]"),
        (1.5, r"data.train_fraction must be in \(0, 1\]"),
        (0.001, "leaves no image per class; raise data.train_fraction"),
    ],
)
def test_train_fraction_mistakes(fraction: float, message: str) -> None:
    with user_error(message):
        DigitsDataModule(train_fraction=fraction).setup()


def test_train_fraction_needs_enough_images_of_every_class(tmp_path: Path) -> None:
    for i in range(10):
        write_image(tmp_path / "many" / f"{i}.png", solid(RED))
    write_image(tmp_path / "few" / "0.png", solid(BLUE))
    with user_error("needs 5 images of class 0, the train split has 1; lower data.train_fraction"):
        folder_module(tmp_path, train_fraction=0.9)


def test_train_per_class_keeps_that_many_of_every_class() -> None:
    scarce = DigitsDataModule(train_per_class=5)
    scarce.setup()
    assert scarce.data_train.tensors[1].bincount().tolist() == [5] * 10
    fraction = DigitsDataModule(train_fraction=5 / 161.8)  # the same count, asked as a share
    fraction.setup()
    assert torch.equal(fraction.data_train.tensors[0], scarce.data_train.tensors[0])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"train_per_class": 0}, "set one of them, train_per_class to a count >= 1"),
        ({"train_per_class": 5, "train_fraction": 0.5}, "set one of them"),
        ({"train_per_class": 500}, "needs 500 images of class 0, the train split has"),
    ],
)
def test_train_per_class_mistakes(kwargs: dict, message: str) -> None:
    with user_error(message):
        DigitsDataModule(**kwargs).setup()
