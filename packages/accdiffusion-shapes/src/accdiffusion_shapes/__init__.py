"""A small text-to-image diffusion model of a synthetic "shapes world".

Importing the package also imports :mod:`accdiffusion_shapes.codec`, which
diffusers needs in ``sys.modules`` to load the model's pixel codec from the
library name recorded in ``model_index.json`` (diffusers imports no module a
folder names).
"""

from __future__ import annotations

from pathlib import Path

from accdiffusion_shapes.codec import PixelCodec

__all__ = ["PixelCodec", "default_model_path"]


def default_controlnet_path() -> Path:
    """Return the folder of the shipped canny ControlNet for the shapes model (structure guidance)."""
    return Path(__file__).resolve().parent / "controlnet"


def default_model_path() -> Path:
    """Return the folder of the shipped ``StableDiffusionPipeline`` (native size 32x32)."""
    return Path(__file__).resolve().parent / "model"

