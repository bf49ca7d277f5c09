"""Image-quality measures of shapes-world generations: speckle and grey tiles.

Both compare the *background* of an image with the background colour (the
prompt's, or else the detector's estimate, the median of the border pixels).
Background pixels are all pixels outside the object components that
:func:`accdiffusion_shapes.detector.detect` keeps, each component grown by
:data:`EDGE_PIXELS` pixel so that the anti-aliased rim of an object (paler
than the detector's foreground threshold) is not taken for background.

* **Speckle** (:func:`speckle`): the share of background pixels more than
  :data:`SPECKLE_LEVELS` levels from the background colour, the difference
  being the largest absolute channel difference on the 0-255 scale.  A clean
  render has none; ``k`` noisy pixels planted in a background of ``N``
  pixels give exactly ``k / N``.  Coloured specks too small to be an object
  (under 1% of the reference area) count, and so do grey pixels on a white
  or black background.
* **Grey tiles** (:func:`grey_tiles`): the image is cut into a grid of
  non-overlapping ``window`` x ``window`` cells (the model's native side: the
  size of the method's local windows), starting at the top-left corner; a
  cell whose last row or column would leave the image is dropped.  A cell is
  *eligible* when at least half of its pixels are background, and a *grey
  tile* when the mean colour of its background pixels is more than
  :data:`GREY_TILE_LEVELS` levels (largest absolute channel difference) from
  the background colour: a window that painted the wrong background, such as
  the unconditional grey of a window whose patch prompt lost the background
  words.  Speckle alone seldom makes a tile (a tenth of a cell's pixels 127
  levels off moves the mean by 12.7).  A tile painted off the grid shows in
  each cell where it covers enough of the cell.

The pixels of a grey tile are also far from the background colour, so they
count as speckle too: speckle is the pixel-level share, grey tiles the
window-level count.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage

from accdiffusion_shapes.detector import components, estimate_background
from accdiffusion_shapes.world import BACKGROUND_COLORS

SPECKLE_LEVELS = 30
"""A background pixel further than this from the background colour (0-255, largest channel difference) is speckle."""

GREY_TILE_LEVELS = 30
"""A cell whose background's mean colour is further than this from the background colour is a grey tile."""

EDGE_PIXELS = 1
"""Object components are grown by this many pixels (their anti-aliased rim) before the rest is background."""


def as_pixels(image: Image.Image | np.ndarray) -> np.ndarray:
    """An ``(H, W, 3)`` float64 array on the 0-255 scale from a PIL image or a ``uint8``-range array."""
    if isinstance(image, Image.Image):
        image = image.convert("RGB")
    return np.asarray(image, dtype=np.float64)


def background_rgb(pixels: np.ndarray, background: str | tuple[int, int, int] | None) -> np.ndarray:
    """The background colour: a name of :data:`world.BACKGROUND_COLORS`, an RGB triple, or (``None``)
    the detector's estimate from the border pixels."""
    if background is None:
        return estimate_background(pixels)
    if isinstance(background, str):
        background = BACKGROUND_COLORS[background]
    return np.asarray(background, dtype=np.float64)


def object_mask(image: Image.Image | np.ndarray, reference_size: int | None = None) -> np.ndarray:
    """Boolean ``(H, W)`` mask of the detector's object components, grown by :data:`EDGE_PIXELS`.

    Args:
        image: The image.
        reference_size: As for :func:`~accdiffusion_shapes.detector.detect`:
            the side the minimum component area (1%) refers to; pass the
            model's native side for an upscaled generation.
    """
    pixels = as_pixels(image)
    mask = np.zeros(pixels.shape[:2], dtype=bool)
    for _name, slices, component in components(pixels, reference_size):
        mask[slices] |= component
    if EDGE_PIXELS and mask.any():
        mask = ndimage.binary_dilation(mask, structure=np.ones((3, 3), dtype=bool), iterations=EDGE_PIXELS)
    return mask


