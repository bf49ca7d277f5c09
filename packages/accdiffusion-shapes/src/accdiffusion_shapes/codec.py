"""An exact pixel codec that stands in for a VAE.

The shapes-world model diffuses directly in pixel space.  :class:`PixelCodec`
gives diffusers' pipelines the VAE interface they expect while leaving the
tensor untouched: encoding and decoding are both the identity on images in
``[-1, 1]``.  With ``block_out_channels=(3,)`` diffusers computes a VAE scale
factor of ``2 ** (1 - 1) = 1``, so the latent side equals the image side.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from diffusers.models.autoencoders.vae import DecoderOutput
from diffusers.utils import BaseOutput

__all__ = ["ConfigMixin", "IdentityDistribution", "ModelMixin", "PixelCodec", "PixelCodecOutput"]


class IdentityDistribution:
    """A point mass: :meth:`mode` and :meth:`sample` both return the stored tensor."""

    def __init__(self, value: torch.Tensor) -> None:
        """Wrap ``value``."""
        self.value = value

    def mode(self) -> torch.Tensor:
        """Return the stored tensor."""
        return self.value

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """Return the stored tensor; ``generator`` is accepted for API compatibility."""
        return self.value


@dataclass
class PixelCodecOutput(BaseOutput):
    """Output of :meth:`PixelCodec.encode`, shaped like ``AutoencoderKLOutput``."""

    latent_dist: IdentityDistribution


class PixelCodec(ModelMixin, ConfigMixin):
    """Identity "autoencoder" whose latents are the pixels themselves.

    Args:
        block_out_channels: Only its length matters: diffusers derives the VAE
            scale factor as ``2 ** (len(block_out_channels) - 1)``.
        latent_channels: Number of channels of images and latents.
        scaling_factor: Latent scaling factor read by the pipelines.
        force_upcast: Read by the pipelines; the codec has no precision issues.
    """

    @register_to_config
    def __init__(
        self,
        block_out_channels: tuple[int, ...] = (3,),
        latent_channels: int = 3,
        scaling_factor: float = 1.0,
        force_upcast: bool = False,
    ) -> None:
        super().__init__()
        # A one-element buffer gives the codec a dtype, a device and a (tiny)
        # weights file, which diffusers expects every model component to have.
        self.register_buffer("anchor", torch.zeros(1))

    def encode(self, x: torch.Tensor, return_dict: bool = True) -> PixelCodecOutput | tuple[IdentityDistribution]:
        """Return ``x`` wrapped as a latent distribution."""
        dist = IdentityDistribution(x)
        if not return_dict:
            return (dist,)
        return PixelCodecOutput(latent_dist=dist)

    def decode(
        self,
        z: torch.Tensor,
        return_dict: bool = True,
        generator: torch.Generator | None = None,
    ) -> DecoderOutput | tuple[torch.Tensor]:
        """Return ``z`` unchanged as the decoded image."""
        if not return_dict:
            return (z,)
        return DecoderOutput(sample=z)

    def forward(self, sample: torch.Tensor, return_dict: bool = True) -> DecoderOutput | tuple[torch.Tensor]:
        """Encode then decode, i.e. return ``sample`` unchanged."""
        return self.decode(self.encode(sample).latent_dist.mode(), return_dict=return_dict)
