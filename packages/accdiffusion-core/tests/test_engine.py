"""The execution engine: view executor batching and counting, the schedule
stage's contract, and schedulers started mid-schedule."""

import pytest
import torch

import accdiffusion
from accdiffusion import PluginError, Settings, SettingsError
from accdiffusion.executor import ViewExecutor, ViewGroup
from accdiffusion.plugins import PluginHost
from accdiffusion.sampler import phase_schedulers, scheduler_step
from accdiffusion.schedulers import SCHEDULER_CLASSES, make_scheduler
from accdiffusion.schedules import FastSchedule, PaperSchedule, validate_schedule
from accdiffusion.types import Conditioning, PhaseSchedule, ScheduleRequest


class RecordingAdapter:
    """predict = a per-row affine map of the input that depends on the row's
    embedding and crop, so batching mistakes (wrong row, wrong crop, wrong CFG
    half) change the answer. Records every call's batch size."""

    def __init__(self):
        self.calls = []

    def encode_prompts(self, prompts):
        return Conditioning(torch.tensor([[[float(len(p))]] for p in prompts]), None)

    def predict(self, x, t, cond, crops, target):
        self.calls.append(x.shape[0])
        e = cond.embeds[:, 0, 0].view(-1, 1, 1, 1)
        c = torch.zeros(x.shape[0], 1, 1, 1) if crops is None else crops[:, :1].float().view(-1, 1, 1, 1)
        return x * (1 + e) + 0.01 * c


class Identity:
    def scale_model_input(self, x, t):
        return x


def _cond(values):
    return Conditioning(torch.tensor([[[float(v)]] for v in values]), None)


def _expected(group, uncond):
    """Guided output of each view, computed row by row."""
    outs = []
    for k in range(len(group)):
        x = group.latents[k:k + 1]
        crop = 0.0 if group.positions is None else float(group.positions[k, 0])
        co = x * (1 + group.cond.embeds[k, 0, 0]) + 0.01 * crop
        if group.guidance_scale > 1:
            u = x * (1 + uncond.embeds[0, 0, 0]) + 0.01 * crop
            co = u + group.guidance_scale * (co - u)
        outs.append(co)
    return torch.cat(outs)


