"""Overhead against the real UNet: a small random SDXL on the CPU.

The time of a run outside the UNet's and the VAE's forward calls, as a share
of the UNet's time (see ``overhead_small_sdxl.py``). With
``--benchmark-enable`` the run is the published one, 2048 px and 4 steps
(about ten minutes on one thread here); without it (the test-suite default)
a 1024 px, 1-step run checks that the measurement works.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("overhead_small_sdxl", Path(__file__).with_name("overhead_small_sdxl.py"))
overhead = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(overhead)


@pytest.fixture(scope="module")
def small_sdxl(tmp_path_factory):
    return overhead.load_small_sdxl(tmp_path_factory.mktemp("small-sdxl"))


@pytest.mark.parametrize("schedule", ["paper", "fast"])
def test_time_outside_unet_and_vae(benchmark, small_sdxl, schedule):
    if benchmark.disabled and schedule == "fast":
        pytest.skip("one unbenchmarked run checks the measurement; the fast run only matters when timed")
    size, steps = (2048, 4) if not benchmark.disabled else (1024, 1)
    results = []

    def run():
        results.append(overhead.measure(small_sdxl, size, steps, schedule=schedule))

    benchmark.pedantic(run, rounds=1, iterations=1)
    out = results[-1]
    benchmark.extra_info.update({k: v for k, v in out.items() if k != "phases"})
    # every UNet call was timed, and the time adds up
    assert out["unet_calls"] > 0 and out["unet_s"] > 0
    assert out["wall_s"] >= out["unet_s"] + out["vae_s"]
    assert out["unet_evaluations"] == sum(p["unet_evaluations"] for p in out["phases"])
