"""Input images: every form a user may hand in, read once and checked.

Used by ``generate(image=...)`` and by stages that take a picture (the
ControlNet structure guidance's ``image`` option).
"""

from __future__ import annotations

import io
import os
import warnings
from typing import Any

from PIL import Image, UnidentifiedImageError

from .errors import SettingsError

#: Largest input image, in pixels (8192 x 8192); larger headers are refused
#: before the pixels are decoded.
MAX_IMAGE_PIXELS = 8192 * 8192

_IMAGE_KINDS = "a file path, the bytes of an image file, a PIL image or a numpy HxWx3 uint8 array"


def _checked_size(img: Image.Image, what: str) -> Image.Image:
    w, h = img.size
    if w <= 0 or h <= 0:
        raise SettingsError(f"image={what} is not allowed: it has no pixels ({w}x{h})")
    if w * h > MAX_IMAGE_PIXELS:
        raise SettingsError(f"image={what} is too large: {w}x{h} = {w * h} pixels; the limit is "
                            f"{MAX_IMAGE_PIXELS} pixels (accdiffusion.images.MAX_IMAGE_PIXELS)")
    return img


def _open_image(source: Any, what: str) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as img:
                _checked_size(img, what)  # from the header, before decoding
                return img.convert("RGB")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise SettingsError(f"image={what} is too large: {exc}; the limit is {MAX_IMAGE_PIXELS} pixels "
                            "(accdiffusion.images.MAX_IMAGE_PIXELS)") from None
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
        raise SettingsError(f"image={what} cannot be read as an image: {exc}") from None


def load_image(image: Any) -> Image.Image:
    """The input image as RGB, from a path, an image file's bytes, a PIL image
    or a numpy ``HxW``/``HxWx3``/``HxWx4`` ``uint8`` array; :class:`SettingsError`
    naming the input for anything else, for an unreadable file, for an image
    without pixels and for one above :data:`MAX_IMAGE_PIXELS`."""
    if isinstance(image, (str, os.PathLike)):
        return _open_image(image, repr(os.fspath(image)) if isinstance(image, os.PathLike) else repr(image))
    if isinstance(image, (bytes, bytearray, memoryview)):
        return _open_image(io.BytesIO(bytes(image)), f"<{len(image)} bytes>")
    if isinstance(image, Image.Image):
        _checked_size(image, "<PIL image>")
        return image if image.mode == "RGB" else image.convert("RGB")
    if type(image).__module__ == "numpy" and hasattr(image, "dtype") and hasattr(image, "shape"):
        shape = tuple(image.shape)
        what = f"<numpy array {'x'.join(map(str, shape)) or 'scalar'} {image.dtype}>"
        if str(image.dtype) != "uint8" or not (len(shape) == 2 or (len(shape) == 3 and shape[2] in (1, 3, 4))):
            raise SettingsError(f"image={what} is not allowed: a numpy array must be HxWx3 (or HxW, HxWx4) uint8")
        if 0 in shape[:2]:
            raise SettingsError(f"image={what} is not allowed: it has no pixels")
        if shape[0] * shape[1] > MAX_IMAGE_PIXELS:
            raise SettingsError(f"image={what} is too large: {shape[0] * shape[1]} pixels; the limit is "
                                f"{MAX_IMAGE_PIXELS} pixels (accdiffusion.images.MAX_IMAGE_PIXELS)")
        import numpy as np

        array = np.ascontiguousarray(image[:, :, 0] if len(shape) == 3 and shape[2] == 1 else image)
        return Image.fromarray(array).convert("RGB")
    raise SettingsError(f"image of type {type(image).__name__} is not allowed: {_IMAGE_KINDS}")
