"""FLUX.1 through the model seam: the family contract, packing, joint-attention maps, flow phases."""

from __future__ import annotations

import pytest
import torch

from accdiffusion.builtins import BUILTINS
from accdiffusion.errors import ModelError
from accdiffusion.models.flux import FluxAdapter, image_ids, pack, unpack
from accdiffusion.models.noise import FlowMatchNoise
from accdiffusion_testing import kit

from accdiffusion_testing.tiny_flux import make_tiny_flux


class TestFluxFamily(kit.ModelFamilyContract):
    plugin = BUILTINS
    name = "flux"
    attention_factor = 2

    def save_pipeline(self, folder):
        make_tiny_flux(folder)


@pytest.fixture(scope="module")
def flux(tmp_path_factory):
    from accdiffusion.loading import load_pipeline

    folder = tmp_path_factory.mktemp("flux")
    make_tiny_flux(folder)
    return folder, load_pipeline(str(folder))


def test_pack_and_unpack_are_inverse_and_match_diffusers():
    from diffusers import FluxPipeline

    x = torch.randn(3, 4, 6, 8, generator=kit.generator(0))
    tokens = pack(x)
    assert torch.equal(tokens, FluxPipeline._pack_latents(x, 3, 4, 6, 8))
    assert torch.equal(unpack(tokens, 6, 8), x)
    ids = image_ids(6, 8)
    assert torch.equal(ids, FluxPipeline._prepare_latent_image_ids(1, 3, 4, "cpu", torch.float32))


def test_the_adapter_declares_flux(flux):
    folder, pipe = flux
    adapter = FluxAdapter(pipe)
    assert adapter.patch_size == 2 and adapter.family == "flux"
    assert adapter.latent_channels == pipe.transformer.config.in_channels // 4
    assert adapter.guidance == ("embedded" if pipe.transformer.config.guidance_embeds else "cfg")
    assert adapter.tokenizer is pipe.tokenizer_2  # the joint attention's text tokens are T5's
    assert isinstance(adapter.noise_schedule(pipe.scheduler), FlowMatchNoise)


