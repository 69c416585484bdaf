"""The images of a folder tree and their classes, for `data=image_folder` and `synthetic_dataset.load`
(so `augment.py`'s `synthetic_dir`): torchvision `ImageFolder`'s layout and order (a class per top-level
sub-folder, its images at any depth, `IMG_EXTENSIONS`), made safe for folders nobody checked.

- Hidden files and folders (`.ipynb_checkpoints/`, `.DS_Store`, macOS's `._photo.jpg`) are skipped:
  they are a tool's, not the user's, and one hidden folder would turn a flat folder into a class tree.
- Links to folders are not followed (ImageFolder follows them): a link can point back up the tree (the
  walk never ends) or at another class (its images counted again, under the wrong label). Links to
  files are read like files: they cannot loop, and a tree of links is a common way to make a split.
- Images both at the top and in sub-folders are refused: the tree is neither a flat folder nor classes.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from torchvision.datasets.folder import IMG_EXTENSIONS

from ganforge.errors import GanforgeError

log = logging.getLogger(__name__)


def hidden(path: Path) -> bool:
    return path.name.startswith(".")


def image_tree(root: Path) -> tuple[list[str], list[list[Path]]]:
    """(class names, images of each class) of the folder `root`; a flat folder is ([], [its images])."""
    links: list[Path] = []
    top = _images(root, links, recursive=False)
    folders = sorted(d for d in root.iterdir() if d.is_dir() and not hidden(d) and not _link(d, links))
    classes = [(d.name, images) for d in folders if (images := _images(d, links, recursive=True))]
    if links:
        log.warning(
            "not following %d link(s) to folders in %s (e.g. %s -> %s): a link can loop or repeat images "
            "under another class; copy or move the images into the tree instead",
            len(links), root, links[0], os.readlink(links[0]),
        )  # fmt: skip
    if top and classes:
        raise GanforgeError(
            f"{root} holds images both at its top (e.g. {top[0].name}) and in sub-folders (e.g. "
            f"{classes[0][0]}/); move the top ones into a class sub-folder, or the sub-folders out"
        )
    if classes:
        return [name for name, _ in classes], [images for _, images in classes]
    return [], [top] if top else []


def _link(folder: Path, links: list[Path]) -> bool:
    """Whether `folder` is a link (noted in `links`)."""
    if folder.is_symlink():
        links.append(folder)
        return True
    return False


def _images(folder: Path, links: list[Path], recursive: bool) -> list[Path]:
    """The image files in `folder` (and below it), in ImageFolder's order; hidden names and links to
    folders skipped."""
    found = []
    for parent, dirs, names in os.walk(folder):
        subfolders = [Path(parent, d) for d in dirs] if recursive else []
        dirs[:] = [d.name for d in subfolders if not hidden(d) and not _link(d, links)]
        files = (Path(parent, name) for name in names)
        found += [
            f
            for f in files
            if not hidden(f)
            and f.name.lower().endswith(IMG_EXTENSIONS)
            and f.is_file()  # not a FIFO or a device named like an image: opening one blocks
        ]
    return sorted(found, key=lambda path: (str(path.parent), path.name))
