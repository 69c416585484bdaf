"""Synthetic data sets: a generator's samples written as an image-folder tree (or one .npz) with a
manifest that says where they came from, and read back as uint8 tensors like any ganforge data set.

Folder layout (what torchvision's `ImageFolder` and `data=image_folder` read): one sub-folder per class
named by its zero-padded index (`0`..`9`; `00`..`99` for 100 classes, so sorted order is label order),
or a single `unlabelled/` for unconditional models. The .npz holds `images` (uint8 [N, C, H, W]) and
`labels` (int64 [N]; -1 for unconditional models).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image
from torch import Tensor
from torchvision.datasets import ImageFolder

from ganforge.datamodules.base import to_uint8
from ganforge.errors import GanforgeError
from ganforge.gan_module import GANLitModule
from ganforge.sampling import NoiseSampler

MANIFEST = "manifest.json"
NPZ_FILE = "samples.npz"
UNLABELLED = "unlabelled"
FORMATS = ("png", "npz")


def class_counts(num_samples: int | None, num_classes: int | None, counts: Any = None) -> list[int]:
    """Samples per class: balanced to within one by default; or `counts` as a list (one per class) or a
    mapping {class: count} (other classes 0). Unconditional models: one entry, `num_samples`."""
    if counts is None:
        if num_samples is None or num_samples < 1:
            raise GanforgeError(f"num_samples must be a positive number of images, got {num_samples}")
        k = num_classes or 1
        return [num_samples // k + (c < num_samples % k) for c in range(k)]
    if not num_classes:
        raise GanforgeError("counts= asks for classes, but this model is unconditional; use num_samples=")
    if isinstance(counts, Mapping):
        if any(not isinstance(c, int) or not 0 <= c < num_classes for c in counts):
            raise GanforgeError(
                f"counts keys must be class indices in [0, {num_classes}), got {list(counts)}"
            )
        counts = [counts.get(c, 0) for c in range(num_classes)]
    elif isinstance(counts, Sequence) and not isinstance(counts, str):
        if len(counts) != num_classes:
            raise GanforgeError(
                f"counts has {len(counts)} entries but the model has {num_classes} classes; give one per "
                "class, or a map such as counts='{3: 500}'"
            )
        counts = list(counts)
    else:
        raise GanforgeError(
            f"counts must be a list (one per class) or a map {{class: count}}, got {counts!r}"
        )
    if any(not isinstance(n, int) or n < 0 for n in counts) or sum(counts) == 0:
        raise GanforgeError(f"counts must be non-negative whole numbers, not all zero; got {counts}")
    if num_samples is not None and num_samples != sum(counts):
        raise GanforgeError(
            f"num_samples={num_samples} but counts add up to {sum(counts)}; set num_samples=null with counts"
        )
    return counts


def class_names(num_classes: int | None) -> list[str]:
    if not num_classes:
        return [UNLABELLED]
    width = len(str(num_classes - 1))
    return [f"{c:0{width}d}" for c in range(num_classes)]


def samples(
    model: GANLitModule, counts: list[int], seed: int, batch_size: int
) -> Iterator[tuple[Tensor, Tensor]]:
    """(uint8 images, labels) batches: class 0's samples first, then class 1's, ..."""
    labels = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
    sampler = NoiseSampler(model.latent_dim, seed)
    for z, y in sampler.batches(range(len(labels)), batch_size, labels=labels):
        images = model.generate(z, y if model.conditional else None)
        if images.dim() != 4:
            raise GanforgeError(
                "this checkpoint generates points, not images (a 2-D mixture model); generate.py "
                "exports image models"
            )
        yield to_uint8(images).cpu(), y


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_out_dir(out_dir: Path, overwrite: bool) -> None:
    """Refuse to write into anything but an empty or new folder, or (asked to) a previous export."""
    if out_dir.exists() and not out_dir.is_dir():
        raise GanforgeError(f"out_dir={out_dir} is a file; choose a folder")
    if not out_dir.exists() or not any(out_dir.iterdir()):
        return
    if not overwrite:
        raise GanforgeError(
            f"out_dir={out_dir} is not empty; choose a new folder, or pass overwrite=true to replace "
            "a previous export"
        )
    if not (out_dir / MANIFEST).is_file():
        raise GanforgeError(
            f"out_dir={out_dir} is not empty and is not a ganforge export (no {MANIFEST}); overwrite=true "
            "only replaces previous exports, so choose another folder"
        )


def export(
    model: GANLitModule,
    out_dir: Path,
    counts: list[int],
    seed: int,
    batch_size: int,
    fmt: str,
    overwrite: bool,
    manifest: dict[str, Any],
) -> dict[str, Any]:
    """Write the samples and `manifest.json` into `out_dir`. Everything is written to a sibling
    folder first and moved into place at the end: an interrupted export leaves no half folder."""
    if fmt not in FORMATS:
        raise GanforgeError(f"format={fmt} is not supported; use one of {', '.join(FORMATS)}")
    if batch_size < 1:
        raise GanforgeError(f"batch_size must be positive, got {batch_size}")
    check_out_dir(out_dir, overwrite)
    out_dir = out_dir.resolve()
    names = class_names(model.num_classes)
    tmp = out_dir.with_name(f".{out_dir.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        shape = _write(model, tmp, names, counts, seed, batch_size, fmt)
        manifest = {
            "format": fmt,
            "num_samples": sum(counts),
            "counts": {name: n for name, n in zip(names, counts, strict=True)},
            "classes": names if model.conditional else [],
            "image": {"channels": shape[0], "height": shape[1], "width": shape[2]},
            "seed": seed,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            **manifest,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.replaced-{os.getpid()}")
            out_dir.rename(old)
            tmp.rename(out_dir)
            shutil.rmtree(old)
        else:
            tmp.rename(out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest


def _write(
    model: GANLitModule,
    folder: Path,
    names: list[str],
    counts: list[int],
    seed: int,
    batch_size: int,
    fmt: str,
) -> tuple[int, int, int]:
    batches = samples(model, counts, seed, batch_size)
    if fmt == "npz":
        images, labels = (torch.cat(parts) for parts in zip(*batches, strict=True))
        label_array = labels.numpy() if model.conditional else np.full(len(labels), -1)
        np.savez(folder / NPZ_FILE, images=images.numpy(), labels=label_array.astype(np.int64))
        return tuple(images.shape[1:])
    for name, n in zip(names, counts, strict=True):
        if n:
            (folder / name).mkdir()
    width = len(str(max(sum(counts) - 1, 0)))
    index, shape = 0, (0, 0, 0)
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:  # PNG encoding releases the GIL
        for images, labels in batches:
            paths = [folder / names[y] / f"{index + i:0{width}d}.png" for i, y in enumerate(labels.tolist())]
            list(pool.map(_write_png, images, paths))
            index, shape = index + len(images), tuple(images.shape[1:])
    return shape


def _write_png(image: Tensor, path: Path) -> None:
    """A uint8 [C, H, W] image as an 8-bit grayscale or RGB PNG (lossless)."""
    pixels = image.permute(1, 2, 0).numpy()
    Image.fromarray(pixels[..., 0] if pixels.shape[2] == 1 else pixels).save(path)


def _read_image(path: str, folder: str | Path) -> Tensor:
    try:
        with Image.open(path) as img:
            image = TF.pil_to_tensor(img if img.mode in ("L", "RGB") else img.convert("RGB"))
    except (OSError, ValueError, SyntaxError) as err:  # what PIL raises for bad or truncated files
        raise GanforgeError(f"cannot read image {path} ({err}); remove it from {folder}") from err
    return image


def load(folder: str | Path) -> tuple[Tensor, Tensor, list[str]]:
    """(uint8 images [N, C, H, W], labels [N], class names) of an export, or of any image-folder tree
    (class sub-folders named by index map to that index; other names in sorted order, as ImageFolder;
    an unconditional model's export has labels -1)."""
    root = Path(folder)
    if not root.is_dir():
        raise GanforgeError(f"synthetic_dir={folder} is not a folder; make one with generate.py")
    manifest = json.loads((root / MANIFEST).read_text()) if (root / MANIFEST).is_file() else {}
    if manifest.get("format") == "npz":
        with np.load(root / NPZ_FILE) as data:
            images, labels = torch.from_numpy(data["images"]), torch.from_numpy(data["labels"])
        return images, labels, manifest["classes"]
    try:
        tree = ImageFolder(str(root))
    except (FileNotFoundError, RuntimeError) as err:  # no class folders / no images in them
        raise GanforgeError(
            f"synthetic_dir={folder} has no images in class sub-folders; make one with generate.py"
        ) from err
    if all(name.isdigit() for name in tree.classes):
        to_label = {i: int(name) for i, name in enumerate(tree.classes)}
    else:
        to_label = {i: i for i in range(len(tree.classes))}
    images = [_read_image(path, folder) for path, _ in tree.samples]
    shapes = {tuple(x.shape) for x in images}
    if len(shapes) > 1:
        raise GanforgeError(f"images in {folder} differ in size or channels ({sorted(shapes)}); export again")
    labels = torch.tensor([to_label[c] for _, c in tree.samples], dtype=torch.long)
    if tree.classes == [UNLABELLED] or manifest.get("classes") == []:
        labels = torch.full_like(labels, -1)  # an unconditional model's export: no class labels
    return torch.stack(images), labels, tree.classes
