"""The engine end to end on tiny models: the fast schedule on every
scheduler, UNet evaluation counts, shared batches against separate ones."""

import pytest
import torch

from accdiffusion import Sampler, Settings, generate
from accdiffusion.executor import ViewExecutor
from accdiffusion.loading import load_pipeline

PROMPT = "a red circle and a blue square on a white background"


@pytest.fixture(scope="module")
def pipes(tiny_sdxl_path, tiny_sd15_path):
    return {"sdxl": load_pipeline(str(tiny_sdxl_path)), "sd15": load_pipeline(str(tiny_sd15_path))}


def views_per_step(s):
    """Method section 6: (2s-1)^2 windows + s^2 dilated samples at half-window stride."""
    return (2 * s - 1) ** 2 + s * s


@pytest.mark.parametrize("family", ["sdxl", "sd15"])
@pytest.mark.parametrize("scheduler", ["default", "euler", "euler_ancestral", "ddim", "dpmpp", "unipc"])
def test_fast_schedule_runs_on_every_scheduler(pipes, family, scheduler):
    steps = 10
    fast = generate(PROMPT, pipeline=pipes[family], scale=3, steps=steps, seed=3, schedule="fast",
                    scheduler=scheduler)
    assert torch.isfinite(fast.latents).all() and fast.image.size == (96, 96)
    rec = fast.record
    assert rec["plugins"]["schedule"] == "fast"
    for phase in rec["phases"][1:]:
        assert (phase["steps"], phase["start"], phase["evaluated_steps"]) == (steps, 7, 3)
        assert phase["unet_evaluations"] == 2 * 3 * views_per_step(phase["scale"])
    assert rec["phases"][0]["unet_evaluations"] == 2 * steps
    assert rec["unet_evaluations"]["total"] == sum(p["unet_evaluations"] for p in rec["phases"])


def test_paper_counts_and_fast_is_under_a_third_at_4x(pipes):
    paper = generate(PROMPT, pipeline=pipes["sd15"], scale=4, steps=20, seed=1, prompt_decomposer="identical")
    assert [p.unet_evaluations for p in paper.phases] == [40] + [2 * 20 * views_per_step(s) for s in (2, 3, 4)]
    assert paper.record["unet_evaluations"]["per_phase"] == {"1": 40, "2": 520, "3": 1360, "4": 2600}
    fast = generate(PROMPT, pipeline=pipes["sd15"], scale=4, steps=20, seed=1, prompt_decomposer="identical",
                    schedule="fast")
    assert fast.unet_evaluations * 3 <= paper.unet_evaluations


class SeparateGroupsExecutor(ViewExecutor):
    """Evaluates the local windows and the dilated samples in separate batches."""

    def evaluate(self, scheduler, timestep, groups):
        return [out for g in groups for out in ViewExecutor.evaluate(self, scheduler, timestep, [g])]


@pytest.mark.parametrize("family", ["sdxl", "sd15"])
@pytest.mark.parametrize("batch", [1, 16])
def test_shared_batches_compute_what_separate_batches_compute(pipes, family, batch):
    settings = Settings(prompt=PROMPT, scale=3, steps=3, seed=5, view_batch_size=batch)
    shared = Sampler.from_pipeline(pipes[family], settings)(settings)
    separate = Sampler.from_pipeline(pipes[family], settings, executor=SeparateGroupsExecutor)(settings)
    assert shared.unet_evaluations == separate.unet_evaluations
    if batch == 1:  # the same UNet batches: bit for bit
        assert torch.equal(shared.latents, separate.latents)
    else:  # other batch sizes round differently in float32
        assert torch.allclose(shared.latents, separate.latents, rtol=0, atol=1e-4)


def test_shared_batches_make_fewer_unet_calls(pipes):
    pipe = pipes["sd15"]
    calls = []
    original = pipe.unet.forward
    pipe.unet.forward = lambda *a, **k: (calls.append(a[0].shape[0]), original(*a, **k))[1]
    try:
        settings = Settings(prompt=PROMPT, scale=2, steps=2, seed=5)
        Sampler.from_pipeline(pipe, settings)(settings)
        shared = list(calls)
        calls.clear()
        Sampler.from_pipeline(pipe, settings, executor=SeparateGroupsExecutor)(settings)
        separate = list(calls)
    finally:
        pipe.unet.forward = original
    # phase 1: 2 calls of 2; phase 2: 9 windows + 4 samples in one call of 26 per step, not 18 + 8
    assert shared == [2, 2, 26, 26]
    assert separate == [2, 2, 18, 8, 18, 8]


def test_a_tiler_that_leaves_gaps_is_refused(pipes):
    from accdiffusion import PluginError
    from accdiffusion.types import Window, WindowLayout

    class LeftHalf:
        """Covers only the left half of the canvas."""

        def layout(self, height, width, window, stride, generator):
            return WindowLayout((Window(0, 0, height, width // 2),), height, width)

    calls = []
    pipe = pipes["sd15"]
    original = pipe.unet.forward
    pipe.unet.forward = lambda *a, **k: (calls.append(a[0].shape[0]), original(*a, **k))[1]
    try:
        with pytest.raises(PluginError, match=r"tiler '<LeftHalf>' left 512 of 1024 latent pixels uncovered "
                                              r"\(first at row 0, column 16\)"):
            generate(PROMPT, pipeline=pipe, scale=2, steps=2, seed=0, tiler=LeftHalf(),
                     prompt_decomposer="identical")
    finally:
        pipe.unet.forward = original
    assert calls == [2, 2]  # phase 1 ran; no upscaling step did
