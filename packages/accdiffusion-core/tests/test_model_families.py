"""The core's model families pass the kit's family contract, and the seam's parts behave."""

from __future__ import annotations

import types

import pytest
import torch

from accdiffusion.builtins import BUILTINS
from accdiffusion.errors import ModelError, PluginError
from accdiffusion.hookspecs import hookimpl
from accdiffusion.models import FlowMatchNoise, ModelAdapter, ModelFamily, SDAdapter, schedule_for
from accdiffusion.models.noise import DiscreteTimeNoise, flow_shift_mu
from accdiffusion.models.text import group_pieces
from accdiffusion.registration import StageEntry, StagePlugin
from accdiffusion_testing import kit
from accdiffusion_testing.models import make_tiny_sd15, make_tiny_sdxl


class TestSDXLFamily(kit.ModelFamilyContract):
    plugin = BUILTINS
    name = "sdxl"

    def save_pipeline(self, folder):
        make_tiny_sdxl(folder)


class TestSDFamily(kit.ModelFamilyContract):
    plugin = BUILTINS
    name = "sd"

    def save_pipeline(self, folder):
        make_tiny_sd15(folder)


# -- a third-party family through the hook ------------------------------------------


class OtherPipeline:
    """Stands for a pipeline class the core does not know."""


class OtherAdapter(SDAdapter):
    family = "other"


def test_a_plugin_family_claims_its_pipeline_class_and_a_subclass():
    family = ModelFamily("other", OtherAdapter, ("OtherPipeline",), "a third-party family")
    host = kit.host_with(StagePlugin([StageEntry("model_family", "other", family)]))
    assert [f.name for f in host.families()] == ["other", "sdxl", "sd", "flux", "sd3"]  # the plugin's is asked first

    class Derived(OtherPipeline):
        pass

    assert host.family_of(Derived()) is family
    assert host.family_of(types.SimpleNamespace()) is None


def test_a_family_registered_later_replaces_a_builtin_for_its_pipelines(tiny_sd15_pipeline):
    mine = ModelFamily("mysd", OtherAdapter, ("StableDiffusionPipeline",))
    host = kit.host_with(StagePlugin([StageEntry("model_family", "mysd", mine)]))
    adapter = host.adapt(tiny_sd15_pipeline, None)
    assert type(adapter) is OtherAdapter


def test_families_registered_by_a_plain_hook():
    family = ModelFamily("other", OtherAdapter, "OtherPipeline")

    class Plugin:
        @hookimpl
        def accdiffusion_register_model_families(self, register):
            register(family)

    host = kit.host_with(Plugin())
    assert host.family_of(OtherPipeline()) is family
    assert host.registry.family_registrations()[0].plugin != ""


def test_bad_families_are_refused_with_what_is_wrong():
    with pytest.raises(ModelError, match="adapter must be a ModelAdapter subclass"):
        ModelFamily("x", object, ("P",))
    with pytest.raises(ModelError, match="pipelines are diffusers pipeline class names"):
        ModelFamily("x", OtherAdapter, ())
    with pytest.raises(ModelError, match="name is letters"):
        ModelFamily("a b", OtherAdapter, ("P",))
    with pytest.raises(PluginError, match="must be a ModelFamily called 'y'"):
        StagePlugin([StageEntry("model_family", "y", ModelFamily("x", OtherAdapter, ("P",)))])

    class NotAFamily:
        @hookimpl
        def accdiffusion_register_model_families(self, register):
            register("sdxl")

    with pytest.raises(PluginError, match="not an accdiffusion.models.ModelFamily: 'sdxl'"):
        kit.host_with(NotAFamily())
    twice = StagePlugin([StageEntry("model_family", "sd", ModelFamily("sd", OtherAdapter, ("P",)))])
    with pytest.raises(PluginError, match="model family 'sd' is registered twice"):
        kit.host_with(twice)


def test_a_folder_of_a_registered_family_is_accepted_before_weights_load(tmp_path):
    from accdiffusion.loading import inspect_folder

    (tmp_path / "model_index.json").write_text('{"_class_name": "OtherPipeline"}')
    with pytest.raises(ModelError, match="holds a 'OtherPipeline'.*supported: StableDiffusionXLPipeline, "
                                         "StableDiffusionPipeline, FluxPipeline, StableDiffusion3Pipeline"):
        inspect_folder(str(tmp_path))
    (tmp_path / "unet").mkdir()
    (tmp_path / "vae").mkdir()
    (tmp_path / "unet" / "config.json").write_text('{"sample_size": 16, "in_channels": 4}')
    (tmp_path / "vae" / "config.json").write_text('{"block_out_channels": [8, 16, 32]}')
    family = ModelFamily("other", OtherAdapter, ("OtherPipeline",))
    info = inspect_folder(str(tmp_path), [family])
    assert info == {"class_name": "OtherPipeline", "family": "other", "native_size": 64, "vae_scale_factor": 4,
                    "latent_channels": 4, "denoiser": "unet", "patch_size": 1}


