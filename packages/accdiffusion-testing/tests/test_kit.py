"""Tests of the plugin-testing kit: its helpers and fakes, minimal stages that pass
every contract, and deliberately broken stages that the contracts catch."""

from __future__ import annotations

import types
from typing import Any, Optional

import accdiffusion
import attrs
import pytest
import torch
import torch.nn.functional as F
from accdiffusion import PatchPrompts, Sampler, Settings, StageEntry, StagePlugin, Window, WindowLayout
from accdiffusion.executor import ViewExecutor, ViewGroup
from accdiffusion.options import option
from accdiffusion.types import Conditioning, GlobalViews, PhaseSchedule, ViewBatchRequest

from accdiffusion_testing import kit
from accdiffusion_testing.kit import (
    FakeAdapter,
    FakeCodec,
    GlobalGuidanceContract,
    PromptDecomposerContract,
    RecordingDenoise,
    ScheduleContract,
    StructureGuidanceContract,
    TilerContract,
    UpscalerContract,
    attention_maps,
    decompose_request,
    guidance_request,
    host_with,
    schedule_request,
    structure_request,
    window_layout,
)

# -- minimal stages of a third-party plugin, each with an option ---------------------------


@attrs.frozen
class GridTiler:
    """Windows on a regular grid (the kit's own layout)."""

    overlap: bool = option(True, aliases=("grid_overlap",), help="half-window stride instead of the given one")

    def layout(self, height: int, width: int, window: int, stride: int,
               generator: Optional[torch.Generator]) -> WindowLayout:
        if not 1 <= stride <= window or min(height, width, window) < 1:
            raise ValueError(f"stride {stride} must be in [1, {window}] and sizes positive")
        return window_layout(height, width, window, max(1, window // 2) if self.overlap else stride)


@attrs.frozen
class FirstWordsDecomposer:
    """The first ``count`` words of the prompt for every window."""

    needs_attention = False
    fixed_windows = True

    count: int = option(2, minimum=1, help="words kept")

    def decompose(self, request: accdiffusion.DecomposeRequest) -> PatchPrompts:
        return PatchPrompts((" ".join(request.prompt.split()[: self.count]),) * len(request.layout))

    def word_masks(self, attention: accdiffusion.AttentionMaps) -> None:
        return None


@attrs.frozen
class NearestUpscaler:
    mode: str = option("nearest", choices=("nearest", "bilinear"), help="interpolation")

    def upscale(self, latents: torch.Tensor, size: tuple[int, int], codec: Any) -> torch.Tensor:
        return F.interpolate(latents, size=tuple(size), mode=self.mode)


@attrs.frozen
class MeanGuidance:
    """The global path as one view of the whole canvas, scaled by ``weight``."""

    weight: float = option(1.0, minimum=0.0, help="weight of the output")

    def views(self, request: accdiffusion.GuidanceRequest) -> GlobalViews:
        z = request.latents
        if z.dim() != 4 or z.shape[0] != 1:
            raise ValueError(f"latents of shape (1, C, H, W), got {tuple(z.shape)}")
        return GlobalViews(ViewBatchRequest(z, request.guidance_scale), lambda out: out * self.weight)

    def predict(self, request: accdiffusion.GuidanceRequest) -> torch.Tensor:
        v = self.views(request)
        return v.assemble(request.denoise(v.batch))


@attrs.frozen
class HalfSchedule:
    skip: bool = option(True, help="keep the skip residual")

    def plan(self, request: Any) -> tuple[PhaseSchedule, ...]:
        return tuple(PhaseSchedule(request.steps, request.steps // 2, self.skip) for _ in request.scales)


GOOD = StagePlugin([
    StageEntry("tiler", "grid", GridTiler, "a plain grid"),
    StageEntry("prompt_decomposer", "first_words", FirstWordsDecomposer, "the first words"),
    StageEntry("upscaler", "nearest", NearestUpscaler, "nearest neighbour"),
    StageEntry("global_guidance", "mean", MeanGuidance, "one view of the canvas"),
    StageEntry("schedule", "half", HalfSchedule, "half of the steps"),
])


class TestGridTilerContract(TilerContract):
    plugin = GOOD
    name = "grid"


class TestGridTilerOptionContract(TilerContract):
    plugin = GOOD
    name = "grid"
    options = {"overlap": False}


class TestFirstWordsContract(PromptDecomposerContract):
    plugin = GOOD
    name = "first_words"
    options = {"count": 3}


class TestNearestContract(UpscalerContract):
    plugin = GOOD
    name = "nearest"
    options = {"mode": "bilinear"}


class TestMeanGuidanceContract(GlobalGuidanceContract):
    plugin = GOOD
    name = "mean"


class TestHalfScheduleContract(ScheduleContract):
    plugin = GOOD
    name = "half"


def test_the_entry_point_test_is_skipped_without_an_entry_point() -> None:
    with pytest.raises(pytest.skip.Exception, match="entry_point is not set"):
        TestGridTilerContract().test_installed_entry_point_loads_the_plugin()


# -- broken stages: the contracts fail ------------------------------------------------


@attrs.frozen
class GappyTiler:
    """A grid that forgets its last window whenever there are several."""

    def layout(self, height, width, window, stride, generator):
        layout = GridTiler(overlap=False).layout(height, width, window, stride, generator)
        windows = layout.windows[:-1] if len(layout) > 1 else layout.windows
        return WindowLayout(windows, height, width, layout.pad)


@attrs.frozen
class CarelessTiler:
    """Covers every pixel, but takes any stride."""

    def layout(self, height, width, window, stride, generator):
        return window_layout(height, width, window)


@attrs.frozen
class JumpyTiler:
    """Draws its layout from the global RNG, not the generator."""

    def layout(self, height, width, window, stride, generator):
        if not 1 <= stride <= window:
            raise ValueError("stride")
        base = window_layout(height, width, window, stride, pad=1)
        shift = int(torch.randint(0, 3, (1,)).item())
        windows = tuple(Window(w.top, shift if w.left == 1 and len(base) > 1 else w.left, w.height, w.width)
                        for w in base.windows)
        return WindowLayout(windows, height, width, 1)


@attrs.frozen
class ShortDecomposer(FirstWordsDecomposer):
    """One prompt too few."""

    def decompose(self, request):
        return PatchPrompts((request.prompt,) * (len(request.layout) - 1))


@attrs.frozen
class ZebraDecomposer(FirstWordsDecomposer):
    """Adds a word that is not in the prompt when it has maps."""

    needs_attention = True

    def decompose(self, request):
        extra = " zebra" if request.attention is not None else ""
        if request.attention is not None and request.attention.maps.shape[-1] != len(request.attention.words):
            raise ValueError("maps and words")
        return PatchPrompts((request.prompt + extra,) * len(request.layout))


@attrs.frozen
class TrustingDecomposer(FirstWordsDecomposer):
    """Needs attention maps but never checks them against the words."""

    needs_attention = True


@attrs.frozen
class OffByOneUpscaler:
    def upscale(self, latents, size, codec):
        return F.interpolate(latents, size=(size[0] + 1, size[1]), mode="nearest")


@attrs.frozen
class ChannelDroppingUpscaler:
    def upscale(self, latents, size, codec):
        return F.interpolate(latents[:, :3], size=tuple(size), mode="nearest")


@attrs.frozen
class CroppingGuidance(MeanGuidance):
    """Its views assemble to a canvas one row short."""

    def views(self, request):
        v = super().views(request)
        return GlobalViews(v.batch, lambda out: out[..., 1:, :])

    def predict(self, request):
        return request.latents.clone()


@attrs.frozen
class GreedyGuidance(MeanGuidance):
    """Its views draw from the generator, its predict does not."""

    def views(self, request):
        torch.rand(1, generator=request.generator)
        return super().views(request)

    def predict(self, request):
        v = super().views(request)
        return v.assemble(request.denoise(v.batch))


@attrs.frozen
class ShortSchedule:
    def plan(self, request):
        return tuple(PhaseSchedule(request.steps) for _ in request.scales[1:])


@attrs.frozen
class ListPictures:
    def prepare(self, adapter):
        return None

    def control(self, request):
        return None

    def pictures(self):
        return []


@attrs.frozen
class WrongControl(ListPictures):
    def control(self, request):
        from accdiffusion.types import ControlViews

        return ControlViews(torch.zeros(len(request.layout), 3, 8, 8), None)

    def pictures(self):
        return ()


@attrs.frozen
class Options:
    level: int = option(1, minimum=1, maximum=3, help="a level")


class Forgetful:
    """A factory-built tiler that does not keep its options."""

    def __init__(self, settings: Any, options: Options) -> None:
        self.level = options.level

    def layout(self, height, width, window, stride, generator):
        return GridTiler(overlap=False).layout(height, width, window, stride, generator)


BROKEN = StagePlugin([
    StageEntry("tiler", "gappy", GappyTiler),
    StageEntry("tiler", "careless", CarelessTiler),
    StageEntry("tiler", "jumpy", JumpyTiler),
    StageEntry("tiler", "forgetful", Forgetful, options=Options),
    StageEntry("prompt_decomposer", "short", ShortDecomposer),
    StageEntry("prompt_decomposer", "zebra", ZebraDecomposer),
    StageEntry("prompt_decomposer", "trusting", TrustingDecomposer),
    StageEntry("upscaler", "off_by_one", OffByOneUpscaler),
    StageEntry("upscaler", "channel_dropping", ChannelDroppingUpscaler),
    StageEntry("global_guidance", "cropping", CroppingGuidance),
    StageEntry("global_guidance", "greedy", GreedyGuidance),
    StageEntry("schedule", "short", ShortSchedule),
    StageEntry("structure_guidance", "list_pictures", ListPictures),
    StageEntry("structure_guidance", "wrong_control", WrongControl),
])


def contract(base: type, name: str, **attributes: Any) -> Any:
    """An instance of a (not collected) subclass of ``base`` for ``BROKEN``'s stage ``name``."""
    return type(f"Broken{base.__name__}", (base,), {"plugin": BROKEN, "name": name, **attributes})()


def test_a_tiler_leaving_a_pixel_uncovered_fails() -> None:
    with pytest.raises(AssertionError, match=r"leaves \d+ canvas pixels uncovered, the first at"):
        kit.check_tiler_coverage(GappyTiler(), [(24, 40)], 16, [8])
    with pytest.raises(AssertionError, match="uncovered"):
        contract(TilerContract, "gappy").test_layouts_cover_every_pixel()
    # the single-window canvases alone are covered: the failure is the gap, not the sizes
    kit.check_tiler_coverage(GappyTiler(), [(16, 16), (10, 12), (1, 1)], 16, [8])


def test_a_tiler_taking_any_stride_fails() -> None:
    with pytest.raises(AssertionError, match=r"stride 0.*did not raise ValueError"):
        contract(TilerContract, "careless").test_refuses_a_stride_outside_the_window()


def test_a_tiler_drawing_outside_the_generator_fails() -> None:
    torch.manual_seed(0)
    with pytest.raises(AssertionError, match="differ"):
        for _ in range(5):  # two global draws agree by chance a third of the time
            contract(TilerContract, "jumpy").test_layouts_are_reproducible_from_a_seed()


def test_a_tiler_with_a_window_of_the_wrong_size_fails() -> None:
    layout = WindowLayout((Window(0, 0, 16, 16), Window(0, 16, 16, 8)), 16, 24)
    with pytest.raises(AssertionError, match="window 1 is 16x8, not 16x16"):
        kit.check_layout(layout, 16, 24, 16)
    with pytest.raises(AssertionError, match="leaves the 16x24 padded canvas"):
        kit.check_layout(WindowLayout((Window(0, 10, 16, 16),), 16, 24), 16, 24, 16)


def test_a_decomposer_returning_one_prompt_too_few_fails() -> None:
    with pytest.raises(AssertionError, match="returned 8 prompts for 9 windows"):
        kit.check_decomposer(ShortDecomposer(), decompose_request())
    broken = contract(PromptDecomposerContract, "short")
    for test in (broken.test_one_prompt_per_window_without_maps, broken.test_one_prompt_per_window_with_maps,
                 broken.test_empty_prompt):
        with pytest.raises(AssertionError, match="prompts for"):
            test()


def test_a_decomposer_adding_a_word_fails() -> None:
    broken = contract(PromptDecomposerContract, "zebra")
    broken.test_one_prompt_per_window_without_maps()  # without maps it keeps to the prompt
    with pytest.raises(AssertionError, match=r"words that are not in the prompt .*\['zebra'\]"):
        broken.test_one_prompt_per_window_with_maps()


def test_a_decomposer_not_checking_its_maps_fails() -> None:
    with pytest.raises(AssertionError, match="one map more .*did not raise ValueError"):
        contract(PromptDecomposerContract, "trusting").test_refuses_maps_that_do_not_match_the_words()


def test_an_upscaler_returning_the_wrong_size_fails() -> None:
    latents = torch.zeros(1, 4, 8, 8)
    with pytest.raises(AssertionError, match=r"returned shape \(1, 4, 17, 16\), not \(1, 4, 16, 16\)"):
        kit.check_upscaler(OffByOneUpscaler(), latents, [(16, 16)])
    for name in ("off_by_one", "channel_dropping"):
        with pytest.raises(AssertionError, match="returned shape"):
            contract(UpscalerContract, name).test_gives_the_requested_size()


def test_global_guidances_with_wrong_views_fail() -> None:
    with pytest.raises(AssertionError, match="assemble to shape"):
        contract(GlobalGuidanceContract, "cropping").test_predict_and_views_give_the_canvas()
    with pytest.raises(AssertionError, match="drew another amount from the generator"):
        contract(GlobalGuidanceContract, "greedy").test_predict_and_views_give_the_canvas()


def test_a_schedule_one_phase_short_fails() -> None:
    with pytest.raises(AssertionError, match=r"returned 1 phase schedules for 2 upscaling phases"):
        kit.check_schedule(ShortSchedule(), schedule_request((2, 3), 10))
    with pytest.raises(AssertionError, match="phase schedules"):
        contract(ScheduleContract, "short").test_one_phase_schedule_per_phase()


def test_structure_guidances_with_wrong_answers_fail() -> None:
    with pytest.raises(AssertionError, match="not a tuple"):
        contract(StructureGuidanceContract, "list_pictures").test_pictures_is_a_tuple()
    with pytest.raises(AssertionError, match=r"images of shape \(9, 3, 8, 8\), not \(9, 3, 64, 64\)"):
        contract(StructureGuidanceContract, "wrong_control").test_control_per_window()


def test_a_stage_that_does_not_keep_its_options_fails() -> None:
    with pytest.raises(AssertionError, match=r"records the options \[\], but declares \['level'\]"):
        contract(TilerContract, "forgetful").test_built_by_a_host_from_settings()
    # its option values are still checked by the host
    contract(TilerContract, "forgetful").test_bad_option_values_are_refused()


def test_registration_checks_fail_for_the_wrong_name_or_plugin() -> None:
    with pytest.raises(AssertionError, match=r"has no StageEntry for the tiler 'grid'"):
        kit.check_registration(BROKEN, "tiler", "grid")
    with pytest.raises(AssertionError, match="set `plugin`"):
        kit.check_registration(None, "tiler", "grid")
    with pytest.raises(AssertionError, match=r"cannot be built: schedule 'paper' is registered twice"):
        kit.check_registration(StagePlugin([StageEntry("schedule", "paper", HalfSchedule)]), "schedule", "paper")
    with pytest.raises(AssertionError, match="build the tiler 'grid': unknown tiler 'grid'; installed: careless"):
        contract(TilerContract, "grid").test_built_by_a_host_from_settings()


def test_the_entry_point_check_fails_for_another_object() -> None:
    plugin = pytest.importorskip("accdiffusion_tiling.plugin").plugin

    kit.check_entry_point(plugin, "tiling", "tiler", "sliding_window")
    with pytest.raises(AssertionError, match=r"loads StagePlugin\(tiler:sliding_window\), not the plugin object"):
        kit.check_entry_point(GOOD, "tiling", "tiler", "grid")
    with pytest.raises(AssertionError, match="0 installed entry points named 'no-such-plugin'"):
        kit.check_entry_point(GOOD, "no-such-plugin", "tiler", "grid")


def test_bad_option_values_are_derived_from_the_declaration() -> None:
    spec = accdiffusion.options.declared_options(Options)[0].spec
    assert kit.bad_option_values(spec) == [None, "two", 1.5, 0, 4]
    (spec,) = (o.spec for o in accdiffusion.options.declared_options(NearestUpscaler))
    assert kit.bad_option_values(spec) == [None, "", "   ", "kit-not-a-choice"]
    with pytest.raises(AssertionError, match="bad_values names 'levels'"):
        kit.check_refused_option_values(host_with(BROKEN), "tiler", "forgetful", {"levels": [0]})


# -- hosts and crafted inputs -----------------------------------------------------------


def test_host_with_has_exactly_the_given_plugins() -> None:
    host = host_with(GOOD, None, GOOD, accdiffusion.builtins.BUILTINS)
    assert host.registry.names("tiler") == ["grid"]
    assert host.registry.names("schedule") == ["fast", "half", "paper"]
    assert host_with().registry.names("tiler") == []


def test_host_with_refuses_a_plugin_module() -> None:
    module = types.ModuleType("accdiffusion_grid.plugin")
    module.plugin = GOOD
    with pytest.raises(TypeError, match=r"pass its StagePlugin \(accdiffusion_grid.plugin.plugin\)"):
        host_with(module)


def test_fixtures(plugin_host, fake_codec, fake_adapter) -> None:
    assert plugin_host is host_with and plugin_host(GOOD).registry.names("upscaler") == ["nearest"]
    assert isinstance(fake_codec, FakeCodec) and fake_codec.calls == []
    assert isinstance(fake_adapter, FakeAdapter) and fake_adapter.native_size == 32


def test_attention_maps_from_masks_and_maps() -> None:
    masks = torch.zeros(2, 4, 6, dtype=torch.bool)
    masks[0, :2] = True
    maps = attention_maps("cat dog", masks, latent_per_map=8)
    assert maps.words == ("cat", "dog") and maps.latent_per_map == 8 and maps.token_maps is None
    assert maps.maps.shape == (4, 6, 2) and maps.maps.dtype == torch.float32
    assert maps.maps[..., 0].sum() == 12 and maps.maps[..., 1].sum() == 0
    floats = attention_maps(["a", "b"], [torch.full((3, 3), 0.25), [[1.0] * 3] * 3])
    assert floats.maps[0, 0].tolist() == [0.25, 1.0]
    assert attention_maps((), torch.zeros(0, 4, 4)).maps.shape == (4, 4, 0)
    with pytest.raises(ValueError, match="2 maps for 1 words"):
        attention_maps("cat", masks)
    with pytest.raises(ValueError, match="2-D of one size"):
        attention_maps("a b", [torch.zeros(3, 3), torch.zeros(3, 4)])


def test_window_layout_hand_worked() -> None:
    layout = window_layout(24, 40, 16, 8)
    assert [(w.top, w.left) for w in layout.windows] == [(0, 0), (0, 8), (0, 16), (0, 24),
                                                          (8, 0), (8, 8), (8, 16), (8, 24)]
    assert [(w.top, w.left) for w in window_layout(36, 16, 16, 8).windows] == [(0, 0), (8, 0), (16, 0), (20, 0)]
    assert window_layout(10, 12, 16).windows == (Window(0, 0, 10, 12),)
    padded = window_layout(32, 32, 16, 16, pad=3)
    assert padded.pad == 3 and padded.on_canvas() == window_layout(32, 32, 16, 16).windows
    with pytest.raises(ValueError):
        window_layout(32, 32, 16, 17)
    moved = kit.jittered(window_layout(64, 64, 32), 2)
    assert moved.pad == 2 and len(moved) == 9
    assert all(0 <= w.top <= 36 and 0 <= w.left <= 36 for w in moved.windows)
    assert moved != kit.jittered(window_layout(64, 64, 32), 2, kit.generator(1))


def test_request_builders() -> None:
    req = decompose_request(low_res_image=kit.sample_image(16, 8))
    assert len(req.layout) == 9 and req.scale == 2 and req.low_res_image().size == (16, 8)
    denoise = RecordingDenoise(offset=0.01)
    g = guidance_request(torch.ones(1, 4, 8, 8), 2, denoise)
    out = g.denoise(ViewBatchRequest(torch.ones(3, 4, 2, 2), 7.5))
    assert out[:, 0, 0, 0].tolist() == pytest.approx([0.5, 0.51, 0.52]) and len(denoise.requests) == 1
    sched = schedule_request((2, 3), 4)
    assert sched.timesteps(4) == (999, 666, 333, 0) and sched.timesteps(1) == (999,)
    assert sched.latent_sizes == ((32, 32), (48, 48)) and sched.factor == 3
    s = structure_request()
    assert s.latent_size == (64, 64) and s.previous_image().size == (64, 64)


# -- the fakes ------------------------------------------------------------------------


@pytest.mark.parametrize("factor", [1, 2, 4, 8, 3])
def test_fake_codec_round_trips_exactly(factor: int) -> None:
    codec = FakeCodec(vae_scale_factor=factor)
    z = torch.randn(2, 3, 5, 7, generator=kit.generator(0)) * 3
    images = codec.decode_latents(z)
    assert images.shape == (2, 3, 5 * factor, 7 * factor)
    back = codec.encode_images(images)
    if factor & (factor - 1) == 0:
        assert torch.equal(back, z)
    else:
        assert torch.allclose(back, z, atol=1e-6)
    assert codec.decoded == [z] and codec.encoded[0] is images
    assert [c.name for c in codec.calls] == ["decode_latents", "encode_images"]
    assert codec.calls_to("encode_images") == [{"shape": tuple(images.shape), "generator": None}]


def test_fake_codec_channels_and_checks() -> None:
    codec = FakeCodec(latent_channels=4)
    images = torch.rand(1, 3, 8, 8, dtype=torch.float64)
    z = codec.encode_images(images)
    assert z.shape == (1, 4, 4, 4) and z.dtype == torch.float64 and not z[:, 3].any()
    assert torch.equal(z[:, :3], F.avg_pool2d(images, 2))
    assert codec.decode_latents(z).shape == (1, 3, 8, 8)
    assert FakeCodec(latent_channels=1).decode_latents(torch.ones(1, 1, 2, 2))[:, 1:].abs().sum() == 0
    with pytest.raises(ValueError, match="multiples of 2"):
        codec.encode_images(torch.zeros(1, 3, 7, 8))
    with pytest.raises(ValueError):
        codec.encode_images(torch.zeros(1, 4, 8, 8))


def test_fake_adapter_through_the_view_executor() -> None:
    adapter = FakeAdapter()
    uncond = adapter.encode_negative("a cat", "blurry")
    ex = ViewExecutor(adapter, uncond, (64, 64), 3)
    latents = torch.randn(4, 4, 8, 8, generator=kit.generator(0))
    positions = torch.tensor([[0, 0], [0, 8], [8, 0], [8, 8]])
    group = ViewGroup(latents, ex.conditioning(["a cat", "a dog on a sofa", "a cat", ""]), 5.0, positions)

    class Identity:
        def scale_model_input(self, x, t):
            return x

    (out,) = ex.evaluate(Identity(), 10, [group])
    e = torch.tensor([0.02, 0.05, 0.02, 0.0]).view(4, 1, 1, 1)
    top = (positions[:, :1] * adapter.vae_scale_factor).float().view(4, 1, 1, 1)  # image pixels
    cond = latents * (0.5 + e) + 0.001 * top
    unc = latents * (0.5 + 0.01) + 0.001 * top
    assert torch.allclose(out, unc + 5.0 * (cond - unc), atol=1e-6)
    assert adapter.calls_to("encode_prompts") == [{"prompts": ("a cat", "a dog on a sofa", "")}]
    assert [c["views"] for c in adapter.calls_to("predict")] == [6, 2]  # 3 views and their CFG halves per call
    assert ex.evaluations == 8
    residuals = adapter.control_residuals(None, latents, 10, group.cond, positions, (64, 64), torch.zeros(4, 3, 16, 16),
                                          0.5)
    assert residuals[1].shape == (4, 1, 1, 1) and float(residuals[1][0]) == 0.5


def test_fake_adapter_text_side() -> None:
    adapter = FakeAdapter(pooled=True, model_max_length=4)
    assert adapter.word_groups("a red cat") == (("a", "red"), ((0,), (1,)))
    assert adapter.prompt_token_count("a red cat") == 5
    rows = adapter.encode_prompts(["a red cat"])
    assert rows.embeds.shape == (1, 1, 2) and rows.pooled.shape == (1, 2)
    custom = FakeAdapter(output=lambda x, t, cond, positions: x * 0)
    assert not custom.predict(torch.ones(2, 4, 2, 2), 1, Conditioning(torch.zeros(2, 1, 2)), None, (8, 8)).any()
    with pytest.raises(ValueError, match="2 latents and 1 conditioning rows"):
        adapter.predict(torch.ones(2, 4, 2, 2), 1, Conditioning(torch.zeros(1, 1, 2)), None, (8, 8))


def test_fake_adapter_drives_a_whole_run() -> None:
    adapter = FakeAdapter()
    host = host_with(GOOD)
    settings = Settings(prompt="a red cat on a sofa", scale=2, steps=3, seed=0, view_batch_size=4)
    stages = {stage: host.create(stage, name, settings) for stage, name in (
        ("prompt_decomposer", "first_words"), ("tiler", "grid"), ("global_guidance", "mean"),
        ("upscaler", "nearest"), ("schedule", "half"))}
    result = Sampler(adapter, **stages)(settings)
    assert result.image.size == (64, 64)
    assert result.phases[1].patch_prompts.prompts == ("a red",) * len(result.phases[1].layout)
    names = {c.name for c in adapter.calls}
    assert {"encode_prompts", "encode_negative", "predict", "decode_latents"} <= names
    assert adapter.calls_to("encode_prompts")[0] == {"prompts": ("a red cat on a sofa",)}
    again = Sampler(FakeAdapter(), **stages)(settings)
    assert torch.equal(result.latents, again.latents)


# -- the model-family contract's checks fail on broken families -------------------------


def test_adapter_declaration_check_names_what_is_wrong() -> None:
    adapter = FakeAdapter()
    adapter.denoiser = object()
    kit.check_adapter_declarations(adapter)
    adapter.guidance = "twice"
    with pytest.raises(AssertionError, match="guidance='twice'"):
        kit.check_adapter_declarations(adapter)
    adapter.guidance, adapter.patch_size = "cfg", 3
    with pytest.raises(AssertionError, match="native_size=32 is not a multiple of vae_scale_factor \\* patch_size = 6"):
        kit.check_adapter_declarations(adapter)


def test_text_side_check_catches_words_that_are_not_the_prompts() -> None:
    adapter = FakeAdapter()
    kit.check_text_side(adapter, "a red circle")

    class Glued(FakeAdapter):
        def word_groups(self, prompt):
            return ("ared", "circle"), ((0, 1), (2,))

    with pytest.raises(AssertionError, match="gave words \\('ared', 'circle'\\)"):
        kit.check_text_side(Glued(), "a red circle")


def test_family_registration_check_names_the_registered_families() -> None:
    from accdiffusion.builtins import BUILTINS

    assert kit.check_family_registration(BUILTINS, "sdxl").name == "sdxl"
    with pytest.raises(AssertionError, match="no model family 'kolors' is registered; registered: flux, sd, sd3, sdxl"):
        kit.check_family_registration(BUILTINS, "kolors")


def test_noise_schedule_check_catches_a_schedule_that_noises_more_later() -> None:
    from accdiffusion.models.noise import DiscreteTimeNoise

    class Backwards(DiscreteTimeNoise):
        def add_noise(self, x0, noise, t):
            return x0 + noise * (1000 - float(t)) / 1000

    class Adapter(FakeAdapter):
        def noise_schedule(self, scheduler):
            return Backwards(scheduler)

    kit.check_noise_schedule(FakeAdapter())
    with pytest.raises(AssertionError, match="later timesteps must noise less"):
        kit.check_noise_schedule(Adapter())
