"""Latent upscaling between phases (DemoFusion, Du et al., CVPR 2024, progressive upscaling).

Each phase after the first starts from the previous phase's latents brought to
the new size, which are then noised again and denoised (DemoFusion's
"upsample-diffuse-denoise" loop, kept by AccDiffusion).
"""

from __future__ import annotations

import attrs
import torch
import torch.nn.functional as F
from accdiffusion.stages import LatentCodec


@attrs.frozen
class BicubicLatentUpscaler:
    """The ``bicubic_latent`` upscaler: bicubic interpolation of the latents themselves,
    as in the DemoFusion and AccDiffusion releases."""

    def upscale(self, latents: torch.Tensor, size: tuple[int, int], codec: LatentCodec) -> torch.Tensor:
        """``latents`` ``(1, C, h, w)`` resized bicubically (``align_corners=False``) to ``(1, C, *size)``."""
        return F.interpolate(latents, size=tuple(size), mode="bicubic", align_corners=False)


@attrs.frozen
class PixelUpscaler:
    """The ``pixel`` upscaler: decode, resize the image, encode again.

    The image is resized bicubically with antialiasing to ``size`` times the
    codec's ``vae_scale_factor`` and clamped to ``[-1, 1]`` before encoding.
    """

    def upscale(self, latents: torch.Tensor, size: tuple[int, int], codec: LatentCodec) -> torch.Tensor:
        """``latents`` ``(1, C, h, w)`` to ``(1, C, *size)`` through pixel space."""
        images = codec.decode_latents(latents)
        factor = codec.vae_scale_factor
        pixel_size = (size[0] * factor, size[1] * factor)
        resized = F.interpolate(images, size=pixel_size, mode="bicubic", align_corners=False, antialias=True)
        return codec.encode_images(resized.clamp(-1.0, 1.0))