@pytest.mark.parametrize("batch", [1, 3, 4, 16])
def test_executor_batches_groups_together_and_counts_evaluations(batch):
    adapter = RecordingAdapter()
    uncond = _cond([-0.5])
    ex = ViewExecutor(adapter, uncond, (64, 64), batch)
    g = torch.Generator().manual_seed(0)
    local = ViewGroup(torch.randn(5, 2, 3, 3, generator=g), _cond([1, 2, 3, 4, 5]), 7.5,
                      torch.tensor([[0, 0], [0, 8], [8, 0], [8, 8], [16, 16]]), key="local")
    glob = ViewGroup(torch.randn(4, 2, 3, 3, generator=g), _cond([9] * 4), 3.0, None, key="global")
    plain = ViewGroup(torch.randn(2, 2, 3, 3, generator=g), _cond([6, 7]), 1.0)  # no CFG
    outs = ex.evaluate(Identity(), 10, [local, glob, plain])
    for group, out in zip((local, glob, plain), outs):
        assert torch.allclose(out, _expected(group, uncond), atol=1e-6)
    # 11 views in ceil(11 / batch) calls; CFG views count twice, the plain ones once
    assert len(adapter.calls) == -(-11 // batch)
    assert ex.evaluations == sum(adapter.calls) == 2 * 9 + 2
    # the second step reuses the cached rows and gives the same answer
    again = ex.evaluate(Identity(), 10, [local, glob, plain])
    assert all(torch.equal(a, b) for a, b in zip(outs, again))
    assert ex.evaluations == 2 * (2 * 9 + 2)


def test_executor_encodes_each_distinct_prompt_once():
    calls = []

    class Counting(RecordingAdapter):
        def encode_prompts(self, prompts):
            calls.append(list(prompts))
            return super().encode_prompts(prompts)

    ex = ViewExecutor(Counting(), _cond([0]), (8, 8), 4, known={"a cat": _cond([5])})
    rows = ex.conditioning(["a cat", "a dog", "a dog", "a fish"])
    ex.conditioning(["a fish", "a dog"])
    assert calls == [["a dog", "a fish"]]
    assert rows.embeds[:, 0, 0].tolist() == [5.0, 5.0, 5.0, 6.0]


def _request(n_phases=2, steps=10):
    return ScheduleRequest(scales=tuple(range(2, 2 + n_phases)), latent_sizes=((8, 8),) * n_phases, steps=steps,
                           factor=1 + n_phases, num_train_timesteps=1000, scheduler="default",
                           timesteps=lambda n: tuple(range(999, 0, -1000 // n))[:n])


def test_builtin_schedules():
    req = _request(3, 20)
    assert PaperSchedule().plan(req) == (PhaseSchedule(20, 0, True),) * 3
    fast = FastSchedule().plan(req)
    assert fast == (PhaseSchedule(20, 14, True),) * 3 and fast[0].evaluated_steps == 6
    assert FastSchedule(start_fraction=0.7).plan(_request(1, 50))[0].start == 35
    # at least one timestep is always evaluated
    assert FastSchedule(start_fraction=0.99).plan(_request(1, 3))[0].start == 2
    with pytest.raises(SettingsError, match="start_fraction=1.5"):
        FastSchedule(start_fraction=1.5)
    settings = Settings(prompt="x", plugin_options={"fast.start_fraction": "0.5", "fast.skip_residual": "false"})
    made = PluginHost(entry_points=False).create("schedule", "fast", settings)
    assert made.plan(_request(1, 10)) == (PhaseSchedule(10, 5, False),)
    assert made == FastSchedule(start_fraction=0.5, skip_residual=False)
    with pytest.raises(SettingsError, match=r"option fast.start_fraction='half' of the schedule 'fast' from "
                                            r"plugin 'accdiffusion.builtins' \(distribution 'accdiffusion-core'\) "
                                            r"is not allowed: a number >= 0 and < 1"):
        PluginHost(entry_points=False).create("schedule", "fast", Settings(
            prompt="x", plugin_options={"fast.start_fraction": "half"}))


@pytest.mark.parametrize("answer, message", [
    ((PhaseSchedule(10, 10),), r"start=10, outside its 10 timesteps"),
    ((PhaseSchedule(10, -1),), r"start=-1"),
    ((PhaseSchedule(0, 0),), r"steps=0"),
    ((PhaseSchedule(10, 0), PhaseSchedule(10, 0)), r"2 phase schedules for 1 upscaling phases"),
    (("10",), r"not a PhaseSchedule"),
    (None, r"not a sequence"),
])
def test_bad_schedule_answers_are_refused(answer, message):
    with pytest.raises(PluginError, match=message) as info:
        validate_schedule(answer, _request(1), "schedule 'mine'")
    assert "schedule 'mine'" in str(info.value)


class _BadSchedulePlugin:
    @accdiffusion.hookimpl
    def accdiffusion_register_schedules(self, register):
        register("too_far", lambda s: _Fixed(lambda req: tuple(PhaseSchedule(req.steps, req.steps)
                                                               for _ in req.scales)))
        register("halfway", lambda s: _Fixed(lambda req: tuple(PhaseSchedule(req.steps, req.steps // 2, False)
                                                               for _ in req.scales)))


class _Fixed:
    def __init__(self, fn):
        self.plan = fn


def test_a_plugin_schedule_is_used_and_a_bad_one_stops_before_the_unet(tiny_sd15_pipeline):
    host = PluginHost([_BadSchedulePlugin()])
    assert {"paper", "fast", "too_far", "halfway"} <= set(host.registry.names("schedule"))
    calls = []
    unet = tiny_sd15_pipeline.unet
    original = unet.forward
    unet.forward = lambda *a, **k: (calls.append(1), original(*a, **k))[1]
    try:
        with pytest.raises(PluginError, match=r"schedule 'too_far': phase 2 has start=4"):
            accdiffusion.generate("a cat", pipeline=tiny_sd15_pipeline, host=host, schedule="too_far", scale=2,
                                  steps=4, seed=0, prompt_decomposer="identical", tiler="sliding_window",
                                  global_guidance="none", upscaler="bicubic_latent")
        assert calls == []
        result = accdiffusion.generate("a cat", pipeline=tiny_sd15_pipeline, host=host, schedule="halfway", scale=2,
                                       steps=4, seed=0, prompt_decomposer="identical", tiler="sliding_window",
                                       global_guidance="none", upscaler="bicubic_latent")
    finally:
        unet.forward = original
    phase = result.record["phases"][1]
    assert (phase["steps"], phase["start"], phase["evaluated_steps"], phase["skip_residual"]) == (4, 2, 2, False)
    # 9 windows, 2 timesteps, CFG
    assert phase["unet_evaluations"] == 9 * 2 * 2
    assert result.record["plugins"]["schedule"] == "halfway"


SCHEDULERS = ["euler", "euler_ancestral", "ddim", "dpmpp", "unipc"]


@pytest.mark.parametrize("name", SCHEDULERS)
@pytest.mark.parametrize("start", [0, 3, 7])
def test_schedulers_started_mid_schedule_denoise_correctly(tiny_sd15_pipeline, name, start):
    """With a perfect denoiser (it returns the true noise of its input for a
    known clean latent x0), a phase started at ``timesteps[start]`` ends at
    x0 as closely as the full schedule does: the scheduler knows where it is
    (step index, multistep history, sigmas) when it starts mid-schedule."""
    base = make_scheduler(name, tiny_sd15_pipeline.scheduler)
    abar = base.alphas_cumprod.double()
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(1, 4, 8, 8, generator=g, dtype=torch.float64).float()
    noise = torch.randn(1, 4, 8, 8, generator=g)

    def run(first):
        sched, noiser, timesteps = phase_schedulers(base, PhaseSchedule(10, first))
        z = noiser.add_noise(x0, noise, timesteps[:1])
        gen = torch.Generator().manual_seed(2)
        for t in timesteps:
            x = sched.scale_model_input(z, t)  # every scheduler's input is the VP sample here
            a = abar[int(t)]
            eps = ((x.double() - a.sqrt() * x0.double()) / (1 - a).sqrt()).float()
            z = scheduler_step(sched, eps, t, z, gen)
        return (z - x0).abs().max().item()

    full = run(0)
    assert run(start) <= full + 2e-4
    assert full < 0.2  # sanity: the oracle itself works (DDIM stops at alphas_cumprod[0], not 1)


def test_every_supported_scheduler_is_covered():
    assert set(SCHEDULERS) == set(SCHEDULER_CLASSES)


def test_renormalize_sets_each_phase_to_phase_ones_statistics_and_can_be_switched_off(tiny_sd15_pipeline):
    """DemoFusion's end-of-phase step: with ``renormalize`` (the default) the final latents have phase 1's
    mean and (unbiased) std exactly; with ``renormalize=False`` they keep their own, and the record says so."""
    common = dict(pipeline=tiny_sd15_pipeline, steps=3, seed=0, prompt_decomposer="identical",
                  global_guidance="none", guidance_scale=1.0, multi_guidance_scale=1.0)
    phase1 = accdiffusion.generate("a cat", scale=1, **common).latents
    kept = accdiffusion.generate("a cat", scale=2, **common)
    own = accdiffusion.generate("a cat", scale=2, renormalize=False, **common)
    assert torch.allclose(kept.latents.mean(), phase1.mean(), atol=1e-5)
    assert torch.allclose(kept.latents.std(), phase1.std(), rtol=1e-5)
    assert not torch.allclose(own.latents.std(), phase1.std(), rtol=1e-2)
    # the same run up to the last step: renormalising ``own`` gives ``kept``
    assert torch.allclose((own.latents - own.latents.mean()) / own.latents.std() * phase1.std() + phase1.mean(),
                          kept.latents, atol=1e-5)
    assert (kept.record["settings"]["renormalize"], own.record["settings"]["renormalize"]) == (True, False)
    with pytest.raises(SettingsError, match="renormalize"):
        Settings(prompt="x", renormalize="no")
