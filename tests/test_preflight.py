"""The preflight: costs counted before any weights load, and refusals."""

import pytest
import torch

import accdiffusion
from accdiffusion import Settings
from accdiffusion import api as api_module
from accdiffusion.cli import main
from accdiffusion.errors import ResourceError
from accdiffusion.loading import load_pipeline
from accdiffusion.preflight import sliding_windows
from accdiffusion_tiling import SlidingWindowTiler

PROMPT = "a red circle and a blue square on a white background"


@pytest.mark.parametrize("h, w", [(16, 16), (32, 32), (48, 40), (100, 37), (128, 128), (8, 200)])
@pytest.mark.parametrize("window, stride", [(16, 8), (128, 64), (16, 5)])
def test_window_count_is_the_tilers(h, w, window, stride):
    layout = SlidingWindowTiler(jitter=False).layout(h, w, window, stride, None)
    assert sliding_windows(h, w, window, stride) == len(layout.windows)


@pytest.mark.parametrize("options", [
    dict(scale=3, steps=4),
    dict(scale=3, steps=5, schedule="fast"),
    dict(height=64, width=96, steps=3, guidance_scale=1.0),
    dict(scale=2, steps=3, global_guidance="none"),
    dict(scale=2, steps=3, local_path=False, multi_guidance_scale=1.0),
])
def test_estimated_evaluations_are_what_the_run_counts(tiny_sdxl_path, options):
    est = accdiffusion.api.estimate_run(PROMPT, model=str(tiny_sdxl_path), seed=0, **options)
    result = accdiffusion.generate(PROMPT, model=str(tiny_sdxl_path), seed=0, **options)
    assert [p.unet_evaluations for p in est.phases] == [p.unet_evaluations for p in result.phases]
    assert est.unet_evaluations == result.record["unet_evaluations"]["total"]
    for cost, phase in zip(est.phases[1:], result.phases[1:]):
        assert cost.windows == (0 if phase.layout is None else len(phase.layout.windows))
    assert est.peak_bytes > 0 and est.memory["weights"] > 0


def _no_loading(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("weights were loaded")

    monkeypatch.setattr(api_module, "load_pipeline", refuse)


def test_too_many_phases_is_refused_before_loading(tiny_sd15_path, monkeypatch):
    _no_loading(monkeypatch)
    with pytest.raises(ResourceError, match=r"factor 40: 40 phases, more than max_phases=16"):
        accdiffusion.generate("a cat", model=str(tiny_sd15_path), height=32, width=1280)
    # the same size without progressive phases is two phases
    with pytest.raises(ResourceError, match="UNet evaluations"):
        accdiffusion.generate("a cat", model=str(tiny_sd15_path), height=32, width=1280, progressive=False,
                              max_unet_evaluations=100)


def test_absurd_steps_and_memory_are_refused_before_loading(tiny_sd15_path, monkeypatch):
    _no_loading(monkeypatch)
    with pytest.raises(ResourceError, match=r"needs 2,800,000 UNet evaluations, more than max_unet_evaluations=500,000"):
        accdiffusion.generate("a cat", model=str(tiny_sd15_path), scale=2, steps=100_000)
    with pytest.raises(ResourceError, match=r"estimated peak memory of this run is .* GiB, more than max_memory_gb=1e-06"):
        accdiffusion.generate("a cat", model=str(tiny_sd15_path), scale=2, steps=2, max_memory_gb=1e-6)


def test_a_loaded_pipeline_is_checked_before_the_unet(tiny_sd15_path):
    pipe = load_pipeline(str(tiny_sd15_path))
    calls = []
    original = pipe.unet.forward
    pipe.unet.forward = lambda *a, **k: (calls.append(1), original(*a, **k))[1]
    with pytest.raises(ResourceError, match="max_unet_evaluations=10"):
        accdiffusion.generate("a cat", pipeline=pipe, scale=2, steps=2, max_unet_evaluations=10)
    assert calls == []


def test_dry_run_prints_the_cost_and_writes_nothing(tiny_sd15_path, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["generate", "a cat", "--model", str(tiny_sd15_path), "--scale", "3", "--steps", "4",
                 "--dry-run", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "factor 3, 3 phases" in text
    assert "phase 3: latent 48x48, 4 timesteps, 25 windows + 9 dilated samples per step: 272 UNet evaluations" in text
    assert "UNet evaluations: 384" in text and "peak memory estimate on cpu" in text
    assert not out.exists() or not any(out.iterdir())
    assert main(["generate", "a cat", "--model", str(tiny_sd15_path), "--steps", "10000000", "--dry-run"]) == 1
    assert "more than max_unet_evaluations=500,000" in capsys.readouterr().err


def test_sampler_takes_settings_only(tiny_sd15_pipeline):
    from accdiffusion import Sampler, SettingsError

    with pytest.raises(SettingsError, match="settings=dict is not allowed"):
        Sampler.from_pipeline(tiny_sd15_pipeline, {"prompt": "a cat"})
    sampler = Sampler.from_pipeline(tiny_sd15_pipeline, Settings(prompt="a cat"))
    with pytest.raises(SettingsError, match="settings=dict is not allowed"):
        sampler({"prompt": "a cat"})


def test_a_controlnet_counts_in_the_memory_estimate(tiny_sd15_path, tmp_path):
    from accdiffusion.api import estimate_run
    from accdiffusion_shapes import default_controlnet_path, default_model_path

    model = str(default_model_path())
    plain = estimate_run("a red circle", model=model, scale=2, steps=2)
    guided = estimate_run("a red circle", model=model, scale=2, steps=2, structure_guidance="controlnet",
                          controlnet=str(default_controlnet_path()))
    size = (default_controlnet_path() / "diffusion_pytorch_model.safetensors").stat().st_size
    assert guided.memory["weights"] - plain.memory["weights"] == size
    assert guided.unet_evaluations == plain.unet_evaluations
