"""A small text-to-image diffusion model of a synthetic "shapes world".

Diffusers loads the model's pixel codec by the library name recorded in
``model_index.json`` (``getattr(accdiffusion_shapes, "PixelCodec")``); the
codec, and with it diffusers, is imported on that first access, so that
registering the model (``accdiffusion plugins``, ``--help``) stays light.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["PixelCodec", "default_model_path"]


def default_controlnet_path() -> Path:
    """Return the folder of the shipped canny ControlNet for the shapes model (structure guidance)."""
    return Path(__file__).resolve().parent / "controlnet"


def default_model_path() -> Path:
    """Return the folder of the shipped ``StableDiffusionPipeline`` (native size 32x32)."""
    return Path(__file__).resolve().parent / "model"


def __getattr__(name: str) -> Any:
    if name == "PixelCodec":
        from accdiffusion_shapes.codec import PixelCodec

        return PixelCodec
    raise AttributeError(f"module 'accdiffusion_shapes' has no attribute {name!r}")