def test_the_base_adapter_refuses_what_a_family_does_not_support():
    adapter = ModelAdapter.__new__(ModelAdapter)
    with pytest.raises(ModelError, match="base model family records no attention maps"):
        adapter.attention_capture(4)
    with pytest.raises(ModelError, match="has no ControlNet support"):
        adapter.load_controlnet("x")


# -- noise schedules ---------------------------------------------------------------------


def test_discrete_schedule_is_the_scheduler_exactly(tiny_sd15_pipeline):
    from diffusers import EulerDiscreteScheduler

    base = EulerDiscreteScheduler.from_config(tiny_sd15_pipeline.scheduler.config)
    wrapped, plain = schedule_for(base).fresh(), EulerDiscreteScheduler.from_config(base.config)
    assert type(wrapped) is DiscreteTimeNoise
    wrapped.set_timesteps(5, tokens=123)
    plain.set_timesteps(5)
    assert torch.equal(wrapped.timesteps, plain.timesteps)
    x0, e = torch.randn(1, 4, 4, 4, generator=kit.generator(0)), torch.randn(1, 4, 4, 4, generator=kit.generator(1))
    t = plain.timesteps[1:2]
    assert torch.equal(wrapped.add_noise(x0, e, t), plain.add_noise(x0, e, t))
    assert torch.equal(wrapped.scale_model_input(x0, t[0]), plain.scale_model_input(x0, t[0]))
    assert torch.equal(wrapped.step(x0, t[0], e)[0], plain.step(x0, t[0], e).prev_sample)


def _flow(**config):
    from diffusers import FlowMatchEulerDiscreteScheduler

    return schedule_for(FlowMatchEulerDiscreteScheduler(**config))


def test_flow_noise_is_the_interpolation_at_the_timestep_sigma():
    flow = _flow(shift=3.0)
    assert isinstance(flow, FlowMatchNoise) and flow.init_noise_sigma == 1.0
    flow.set_timesteps(4)
    x0, e = torch.full((1, 2, 2, 2), 2.0), torch.full((1, 2, 2, 2), -1.0)
    for k, t in enumerate(flow.timesteps):
        sigma = float(flow.scheduler.sigmas[k])
        assert torch.allclose(flow.add_noise(x0, e, t.reshape(1)), (1 - sigma) * x0 + sigma * e)
    assert float(flow.scheduler.sigmas[0]) == pytest.approx(1.0)  # the first timestep is pure noise
    assert torch.equal(flow.scale_model_input(x0, flow.timesteps[0]), x0)
    with pytest.raises(ValueError, match="is not one of this schedule's 4 timesteps"):
        flow.sigma(torch.tensor([1.5]))


def test_dynamic_shift_comes_from_the_token_count():
    config = dict(use_dynamic_shifting=True, base_image_seq_len=256, max_image_seq_len=4096, base_shift=0.5,
                  max_shift=1.15)
    assert flow_shift_mu(256, config) == pytest.approx(0.5)
    assert flow_shift_mu(4096, config) == pytest.approx(1.15)
    assert flow_shift_mu(2176, config) == pytest.approx(0.825)
    small, large = _flow(**config), _flow(**config)
    with pytest.raises(ValueError, match="needs tokens="):
        small.set_timesteps(4)
    small.set_timesteps(4, tokens=256)
    large.set_timesteps(4, tokens=4096)
    assert float(large.timesteps[1]) > float(small.timesteps[1])  # more tokens: shifted towards noise


# -- words -------------------------------------------------------------------------------


def test_word_pieces_group_by_clip_and_sentencepiece_marks():
    assert group_pieces(["a</w>", "re", "d</w>", "cat</w>"]) == [(0,), (1, 2), (3,)]
    assert group_pieces(["a</w>", "cu"]) == [(0,)]  # a word cut by the text window is dropped
    assert group_pieces(["\u2581a", "\u2581re", "d", "\u2581cat"]) == [(0,), (1, 2), (3,)]
    assert group_pieces(["x", "y"]) == [(0,), (1,)]
