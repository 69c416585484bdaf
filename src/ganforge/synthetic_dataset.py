"""Synthetic data sets: a generator's samples written as an image-folder tree (or one .npz) with a
manifest that says where they came from, and read back as uint8 tensors like any ganforge data set.

Folder layout (what torchvision's `ImageFolder` and `data=image_folder` read): one sub-folder per class
named by its zero-padded index (`0`..`9`; `00`..`99` for 100 classes, so sorted order is label order),
or a single `unlabelled/` for unconditional models. The .npz holds `images` (uint8 [N, C, H, W]) and
`labels` (int64 [N]; -1 for unconditional models). Both formats keep `discriminator.npy`: the
discriminator's logit on each exported image, in sample order, for rejection sampling
(`ganforge.rejection_sampling`).
"""

from __future__ import annotations

import datetime
import hashlib
import itertools
import json
import logging
import os
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import rich.filesize
import torch
from PIL import Image
from torch import Tensor

from ganforge.atomic import staged_dir
from ganforge.datamodules.base import to_signed_unit, to_uint8
from ganforge.datamodules.image_file import UNREADABLE, describe, read_image
from ganforge.datamodules.tree import image_tree
from ganforge.errors import GanforgeError
from ganforge.gan_module import GANLitModule
from ganforge.progress import Progress
from ganforge.sampling import NoiseSampler

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
NPZ_FILE = "samples.npz"
SCORES_FILE = "discriminator.npy"  # float32 [N]; named in the manifest's "discriminator_scores"
SCORES_KEY = "discriminator_scores"
UNLABELLED = "unlabelled"
FORMATS = ("png", "npz")
MANIFEST_KEYS = ("format", "num_samples", "counts", "classes", "image", "seed", "created")  # export() writes
LARGE_BYTES, LARGE_FILES = 10e9, 1_000_000  # an export past either is announced as a warning
PNG_OVERHEAD = 128  # bytes of a PNG besides its pixels and filter bytes, at most: signature, chunks, zlib


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


Batch = tuple[Tensor, Tensor, Tensor]  # uint8 images, labels, discriminator logits


def samples(model: GANLitModule, counts: list[int], seed: int, batch_size: int) -> Iterator[Batch]:
    """(uint8 images, labels, D's logits on those images) batches: class 0's samples first, then
    class 1's, ... D sees the exported (8-bit) images without its training augmentation, in eval mode."""
    labels = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
    sampler = NoiseSampler(model.latent_dim, seed)
    for z, y in sampler.batches(range(len(labels)), batch_size, labels=labels):
        images = model.generate(z, y if model.conditional else None)
        if images.dim() != 4:
            raise GanforgeError(
                "this checkpoint generates points, not images (a 2-D mixture model); generate.py "
                "exports image models"
            )
        images = to_uint8(images)
        yield images.cpu(), y, discriminator_logits(model, images, y).cpu()


