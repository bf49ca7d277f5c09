"""Tests of the latent upscalers with a fake codec."""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Optional

import accdiffusion
import pytest
import torch
import torch.nn.functional as F

from accdiffusion_upscalers import BicubicLatentUpscaler, PixelUpscaler, plugin


class PoolCodec:
    """A fake VAE: 3-channel latents, encode = 2x2 average pool, decode = 2x nearest repeat.

    Decoding then encoding is exact; it records every call.
    """

    vae_scale_factor = 2

    def __init__(self) -> None:
        self.decoded: list[torch.Tensor] = []
        self.encoded: list[torch.Tensor] = []

    def encode_images(self, images: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        self.encoded.append(images)
        return F.avg_pool2d(images, 2)

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        self.decoded.append(latents)
        return latents.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)


def latents(shape: tuple[int, ...], scale: float = 0.5) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * scale


def test_entry_point_declared() -> None:
    (ep,) = [ep for ep in entry_points(group="accdiffusion") if ep.name == "upscalers"]
    assert ep.value == "accdiffusion_upscalers.plugin"


def test_registered_with_plugin_host() -> None:
    host = accdiffusion.PluginHost([plugin], entry_points=False)
    assert host.registry.names("upscaler") == ["bicubic_latent", "pixel"]
    settings = accdiffusion.Settings(prompt="x")
    assert isinstance(host.create("upscaler", "bicubic_latent", settings), BicubicLatentUpscaler)
    assert isinstance(host.create("upscaler", "pixel", settings), PixelUpscaler)


def test_protocol() -> None:
    assert isinstance(BicubicLatentUpscaler(), accdiffusion.Upscaler)
    assert isinstance(PixelUpscaler(), accdiffusion.Upscaler)


@pytest.mark.parametrize("cls", [BicubicLatentUpscaler, PixelUpscaler])
@pytest.mark.parametrize("size", [(16, 16), (32, 48), (25, 19), (8, 8)])
def test_sizes(cls, size: tuple[int, int]) -> None:
    out = cls().upscale(latents((1, 3, 16, 12)), size, PoolCodec())
    assert out.shape == (1, 3, *size)


def test_bicubic_latent_is_torch_bicubic() -> None:
    z = latents((1, 4, 8, 12))
    expected = F.interpolate(z, size=(16, 24), mode="bicubic", align_corners=False)
    assert torch.equal(BicubicLatentUpscaler().upscale(z, (16, 24), PoolCodec()), expected)


def test_bicubic_latent_does_not_use_the_codec() -> None:
    codec = PoolCodec()
    BicubicLatentUpscaler().upscale(latents((1, 4, 8, 8)), (16, 16), codec)
    assert codec.decoded == [] and codec.encoded == []


@pytest.mark.parametrize("cls", [BicubicLatentUpscaler, PixelUpscaler])
def test_constant_latents_stay_constant(cls) -> None:
    z = torch.full((1, 3, 8, 12), 0.375, dtype=torch.float64)
    out = cls().upscale(z, (24, 30), PoolCodec())
    assert torch.allclose(out, torch.full_like(out, 0.375), rtol=0, atol=1e-12)


def test_pixel_path_calls_the_codec() -> None:
    codec = PoolCodec()
    z = latents((1, 3, 8, 12))
    out = PixelUpscaler().upscale(z, (16, 20), codec)
    (decoded,) = codec.decoded
    (encoded,) = codec.encoded
    assert decoded is z
    assert encoded.shape == (1, 3, 32, 40)  # size * vae_scale_factor
    image = z.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    expected = F.interpolate(image, size=(32, 40), mode="bicubic", align_corners=False, antialias=True)
    assert torch.equal(encoded, expected.clamp(-1, 1))
    assert torch.equal(out, F.avg_pool2d(encoded, 2))


def test_pixel_path_clamps_images() -> None:
    codec = PoolCodec()
    z = torch.full((1, 3, 4, 4), 3.0, dtype=torch.float64)
    z[..., :2, :] = -3.0
    PixelUpscaler().upscale(z, (8, 8), codec)
    (encoded,) = codec.encoded
    assert encoded.max().item() == 1.0 and encoded.min().item() == -1.0