def far_from(pixels: np.ndarray, color: np.ndarray, levels: float) -> np.ndarray:
    """Boolean mask of the pixels whose largest absolute channel difference from ``color`` exceeds ``levels``."""
    return np.abs(pixels - color).max(axis=-1) > levels


def speckle(
    image: Image.Image | np.ndarray,
    background: str | tuple[int, int, int] | None = None,
    reference_size: int | None = None,
) -> float:
    """Share of background pixels more than :data:`SPECKLE_LEVELS` from the background colour (0 with no
    background pixels); see the module docstring."""
    pixels = as_pixels(image)
    rest = ~object_mask(pixels, reference_size)
    if not rest.any():
        return 0.0
    color = background_rgb(pixels, background)
    return float(far_from(pixels, color, SPECKLE_LEVELS)[rest].sum() / rest.sum())


def grey_tiles(
    image: Image.Image | np.ndarray,
    window: int,
    background: str | tuple[int, int, int] | None = None,
    reference_size: int | None = None,
) -> tuple[int, int]:
    """Grey tiles among the ``window``-sized cells; see the module docstring.

    Returns:
        The number of grey tiles and the number of eligible cells.
    """
    pixels = as_pixels(image)
    rest = ~object_mask(pixels, reference_size)
    color = background_rgb(pixels, background)
    height, width = rest.shape
    tiles = eligible = 0
    for top in range(0, height - window + 1, window):
        for left in range(0, width - window + 1, window):
            cell = rest[top : top + window, left : left + window]
            if 2 * cell.sum() < window * window:
                continue
            eligible += 1
            mean = pixels[top : top + window, left : left + window][cell].mean(axis=0)
            tiles += bool(np.abs(mean - color).max() > GREY_TILE_LEVELS)
    return tiles, eligible


def measure(
    image: Image.Image | np.ndarray, native: int, background: str | tuple[int, int, int] | None = None
) -> dict[str, Any]:
    """Speckle and grey tiles of one generation whose model's native side is ``native``.

    Returns:
        ``speckle`` (share), ``grey_tiles`` (count), ``tile_cells`` (eligible
        cells) and ``grey_tile_share`` (``grey_tiles / tile_cells``, 0 without
        eligible cells).
    """
    pixels = as_pixels(image)
    tiles, cells = grey_tiles(pixels, native, background, reference_size=native)
    return {
        "speckle": speckle(pixels, background, reference_size=native),
        "grey_tiles": tiles,
        "tile_cells": cells,
        "grey_tile_share": tiles / cells if cells else 0.0,
    }


def main(argv: list[str] | None = None) -> int:
    """``python -m accdiffusion_shapes.quality IMAGE... [--background white] [--native 32]``: one line per image."""
    import argparse
    import json

    parser = argparse.ArgumentParser(prog="python -m accdiffusion_shapes.quality",
                                     description="Speckle and grey tiles of shapes-world images.")
    parser.add_argument("images", nargs="+", help="image files")
    parser.add_argument("--background", choices=sorted(BACKGROUND_COLORS), default=None,
                        help="the prompt's background colour (default: estimated from the border pixels)")
    parser.add_argument("--native", type=int, default=32, help="the model's native side in px (the grid's cell)")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    args = parser.parse_args(argv)
    if args.native < 1:
        parser.error(f"--native must be a positive number of pixels, got {args.native}")
    for path in args.images:
        try:
            image = Image.open(path)
            image.load()
        except (OSError, ValueError) as error:
            print(f"error: cannot read image {path!r}: {error}", file=sys.stderr)
            return 2
        result = measure(image, args.native, args.background)
        if args.json:
            print(json.dumps({"image": path, **result}))
        else:
            print(f"{path}: speckle {100 * result['speckle']:.2f}%, grey tiles {result['grey_tiles']} "
                  f"of {result['tile_cells']} cells")
    return 0


if __name__ == "__main__":
    sys.exit(main())
