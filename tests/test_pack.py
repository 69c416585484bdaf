"""Packs: decoded once, memory-mapped after. The round trip is exact; a changed folder builds a new
pack; a second process waits for the first one's build and reads the same pack; an interrupted or
damaged pack never passes as complete; unreadable images follow data.skip_unreadable."""

from __future__ import annotations

import errno
import logging
import multiprocessing
import os
import pickle
import re
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import Subset, TensorDataset

from ganforge.cache import fingerprint
from ganforge.datamodules import pack
from ganforge.datamodules.celeba import CelebADataModule
from ganforge.datamodules.files import ImageFiles
from ganforge.datamodules.image_folder import ImageFolderDataModule
from ganforge.datamodules.mnist import MNISTDataModule
from ganforge.datamodules.pack import PackedImages, Source, open_pack
from ganforge.errors import GanforgeError
from tests.test_datamodules import all_items, face, write_celeba, write_image, write_mnist


def celeba(root: Path, packs: Path | None, **kwargs: Any) -> CelebADataModule:
    settings: dict[str, Any] = {"image_size": 16, "batch_size": 4, "num_workers": 0, "in_memory": True}
    dm = CelebADataModule(
        data_dir=str(root), pack=packs is not None, pack_dir=packs and str(packs), **settings | kwargs
    )
    dm.setup()
    return dm


def packs_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir())


@pytest.fixture
def faces(tmp_path: Path) -> Path:
    write_celeba(tmp_path / "celeba", 12, codes=[0] * 8 + [1] * 2 + [2] * 2)  # 8 train, 2 val, 2 test
    return tmp_path / "celeba"


def test_a_pack_holds_exactly_the_decoded_images_and_is_reused(faces: Path, tmp_path: Path) -> None:
    packed, decoded = celeba(faces, tmp_path / "packs"), celeba(faces, None)
    for split in ("data_train", "data_val", "data_test"):
        assert isinstance(getattr(packed, split), PackedImages)
        images, labels = all_items(getattr(packed, split))
        assert torch.equal(images, getattr(decoded, split).tensors[0])
        assert torch.equal(labels, getattr(decoded, split).tensors[1])
    built = packs_in(tmp_path / "packs")
    assert len(built) == 3 and all(
        re.fullmatch(r"celeba-(train|val|test)-16px-[0-9a-f]{16}", b) for b in built
    )
    mtime = (tmp_path / "packs" / built[0] / "images.u8").stat().st_mtime_ns
    again = celeba(faces, tmp_path / "packs")  # a second run reads the same packs, builds nothing
    assert packs_in(tmp_path / "packs") == built
    assert (tmp_path / "packs" / built[0] / "images.u8").stat().st_mtime_ns == mtime
    assert fingerprint(again.data_train) == fingerprint(packed.data_train)
    batch = next(iter(again.train_dataloader()))  # through the loader: __getitems__, collate
    assert batch[0].dtype == torch.uint8 and batch[0].shape == (4, 3, 16, 16)


def test_the_loader_reads_a_pack_in_the_main_process(faces: Path, tmp_path: Path, caplog) -> None:
    dm = celeba(faces, tmp_path / "packs", num_workers=2)
    with caplog.at_level(logging.INFO):
        loader = dm.train_dataloader()
    assert loader.num_workers == 0 and "decoded already" in caplog.text
    assert celeba(faces, None, in_memory=False, num_workers=2).train_dataloader().num_workers == 2


def test_a_pack_pickles_as_its_path_not_its_pixels(faces: Path, tmp_path: Path) -> None:
    data = celeba(faces, tmp_path / "packs").data_train
    blob = pickle.dumps(data)
    assert len(blob) < 1000  # workers and spawned ranks map the file again
    assert torch.equal(all_items(pickle.loads(blob))[0], all_items(data)[0])


