"""Hand-worked values of the sampler's small formulas."""

import math

import torch

from accdiffusion.attention import downsampled_side
from accdiffusion.models.unet_attention import spatial_factor
from accdiffusion.sampler import cosine_factor, from_image, renormalize, to_image
from accdiffusion.types import PatchPrompts, Window, WindowLayout


def test_cosine_factor_hand_values():
    assert cosine_factor(1000, 1000) == 1.0
    assert cosine_factor(0, 1000) == 0.0
    assert math.isclose(cosine_factor(500, 1000), 0.5, abs_tol=1e-12)
    # t = 750: 0.5 (1 + cos(pi/4)) = 0.8535533905932737
    assert math.isclose(cosine_factor(750, 1000), 0.5 * (1 + math.sqrt(0.5)), rel_tol=1e-12)


def test_renormalize_matches_anchor_statistics():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(1, 4, 16, 24, generator=g) * 3 + 2
    out = renormalize(z, torch.tensor(0.25), torch.tensor(0.5))
    assert math.isclose(out.mean().item(), 0.25, abs_tol=1e-5)
    assert math.isclose(out.std().item(), 0.5, rel_tol=1e-5)
    # an affine map of the input: correlation stays 1
    assert torch.allclose((out - 0.25) / 0.5, (z - z.mean()) / z.std(), atol=1e-5)


def test_image_round_trip_is_exact_on_uint8_grid():
    x = torch.arange(0, 256, dtype=torch.float32).reshape(1, 1, 16, 16).expand(1, 3, 16, 16) / 127.5 - 1
    img = to_image(x)
    back = from_image(img, (16, 16))
    assert torch.allclose(back, x, atol=1e-6)


def test_spatial_factors_of_sdxl_and_sd15_levels():
    # SDXL: 3 levels, 1/4 at down_blocks.2 and up_blocks.0; SD 1.5: 4 levels, up_blocks.1
    assert spatial_factor("down", 2, 3) == 4 and spatial_factor("up", 0, 3) == 4
    assert spatial_factor("down", 2, 4) == 4 and spatial_factor("up", 1, 4) == 4
    assert downsampled_side(128, 4) == 32 and downsampled_side(85, 4) == 22


def test_layout_coverage_and_unique_prompts():
    layout = WindowLayout((Window(0, 0, 2, 2), Window(1, 1, 2, 2)), 3, 3)
    assert layout.coverage().tolist() == [[1, 1, 0], [1, 2, 1], [0, 1, 1]]
    uniq, idx = PatchPrompts(("a b", "a", "a b", "")).unique()
    assert uniq == ("a b", "a", "") and idx == (0, 1, 0, 2)
