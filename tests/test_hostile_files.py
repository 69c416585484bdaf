"""Small hostile or odd files in a data folder, an export or a pack: each is read correctly, skipped,
rebuilt or refused in one line, never trained on as garbage, never a hang or a raw traceback."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import re
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from ganforge import synthetic_dataset
from ganforge.datamodules import files, pack
from ganforge.datamodules.image_folder import ImageFolderDataModule
from tests.test_datamodules import all_items, user_error


def save(path: Path, pixels: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, mode).save(path)
    return path


def grey(value: int, size: int = 8) -> np.ndarray:
    return np.full((size, size), value, np.uint8)


def folder(data_dir: Path, **kwargs: Any) -> ImageFolderDataModule:
    """A set-up image folder module: 8 px, everything in training, no loader workers."""
    settings: dict[str, Any] = {"image_size": 8, "val_fraction": 0.0, "batch_size": 2, "num_workers": 0}
    dm = ImageFolderDataModule(data_dir=str(data_dir), **settings | kwargs)
    dm.setup()
    return dm


def warnings_in(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


@pytest.mark.parametrize("storage", [{"pack": True}, {"pack": False, "in_memory": True}])
def test_an_elongated_image_is_refused_or_skipped_not_resized(
    tmp_path: Path, storage: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """A 40000x1 PNG (about 150 bytes) would become 16x640000 (a 400000x1 one, 4.9 GB at 64 px)."""
    for i in range(4):
        save(tmp_path / "images" / f"{i}.png", grey(40 * i))
    long = save(tmp_path / "images" / "long.png", grey(7, 1).repeat(40000, axis=1))
    assert long.stat().st_size < 1000
    settings = {"image_size": 16, "pack_dir": str(tmp_path / "packs"), **storage}
    with user_error(
        rf"cannot read image {re.escape(str(long))} \(40000x1 pixels, more than 20 times as long as wide: "
        r".*; crop it\); remove it or set data\.skip_unreadable=true$"
    ):
        folder(tmp_path / "images", **settings)
    with caplog.at_level(logging.WARNING):
        dm = folder(tmp_path / "images", skip_unreadable=True, **settings)
    assert len(dm.data_train) == 4
    assert any(f"skipping unreadable image {long} (40000x1 pixels" in w for w in warnings_in(caplog))


def test_links_to_folders_are_not_followed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A link back up the tree (a cycle: 2 images became 82, under wrong labels; two such links hung) and
    one out of it: 2 images stay 2, each under its own label, in synthetic_dataset.load (augment.py's
    synthetic_dir) and image folders. Links to another class would repeat its images under a wrong label."""
    tree = tmp_path / "export"
    save(tree / "0" / "a.png", grey(0))
    save(tree / "1" / "b.png", grey(255))
    save(tmp_path / "elsewhere" / "c.png", grey(99))
    (tree / "0" / "up").symlink_to("..")
    (tree / "1" / "out").symlink_to(tmp_path / "elsewhere")
    with caplog.at_level(logging.WARNING):
        images, labels, classes = synthetic_dataset.load(tree)
    assert classes == ["0", "1"] and labels.tolist() == [0, 1]
    assert images[:, 0, 0, 0].tolist() == [0, 255]
    (warning,) = warnings_in(caplog)
    assert warning.startswith(f"not following 2 link(s) to folders in {tree}") and "\n" not in warning
    dm = folder(tree, channels=1, pack=False)
    assert dm.classes == ["0", "1"] and sorted(dm.data_train.tensors[1].tolist()) == [0, 1]


def test_16_bit_and_transparent_images_read_as_they_look(tmp_path: Path) -> None:
    """16-bit grey is scaled to 8 bits (32768 -> 128), not clipped to white; transparency is composited
    on white, not dropped (which showed the hidden colour); float pixels are refused in one line."""
    save(tmp_path / "faces" / "grey16" / "x.png", np.full((8, 8), 32768, np.uint16))
    hidden_red = np.broadcast_to(np.array([200, 10, 10, 0], np.uint8), (8, 8, 4)).copy()
    save(tmp_path / "faces" / "transparent" / "x.png", hidden_red)
    half_black = np.broadcast_to(np.array([0, 0, 0, 128], np.uint8), (8, 8, 4)).copy()
    save(tmp_path / "faces" / "translucent" / "x.png", half_black)
    dm = folder(tmp_path / "faces", pack=False, in_memory=True)
    images, labels = dm.data_train.tensors
    by_class = dict(zip(dm.classes, images[labels.argsort(), :, 0, 0].tolist(), strict=True))
    assert by_class == {"grey16": [128] * 3, "transparent": [255] * 3, "translucent": [127] * 3}
    save(tmp_path / "export" / "0" / "x.png", np.full((8, 8), 32768, np.uint16))  # grey files stay grey
    save(tmp_path / "export" / "1" / "x.png", np.full((8, 8, 2), [50, 0], np.uint8), "LA")
    images, _, _ = synthetic_dataset.load(tmp_path / "export")
    assert images.shape == (2, 1, 8, 8) and images[:, 0, 0, 0].tolist() == [128, 255]
    floats = save(tmp_path / "floats" / "f.tiff", np.full((8, 8), 0.5, np.float32), "F")
    with user_error(rf"cannot read image {re.escape(str(floats))} \(32-bit float pixels .*8-bit image\)"):
        folder(tmp_path / "floats", pack=False, in_memory=True)