@pytest.mark.parametrize("change", ["modified", "added", "removed", "image size"])
def test_a_changed_folder_or_transform_builds_a_new_pack(faces: Path, tmp_path: Path, change: str) -> None:
    first = celeba(faces, tmp_path / "packs")
    images = faces / "img_align_celeba"
    if change == "modified":
        write_image(images / "000001.jpg", np.full((218, 178, 3), 40, np.uint8))
        os.utime(images / "000001.jpg", ns=(1, 1))  # a new mtime, whatever the clock's resolution
    elif change == "added":
        write_image(images / "000013.jpg", face(13))
    elif change == "removed":
        (images / "000008.jpg").unlink()
    second = celeba(faces, tmp_path / "packs", image_size=8 if change == "image size" else 16)
    fresh = celeba(faces, None, image_size=8 if change == "image size" else 16)
    assert torch.equal(all_items(second.data_train)[0], fresh.data_train.tensors[0])
    assert fingerprint(second.data_train) != fingerprint(first.data_train)
    # a second pack of the train split (val and test unchanged), or of every split at the new size
    assert len(packs_in(tmp_path / "packs")) == (6 if change == "image size" else 4)


def slow_source(name: str, started: Any) -> Source:
    """Three batches a second apart; counts its builds in `started`."""

    def batches(workers: int):
        with started.get_lock():
            started.value += 1
        for i in range(3):
            time.sleep(0.5)
            yield torch.full((2, 1, 4, 4), i, dtype=torch.uint8), torch.tensor([i, i])

    return Source(name, {"n": 6}, 6, batches)


def open_slowly(pack_dir: str, started: Any, out: Any) -> None:
    out.put(fingerprint(open_pack(slow_source("slow", started), pack_dir)))


