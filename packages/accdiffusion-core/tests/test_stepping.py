"""Method section 4: fusing model outputs and stepping once equals the
release's per-window stepping and averaging, for Euler and DDIM (eta 0)."""

import copy

import pytest
import torch
from diffusers import DDIMScheduler, EulerDiscreteScheduler

SDXL_SCHEDULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1,
                      timestep_spacing="leading", num_train_timesteps=1000)

WINDOWS = [(0, 0), (0, 8), (0, 16), (8, 0), (8, 8), (8, 16)]  # 16x16 windows on 24x32, stride 8


def _scheduler(kind):
    if kind == "euler":
        return EulerDiscreteScheduler(**SDXL_SCHEDULER)
    return DDIMScheduler(**SDXL_SCHEDULER, clip_sample=False, set_alpha_to_one=False)


@pytest.mark.parametrize("kind", ["euler", "ddim"])
@pytest.mark.parametrize("c2", [0.0, 0.37])
def test_fused_step_equals_per_window_steps(kind, c2):
    g = torch.Generator().manual_seed(0)
    sched = _scheduler(kind)
    sched.set_timesteps(10)
    z = torch.randn(1, 4, 24, 32, generator=g) * sched.init_noise_sigma
    for t in sched.timesteps[:3]:  # move into the middle of the schedule
        sched.scale_model_input(z, t)
        z = sched.step(torch.randn(z.shape, generator=g), t, z).prev_sample
    t = sched.timesteps[3]
    sched.scale_model_input(z, t)
    eps_windows = [torch.randn(1, 4, 16, 16, generator=g) for _ in WINDOWS]
    eps_global = torch.randn(z.shape, generator=g)

    # release: step every window from the same scheduler state, average the stepped latents
    total = torch.zeros_like(z)
    count = torch.zeros_like(z)
    for (top, left), eps in zip(WINDOWS, eps_windows):
        s = copy.deepcopy(sched)
        out = s.step(eps, t, z[:, :, top:top + 16, left:left + 16]).prev_sample
        total[:, :, top:top + 16, left:left + 16] += out
        count[:, :, top:top + 16, left:left + 16] += 1
    local_stepped = total / count
    global_stepped = copy.deepcopy(sched).step(eps_global, t, z).prev_sample
    release = (1 - c2) * local_stepped + c2 * global_stepped

    # fused: average the model outputs, mix with the global output, step once
    total = torch.zeros_like(z)
    for (top, left), eps in zip(WINDOWS, eps_windows):
        total[:, :, top:top + 16, left:left + 16] += eps
    fused_eps = (1 - c2) * total / count + c2 * eps_global
    fused = copy.deepcopy(sched).step(fused_eps, t, z).prev_sample

    assert torch.allclose(fused, release, atol=1e-5, rtol=1e-5)
    # and the comparison can fail: a different fusion weight gives a different result
    other = copy.deepcopy(sched).step((1 - c2 - 0.2) * total / count + (c2 + 0.2) * eps_global, t, z).prev_sample
    assert not torch.allclose(other, release, atol=1e-4)