@torch.no_grad()
def discriminator_logits(model: GANLitModule, images: Tensor, labels: Tensor) -> Tensor:
    was_training = model.discriminator.training
    model.discriminator.eval()
    try:
        conditional = labels.to(images.device) if model.conditional else None
        out = model.discriminate(to_signed_unit(images), conditional, augment=False, eager=True)
    finally:
        model.discriminator.train(was_training)
    return out.float().reshape(len(images))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_out_dir(out_dir: Path, overwrite: bool) -> None:
    """Refuse to write into anything but an empty or new folder, or (asked to) a previous export that
    nothing was added to or taken from (`not_an_export`)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise GanforgeError(f"out_dir={out_dir} is a file; choose a folder")
    if not out_dir.exists() or not any(out_dir.iterdir()):
        return
    if not overwrite:
        raise GanforgeError(
            f"out_dir={out_dir} is not empty; choose a new folder, or pass overwrite=true to replace "
            "a previous export"
        )
    reason = not_an_export(out_dir)
    if reason is not None:
        raise GanforgeError(
            f"out_dir={out_dir} is not empty and is not a ganforge export ({reason}); overwrite=true only "
            "replaces an untouched previous export, so choose another folder"
        )


def not_an_export(folder: Path) -> str | None:
    """Why `folder` is not an untouched ganforge export, None when it is one: a manifest.json with the
    keys export() writes, and exactly the files that manifest implies, nothing else. Only such a folder
    may be replaced or reused; a user's folder that merely holds a manifest.json is not one."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except FileNotFoundError:
        return f"no {MANIFEST}"
    except (OSError, ValueError):  # unreadable, not UTF-8, not JSON
        return f"its {MANIFEST} is not readable JSON"
    if not isinstance(manifest, dict) or not set(MANIFEST_KEYS) <= manifest.keys():
        return f"its {MANIFEST} is not one generate.py writes"
    counts = manifest["counts"]
    if (
        manifest["format"] not in FORMATS
        or not isinstance(counts, dict)
        or not all(isinstance(n, int) and n >= 0 for n in counts.values())
        or sum(counts.values()) != manifest["num_samples"]
    ):
        return f"its {MANIFEST} does not describe an export (format, counts, num_samples)"
    found = {
        (Path(parent) / name).relative_to(folder).as_posix()
        for parent, dirs, files in os.walk(folder)
        for name in dirs + files
    }
    # one more than is there is enough to tell: a damaged manifest may claim any number of files
    files = export_files(manifest["format"], counts, scored=SCORES_KEY in manifest)
    expected = set(itertools.islice(files, len(found) + 1))
    missing = sorted(expected - found)
    if missing:
        return f"its {missing[0]} is missing"
    extra = sorted(found - expected)
    if extra:
        return f"it holds {extra[0]}, which is no part of an export"
    return None


def export_files(fmt: str, counts: dict[str, int], scored: bool = True) -> Iterator[str]:
    """The relative paths (files and folders) of an export of this format with these per-class counts
    (`scored`: with the discriminator's scores, as every export since they were added)."""
    yield MANIFEST
    if scored:
        yield SCORES_FILE
    if fmt == "npz":
        yield NPZ_FILE
        return
    num_samples, index = sum(counts.values()), 0
    for name, n in counts.items():
        if n:
            yield name
        yield from (f"{name}/{_png_name(i, num_samples)}" for i in range(index, index + n))
        index += n


