"""The folder torchvision reads a data set from, when `data.data_dir` names the data set's own folder.

torchvision wants its `root`, the folder holding `MNIST/raw/` (`cifar-10-batches-py/`); given the folder
the files are in (`…/MNIST/raw`, `…/MNIST`), it looked one more level down and reported the files
missing, which suggested nesting `MNIST/raw` again."""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)


def torchvision_root(data_dir: str, inner: tuple[str, ...]) -> str:
    """`data_dir`, or the folder above it when it is `inner` (e.g. ("MNIST", "raw")) or the start of it
    and does not itself hold `inner`."""
    path = Path(data_dir)
    if path.joinpath(*inner).is_dir():
        return data_dir
    for depth in range(len(inner), 0, -1):
        if path.parts[-depth:] == inner[:depth]:
            root = path.parents[depth - 1]
            log.info("data.data_dir=%s is the data set's own folder: reading %s", path, root.joinpath(*inner))
            return str(root)
    return data_dir