def test_hidden_files_are_skipped_and_a_mixed_tree_is_refused(tmp_path: Path) -> None:
    """A notebook's `.ipynb_checkpoints/` and macOS's `._0.png` do not turn a flat folder into a class
    tree (1 image packed, then "lower data.batch_size"); images at the top and in sub-folders are refused."""
    for i in range(6):
        save(tmp_path / "flat" / f"{i}.png", grey(30 * i))
    save(tmp_path / "flat" / ".ipynb_checkpoints" / "0-checkpoint.png", grey(0))
    (tmp_path / "flat" / "._0.png").write_bytes(b"\0\5\26\7 AppleDouble")
    dm = folder(tmp_path / "flat", pack=False)
    assert dm.classes == [] and len(dm.data_train) == 6
    assert len(next(iter(dm.train_dataloader()))[0]) == 2
    save(tmp_path / "flat" / "cat" / "x.png", grey(1))
    with user_error(
        r"flat holds images both at its top \(e\.g\. 0\.png\) and in sub-folders \(e\.g\. cat/\)"
    ):
        folder(tmp_path / "flat", pack=False)
    for name in ("0/x.png", "1/x.png", ".ipynb_checkpoints/0/x.png", "0/.x.png"):  # synthetic sets too
        save(tmp_path / "tree" / name, grey(5))
    _, labels, classes = synthetic_dataset.load(tmp_path / "tree")
    assert classes == ["0", "1"] and labels.tolist() == [0, 1]


def test_a_pack_whose_content_or_shape_does_not_match_its_manifest_is_rebuilt(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Pixels overwritten with 0xFF were served as white images, and a manifest shape that disagrees with
    the file was trained on: both are a damaged pack now (its digest is checked when it is opened)."""
    for i in range(40):
        save(tmp_path / "images" / f"{i:02d}.png", grey(3 * i))
    settings = {"pack": True, "pack_dir": str(tmp_path / "packs"), "channels": 1}
    good = all_items(folder(tmp_path / "images", **settings).data_train)[0]
    (built,) = (p for p in (tmp_path / "packs").iterdir() if p.is_dir())
    with open(built / "images.u8", "r+b") as f:  # white pixels where the first images were
        f.write(b"\xff" * 300)
    manifest = json.loads((built / "manifest.json").read_text())
    for damage in ("pixels", "shape"):
        if damage == "shape":  # the same bytes as 4x16 images: a TypeError or garbage before
            (built / "manifest.json").write_text(json.dumps(manifest | {"shape": [1, 4, 16]}))
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            again = folder(tmp_path / "images", **settings).data_train
        (warning,) = warnings_in(caplog)
        assert re.fullmatch(rf"pack {re.escape(str(built))} is damaged \(.*\); rebuilding it", warning)
        assert torch.equal(all_items(again)[0], good)


def test_a_killed_decoding_process_is_one_line_and_the_next_run_packs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGKILL (the out-of-memory killer) of a pack-building worker process: one line that says to
    rerun, nothing half-built left, no process left running, and the rerun builds the pack. (A
    DataLoader kept its other workers, its queues and its SIGCHLD checks alive for as long as the
    error's traceback was referenced; the rerun's workers inherited those queues.)"""
    for i in range(6):
        save(tmp_path / "images" / f"{i}.png", grey(40 * i))
    decode = files.ImageFiles.decode
    main = os.getpid()

    def killed_in_a_worker(self: files.ImageFiles, i: int) -> torch.Tensor:
        if os.getpid() != main:
            os.kill(os.getpid(), signal.SIGKILL)
        return decode(self, i)

    monkeypatch.setattr(files.ImageFiles, "decode", killed_in_a_worker)
    monkeypatch.setattr(pack, "available_cpus", lambda: 2)  # decoding in worker processes, as on any machine
    settings = {"pack": True, "pack_dir": str(tmp_path / "packs")}
    with user_error(
        rf"a decoding process died while packing {re.escape(str(tmp_path / 'images'))}; nothing was kept: "
        r"rerun to build the pack again \(if memory ran out, free some first\)$"
    ) as refused:
        folder(tmp_path / "images", **settings)
    assert pack.died(refused.value.__cause__)
    assert multiprocessing.active_children() == []  # while the error and its traceback are still held
    assert [p.name for p in (tmp_path / "packs").iterdir() if not p.name.endswith(".lock")] == []
    monkeypatch.setattr(files.ImageFiles, "decode", decode)
    assert len(folder(tmp_path / "images", **settings).data_train) == 6
