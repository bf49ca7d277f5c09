"""The fused sampler computes what the release's loop computes.

An independent re-implementation of one DemoFusion/AccDiffusion upscaling
phase in the release's form (every window and every dilated sample stepped
by its own scheduler call from the same scheduler state, stepped latents
averaged, then the cosine fusion) must give the sampler's latents for Euler
and DDIM, where a step is affine in the model output (method section 4).
Jitter is off and the dilated path is DemoFusion's, so the only random draws
are phase 1's noise and the inversion noise, taken in the same order.
"""

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from accdiffusion import Settings, generate
from accdiffusion.loading import load_pipeline
from accdiffusion.plugins import PluginHost
from accdiffusion.schedulers import make_scheduler
from accdiffusion_dilated import DilatedGuidance, gaussian_kernel

PROMPT = "a red circle on a white background"


def _cfg(adapter, x, t, cond, uncond, scale, crops, target):
    n = x.shape[0]
    xin = torch.cat([x, x])
    embeds = torch.cat([uncond.embeds.expand(n, -1, -1), cond.embeds.expand(n, -1, -1)])
    pooled = None if cond.pooled is None else torch.cat([uncond.pooled.expand(n, -1), cond.pooled.expand(n, -1)])
    crops = None if crops is None else torch.cat([crops, crops])
    out = adapter.predict(xin, t, type(cond)(embeds, pooled), crops, target)
    u, c = out.chunk(2)
    return u + scale * (c - u)


def release_form(adapter, settings, scheduler_name):
    """DemoFusion's loop with per-window stepping, written out plainly."""
    s_factor = settings.scale
    native = adapter.native_size
    window = native // adapter.vae_scale_factor
    stride = settings.stride or window // 2
    target = (native * s_factor, native * s_factor)
    gen = torch.Generator().manual_seed(settings.seed)
    base = make_scheduler(scheduler_name, adapter.pipeline.scheduler)
    T = base.config.num_train_timesteps
    cond = adapter.encode_prompts([settings.prompt])
    uncond = adapter.encode_negative(settings.prompt, settings.negative_prompt)

    sched = type(base).from_config(base.config)
    sched.set_timesteps(settings.steps)
    z = torch.randn((1, 4, window, window), generator=gen) * sched.init_noise_sigma
    for t in sched.timesteps:
        out = _cfg(adapter, sched.scale_model_input(z, t), t, cond, uncond, settings.guidance_scale, None, target)
        z = sched.step(out, t, z).prev_sample
    mean, std = z.mean(), z.std()

    for s in range(2, s_factor + 1):
        side = window * s
        z_up = F.interpolate(z, size=(side, side), mode="bicubic", align_corners=False)
        sched = type(base).from_config(base.config)
        sched.set_timesteps(settings.steps)
        noise = torch.randn(z_up.shape, generator=gen)
        noised = [type(base).from_config(base.config) for _ in range(1)][0]
        noised.set_timesteps(settings.steps)
        inv = [noised.add_noise(z_up, noise, t.reshape(1)) for t in sched.timesteps]
        z = inv[0]
        n_side = math.ceil((side - window) / stride) + 1
        starts = [min(k * stride, side - window) for k in range(n_side)]
        for i, t in enumerate(sched.timesteps):
            cos = 0.5 * (1 + math.cos(math.pi * (T - float(t)) / T))
            c1 = cos ** settings.cosine_scale_1
            z = (1 - c1) * z + c1 * inv[i]
            value = torch.zeros_like(z)
            count = torch.zeros_like(z)
            for top in starts:
                for left in starts:
                    view = z[:, :, top:top + window, left:left + window]
                    st = copy.deepcopy(sched)
                    crops = torch.tensor([[top, left]])  # the view's position in latent pixels
                    eps = _cfg(adapter, st.scale_model_input(view, t), t, cond, uncond,
                               settings.multi_guidance_scale, crops, target)
                    value[:, :, top:top + window, left:left + window] += st.step(eps, t, view).prev_sample
                    count[:, :, top:top + window, left:left + window] += 1
            local = value / count
            c3 = 0.99 * cos ** DilatedGuidance().cosine_scale_3 + 0.01
            k = 2 * s - 1
            kern = gaussian_kernel(k, DilatedGuidance().sigma * c3).to(z)[None, None].repeat(4, 1, 1, 1)
            blurred = F.conv2d(z, kern, padding=k // 2, groups=4)
            blurred = (blurred - blurred.mean()) / blurred.std() * z.std() + z.mean()
            glob = torch.zeros_like(z)
            for hy in range(s):
                for wx in range(s):
                    st = copy.deepcopy(sched)
                    sub_in = blurred[:, :, hy::s, wx::s]
                    eps = _cfg(adapter, st.scale_model_input(sub_in, t), t, cond, uncond,
                               settings.guidance_scale, None, target)
                    glob[:, :, hy::s, wx::s] = st.step(eps, t, z[:, :, hy::s, wx::s]).prev_sample
            c2 = cos ** settings.cosine_scale_2
            nxt = (1 - c2) * local + c2 * glob
            sched.scale_model_input(z, t)
            sched.step(torch.zeros_like(z), t, z)  # advance the shared scheduler's step index
            z = nxt
        z = (z - z.mean()) / z.std() * std + mean
    return z


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
@pytest.mark.parametrize("scheduler", ["euler", "ddim"])
def test_sampler_equals_release_loop(family, scheduler, tiny_sd15_path, tiny_sdxl_path):
    pipe = load_pipeline(str(tiny_sd15_path if family == "sd15" else tiny_sdxl_path))
    settings = Settings(prompt=PROMPT, scale=3, steps=4, seed=11, plugin_options={"jitter": False},
                        prompt_decomposer="identical",
                        global_guidance="dilated", scheduler=scheduler)
    ours = generate(PROMPT, pipeline=pipe, scale=3, steps=4, seed=11, jitter=False, prompt_decomposer="identical",
                    global_guidance="dilated", scheduler=scheduler).latents
    adapter = PluginHost().adapt(pipe, settings)
    with torch.inference_mode():
        reference = release_form(adapter, settings, scheduler)
    assert ours.shape == reference.shape == (1, 4, 48, 48)
    assert torch.allclose(ours, reference, atol=2e-4, rtol=1e-4), (ours - reference).abs().max()
