"""The ``bicubic_latent`` and ``pixel`` upscalers, as one registration list."""

from __future__ import annotations

from accdiffusion.plugins import StageEntry, StagePlugin

from .upscalers import BicubicLatentUpscaler, PixelUpscaler

plugin = StagePlugin([
    StageEntry("upscaler", "bicubic_latent", BicubicLatentUpscaler,
               "bicubic interpolation of the latents (DemoFusion / AccDiffusion)"),
    StageEntry("upscaler", "pixel", PixelUpscaler, "decode, bicubic antialiased resize of the image, encode"),
])
