"""End to end on tiny random SDXL / SD 1.5 / SD 2.1 models loaded through the
real loading code (``DiffusionPipeline.from_pretrained`` on a saved folder)."""

import itertools

import numpy as np
import pytest
import torch
from PIL import Image

import accdiffusion
from accdiffusion import PluginHost, Settings, generate, hookimpl
from accdiffusion.loading import load_pipeline
from accdiffusion.sampler import Sampler
from accdiffusion.types import PatchPrompts, Window, WindowLayout

PROMPT = "a red circle and a blue square on a white background"
FAST = dict(steps=3, seed=7, view_batch_size=4)


@pytest.fixture(scope="module")
def pipes(tiny_sdxl_path, tiny_sd15_path, tiny_sd21_path):
    return {
        "sdxl": load_pipeline(str(tiny_sdxl_path)),
        "sd15": load_pipeline(str(tiny_sd15_path)),
        "sd21": load_pipeline(str(tiny_sd21_path)),
    }


def _array(image):
    return np.asarray(image, dtype=np.uint8)


@pytest.mark.parametrize("family", ["sdxl", "sd15"])
@pytest.mark.parametrize("factor", [2, 3])
@pytest.mark.parametrize("scheduler", ["default", "euler", "euler_ancestral", "ddim", "dpmpp", "unipc"])
def test_every_family_factor_and_scheduler(pipes, family, factor, scheduler):
    result = generate(PROMPT, pipeline=pipes[family], scale=factor, scheduler=scheduler, **FAST)
    assert result.image.size == (32 * factor, 32 * factor)
    assert torch.isfinite(result.latents).all()
    assert [p.scale for p in result.phases] == list(range(1, factor + 1))
    assert result.attention is not None and result.attention.words[:3] == ("a", "red", "circle")
    for phase in result.phases[1:]:
        n = (2 * phase.scale - 1) ** 2
        assert len(phase.layout.windows) == n and len(phase.patch_prompts.prompts) == n
        assert (phase.layout.coverage() >= 1).all()
    rec = result.record
    assert rec["seed"] == 7 and rec["settings"]["scheduler"] == scheduler
    assert [len(p.get("patch_prompts", [])) for p in rec["phases"]][1:] == [
        (2 * s - 1) ** 2 for s in range(2, factor + 1)]


def test_v_prediction_sd21(pipes):
    result = generate(PROMPT, pipeline=pipes["sd21"], scale=2, **FAST)
    assert pipes["sd21"].scheduler.config.prediction_type == "v_prediction"
    assert result.image.size == (64, 64) and torch.isfinite(result.latents).all()


@pytest.mark.parametrize("family", ["sdxl", "sd15"])
def test_same_seed_same_image_other_seed_other_image(pipes, family):
    a = generate(PROMPT, pipeline=pipes[family], scale=2, **FAST)
    b = generate(PROMPT, pipeline=pipes[family], scale=2, **FAST)
    c = generate(PROMPT, pipeline=pipes[family], scale=2, **{**FAST, "seed": 8})
    assert torch.equal(a.latents, b.latents)
    assert np.array_equal(_array(a.image), _array(b.image))
    assert not torch.equal(a.latents, c.latents)
    assert a.record["phases"][1]["windows"] == b.record["phases"][1]["windows"]