def _png_name(index: int, num_samples: int) -> str:
    """Sample `index`'s file name, zero-padded so that name order is sample order."""
    return f"{index:0{len(str(max(num_samples - 1, 0)))}d}.png"


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
    folder first and moved into place at the end (`atomic.staged_dir`): an export stopped by an error,
    a full disk, Ctrl-C or SIGTERM leaves no half folder, and `out_dir` as it was."""
    if fmt not in FORMATS:
        raise GanforgeError(f"format={fmt} is not supported; use one of {', '.join(FORMATS)}")
    if batch_size < 1:
        raise GanforgeError(f"batch_size must be positive, got {batch_size}")
    check_out_dir(out_dir, overwrite)
    out_dir = out_dir.resolve()
    names = class_names(model.num_classes)
    batches = samples(model, counts, seed, batch_size)
    first = next(batches)  # the image shape, before anything is written
    shape: tuple[int, int, int] = tuple(first[0].shape[1:])
    check_space(out_dir, fmt, sum(counts), shape)
    # checked again before replacing it: files may have been put there in the meantime
    with (
        staged_dir(out_dir, lambda: check_out_dir(out_dir, overwrite), "out_dir") as tmp,
        Progress("exporting", sum(counts), "images") as bar,
    ):
        scores = np.empty(sum(counts), np.float32)  # filled in place: many small kept tensors
        images = scores_apart(counted(itertools.chain([first], batches), bar), scores)  # fragment the heap
        _write(images, tmp, names, counts, fmt, model.conditional)
        np.save(tmp / SCORES_FILE, scores)
        manifest = {
            "format": fmt,
            "num_samples": sum(counts),
            "counts": {name: n for name, n in zip(names, counts, strict=True)},
            "classes": names if model.conditional else [],
            "image": {"channels": shape[0], "height": shape[1], "width": shape[2]},
            "seed": seed,
            SCORES_KEY: SCORES_FILE,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            **manifest,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def export_size(fmt: str, num_samples: int, shape: tuple[int, int, int], block: int) -> int:
    """Bytes an export takes on a disk with this block size: an npz's exactly (its uncompressed pixels
    and labels), PNG files' at most (uncompressed pixels, a filter byte per row and the chunks, each file
    rounded up to whole blocks; generated images compress little, and small ones fill a block anyway)."""
    channels, height, width = shape
    if fmt == "npz":
        return num_samples * (channels * height * width + 8) + block
    pixels = channels * height * width
    per_file = pixels + height + pixels // 1000 + PNG_OVERHEAD  # zlib's stored blocks, 64 KiB IDAT chunks
    return num_samples * -(-per_file // block) * block


def check_space(out_dir: Path, fmt: str, num_samples: int, shape: tuple[int, int, int]) -> None:
    """Say in one line how big the export will be and how much room its disk has (a warning when it is
    large); refuse one that cannot fit. It is written beside out_dir, and a previous export there stays
    until the new one is whole, so the free space has to hold all of it."""
    disk = next(p for p in out_dir.parents if p.exists())
    stat = os.statvfs(disk)
    free, size = stat.f_bavail * stat.f_frsize, export_size(fmt, num_samples, shape, stat.f_frsize)
    files = num_samples if fmt == "png" else 1
    what = f"{num_samples:,} images of {'x'.join(map(str, shape))}"
    what += f" as {files:,} PNG files" if fmt == "png" else f" in one {NPZ_FILE}"
    about = f"about {rich.filesize.decimal(size)}"
    if size > free:
        npz = export_size("npz", num_samples, shape, stat.f_frsize)
        other = f", or format=npz ({rich.filesize.decimal(npz)})" if fmt == "png" and npz <= free else ""
        raise GanforgeError(
            f"out_dir={out_dir}: {what} need {about} on disk and {disk} has {rich.filesize.decimal(free)} "
            f"free; free space, choose an out_dir on a larger disk, export fewer samples{other}"
        )
    line = f"exporting {what} to {out_dir}: {about} on disk, {rich.filesize.decimal(free)} free there"
    if size > LARGE_BYTES or files > LARGE_FILES:
        log.warning("%s. A large export: check num_samples", line)
    else:
        log.info(line)


def counted(batches: Iterator[Batch], bar: Progress) -> Iterator[Batch]:
    """The batches, each counted on the progress bar once it has been written."""
    for batch in batches:
        yield batch
        bar.advance(len(batch[0]))


def scores_apart(batches: Iterator[Batch], scores: np.ndarray) -> Iterator[tuple[Tensor, Tensor]]:
    """The (images, labels) of each batch; its discriminator logits written into `scores` in order."""
    index = 0
    for images, labels, logits in batches:
        scores[index : index + len(logits)] = logits.numpy()
        index += len(logits)
        yield images, labels


def _write(
    batches: Iterator[tuple[Tensor, Tensor]],
    folder: Path,
    names: list[str],
    counts: list[int],
    fmt: str,
    conditional: bool,
) -> None:
    if fmt == "npz":
        labels = np.repeat(np.arange(len(counts)), counts) if conditional else np.full(sum(counts), -1)
        _write_npz(folder / NPZ_FILE, batches, labels.astype(np.int64))
        return
    for name, n in zip(names, counts, strict=True):
        if n:
            (folder / name).mkdir()
    index, total = 0, sum(counts)
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:  # PNG encoding releases the GIL
        for images, labels in batches:
            paths = [folder / names[y] / _png_name(index + i, total) for i, y in enumerate(labels.tolist())]
            list(pool.map(_write_png, images, paths))
            index += len(images)


def _write_npz(path: Path, batches: Iterator[tuple[Tensor, Tensor]], labels: np.ndarray) -> None:
    """What `np.savez(path, images=..., labels=...)` writes (uncompressed .npy members in a zip), but
    the images go to disk batch by batch as they are generated: memory holds one batch, not the set."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        with archive.open("images.npy", "w", force_zip64=True) as f:  # its size is not known up front
            for i, (images, _) in enumerate(batches):
                pixels = np.ascontiguousarray(images.numpy())
                if i == 0:  # the header, once the image shape is known
                    shape = pixels.shape[1:]
                    header = np.lib.format.header_data_from_array_1_0(pixels)
                    np.lib.format.write_array_header_1_0(f, header | {"shape": (len(labels), *shape)})
                f.write(pixels.tobytes())
        with archive.open("labels.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array(f, labels)


def _write_png(image: Tensor, path: Path) -> None:
    """A uint8 [C, H, W] image as an 8-bit grayscale or RGB PNG (lossless)."""
    pixels = image.permute(1, 2, 0).numpy()
    Image.fromarray(pixels[..., 0] if pixels.shape[2] == 1 else pixels).save(path)


def _read_image(path: Path, folder: str | Path) -> Tensor:
    """Grey files as 1 channel, the rest as RGB; 8 bits, transparency on white (`datamodules.image_file`)."""
    try:
        return read_image(path)
    except UNREADABLE as err:
        raise GanforgeError(f"cannot read image {path} ({describe(err)}); remove it from {folder}") from err


def load(folder: str | Path) -> tuple[Tensor, Tensor, list[str]]:
    """(uint8 images [N, C, H, W], labels [N], class names) of an export, or of any image-folder tree
    (class sub-folders named by index map to that index; other names in sorted order, as ImageFolder;
    an unconditional model's export has labels -1). An export's names are all its model's classes
    (its manifest's), also those a partial export (`counts=`) has no folder for: names[label] is its
    class. The tree is walked as `data=image_folder` walks it (`datamodules.tree`: hidden files
    skipped, links to folders not followed)."""
    root = Path(folder)
    if not root.is_dir():
        raise GanforgeError(f"synthetic_dir={folder} is not a folder; make one with generate.py")
    manifest = json.loads((root / MANIFEST).read_text()) if (root / MANIFEST).is_file() else {}
    if manifest.get("format") == "npz":
        with np.load(root / NPZ_FILE) as data:
            images, labels = torch.from_numpy(data["images"]), torch.from_numpy(data["labels"])
        return images, labels, manifest["classes"]
    classes, per_class = image_tree(root)
    if not classes:
        raise GanforgeError(
            f"synthetic_dir={folder} has no images in class sub-folders; make one with generate.py"
        )
    written = manifest.get("classes")  # an export's: every class of its model, with samples or not
    if written and set(classes) <= set(written):  # (a partial export has folders for some of them)
        to_label, classes = [written.index(name) for name in classes], written
    elif all(name.isdigit() for name in classes):
        to_label = [int(name) for name in classes]
    else:
        to_label = list(range(len(classes)))
    images = [_read_image(path, folder) for group in per_class for path in group]
    shapes = {tuple(x.shape) for x in images}
    if len(shapes) > 1:
        raise GanforgeError(f"images in {folder} differ in size or channels ({sorted(shapes)}); export again")
    labels = torch.tensor([to_label[c] for c, group in enumerate(per_class) for _ in group], dtype=torch.long)
    if classes == [UNLABELLED] or manifest.get("classes") == []:
        labels = torch.full_like(labels, -1)  # an unconditional model's export: no class labels
    return torch.stack(images), labels, classes


def load_scores(folder: str | Path) -> Tensor | None:
    """The discriminator's logit on each sample of an export, in the order `load` returns them; None
    for an export made before they were written, or a folder generate.py did not write."""
    root = Path(folder)
    try:
        manifest = json.loads((root / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or SCORES_KEY not in manifest:
        return None
    scores = torch.from_numpy(np.load(root / manifest[SCORES_KEY]))
    if scores.shape != (manifest["num_samples"],):
        raise GanforgeError(
            f"{root / manifest[SCORES_KEY]} holds {tuple(scores.shape)} scores for {manifest['num_samples']} "
            "samples; export again with generate.py"
        )
    return scores
