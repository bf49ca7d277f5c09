"""Overhead benchmarks: the sampler's work apart from the UNet, at true SDXL sizes.

Method section 6: per step of phase ``s`` the UNet work is fixed at
``(2s-1)^2`` windows plus ``s^2`` dilated samples, twice for CFG; everything
else is overhead. These benchmarks time that everything-else with a fake
model whose UNet is ``latents * 0.1`` (see ``conftest.py``).

Run with ``pytest benchmarks --benchmark-enable``; without the flag (the
repository default) each body runs once as a plain test.
"""

from __future__ import annotations

import pytest
import torch
from accdiffusion import DecomposeRequest, Settings
from accdiffusion.sampler import cosine_factor, to_image
from accdiffusion_dilated import apply_permutation, invert_permutation, random_permutation, smooth_latents
from accdiffusion_prompts import CrossAttentionDecomposer
from accdiffusion_tiling import SlidingWindowTiler

#: SDXL: window 128 latent px, stride 64.
WINDOW, STRIDE = 128, 64
#: Steps of a sampler benchmark: enough for a median step, few enough to stay fast unbenchmarked.
SAMPLER_STEPS = 4


@pytest.mark.parametrize("side", [2048, 4096], ids=["2048px", "4096px"])
def test_sampler_upscaling_phase(benchmark, make_sampler, step_clock, views_per_step, median_of, prompt, side):
    """A whole run with the default stages and a free UNet: phase 1 at 1024 px, then
    the upscaling phase straight to ``side`` (``progressive=False``), ``SAMPLER_STEPS`` steps.

    The timed value is the whole call; ``extra_info`` has the median seconds of
    one upscaling step (skip residual, 9 or 49 windows, 4 or 16 dilated samples
    with smoothing and window interaction, fusion, scheduler step), the phase's
    seconds, and the views the UNet got per step.
    """
    sampler, adapter = make_sampler()
    settings = Settings(prompt=prompt, height=side, width=side, steps=SAMPLER_STEPS, progressive=False, seed=0)
    clocks = []

    def run():
        clock = step_clock()
        clocks.append(clock)
        return sampler(settings, progress=clock)

    result = benchmark.pedantic(run, rounds=3, iterations=1)
    scale = side // 1024
    phase = f"phase {scale}/{scale} ({side}x{side})"
    step_seconds = [t for clock in clocks for t in clock.steps[phase]]
    benchmark.extra_info["upscaling_step_median_s"] = median_of(step_seconds)
    benchmark.extra_info["upscaling_phase_s"] = result.phases[-1].seconds
    benchmark.extra_info["phase1_s"] = result.phases[0].seconds
    views = adapter.predict_views // len(clocks)
    upscaling_views = views - 2 * SAMPLER_STEPS  # phase 1: one view, twice for CFG, per step
    benchmark.extra_info["unet_views_per_upscaling_step"] = upscaling_views // SAMPLER_STEPS
    assert upscaling_views == SAMPLER_STEPS * 2 * views_per_step(scale)
    assert len(result.phases[-1].layout) == (2 * scale - 1) ** 2


def naive_permutation(shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """Reference only: one ``randperm`` per position ``(c, y, x)`` in a Python loop
    (what method section 3 says never to do)."""
    n, channels, height, width = shape
    perm = torch.empty(shape, dtype=torch.int64)
    for c in range(channels):
        for y in range(height):
            for x in range(width):
                perm[:, c, y, x] = torch.randperm(n, generator=generator)
    return perm


@pytest.mark.parametrize(
    "method, shape",
    [
        ("vectorised", (16, 4, 128, 128)),
        ("vectorised", (16, 4, 16, 16)),
        ("naive", (16, 4, 16, 16)),
    ],
    ids=["vectorised-16x4x128x128", "vectorised-16x4x16x16", "naive-16x4x16x16"],
)
def test_window_interaction_permutation(benchmark, method, shape):
    """Window interaction at ``s = 4``: draw a bijection per position, apply it to the
    16 dilated samples, invert it on the outputs. The naive loop runs only on a 16x16
    slice (1/64 of the 128x128 positions)."""
    generator = torch.Generator().manual_seed(0)
    samples = torch.randn(shape, generator=generator)
    draw = random_permutation if method == "vectorised" else naive_permutation

    def step() -> torch.Tensor:
        perm = draw(shape, generator)
        return invert_permutation(apply_permutation(samples, perm), perm)

    out = benchmark.pedantic(step, rounds=5 if method == "naive" else 20, warmup_rounds=1, iterations=1)
    assert torch.equal(out, samples)


def test_cross_attention_decomposer(benchmark, attention_maps):
    """Patch prompts (eq. 5-8) from 32x32x20 maps for the 49 jittered windows of 4x
    (512x512 latent): binarise, open, upsample, integral-image fractions, words per window."""
    layout = SlidingWindowTiler(jitter=True).layout(512, 512, WINDOW, STRIDE, torch.Generator().manual_seed(0))
    request = DecomposeRequest(prompt=" ".join(attention_maps.words), layout=layout, scale=4,
                               attention=attention_maps)
    decomposer = CrossAttentionDecomposer(threshold=0.3)
    prompts = benchmark(decomposer.decompose, request)
    assert len(prompts.prompts) == 49


def test_sliding_window_tiler(benchmark):
    """The 49 windows of a 512x512 latent (4x) with DemoFusion jitter."""
    tiler = SlidingWindowTiler(jitter=True)
    generator = torch.Generator().manual_seed(0)
    layout = benchmark(tiler.layout, 512, 512, WINDOW, STRIDE, generator)
    assert len(layout) == 49 and layout.pad == 16


def test_gaussian_smoothing(benchmark):
    """The global path's Gaussian smoothing at ``s = 4`` (7x7 kernel) on a 512x512 latent,
    with the width of a mid-schedule step (``t = 500``)."""
    z = torch.randn((1, 4, 512, 512), generator=torch.Generator().manual_seed(0))
    sigma = 0.8 * (0.99 * cosine_factor(500, 1000) + 0.01)
    out = benchmark(smooth_latents, z, 4, sigma)
    assert out.shape == z.shape


def test_final_image_conversion(benchmark, full_size_adapter):
    """The end of a run outside the VAE: the decoded float image ``(1, 3, 2048, 2048)``
    to a PIL image (``sampler.to_image``, run for the final image and every saved stage);
    the (fake) decode is untimed. At 4096 px it is 4x the pixels."""
    z = torch.zeros((1, 4, 256, 256))
    image = benchmark.pedantic(to_image, setup=lambda: ((full_size_adapter.decode_latents(z),), {}), rounds=3,
                               iterations=1)
    assert image.size == (2048, 2048)
