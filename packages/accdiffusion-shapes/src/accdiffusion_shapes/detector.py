"""A procedural (non-learned) detector for shapes-world objects.

The detector works at any image size:

1. the background colour is estimated as the per-channel median of the border
   pixels;
2. a pixel is foreground when it differs from the background by more than
   ``color_threshold`` in some channel and is chromatic (all backgrounds are
   grey levels, all object colours are saturated);
3. each foreground pixel is named after the palette colour of nearest hue.
   Because the backgrounds are achromatic, anti-aliased edge pixels (object
   colour blended with background) keep the object's hue;
4. connected components are found per colour with :func:`scipy.ndimage.label`
   and components smaller than ``min_area_fraction`` of the reference area are
   dropped;
5. the shape follows from the fill ratio of the component inside its bounding
   box (triangle about 0.5, circle about 0.785, square 1.0) and the size from
   the bounding-box side relative to the reference side.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage

from accdiffusion_shapes.world import OBJECT_COLORS, SIZES

TRIANGLE_MAX_FILL = 0.69
"""Fill ratios below this are triangles."""

CIRCLE_MAX_FILL = 0.9
"""Fill ratios from :data:`TRIANGLE_MAX_FILL` up to this are circles; above, squares."""

SIZE_THRESHOLD = float(np.sqrt(SIZES["small"] * SIZES["large"]))
"""Relative bounding-box sides above this are ``large``, below ``small``."""


@dataclass(frozen=True)
class DetectedObject:
    """An object found by :func:`detect`.

    Attributes:
        shape: ``"circle"``, ``"square"`` or ``"triangle"``.
        color: Name of the nearest object colour of the palette.
        size: ``"small"`` or ``"large"``.
        bbox: Pixel bounding box ``(x0, y0, x1, y1)`` with exclusive end.
        area: Number of pixels of the component (holes filled).
        fill_ratio: ``area`` divided by the bounding-box area.
    """

    shape: str
    color: str
    size: str
    bbox: tuple[int, int, int, int]
    area: int
    fill_ratio: float


def hue_degrees(rgb: np.ndarray) -> np.ndarray:
    """Hue in degrees ``[0, 360)`` of RGB values along the last axis (0 for grey pixels)."""
    rgb = rgb.astype(np.float64)
    red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    high = rgb.max(axis=-1)
    chroma = high - rgb.min(axis=-1)
    safe = np.where(chroma > 0, chroma, 1.0)
    hue = np.where(
        high == red,
        ((green - blue) / safe) % 6.0,
        np.where(high == green, (blue - red) / safe + 2.0, (red - green) / safe + 4.0),
    )
    return np.where(chroma > 0, hue * 60.0, 0.0) % 360.0


PALETTE_NAMES: tuple[str, ...] = tuple(OBJECT_COLORS)
"""Object colour names in palette order."""

PALETTE_HUES: np.ndarray = hue_degrees(np.array([OBJECT_COLORS[name] for name in PALETTE_NAMES]))
"""Hue in degrees of each palette colour, in :data:`PALETTE_NAMES` order."""


def estimate_background(pixels: np.ndarray) -> np.ndarray:
    """Per-channel median of the border pixels of an ``(H, W, 3)`` array."""
    border = np.concatenate([pixels[0], pixels[-1], pixels[1:-1, 0], pixels[1:-1, -1]])
    return np.median(border, axis=0)


def classify_shape(fill_ratio: float) -> str:
    """Name the shape whose bounding-box fill ratio is ``fill_ratio``."""
    if fill_ratio < TRIANGLE_MAX_FILL:
        return "triangle"
    if fill_ratio < CIRCLE_MAX_FILL:
        return "circle"
    return "square"


def detect(
    image: Image.Image | np.ndarray,
    reference_size: int | None = None,
    color_threshold: float = 48.0,
    chroma_threshold: float = 32.0,
    min_area_fraction: float = 0.01,
) -> list[DetectedObject]:
    """Find the shapes-world objects of an image.

    Args:
        image: RGB image (PIL or ``uint8``-range array of shape ``(H, W, 3)``).
        reference_size: Side in pixels that object sizes and the minimum area
            refer to; defaults to the image side (``max(H, W)``).  Pass the
            model's native side to measure objects of an upscaled generation
            at native scale.
        color_threshold: Minimum per-channel difference from the background
            (0-255) for a foreground pixel.
        chroma_threshold: Minimum chroma (max minus min channel, 0-255) for a
            foreground pixel.
        min_area_fraction: Components smaller than this fraction of
            ``reference_size ** 2`` pixels are discarded.

    Returns:
        Detected objects sorted by the top-left corner of their bounding box
        (row first).
    """
    pixels = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image, dtype=np.float64)
    side = reference_size or max(pixels.shape[:2])
    detections: list[DetectedObject] = []
    for name, (rows, cols), component in components(
        pixels, reference_size, color_threshold, chroma_threshold, min_area_fraction
    ):
        area = int(component.sum())
        box_h, box_w = rows.stop - rows.start, cols.stop - cols.start
        fill = area / float(box_h * box_w)
        detections.append(
            DetectedObject(
                shape=classify_shape(fill),
                color=name,
                size="large" if max(box_h, box_w) / side > SIZE_THRESHOLD else "small",
                bbox=(cols.start, rows.start, cols.stop, rows.stop),
                area=area,
                fill_ratio=fill,
            )
        )
    return sorted(detections, key=lambda obj: (obj.bbox[1], obj.bbox[0]))


def components(
    pixels: np.ndarray,
    reference_size: int | None = None,
    color_threshold: float = 48.0,
    chroma_threshold: float = 32.0,
    min_area_fraction: float = 0.01,
) -> Iterator[tuple[str, tuple[slice, slice], np.ndarray]]:
    """The object components that :func:`detect` reads (same arguments, ``pixels`` an ``(H, W, 3)`` array).

    Yields:
        Per kept component, by palette colour: the colour's name, the
        component's bounding slices ``(rows, cols)`` and its mask inside them
        (holes filled).
    """
    height, width = pixels.shape[:2]
    side = reference_size or max(height, width)
    background = estimate_background(pixels)
    chroma = pixels.max(axis=-1) - pixels.min(axis=-1)
    foreground = (np.abs(pixels - background).max(axis=-1) > color_threshold) & (chroma > chroma_threshold)
    hue_gap = np.abs(hue_degrees(pixels)[..., None] - PALETTE_HUES)
    nearest = np.minimum(hue_gap, 360.0 - hue_gap).argmin(axis=-1)
    min_area = min_area_fraction * side * side
    for index, name in enumerate(PALETTE_NAMES):
        labels, _ = ndimage.label(foreground & (nearest == index))
        for label, slices in enumerate(ndimage.find_objects(labels), start=1):
            component = ndimage.binary_fill_holes(labels[slices] == label)
            if component.sum() < min_area:
                continue
            yield name, slices, component
