"""Settings validation and phase planning (method section 0)."""

import pytest

from accdiffusion import Settings, SettingsError, plan_sizes


@pytest.mark.parametrize(
    "field, value, fragment",
    [
        ("steps", 0, "steps=0"),
        ("height", 1001, "multiple of 8"),
        ("width", -8, "width=-8"),
        ("stride", 0, "stride=0"),
        ("scheduler", "heun", "one of default, euler"),
        ("dtype", "int8", "dtype='int8'"),
        ("seed", -1, "seed=-1"),
        ("view_batch_size", 0, "view_batch_size=0"),
        ("attention_strength", 0.0, "attention_strength=0.0"),
        ("prompt_decomposer", "", "registered plugin name"),
    ],
)
def test_bad_values_name_the_value_and_what_is_allowed(field, value, fragment):
    with pytest.raises(SettingsError) as err:
        Settings(prompt="a cat", **{field: value})
    assert fragment in str(err.value)
    assert field in str(err.value)


def test_nothing_to_sample_is_refused():
    with pytest.raises(SettingsError, match="nothing to sample"):
        Settings(prompt="x", local_path=False, global_guidance="none")


def test_defaults_are_the_release_defaults():
    s = Settings(prompt="x")
    assert (s.steps, s.guidance_scale, s.multi_guidance_scale, s.view_batch_size) == (50, 7.5, 7.5, 16)
    assert (s.cosine_scale_1, s.cosine_scale_2) == (3.0, 1.0)
    # the stage knobs' defaults are their plugins' (c = 0.3, sigma = 0.8, cs3 = 1.0, jitter on)
    from accdiffusion_dilated import WindowInteractionGuidance
    from accdiffusion_prompts import CrossAttentionDecomposer
    from accdiffusion_tiling import SlidingWindowTiler

    assert CrossAttentionDecomposer().threshold == 0.3
    assert (WindowInteractionGuidance().sigma, WindowInteractionGuidance().cosine_scale_3) == (0.8, 1.0)
    assert SlidingWindowTiler().jitter is True
    knobs = {"c", "sigma", "cosine_scale_3", "gaussian_smoothing", "jitter", "controlnet", "canny_sigma"}
    assert not knobs & set(s.to_dict())
    assert s.negative_prompt == "blurry, ugly, duplicate, poorly drawn, deformed, mosaic"
    assert (s.prompt_decomposer, s.tiler, s.global_guidance, s.upscaler) == (
        "cross_attention", "sliding_window", "window_interaction", "bicubic_latent")


def test_plan_sdxl_square_4x():
    p = plan_sizes(Settings(prompt="x", height=4096, width=4096), native=1024, vae_scale_factor=8)
    assert p.factor == 4 and p.scales == (1, 2, 3, 4)
    assert p.latent_sizes == ((128, 128), (256, 256), (384, 384), (512, 512))
    assert (p.window, p.stride) == (128, 64)


def test_plan_non_square_keeps_aspect_ratio():
    # 3072x2048 on SDXL: S = 3, phase 1 at 1024x683 (latent 128x85), short side follows s/S.
    p = plan_sizes(Settings(prompt="x", height=2048, width=3072), native=1024, vae_scale_factor=8)
    assert p.factor == 3
    assert p.latent_sizes == ((85, 128), (171, 256), (256, 384))


def test_plan_without_progressive_jumps_to_target():
    p = plan_sizes(Settings(prompt="x", scale=3, progressive=False), native=512, vae_scale_factor=8)
    assert p.scales == (1, 3) and p.latent_sizes == ((64, 64), (192, 192))
    assert (p.height, p.width) == (1536, 1536)


@pytest.mark.parametrize("h, w, fragment", [(1000, 2048, "height=1000"), (2048, 512, "width=512")])
def test_plan_refuses_sizes_below_native_or_off_grid(h, w, fragment):
    with pytest.raises(SettingsError, match=fragment):
        plan_sizes(Settings(prompt="x", height=h, width=w), native=1024, vae_scale_factor=8)


def test_plan_refuses_stride_larger_than_window():
    with pytest.raises(SettingsError, match="stride=129"):
        plan_sizes(Settings(prompt="x", stride=129), native=1024, vae_scale_factor=8)
