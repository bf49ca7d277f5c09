"""Registers the ``bicubic_latent`` and ``pixel`` upscalers with accdiffusion."""

from __future__ import annotations

from typing import Callable

import accdiffusion

from .upscalers import BicubicLatentUpscaler, PixelUpscaler


@accdiffusion.hookimpl
def accdiffusion_register_upscalers(register: Callable[..., None]) -> None:
    """Register :class:`BicubicLatentUpscaler` and :class:`PixelUpscaler`."""
    register(
        "bicubic_latent",
        BicubicLatentUpscaler.from_settings,
        description="bicubic interpolation of the latents (DemoFusion / AccDiffusion)",
    )
    register(
        "pixel",
        PixelUpscaler.from_settings,
        description="decode, bicubic antialiased resize of the image, encode",
    )
