"""Any folder of images. Class sub-folders become labels (as in torchvision's ImageFolder); a flat
folder is one unlabelled class. Which files count, and which do not: `datamodules.tree`."""

from __future__ import annotations

from pathlib import Path

from torchvision.datasets.folder import IMG_EXTENSIONS

from ganforge.datamodules.base import split_indices
from ganforge.datamodules.files import FileImageDataModule, Split
from ganforge.datamodules.tree import image_tree
from ganforge.errors import GanforgeError


class ImageFolderDataModule(FileImageDataModule):
    def __init__(
        self,
        data_dir: str,
        image_size: int = 64,
        channels: int = 3,
        val_fraction: float = 0.05,
        test_fraction: float = 0.0,
        split_seed: int = 0,
        **kwargs,
    ) -> None:
        super().__init__(data_dir, image_size, channels, **kwargs)
        self.fractions = (val_fraction, test_fraction)
        self.split_seed = split_seed
        self.classes: list[str] = []

    def index(self) -> dict[str, Split]:
        root = Path(self.data_dir)
        if not root.is_dir():
            what = "is a file, not a folder" if root.exists() else "does not exist"
            raise GanforgeError(f"image folder {root} {what}; set data.data_dir to a folder of images")
        self.classes, per_class = image_tree(root)
        files = [f for group in per_class for f in group]
        labels = [c for c, group in enumerate(per_class) for _ in group]
        if not files:
            exts = " ".join(sorted(IMG_EXTENSIONS))
            raise GanforgeError(
                f"no images found in {root} or its sub-folders (extensions: {exts}; hidden files and links "
                "to folders are skipped); "
                "set data.data_dir to a folder of images"
            )
        self.num_classes = max(len(self.classes), 1)
        parts = split_indices(len(files), self.fractions, self.split_seed)
        return {
            name: ([files[i] for i in idx], [labels[i] for i in idx])
            for name, idx in zip(("train", "val", "test"), parts, strict=True)
        }