@pytest.mark.parametrize("height, width", [(64, 96), (96, 64), (96, 40)])
def test_non_square_sizes(pipes, height, width):
    result = generate(PROMPT, pipeline=pipes["sdxl"], height=height, width=width, **FAST)
    assert result.image.size == (width, height)
    h1, w1 = result.plan.latent_sizes[0]
    assert result.attention.maps.shape[:2] == ((h1 + 3) // 4, (w1 + 3) // 4)


@pytest.mark.parametrize("family", ["sdxl", "sd15"])
@pytest.mark.parametrize(
    "decomposer, guidance, upscaler",
    list(itertools.product(["cross_attention", "identical"], ["window_interaction", "dilated", "none"],
                           ["bicubic_latent", "pixel"])),
)
def test_all_stage_combinations(pipes, family, decomposer, guidance, upscaler):
    result = generate(PROMPT, pipeline=pipes[family], scale=2, prompt_decomposer=decomposer,
                      global_guidance=guidance, upscaler=upscaler, **FAST)
    assert result.image.size == (64, 64) and torch.isfinite(result.latents).all()
    assert result.record["plugins"] == {"prompt_decomposer": decomposer, "tiler": "sliding_window",
                                        "global_guidance": guidance, "upscaler": upscaler, "schedule": "paper",
                                        "structure_guidance": "none"}
    if decomposer == "identical":
        assert result.attention is None
        assert set(result.phases[1].patch_prompts.prompts) == {PROMPT}


def test_global_path_only(pipes):
    result = generate(PROMPT, pipeline=pipes["sd15"], scale=2, local_path=False, **FAST)
    assert result.image.size == (64, 64) and result.phases[1].layout is None


def test_stage_objects_and_test_plugins_compose(pipes):
    class OneBigWindow:
        """A tiler passed as an object: a single window per row of the canvas."""

        def layout(self, height, width, window, stride, generator):
            rows = [Window(top, 0, min(window, height), width) for top in range(0, height - window + 1, window)]
            return WindowLayout(tuple(rows), height, width)

    class ShoutPlugin:
        @hookimpl
        def accdiffusion_register_prompt_decomposers(self, register):
            register("shout", lambda settings: Shout(), description="upper-case prompt")

    class Shout:
        needs_attention = False
        fixed_windows = False

        def decompose(self, request):
            return PatchPrompts(tuple(request.prompt.upper() for _ in request.layout.windows))

        def word_masks(self, attention):
            return None

    host = PluginHost([ShoutPlugin()])
    result = generate(PROMPT, pipeline=pipes["sd15"], host=host, scale=2, prompt_decomposer="shout",
                      tiler=OneBigWindow(), **FAST)
    assert result.record["plugins"]["tiler"] == "<OneBigWindow>"
    assert result.phases[1].patch_prompts.prompts == (PROMPT.upper(),) * 2
    assert result.image.size == (64, 64)


def test_sampler_composition_by_objects(pipes):
    from accdiffusion_dilated import DilatedGuidance
    from accdiffusion_prompts import IdenticalDecomposer
    from accdiffusion_tiling import SlidingWindowTiler
    from accdiffusion_upscalers import BicubicLatentUpscaler

    adapter = PluginHost().adapt(pipes["sd15"], None)
    sampler = Sampler(adapter, prompt_decomposer=IdenticalDecomposer(), tiler=SlidingWindowTiler(jitter=True),
                      global_guidance=DilatedGuidance(), upscaler=BicubicLatentUpscaler())
    via_objects = sampler(Settings(prompt=PROMPT, scale=2, **FAST))
    via_names = generate(PROMPT, pipeline=pipes["sd15"], scale=2, prompt_decomposer="identical",
                         global_guidance="dilated", **FAST)
    assert torch.equal(via_objects.latents, via_names.latents)


def test_image_to_image_keeps_the_image_and_still_makes_patch_prompts(pipes):
    low = generate(PROMPT, pipeline=pipes["sdxl"], scale=1, **FAST).image
    result = generate(PROMPT, pipeline=pipes["sdxl"], image=low, scale=2, **FAST)
    assert result.image.size == (64, 64)
    assert result.attention is not None
    assert len(result.phases[1].patch_prompts.prompts) == 9


def test_empty_prompt_with_cross_attention(pipes):
    result = generate("", pipeline=pipes["sdxl"], scale=2, **FAST)
    assert result.attention.words == ()
    assert set(result.phases[1].patch_prompts.prompts) == {""}


def test_long_prompt_is_truncated_with_a_warning(pipes):
    result = generate(" ".join(["red circle"] * 60), pipeline=pipes["sd15"], scale=2, **FAST)
    assert len(result.attention.words) == 75
    assert any("longer than" in w for w in result.warnings)


def test_scale_one_is_plain_sampling(pipes):
    result = generate(PROMPT, pipeline=pipes["sdxl"], scale=1, **FAST)
    assert result.image.size == (32, 32) and len(result.phases) == 1 and result.attention is None


def test_global_guidance_can_ask_for_its_own_prompts_and_crops(pipes):
    """A custom global path evaluating one view with a prompt of its choice."""
    from accdiffusion import ViewBatchRequest

    seen = []

    class OwnPrompt:
        def views(self, request):
            return None  # not batched with the windows: the sampler calls predict

        def predict(self, request):
            z = request.latents
            view = torch.nn.functional.interpolate(z, size=(16, 16), mode="bilinear")
            out = request.denoise(ViewBatchRequest(latents=view, guidance_scale=2.0, prompts=("a blue square",),
                                                   positions=((0, 0),)))
            seen.append(out.shape)
            return torch.nn.functional.interpolate(out, size=z.shape[-2:], mode="bilinear")

    result = generate(PROMPT, pipeline=pipes["sdxl"], scale=2, global_guidance=OwnPrompt(), **FAST)
    assert seen == [(1, 4, 16, 16)] * 3 and torch.isfinite(result.latents).all()


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_models_load_and_run(tiny_sdxl_path, dtype):
    result = generate(PROMPT, model=str(tiny_sdxl_path), dtype=dtype, device="cpu", scale=2, **FAST)
    assert result.image.size == (64, 64)
    assert result.latents.dtype == torch.float32 and torch.isfinite(result.latents).all()


def test_pictures_ask_the_decomposer_that_ran_for_its_masks(pipes, tmp_path):
    from accdiffusion import write_run
    from accdiffusion_prompts import CrossAttentionDecomposer

    class Counting(CrossAttentionDecomposer):
        calls = 0

        def word_masks(self, attention):
            type(self).calls += 1
            return super().word_masks(attention)

    decomposer = Counting(threshold=0.3)
    result = generate(PROMPT, pipeline=pipes["sd15"], scale=2, prompt_decomposer=decomposer, **FAST)
    assert result.prompt_decomposer is decomposer
    calls = Counting.calls
    folder = write_run(result, tmp_path, "run")
    assert Counting.calls == calls + 1 and (folder / "attention" / "attention-maps.png").is_file()
