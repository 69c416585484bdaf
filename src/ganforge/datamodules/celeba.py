"""CelebA from the aligned-and-cropped JPEG folder `img_align_celeba` (178x218 faces).

Transform: centre crop `crop_size` (the face region) then resize to image_size. Splits come from the
official `list_eval_partition.txt` when it lies in data_dir or beside the image folder.
"""

from __future__ import annotations

from pathlib import Path

import torchvision.transforms.v2 as T
from torchvision.datasets import CelebA

from ganforge.datamodules.base import split_indices
from ganforge.datamodules.files import FileImageDataModule, Split, log
from ganforge.datamodules.tree import hidden
from ganforge.errors import GanforgeError

FOLDER = "img_align_celeba"
PARTITION = "list_eval_partition.txt"
SPLITS = ("train", "val", "test")  # partition codes 0, 1, 2


class CelebADataModule(FileImageDataModule):
    def __init__(
        self,
        data_dir: str,
        image_size: int = 64,
        channels: int = 3,
        crop_size: int | None = 140,
        download: bool = False,
        val_fraction: float = 0.05,
        test_fraction: float = 0.05,
        split_seed: int = 0,
        **kwargs,
    ) -> None:
        super().__init__(data_dir, image_size, channels, **kwargs)
        self.crop_size = crop_size
        self.download = download
        self.fractions = (val_fraction, test_fraction)
        self.split_seed = split_seed

    @property
    def image_dir(self) -> Path:
        """data_dir may be the CelebA root (holding img_align_celeba/) or the image folder itself."""
        root = Path(self.data_dir)
        for candidate in (root / FOLDER, root / "celeba" / FOLDER):
            if candidate.is_dir():
                return candidate
        return root

    def prepare_data(self) -> None:
        if self.download and not any(self.image_dir.glob("*.jpg")):
            try:
                CelebA(self.data_dir, split="all", target_type=[], download=True)
            except Exception as err:
                raise self._missing(f"download failed: {type(err).__name__}: {err}") from err

    def _missing(self, reason: str) -> GanforgeError:
        reason = " ".join(reason.split())  # download errors may span lines; messages are one line
        return GanforgeError(
            f"CelebA not found ({reason}): expected the aligned JPEGs 000001.jpg ... 202599.jpg in "
            f"{Path(self.data_dir) / FOLDER} (or data.data_dir pointing at that folder), optionally with "
            f"{PARTITION} beside it; or set data.download=true with network access"
        )

    def transform(self) -> T.Transform:
        crop = [T.CenterCrop(self.crop_size)] if self.crop_size else []
        return T.Compose([*crop, T.Resize(self.image_size, antialias=True), T.CenterCrop(self.image_size)])

    def _partition(self) -> dict[str, int] | None:
        for path in (self.image_dir / PARTITION, self.image_dir.parent / PARTITION):
            if path.is_file():
                rows = (line.split() for line in path.read_text().splitlines() if line.strip())
                return {name: int(code) for name, code in rows}
        return None

    def index(self) -> dict[str, Split]:
        files = sorted(f for f in self.image_dir.glob("*.jpg") if not hidden(f))  # not macOS's ._000001.jpg
        if not files:
            raise self._missing(f"no .jpg files in {self.image_dir}")
        partition = self._partition()
        if partition is None:
            return self._seeded_splits(files)
        unlisted = sum(f.name not in partition for f in files)
        if unlisted:
            log.warning("%d image(s) not in %s: using them for training", unlisted, PARTITION)
        splits: dict[str, Split] = {name: ([], []) for name in SPLITS}
        for f in files:
            split_files, labels = splits[SPLITS[partition.get(f.name, 0)]]
            split_files.append(f)
            labels.append(0)
        empty = [name for name in SPLITS if not splits[name][0]]
        if empty:  # a part of CelebA (its first images are all in the official train partition)
            val, test = self.fractions
            log.warning(
                "%s gives these %d images no %s images: using a seeded split instead (data.val_fraction=%s, "
                "data.test_fraction=%s)", PARTITION, len(files), " or ".join(empty), val, test,
            )  # fmt: skip
            return self._seeded_splits(files)
        return splits

    def _seeded_splits(self, files: list[Path]) -> dict[str, Split]:
        parts = split_indices(len(files), self.fractions, self.split_seed)
        return {
            name: ([files[i] for i in idx], [0] * len(idx)) for name, idx in zip(SPLITS, parts, strict=True)
        }
