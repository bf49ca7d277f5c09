"""SD3 through the model seam: the family contract, the denoiser call, a whole AccDiffusion run."""

from __future__ import annotations

import pytest
import torch

from accdiffusion.builtins import BUILTINS
from accdiffusion.errors import ModelError
from accdiffusion.models.noise import FlowMatchNoise
from accdiffusion.models.sd3 import SD3Adapter
from accdiffusion_testing import kit
from accdiffusion_testing.tiny_flux import make_tiny_sd3


class TestSD3Family(kit.ModelFamilyContract):
    plugin = BUILTINS
    name = "sd3"

    def save_pipeline(self, folder):
        make_tiny_sd3(folder)


@pytest.fixture(scope="module")
def sd3(tmp_path_factory):
    from accdiffusion.loading import load_pipeline

    folder = tmp_path_factory.mktemp("sd3")
    make_tiny_sd3(folder)
    return folder, load_pipeline(str(folder))


def test_the_adapter_declares_sd3(sd3):
    _, pipe = sd3
    adapter = SD3Adapter(pipe)
    assert (adapter.family, adapter.patch_size, adapter.guidance) == ("sd3", 2, "cfg")
    assert adapter.latent_channels == 16 and adapter.native_size == 32
    noise = adapter.noise_schedule(pipe.scheduler)
    assert isinstance(noise, FlowMatchNoise) and not noise.dynamic_shift  # SD3 shifts statically


def test_predict_is_the_transformer_on_the_views(sd3):
    _, pipe = sd3
    adapter = SD3Adapter(pipe)
    x = torch.randn(2, 16, 8, 8, generator=kit.generator(2))
    cond = adapter.encode_prompts(["a red circle", "a blue square"])
    with torch.inference_mode():
        out = adapter.predict(x, torch.tensor(600.0), cond, torch.tensor([[0, 0], [4, 4]]), (64, 64))
        ref = pipe.transformer(hidden_states=x, timestep=torch.full((2,), 600.0), encoder_hidden_states=cond.embeds,
                               pooled_projections=cond.pooled, return_dict=False)[0]
    assert torch.equal(out, ref)


def test_a_discrete_scheduler_is_refused(sd3):
    from diffusers import DDIMScheduler

    _, pipe = sd3
    with pytest.raises(ModelError, match="DDIMScheduler does not fit it; allowed: --scheduler default"):
        SD3Adapter(pipe).noise_schedule(DDIMScheduler())


def test_accdiffusion_runs_on_sd3_with_patch_prompts_from_joint_attention(sd3):
    from accdiffusion import generate

    folder, _ = sd3
    result = generate("a red circle and a blue square", model=str(folder), scale=2, steps=3, seed=0,
                      guidance_scale=5.0)
    assert result.image.size == (64, 64) and result.record["model"]["family"] == "sd3"
    assert result.attention.words == ("a", "red", "circle", "and", "a", "blue", "square")
    assert tuple(result.attention.maps.shape) == (4, 4, 7)
    assert len(result.phases[1].patch_prompts.prompts) == len(result.phases[1].layout.windows)
    # CFG: every view is evaluated twice at guidance 5 (phase 1: 3 steps)
    assert result.phases[0].unet_evaluations == 6