def test_predict_equals_the_transformer_on_diffusers_packing(flux):
    _, pipe = flux
    adapter = FluxAdapter(pipe)
    side = adapter.native_size // adapter.vae_scale_factor
    x = torch.randn(2, adapter.latent_channels, side, side, generator=kit.generator(1))
    cond = adapter.encode_prompts(["a red circle", "a blue square"])
    t = torch.tensor(700.0)
    extra = {"guidance": torch.tensor([3.5, 3.5])} if adapter.guidance == "embedded" else {}
    with torch.inference_mode():
        out = adapter.predict(x, t, cond, None, (64, 64), **extra)
        ref = pipe.transformer(hidden_states=pipe._pack_latents(x, 2, adapter.latent_channels, side, side),
                               timestep=torch.full((2,), 0.7), pooled_projections=cond.pooled,
                               encoder_hidden_states=cond.embeds, txt_ids=torch.zeros(cond.embeds.shape[1], 3),
                               img_ids=pipe._prepare_latent_image_ids(1, side // 2, side // 2, "cpu", torch.float32),
                               return_dict=False, **extra)[0]
    assert torch.equal(out, pipe._unpack_latents(ref, side * adapter.vae_scale_factor,
                                                 side * adapter.vae_scale_factor, adapter.vae_scale_factor))


def test_a_discrete_scheduler_is_refused_naming_the_allowed_one(flux):
    from diffusers import EulerDiscreteScheduler

    _, pipe = flux
    with pytest.raises(ModelError, match="EulerDiscreteScheduler does not fit it; allowed: --scheduler default"):
        FluxAdapter(pipe).noise_schedule(EulerDiscreteScheduler())


def test_structure_guidance_is_refused_for_flux(flux):
    _, pipe = flux
    with pytest.raises(ModelError, match="flux model family has no ControlNet support"):
        FluxAdapter(pipe).load_controlnet("somewhere")


def test_joint_attention_maps_peak_where_the_word_is_drawn(flux):
    """A hand-made check of the recorder: one block whose image queries match
    one text key in the left half and another in the right half gives maps
    that are 1 exactly there."""
    from accdiffusion.models.flux import RecordingJointProcessor
    from accdiffusion.attention import AttentionRecorder

    recorder = AttentionRecorder(first_token=0)
    recorder.cfg = False

    class Attn:
        head_dim = 1
        heads = 1

    attn = Attn()
    identity = torch.nn.Identity()
    attn.norm_q = attn.norm_k = attn.norm_added_q = attn.norm_added_k = identity
    # two text tokens with keys +100 and -100; image queries +1 (left) and -1 (right)
    text = torch.tensor([[[100.0], [-100.0]]])
    image = torch.tensor([[[1.0], [-1.0], [1.0], [-1.0]]])

    import accdiffusion.models.flux as flux_module
    import diffusers.models.transformers.transformer_flux as tf

    original = tf._get_qkv_projections
    tf._get_qkv_projections = lambda a, h, e: (h, h, h, e, e, e)
    try:
        proc = RecordingJointProcessor(lambda *a: "out", recorder)
        assert proc(attn, image, text) == "out"
    finally:
        tf._get_qkv_projections = original
    maps = recorder.maps(2, 4, 2, 2, ("a", "b"), grid=(2, 2))
    assert flux_module is not None
    assert torch.allclose(maps.maps[..., 0], torch.tensor([[1.0, 0.0], [1.0, 0.0]]))
    assert torch.allclose(maps.maps[..., 1], torch.tensor([[0.0, 1.0], [0.0, 1.0]]))


def test_accdiffusion_runs_on_flux_with_patch_prompts_from_joint_attention(flux, tmp_path):
    from accdiffusion import generate

    folder, _ = flux
    result = generate("a red circle and a blue square", model=str(folder), scale=2, steps=3, seed=0,
                      guidance_scale=3.5, save_stages=False)
    assert result.image.size == (2 * result.plan.native, 2 * result.plan.native)
    words = result.attention.words
    assert words == ("a", "red", "circle", "and", "a", "blue", "square")
    side = result.plan.latent_sizes[0][0]
    assert tuple(result.attention.maps.shape) == (side // 2, side // 2, len(words))
    prompts = result.phases[1].patch_prompts.prompts
    assert len(prompts) == len(result.phases[1].layout.windows)
    assert all(set(p.split()) <= set(words) for p in prompts)
    again = generate("a red circle and a blue square", model=str(folder), scale=2, steps=3, seed=0,
                     guidance_scale=3.5, save_stages=False)
    assert torch.equal(result.latents, again.latents)
    assert result.record["model"]["family"] == "flux"


@pytest.mark.parametrize("dynamic", [True, False])
@pytest.mark.parametrize("start", [0, 3, 6])
def test_flow_phase_started_mid_schedule_lands_on_x0_with_a_perfect_denoiser(dynamic, start):
    """Noise inversion to the phase's start sigma, then Euler steps with the
    exact velocity ``noise - x0``: the phase ends on ``x0``."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    from accdiffusion.sampler import phase_schedulers, scheduler_step
    from accdiffusion.types import PhaseSchedule

    config = dict(shift=3.0, use_dynamic_shifting=dynamic, base_image_seq_len=256, max_image_seq_len=4096,
                  base_shift=0.5, max_shift=1.15)
    base = FlowMatchEulerDiscreteScheduler(**config)
    sched, noiser, timesteps = phase_schedulers(base, PhaseSchedule(steps=8, start=start), tokens=1024)
    x0 = torch.randn(1, 16, 8, 8, generator=kit.generator(5))
    noise = torch.randn(1, 16, 8, 8, generator=kit.generator(6))
    z = noiser.add_noise(x0, noise, timesteps[:1])
    assert len(timesteps) == 8 - start
    for t in timesteps:
        z = scheduler_step(sched, noise - x0, t, z, None)
    assert torch.allclose(z, x0, atol=1e-5)


COMBINATIONS = [
    dict(),
    dict(schedule="fast"),
    dict(prompt_decomposer="instance"),
    dict(prompt_decomposer="identical", global_guidance="dilated"),
    dict(global_guidance="none"),
    dict(upscaler="pixel", skip_residual=False),
]


@pytest.mark.parametrize("scale", [2, 3])
@pytest.mark.parametrize("options", COMBINATIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default")
def test_every_stage_combination_runs_on_flux_and_sd3(flux, scale, options, tmp_path_factory):
    from accdiffusion import generate
    from accdiffusion_testing.tiny_flux import make_tiny_sd3

    folder, _ = flux
    sd3 = tmp_path_factory.getbasetemp() / "sd3-combinations"
    if not (sd3 / "model_index.json").is_file():
        make_tiny_sd3(sd3)
    for model in (folder, sd3):
        result = generate("a red circle and a blue square", model=str(model), scale=scale, steps=3, seed=1,
                          guidance_scale=3.5, **options)
        assert result.image.size == (32 * scale, 32 * scale)
        assert [p.scale for p in result.phases] == list(range(1, scale + 1))
        assert torch.isfinite(result.latents).all()


def test_a_prompt_beyond_the_text_window_warns_naming_what_is_dropped(flux, tiny_sd15_pipeline):
    from accdiffusion.models import SDAdapter

    _, pipe = flux
    words = " ".join(["red", "blue", "green", "circle"] * 8) + " and a yellow star"  # 36 words
    flux_adapter = FluxAdapter(pipe)
    kept = flux_adapter.word_tokens(words)
    assert len(kept) == 31  # T5 window 32 without its </s>
    assert flux_adapter.dropped_text(words) == "circle and a yellow star"
    assert flux_adapter.dropped_text("a red circle") == ""
    sd = SDAdapter(tiny_sd15_pipeline)
    long_prompt = " ".join(["red"] * 75) + " and a yellow star"
    assert sd.dropped_text(long_prompt) == "and a yellow star"  # CLIP: 75 tokens between BOS and EOS

    from accdiffusion import generate

    folder, _ = flux
    result = generate(words, model=str(folder), steps=1, seed=0, guidance_scale=3.5)
    assert any("dropped: 'circle and a yellow star'" in w for w in result.warnings)


def test_a_negative_prompt_with_embedded_guidance_is_reported_unused(flux):
    from accdiffusion import generate

    folder, _ = flux
    result = generate("a red circle", model=str(folder), steps=1, seed=0, negative_prompt="a blue square")
    assert any("negative_prompt='a blue square' is not used: the flux model takes the guidance scale as an input"
               in w for w in result.warnings)
    assert result.phases[0].unet_evaluations == 1  # one pass per view: no negative rows
    plain = generate("a red circle", model=str(folder), steps=1, seed=0)
    assert not any("negative_prompt" in w for w in plain.warnings)


def test_a_size_whose_phases_the_patches_do_not_divide_is_refused_before_loading(flux, monkeypatch):
    from accdiffusion import generate
    from accdiffusion.errors import SettingsError

    folder, _ = flux

    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr("accdiffusion.api.load_pipeline", no_loading)
    # 72 x 40 px: phase 1 would be 20 x 36 px, a 5 x 9 latent that 2x2 patches do not divide
    with pytest.raises(SettingsError, match="height=72 width=40 is not allowed for this model: phase 1 would be "
                                            "20x36 px \\(5x9 latent\\), which its 2x2 patches do not divide; "
                                            "allowed: a height and width that are multiples of 16 px at factor 2"):
        generate("a red circle", model=str(folder), height=72, width=40, steps=1)
    monkeypatch.undo()
    result = generate("a red circle", model=str(folder), height=64, width=48, steps=1, seed=0)
    assert result.image.size == (48, 64)
