"""Latent upscalers for accdiffusion (DemoFusion progressive upscaling)."""

from .upscalers import BicubicLatentUpscaler, PixelUpscaler

__all__ = ["BicubicLatentUpscaler", "PixelUpscaler"]
