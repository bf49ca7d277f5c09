"""Tests of the latent upscalers, and the upscaler contract.

The codec is the kit's fake VAE with 3-channel latents: encode = 2x2 average
pool, decode = 2x nearest repeat (decoding then encoding is exact), recording every call.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from accdiffusion_testing.kit import FakeCodec, UpscalerContract

from accdiffusion_upscalers import BicubicLatentUpscaler, PixelUpscaler
from accdiffusion_upscalers.plugin import plugin


def latents(shape: tuple[int, ...], scale: float = 0.5) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * scale


class TestBicubicLatentContract(UpscalerContract):
    plugin = plugin
    name = "bicubic_latent"
    entry_point = "upscalers"


class TestPixelContract(UpscalerContract):
    plugin = plugin
    name = "pixel"
    entry_point = "upscalers"


@pytest.mark.parametrize("cls", [BicubicLatentUpscaler, PixelUpscaler])
@pytest.mark.parametrize("size", [(16, 16), (32, 48), (25, 19), (8, 8)])
def test_sizes_in_float64(cls, size: tuple[int, int]) -> None:
    out = cls().upscale(latents((1, 3, 16, 12)), size, FakeCodec())
    assert out.shape == (1, 3, *size) and out.dtype == torch.float64


def test_bicubic_latent_is_torch_bicubic() -> None:
    z = latents((1, 4, 8, 12))
    expected = F.interpolate(z, size=(16, 24), mode="bicubic", align_corners=False)
    assert torch.equal(BicubicLatentUpscaler().upscale(z, (16, 24), FakeCodec()), expected)


def test_bicubic_latent_does_not_use_the_codec() -> None:
    codec = FakeCodec()
    BicubicLatentUpscaler().upscale(latents((1, 4, 8, 8)), (16, 16), codec)
    assert codec.decoded == [] and codec.encoded == []


@pytest.mark.parametrize("cls", [BicubicLatentUpscaler, PixelUpscaler])
def test_constant_latents_stay_constant(cls) -> None:
    z = torch.full((1, 3, 8, 12), 0.375, dtype=torch.float64)
    out = cls().upscale(z, (24, 30), FakeCodec())
    assert torch.allclose(out, torch.full_like(out, 0.375), rtol=0, atol=1e-12)


def test_pixel_path_calls_the_codec() -> None:
    codec = FakeCodec()
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
    codec = FakeCodec()
    z = torch.full((1, 3, 4, 4), 3.0, dtype=torch.float64)
    z[..., :2, :] = -3.0
    PixelUpscaler().upscale(z, (8, 8), codec)
    (encoded,) = codec.encoded
    assert encoded.max().item() == 1.0 and encoded.min().item() == -1.0
