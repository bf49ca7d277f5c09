"""Tests of the exact pixel codec."""

from __future__ import annotations

from pathlib import Path

import torch
from accdiffusion_shapes.codec import PixelCodec


def test_round_trip_is_exact() -> None:
    """Encoding (mode or sample) then decoding returns the input bit for bit."""
    codec = PixelCodec()
    pixels = torch.rand(2, 3, 32, 48) * 2 - 1
    encoded = codec.encode(pixels).latent_dist
    assert torch.equal(encoded.mode(), pixels)
    assert torch.equal(encoded.sample(generator=torch.Generator().manual_seed(0)), pixels)
    assert torch.equal(codec.decode(encoded.mode()).sample, pixels)
    assert torch.equal(codec.decode(pixels, return_dict=False)[0], pixels)
    assert torch.equal(codec(pixels).sample, pixels)


def test_config_gives_unit_scale_factor(tmp_path: Path) -> None:
    """The saved config makes diffusers use a VAE scale factor of 1 and reloads unchanged."""
    PixelCodec().save_pretrained(tmp_path)
    codec = PixelCodec.from_pretrained(tmp_path)
    assert 2 ** (len(codec.config.block_out_channels) - 1) == 1
    assert codec.config.latent_channels == 3
    assert codec.config.scaling_factor == 1.0
    assert codec.config.force_upcast is False