def test_a_second_process_waits_for_the_build_and_reads_the_same_pack(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    started, out = ctx.Value("i", 0), ctx.Queue()
    procs = [ctx.Process(target=open_slowly, args=(str(tmp_path), started, out)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    assert started.value == 1  # one build; the other process waited and read it
    digests = {out.get(timeout=5), out.get(timeout=5)}
    assert len(digests) == 1 and packs_in(tmp_path) == [next(iter(packs_in(tmp_path)))]


def test_an_interrupted_build_leaves_no_pack(tmp_path: Path) -> None:
    def batches(workers: int):
        yield torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.zeros(2, dtype=torch.long)
        raise KeyboardInterrupt  # Ctrl-C half-way

    with pytest.raises(KeyboardInterrupt):
        open_pack(Source("cut", {"n": 4}, 4, batches), tmp_path)
    assert packs_in(tmp_path) == [] and not list(tmp_path.glob(".*.tmp"))
    # a build killed outright (no cleanup) leaves only its hidden folder, which the next build removes
    source = slow_source("cut", multiprocessing.Value("i", 0))
    folder = tmp_path / f"cut-{pack.cache_key(source.identity | {'format': pack.FORMAT})}"
    stale = tmp_path / f".{folder.name}.12345.tmp"
    stale.mkdir()
    (stale / "images.u8").write_bytes(b"\0" * 16)
    data = open_pack(source, tmp_path)
    assert len(data) == 6 and not stale.exists() and packs_in(tmp_path) == [folder.name]


@pytest.mark.parametrize("damage", ["truncated", "no manifest", "bad manifest", "labels"])
def test_a_damaged_pack_is_rebuilt_with_a_warning(faces: Path, tmp_path: Path, damage: str, caplog) -> None:
    good = all_items(celeba(faces, tmp_path / "packs").data_train)[0]
    (train,) = (p for p in (tmp_path / "packs").glob("celeba-train-*") if p.is_dir())
    if damage == "truncated":
        os.truncate(train / "images.u8", 100)
    elif damage == "no manifest":
        (train / "manifest.json").unlink()
    elif damage == "bad manifest":
        (train / "manifest.json").write_text("{not json")
    else:
        (train / "labels.npy").write_bytes(b"garbage")
    with caplog.at_level(logging.WARNING):
        again = celeba(faces, tmp_path / "packs")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and f"pack {train} is damaged" in warnings[0] and "\n" not in warnings[0]
    assert torch.equal(all_items(again.data_train)[0], good)


@pytest.fixture
def bad_folder(tmp_path: Path) -> Path:
    for i in range(6):
        write_image(tmp_path / "images" / f"{i}.jpg", face(i))
    (tmp_path / "images" / "bad.jpg").write_bytes(b"not a jpeg " * 50)
    return tmp_path / "images"


def folder(data_dir: Path, packs: Path, **kwargs: Any) -> ImageFolderDataModule:
    settings: dict[str, Any] = {"image_size": 16, "val_fraction": 0.0, "batch_size": 2, "num_workers": 0}
    dm = ImageFolderDataModule(data_dir=str(data_dir), pack=True, pack_dir=str(packs), **settings | kwargs)
    dm.setup()
    return dm


def test_unreadable_images_follow_skip_unreadable(bad_folder: Path, tmp_path: Path, caplog) -> None:
    with pytest.raises(GanforgeError, match=r"cannot read image .*bad\.jpg .*set data\.skip_unreadable=true"):
        folder(bad_folder, tmp_path / "packs")
    assert not (tmp_path / "packs").exists() or packs_in(tmp_path / "packs") == []
    with caplog.at_level(logging.WARNING):
        dm = folder(bad_folder, tmp_path / "packs", skip_unreadable=True)
    assert len(dm.data_train) == 6 and "skipping unreadable image" in caplog.text
    (built,) = packs_in(tmp_path / "packs")
    assert '"skipped": 1' in (tmp_path / "packs" / built / "manifest.json").read_text()


def test_a_full_disk_is_one_line_and_leaves_nothing(faces: Path, tmp_path: Path, monkeypatch) -> None:
    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pack.os, "fsync", full)
    with pytest.raises(
        GanforgeError, match=r"^no space left to write images\.u8 in .*; free space there"
    ) as e:
        celeba(faces, tmp_path / "packs")
    assert "\n" not in str(e.value)
    assert packs_in(tmp_path / "packs") == []


def test_torchvision_sets_pack_their_resized_tensors(tmp_path: Path) -> None:
    write_mnist(tmp_path, "MNIST")
    settings: dict[str, Any] = {"data_dir": str(tmp_path), "download": False, "val_size": 10}
    packed = MNISTDataModule(pack=True, pack_dir=str(tmp_path / "packs"), **settings)
    plain = MNISTDataModule(**settings)
    for dm in (packed, plain):
        dm.setup()
    assert isinstance(packed.data_train, Subset) and isinstance(packed.data_test, PackedImages)
    assert isinstance(plain.data_test, TensorDataset)
    for split in ("data_train", "data_val", "data_test"):
        images, labels = all_items(getattr(packed, split))
        assert torch.equal(images, getattr(plain, split).tensors[0])
        assert torch.equal(labels, getattr(plain, split).tensors[1])
    built = packs_in(tmp_path / "packs")
    assert len(built) == 2 and all(re.fullmatch(r"mnist-(train|test)-32px-[0-9a-f]{16}", b) for b in built)


def test_pack_without_a_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(
        GanforgeError, match=r"data\.pack=true needs data\.pack_dir .*or set data\.pack=false"
    ):
        CelebADataModule(data_dir=str(tmp_path), pack=True, pack_dir=None)


def test_image_files_are_still_read_per_item_without_packs(faces: Path) -> None:
    assert isinstance(celeba(faces, None, in_memory=False).data_train, ImageFiles)


def test_an_unusable_pack_folder_is_one_line(faces: Path, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    message = r"cannot use .*file/packs for packs \(.*\); point data\.pack_dir .* or set data\.pack=false$"
    with pytest.raises(GanforgeError, match=message) as e:
        celeba(faces, tmp_path / "file" / "packs")
    assert "\n" not in str(e.value)


@pytest.mark.slow
def test_eval_packs_into_its_own_cache_not_the_trainers(tmp_path: Path, make_cfg, cache_dir: Path) -> None:
    from ganforge.evaluate import evaluate
    from ganforge.train import train
    from tests.conftest import compose_train, shapes_data, write_shapes

    shapes = shapes_data(write_shapes(tmp_path / "shapes", 20))  # a labelled folder: classifier features
    cfg = make_cfg(*shapes, f"data.pack_dir={tmp_path / 'trainer'}")
    _, where = train(cfg)
    assert packs_in(tmp_path / "trainer")
    shutil.rmtree(tmp_path / "trainer")  # e.g. the checkpoint moved to another machine
    eval_cfg = compose_train(
        [
            f"ckpt_path={where['last checkpoint']}", f"paths.cache_dir={tmp_path / 'evaluator'}",
            "metrics.num_samples=60", "metrics.classifier.epochs=2", "metrics.classifier.width=8",
        ],
        tmp_path / "eval", config="eval",
    )  # fmt: skip
    evaluate(eval_cfg)
    assert packs_in(tmp_path / "evaluator" / "packs") and not (tmp_path / "trainer").exists()


@pytest.mark.slow
def test_eval_finds_data_that_moved_with_data_data_dir(
    tmp_path: Path, make_cfg, caplog: pytest.LogCaptureFixture
) -> None:
    """The same key as train.py (data.data_dir); the old top-level data_dir= still works, with a warning."""
    from ganforge.evaluate import evaluate
    from ganforge.train import train
    from tests.conftest import compose_train, shapes_data, write_shapes

    shapes = shapes_data(write_shapes(tmp_path / "shapes", 20))
    _, where = train(make_cfg(*shapes, "metrics=none"))
    (tmp_path / "shapes").rename(tmp_path / "moved")

    def evaluate_with(*overrides: str) -> None:
        evaluate(compose_train([
            f"ckpt_path={where['last checkpoint']}", f"paths.cache_dir={tmp_path / 'evaluator'}",
            "metrics.num_samples=60", "metrics.classifier.epochs=2", "metrics.classifier.width=8", *overrides,
        ], tmp_path / "eval", config="eval"))  # fmt: skip

    with pytest.raises(GanforgeError, match=r"image folder .*shapes does not exist"):
        evaluate_with()
    evaluate_with(f"data.data_dir={tmp_path / 'moved'}")
    with caplog.at_level(logging.WARNING, logger="ganforge.evaluate"):
        evaluate_with(f"data_dir={tmp_path / 'moved'}")
    said = [r.message for r in caplog.records if r.name == "ganforge.evaluate"]
    assert said == ["eval.py data_dir= is deprecated: it is data.data_dir=, as in train.py"]
    with pytest.raises(GanforgeError, match=r"old name of data\.data_dir=: pass only data\.data_dir"):
        evaluate_with(f"data_dir={tmp_path / 'moved'}", f"data.data_dir={tmp_path / 'moved'}")


def test_setting_up_a_folder_leaves_the_global_rng_alone(tmp_path: Path) -> None:
    """train.py sets the data up before it builds the model: building a pack must not draw from the
    global RNG, or the model's initial weights would depend on whether the pack existed."""
    from tests.conftest import write_shapes

    root = write_shapes(tmp_path / "shapes", per_class=10)
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    folder(root, tmp_path / "p", channels=1, num_workers=2)
    assert packs_in(tmp_path / "p") and torch.equal(torch.rand(3), expected)


def test_eval_refuses_data_data_dir_for_data_without_a_folder(tmp_path: Path, make_cfg) -> None:
    """digits is bundled: there is no folder to move, so data.data_dir= is a mistake, said in one line."""
    from ganforge.evaluate import evaluate
    from ganforge.train import train
    from tests.conftest import compose_train

    _, where = train(make_cfg("metrics=none", "max_g_steps=1"))
    cfg = compose_train(
        [f"ckpt_path={where['last checkpoint']}", f"data.data_dir={tmp_path}"],
        tmp_path / "eval",
        config="eval",
    )
    with pytest.raises(
        GanforgeError, match=r"\(DigitsDataModule\) is bundled or generated .*; drop data\.data_dir$"
    ):
        evaluate(cfg)
