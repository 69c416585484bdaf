"""One image file -> the 8-bit grey or RGB pixels ganforge trains on, whatever else the file holds.

PIL decodes; this module decides what its modes mean for training, the same for `data=image_folder`,
CelebA and synthetic sets read back (`synthetic_dataset.load`):
- more than 8 bits per channel is scaled to 8 (16-bit grey PNGs and TIFFs, which PIL opens as mode
  `I;16` or `I`: 32768 -> 128, as torchvision's `to_dtype(scale=True)` does), not clipped to white;
  PIL already keeps the high byte of 16-bit RGB(A). Float pixels (mode `F`) have no agreed 8-bit
  scale and are refused;
- transparency (an alpha channel, a transparent palette entry or colour) is composited on white, as a
  viewer or a web page shows it: dropping alpha would train on whatever colour the hidden pixels hold;
- with `max_aspect`, an image more than that many times as long as it is wide is refused before its
  pixels are decoded: resizing its short side to `data.image_size` would make a huge image (a 1.2 KB
  PNG of 400000x1 pixels becomes 4.9 GB at 64 px) of which the centre crop keeps a sliver. PIL's
  decompression-bomb limit (`Image.MAX_IMAGE_PIXELS`) bounds the decoded size.
"""

from __future__ import annotations

from pathlib import Path

import torchvision.transforms.v2.functional as TF
from PIL import Image
from torch import Tensor

BACKGROUND = (255, 255, 255, 255)  # transparent pixels become white
MAX_ASPECT = 20  # the centre crop of a longer image keeps under 5% of it
GREY_BANDS = ("1", "L", "I", "F")  # first band of the grey modes (with or without alpha)


class UnusableImage(ValueError):
    """An image PIL can read that ganforge will not train on; the message says why and what to do."""


UNREADABLE = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)  # PIL's, and UnusableImage


def describe(err: Exception) -> str:
    """Why an image cannot be used, in one line (a worker sends this to the main process)."""
    return str(err) if isinstance(err, UnusableImage) else f"{type(err).__name__}: {err}"


def read_image(path: str | Path, mode: str | None = None, max_aspect: float | None = None) -> Tensor:
    """uint8 [C, H, W] pixels of the image at `path` in `mode` ("L" or "RGB"; None: "L" for grey files,
    "RGB" for the rest). Raises one of `UNREADABLE` for a file that cannot be used."""
    with Image.open(path) as img:
        width, height = img.size
        if max_aspect is not None and max(width, height) > max_aspect * min(width, height):
            raise UnusableImage(
                f"{width}x{height} pixels, more than {max_aspect} times as long as wide: resizing it for "
                "training would make a huge image; crop it"
            )
        mode = mode or ("L" if img.getbands()[0] in GREY_BANDS else "RGB")
        return TF.pil_to_tensor(flatten(eight_bits(img)).convert(mode))


def eight_bits(img: Image.Image) -> Image.Image:
    """`img` with at most 8 bits per channel: integer grey scaled from 16 bits, float refused."""
    if img.mode == "F":
        raise UnusableImage("32-bit float pixels have no standard 8-bit scale; save it as an 8-bit image")
    if not img.mode.startswith("I"):  # "I;16", "I;16B", ... and "I" (32-bit integers)
        return img
    low, high = img.getextrema()
    if low < 0 or high > 65535:
        raise UnusableImage(
            f"32-bit integer pixels from {low} to {high}, outside the 16-bit range that ganforge scales to "
            "8 bits; save it as an 8- or 16-bit image"
        )
    return img.convert("I").point(lambda v: v / 256).convert("L")


def flatten(img: Image.Image) -> Image.Image:
    """`img` without transparency: composited on `BACKGROUND` (grey images stay grey)."""
    if not img.has_transparency_data:
        return img
    flat = Image.alpha_composite(Image.new("RGBA", img.size, BACKGROUND), img.convert("RGBA"))
    return flat.convert("L" if img.getbands()[0] in GREY_BANDS else "RGB")
