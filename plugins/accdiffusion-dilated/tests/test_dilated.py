"""Tests of dilated sampling and window interaction with stub denoisers, and the global-guidance contract."""

from __future__ import annotations

import math
from typing import Callable, Optional

import accdiffusion
import pytest
import torch
from accdiffusion import GuidanceRequest, ViewBatchRequest
from accdiffusion_testing.kit import GlobalGuidanceContract, host_with

from accdiffusion_dilated import (
    DilatedGuidance,
    WindowInteractionGuidance,
    apply_permutation,
    from_dilated_samples,
    gaussian_kernel,
    invert_permutation,
    pad_to_multiple,
    random_permutation,
    smooth_latents,
    to_dilated_samples,
)
from accdiffusion_dilated.plugin import plugin

STRATEGIES = [DilatedGuidance, WindowInteractionGuidance]


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def latents(shape: tuple[int, ...], seed: int = 0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.randn(shape, generator=gen(seed), dtype=dtype)


def guidance_request(
    z: torch.Tensor,
    scale: int,
    denoise: Callable[[ViewBatchRequest], torch.Tensor],
    generator: Optional[torch.Generator] = None,
    cosine_factor: float = 1.0,
) -> GuidanceRequest:
    return GuidanceRequest(
        latents=z, scale=scale, timestep=500.0, step_index=3, cosine_factor=cosine_factor,
        guidance_scale=6.0, denoise=denoise, generator=generator,
    )


def identity(request: ViewBatchRequest) -> torch.Tensor:
    return request.latents.clone()


def batch_index(request: ViewBatchRequest) -> torch.Tensor:
    """A position-dependent stub: every output value is its view's index in the batch."""
    n = request.latents.shape[0]
    index = torch.arange(n, dtype=request.latents.dtype).view(n, 1, 1, 1)
    return index.expand_as(request.latents).clone()


# -- registration and the contract -------------------------------------------


class TestWindowInteractionContract(GlobalGuidanceContract):
    plugin = plugin
    name = "window_interaction"
    entry_point = "dilated"


class TestDilatedContract(GlobalGuidanceContract):
    plugin = plugin
    name = "dilated"
    entry_point = "dilated"


class TestDilatedWithoutSmoothingContract(GlobalGuidanceContract):
    plugin = plugin
    name = "dilated"
    entry_point = "dilated"
    options = {"gaussian_smoothing": False, "sigma": 0.0}


def test_options_and_aliases_from_settings() -> None:
    host = host_with(plugin)
    settings = accdiffusion.Settings(prompt="x", plugin_options={
        "sigma": 0.5, "window_interaction.cosine_scale_3": "2", "gaussian_smoothing": "false"})
    stage = host.create("global_guidance", "window_interaction", settings)
    assert type(stage) is WindowInteractionGuidance
    assert (stage.sigma, stage.cosine_scale_3, stage.gaussian_smoothing) == (0.5, 2.0, False)
    assert host.registry.names("global_guidance") == ["dilated", "window_interaction", "none"]


def test_defaults_and_protocol() -> None:
    for cls in STRATEGIES:
        stage = cls()
        assert isinstance(stage, accdiffusion.GlobalGuidance)
        assert (stage.sigma, stage.cosine_scale_3, stage.gaussian_smoothing) == (0.8, 1.0, True)


# -- Gaussian smoothing --------------------------------------------------------


def test_kernel_k3_sigma1_hand_computed() -> None:
    e = math.exp(-0.5)
    edge, centre = e / (1 + 2 * e), 1 / (1 + 2 * e)  # 0.27406862..., 0.45186275...
    expected = torch.tensor(
        [[edge * edge, edge * centre, edge * edge],
         [edge * centre, centre * centre, edge * centre],
         [edge * edge, edge * centre, edge * edge]],
        dtype=torch.float64,
    )
    kernel = gaussian_kernel(3, 1.0, dtype=torch.float64)
    assert torch.allclose(kernel, expected, rtol=0, atol=1e-15)
    assert torch.allclose(kernel[0], torch.tensor([0.0751136080, 0.1238414032, 0.0751136080], dtype=torch.float64), atol=1e-10)
    assert kernel[1, 1].item() == pytest.approx(0.2041799556, abs=1e-10)
    assert kernel.sum().item() == pytest.approx(1.0, abs=1e-15)


@pytest.mark.parametrize("size,sigma", [(1, 0.8), (3, 0.3), (5, 0.8), (7, 2.0)])
def test_kernel_sums_to_one_and_is_symmetric(size: int, sigma: float) -> None:
    kernel = gaussian_kernel(size, sigma, dtype=torch.float64)
    assert kernel.shape == (size, size)
    assert kernel.sum().item() == pytest.approx(1.0, abs=1e-12)
    assert torch.equal(kernel, kernel.T) and torch.equal(kernel, kernel.flip(0))


def test_kernel_sigma_zero_is_impulse() -> None:
    expected = torch.zeros(5, 5)
    expected[2, 2] = 1.0
    assert torch.equal(gaussian_kernel(5, 0.0), expected)


def test_smoothing_preserves_mean_and_std() -> None:
    z = latents((1, 4, 12, 10)) * 3 + 1
    out = smooth_latents(z, 3, 0.8)
    assert out.mean().item() == pytest.approx(z.mean().item(), abs=1e-12)
    assert out.std().item() == pytest.approx(z.std().item(), abs=1e-12)
    assert not torch.allclose(out, z)


def test_smoothing_of_an_impulse_is_the_renormalised_kernel() -> None:
    z = torch.zeros(1, 2, 7, 7, dtype=torch.float64)
    z[0, 1, 3, 3] = 1.0
    placed = torch.zeros_like(z)
    placed[0, 1, 2:5, 2:5] = gaussian_kernel(3, 0.5, dtype=torch.float64)  # channel 0 stays 0
    expected = (placed - placed.mean()) / placed.std() * z.std() + z.mean()
    assert torch.allclose(smooth_latents(z, 2, 0.5), expected, rtol=0, atol=1e-14)


# -- dilated samples -----------------------------------------------------------


def test_dilated_samples_hand_worked() -> None:
    z = torch.arange(16.0).view(1, 1, 4, 4)
    d = to_dilated_samples(z, 2)
    assert d.shape == (4, 1, 2, 2)
    assert d[:, 0].tolist() == [
        [[0, 2], [8, 10]], [[1, 3], [9, 11]], [[4, 6], [12, 14]], [[5, 7], [13, 15]],
    ]


def test_padding_is_top_left_zeros() -> None:
    z = torch.ones(1, 1, 4, 5)
    padded = pad_to_multiple(z, 3)
    assert padded.shape == (1, 1, 6, 6)
    assert padded[..., :2, :].abs().sum() == 0 and padded[..., :, :1].abs().sum() == 0
    assert torch.equal(padded[..., 2:, 1:], z)


@pytest.mark.parametrize("scale", [1, 2, 3, 4])
@pytest.mark.parametrize("height,width", [(8, 8), (7, 5), (13, 10), (1, 9)])
def test_samples_are_strided_slices_and_round_trip(scale: int, height: int, width: int) -> None:
    z = latents((1, 3, height, width), seed=scale)
    d = to_dilated_samples(z, scale)
    padded = pad_to_multiple(z, scale)
    assert d.shape == (scale * scale, 3, padded.shape[-2] // scale, padded.shape[-1] // scale)
    for hy in range(scale):
        for wx in range(scale):
            assert torch.equal(d[hy * scale + wx], padded[0, :, hy::scale, wx::scale])
    assert torch.equal(from_dilated_samples(d, scale, z.shape), z)


# -- permutations --------------------------------------------------------------


def test_permutation_is_bijection_at_every_position() -> None:
    perm = random_permutation((9, 4, 5, 6), gen(0))
    assert perm.dtype == torch.int64
    assert torch.equal(perm.sort(dim=0).values, torch.arange(9).view(9, 1, 1, 1).expand(9, 4, 5, 6))
    assert not torch.equal(perm, torch.arange(9).view(9, 1, 1, 1).expand_as(perm))


def test_apply_and_invert_permutation() -> None:
    d = latents((4, 2, 3, 3))
    perm = random_permutation(d.shape, gen(1))
    moved = apply_permutation(d, perm)
    for i, c, y, x in [(0, 0, 0, 0), (3, 1, 2, 1), (2, 0, 1, 2)]:
        assert moved[i, c, y, x] == d[perm[i, c, y, x], c, y, x]
    assert torch.equal(invert_permutation(moved, perm), d)
    # every position keeps the same multiset of values across the samples
    assert torch.equal(moved.sort(dim=0).values, d.sort(dim=0).values)


# -- predict -------------------------------------------------------------------


@pytest.mark.parametrize("cls", STRATEGIES)
@pytest.mark.parametrize("shape,scale", [((1, 4, 16, 16), 2), ((1, 4, 13, 10), 3), ((1, 2, 9, 9), 1)])
def test_identity_denoiser_returns_input(cls, shape: tuple[int, ...], scale: int) -> None:
    z = latents(shape)
    out = cls(gaussian_smoothing=False).predict(guidance_request(z, scale, identity, gen(0)))
    assert out.shape == z.shape
    assert torch.equal(out, z)


def test_smoothed_latents_are_what_the_unet_sees() -> None:
    z = latents((1, 4, 13, 10))
    stage = DilatedGuidance(sigma=0.8, cosine_scale_3=2.0)
    out = stage.predict(guidance_request(z, 3, identity, cosine_factor=0.5))
    c3 = 0.99 * 0.5**2.0 + 0.01
    expected = smooth_latents(pad_to_multiple(z, 3), 3, 0.8 * c3)[..., 2:, 2:]
    assert torch.equal(out, expected)


def test_unet_gets_native_views_with_guidance_scale() -> None:
    z = latents((1, 4, 16, 24))
    seen: list[ViewBatchRequest] = []

    def record(request: ViewBatchRequest) -> torch.Tensor:
        seen.append(request)
        return request.latents.clone()

    WindowInteractionGuidance(gaussian_smoothing=False).predict(guidance_request(z, 2, record, gen(5)))
    (request,) = seen
    assert request.guidance_scale == 6.0 and request.prompts is None
    expected = apply_permutation(to_dilated_samples(z, 2), random_permutation((4, 4, 8, 12), gen(5)))
    assert torch.equal(request.latents, expected)


def test_dilated_does_not_mix_samples() -> None:
    z = latents((1, 2, 6, 9))
    out = DilatedGuidance(gaussian_smoothing=False).predict(guidance_request(z, 3, batch_index))
    y = torch.arange(6).view(6, 1)
    x = torch.arange(9).view(1, 9)
    expected = ((y % 3) * 3 + (x % 3)).to(z.dtype).expand(1, 2, 6, 9)
    assert torch.equal(out, expected)


def test_window_interaction_mixes_samples() -> None:
    z = latents((1, 2, 6, 9))
    out = WindowInteractionGuidance(gaussian_smoothing=False).predict(guidance_request(z, 3, batch_index, gen(3)))
    dilated = DilatedGuidance(gaussian_smoothing=False).predict(guidance_request(z, 3, batch_index))
    assert not torch.equal(out, dilated)
    # sample j at (c, y, x) was evaluated as view i with perm[i] = j, i.e. i = argsort(perm)[j]
    perm = random_permutation((9, 2, 2, 3), gen(3))
    assert torch.equal(to_dilated_samples(out, 3), perm.argsort(dim=0).to(z.dtype))
    # each position of the dilated grid still receives every view exactly once
    assert torch.equal(to_dilated_samples(out, 3).sort(dim=0).values, to_dilated_samples(dilated, 3))


def test_window_interaction_reproducible_from_seed() -> None:
    z = latents((1, 4, 16, 16))
    stage = WindowInteractionGuidance()
    first = stage.predict(guidance_request(z, 2, batch_index, gen(11)))
    again = stage.predict(guidance_request(z, 2, batch_index, gen(11)))
    other = stage.predict(guidance_request(z, 2, batch_index, gen(12)))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_window_interaction_needs_generator() -> None:
    with pytest.raises(ValueError, match="generator"):
        WindowInteractionGuidance().predict(guidance_request(latents((1, 4, 8, 8)), 2, identity))


@pytest.mark.parametrize("cls", STRATEGIES)
def test_rejects_batched_latents(cls) -> None:
    with pytest.raises(ValueError, match=r"\(1, C, H, W\)"):
        cls().predict(guidance_request(latents((2, 4, 8, 8)), 2, identity, gen(0)))


def test_float32_output_dtype_and_shape() -> None:
    z = latents((1, 4, 10, 14), dtype=torch.float32)
    out = WindowInteractionGuidance().predict(guidance_request(z, 2, identity, gen(0), cosine_factor=0.3))
    assert out.dtype == torch.float32 and out.shape == z.shape
